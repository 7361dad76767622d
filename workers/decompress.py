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
"""
from __future__ import annotations

from typing import Any, Iterator, Literal

import msgspec

from dataflow.containers import FORMATS, Decoder
from dataflow.streams import ChunkInfo, Transform

PIECE = 4 << 20  # output per decoder call: bounded memory, few round trips


class Decompress(Transform):
    name = "decompress"
    reads_source = True

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        format: Literal["auto", "gzip", "bgzf", "zlib", "zstd", "bz2", "xz", "lz4"] = "auto"
        backend: Literal["auto", "zlib", "zlib-ng", "isal"] = "auto"

    def __init__(self, format: str = "auto", backend: str = "auto"):
        if format != "auto" and format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; one of auto, {', '.join(FORMATS)}")
        self.format = format
        self.backend = backend

    def check(self) -> None:
        from dataflow.decoding import inflate_backend

        inflate_backend(self.backend)

    def setup(self) -> None:
        from dataflow.decoding import inflate_backend

        self._backend = inflate_backend(self.backend)

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        if self.format == "auto":
            raise ValueError("decompress: the format was not resolved before the run "
                             "(a bug: dataflow.decoding.prepare does that)")
        return self._pieces(data, chunk.offset)

    def _pieces(self, data: memoryview, offset: int) -> Iterator[bytes]:
        decoder = Decoder(self.format, backend=self._backend)
        decoder.base = offset
        out = decoder.decompress_parts(data, PIECE)
        while True:
            yield from out   # copied one by one into the output slot: no join
            if decoder.needs_input:
                break
            out = decoder.decompress_parts(b"", PIECE)
        decoder.finish()  # raises CorruptInput when the chunk ends inside a member
