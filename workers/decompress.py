"""decompress: inflate compressed input in workers, chunk by chunk, strictly.

Rules:
- This stage only runs in workers when the job could cut the compressed input at member or
  frame boundaries (BGZF blocks, zstd and lz4 frames, bz2 and xz streams): each chunk is then
  a run of whole members, decoded on its own (see dataflow/decoding.py for how a job is
  prepared, and for the sequential path that single-member inputs take instead).
- Output is produced in slot-sized pieces as the decoder goes (a generator), so a chunk that
  expands 20x never sits whole in a worker's memory.
- Never silent truncation: a chunk must end exactly at a member end; a bad checksum, a bad
  header or junk is an error naming the member and the compressed byte offset.
- BGZF blocks take a fast path: each block's header gives its size and its trailer the CRC-32
  and length of its data, so a block is inflated in one call (libdeflate when installed, as
  bgzip does; else a one-shot inflater of the backend) and checked against both. The first
  block that is anything but a plain BGZF block that checks out (padding, other extra fields,
  a bad CRC, a truncation) hands the rest of the chunk to the strict streaming `Decoder`,
  numbered as if it had decoded the blocks before: it decodes it or names what is wrong, with
  the same messages and offsets. libdeflate does not say where a block's deflate data ends, so
  bytes between its end and the trailer go unnoticed when the block's CRC-32 and length are
  right (the data is intact; bgzip does not notice either); the zlib-family backends check it.
- With libdeflate reachable through ctypes (dataflow/libdeflate.py), a BGZF chunk is a
  `_BgzfRun`: when its output goes straight to the output slot, the worker calls its `fill`
  and each block is inflated into the slot and its CRC-32 computed there, with no bytes
  object and no copy per block; when another stage follows, it is iterated like the
  generator above. Both go the same way on anything but a plain block.
- A zstd chunk that is one frame recording its content size (up to PIECE: dataflow's own
  frames) is decoded in one call that also checks the frame's checksum and refuses bytes after
  the frame; anything else, or any error there, goes through the strict `Decoder` from the
  start of the chunk (nothing has gone out yet), which decodes it or names what is wrong.
"""
from __future__ import annotations

import struct
from typing import Any, Callable, Iterator, Literal

import msgspec

from dataflow.containers import FORMATS, Decoder
from dataflow.libdeflate import SUCCESS, address
from dataflow.streams import ChunkInfo, SlotFiller, Transform

PIECE = 4 << 20  # output per decoder call: bounded memory, few round trips
# BGZF block: gzip magic with FEXTRA, MTIME/XFL/OS, XLEN 6, subfield "BC" of 2 bytes, BSIZE - 1
_BGZF_HEAD = struct.Struct("<4s6xH2sHH")
_BGZF_TAIL = struct.Struct("<II")       # CRC-32, ISIZE
_BGZF_MAGIC = b"\x1f\x8b\x08\x04"
BGZF_MAX_DATA = 1 << 16                 # a BGZF block holds at most 64 KiB


class Decompress(Transform):
    name = "decompress"
    reads_source = True

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        format: Literal["auto", "gzip", "bgzf", "zlib", "zstd", "bz2", "xz", "lz4"] = "auto"
        backend: Literal["auto", "zlib", "zlib-ng", "isal", "libdeflate"] = "auto"

    def __init__(self, format: str = "auto", backend: str = "auto"):
        if format != "auto" and format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; one of auto, {', '.join(FORMATS)}")
        self.format = format
        self.backend = backend

    def check(self) -> None:
        from dataflow.decoding import block_inflater

        block_inflater(self.backend)   # checks the streaming backend too

    def setup(self) -> None:
        from dataflow.decoding import block_inflater, inflate_backend

        self._backend = inflate_backend(self.backend)   # the strict Decoder's
        if self.format == "bgzf":
            self._inflate, self._crc32 = block_inflater(self.backend)
            self._lib = None
            if getattr(self._inflate, "__module__", "").startswith("deflate"):
                from dataflow import libdeflate
                self._lib = libdeflate.load()
        if self.format == "zstd":
            import zstandard
            self._zstd = zstandard
            self._zctx = zstandard.ZstdDecompressor()

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        if self.format == "auto":
            raise ValueError("decompress: the format was not resolved before the run "
                             "(a bug: dataflow.decoding.prepare does that)")
        if self.format == "bgzf" and len(data):
            if self._lib is not None and not data.readonly:
                return _BgzfRun(self, data, chunk.offset)
            return self._bgzf(data, chunk.offset)
        if self.format == "zstd":
            out = self._zstd_frame(data)
            if out is not None:
                return out
        return self._pieces(data, chunk.offset)

    def _zstd_frame(self, data: memoryview) -> bytes | None:
        """The chunk's output when it is one frame of known size up to PIECE, else None."""
        zstd = self._zstd
        try:
            size = zstd.frame_content_size(data)
            if not 0 <= size <= PIECE:
                return None
            out = self._zctx.decompress(data, max_output_size=size, allow_extra_data=False)
        except zstd.ZstdError:   # the strict decoder says what is wrong, and where
            return None
        return out if len(out) == size else None

    def _bgzf(self, data: memoryview, offset: int) -> Iterator[Any]:
        inflate: Callable[[memoryview, int], Any] = self._inflate
        crc32 = self._crc32
        n = len(data)
        pos = blocks = 0
        while (found := _plain_block(data, pos, n)) is not None:
            end, crc, size = found
            try:
                out = inflate(data[pos + 18:end - 8], size)
            except Exception:      # each library has its own error type: the decoder names it
                break
            if len(out) != size or crc32(out) != crc:
                break
            if size:
                yield out
            pos = end
            blocks += 1
        if pos < n:
            yield from self._pieces(data[pos:], offset + pos, blocks)

    def _pieces(self, data: memoryview, offset: int, members: int = 0) -> Iterator[bytes]:
        decoder = Decoder(self.format, backend=self._backend)
        decoder.base = offset
        decoder.members = members
        out = decoder.decompress_parts(data, PIECE)
        while True:
            yield from out   # copied one by one into the output slot: no join
            if decoder.needs_input:
                break
            out = decoder.decompress_parts(b"", PIECE)
        decoder.finish()  # raises CorruptInput when the chunk ends inside a member


def _plain_block(data: memoryview, pos: int, n: int) -> tuple[int, int, int] | None:
    """(end, CRC-32, data size) of the plain BGZF block at `pos` of `data[:n]`, or None when
    there is none there (the end of the chunk, or anything the strict decoder must judge)."""
    if n - pos < 26:
        return None
    magic, xlen, sub, slen, bsize = _BGZF_HEAD.unpack_from(data, pos)
    end = pos + bsize + 1
    if magic != _BGZF_MAGIC or xlen != 6 or sub != b"BC" or slen != 2 or end > n \
            or bsize < 25:
        return None
    crc, size = _BGZF_TAIL.unpack_from(data, end - 8)
    return None if size > BGZF_MAX_DATA else (end, crc, size)


class _BgzfRun(SlotFiller):
    """A chunk of BGZF blocks, decoded by `fill` straight into the output slot, or iterated
    as parts (`Decompress._bgzf`) when a stage follows, or when slots are smaller than a
    block's output can be (a chunk_size under 64 KiB)."""

    largest_piece = BGZF_MAX_DATA

    def __init__(self, stage: Decompress, data: memoryview, offset: int):
        self.stage = stage
        self.data = data
        self.offset = offset
        self._pos = 0          # where the next block starts in `data`
        self._blocks = 0
        self._parts: Iterator[Any] | None = None

    def __next__(self) -> Any:
        if self._parts is None:
            self._parts = self.stage._bgzf(self.data, self.offset)
        return next(self._parts)

    def fill(self, dest: memoryview) -> int:
        """Inflate the next whole blocks into `dest`, as many as fit; the byte count. At the
        end of the plain blocks it is done, and the strict decoder's output for the rest of
        the chunk, if any, is `rest`."""
        lib = self.stage._lib
        inflate, crc32 = lib.inflate, lib.crc32
        data, pos, room = self.data, self._pos, len(dest)
        n = len(data)
        src, dst = address(data), address(dest)
        written = 0
        while (found := _plain_block(data, pos, n)) is not None:
            end, crc, size = found
            if written + size > room:
                self._pos = pos
                return written            # the slot is full: the rest goes in the next
            at = dst + written
            if inflate(src + pos + 18, end - pos - 26, at, size) != SUCCESS or \
                    crc32(0, at, size) != crc:
                break                     # the strict decoder says what is wrong
            written += size
            pos = end
            self._blocks += 1
        self.done = True
        if pos < n:
            self.rest = self.stage._pieces(data[pos:], self.offset + pos, self._blocks)
        return written
