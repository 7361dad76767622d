"""Compressed container formats: detect them, cut them into members, decode them strictly.

Pure and self-contained (no other dataflow module but `dataflow.errors`); the decompression
feature builds on three things:

- `detect(head)`: the format from the first bytes of a file (`None`: plain data).
- `member_cuts(f, fmt, size, limit=...)`: the compressed offsets where independently decodable
  members start, found by walking headers only (never by decompressing), or `None` when the
  file cannot usefully be split.
- `Decoder(fmt)`: a strict streaming decoder over a sequence of members, with bounded output
  per call.

Rules:
- A *member* is what decodes on its own: a gzip member (a BGZF block), a zstd or lz4 frame
  together with the skippable frames just before it, a bz2 stream, an xz stream together with
  the stream padding just after it. Skippable frames at the very end of a zstd/lz4 file form one
  last member of their own. `member_cuts` and `Decoder` number members the same way, from 0.
- Every problem with the data is a `CorruptInput` carrying a message, the compressed `offset`
  (relative to the first byte given, plus the caller's `base`) and the `member` index. Offsets of
  errors found inside a member's compressed data are approximate: the start of the slice (at
  most 1 MiB) being decoded when the library reported the error; it is never before the start of
  the member and never after the point where the damage was detected (a CRC mismatch is
  detected at the member's trailer, maybe far after the damaged byte).
- Strictness mirrors the reference tools' `-t` (exit status 0 = accepted):
    empty input: an error for gzip/bgzf/zlib/zstd/bz2/xz (as `gzip -t`, `zstd -t`, `bzip2 -t`,
      `xz -t` say), accepted for lz4 (`lz4 -t` decodes 0 bytes and exits 0);
    trailing zero bytes after at least one member: accepted for gzip/bgzf (`gzip -t` exits 0),
      accepted for xz only as stream padding (zeros, a multiple of 4 bytes; `xz -t`), an error
      for zstd, lz4, bz2 and zlib;
    any other trailing bytes: an error ("trailing garbage after member N", `member` = N + 1,
      where the next member would have started). `gzip -t` exits 2 there, `pigz -t` on zlib 1;
      only bzip2 (and pbzip2/lbzip2) accept trailing garbage with a warning, we do not;
    several members: accepted for every format but zlib (one zlib stream, as pigz: trailing
      junk);
    without checksums (zstd --no-check, lz4 --no-frame-crc, xz -C none) some damage decodes
      to wrong output unnoticed, by the tools as by us; libzstd as bundled with zstandard
      rejects some damaged frames that the zstd 1.5.4 CLI decodes.
- Output is bounded: with `max_length`, a call returns at most that many bytes and the decoder
  holds at most about one block of extra output (zstd: one 128 KiB block, as whole blocks are
  fed to libzstd by their headers since its decompressobj has no max_length; lz4: one block of
  up to 4 MiB inside liblz4) plus the input it was given. Input it has not consumed when a
  call returns is kept by reference when it is `bytes`, else copied once (the caller may reuse
  its buffer). Libraries get slices of at most 1 MiB (memoryviews, no copies).
- Errors that are not about the data (an unknown format, a missing backend, misuse) are
  `UsageError`s.
"""
from __future__ import annotations

import bz2
import lzma
import os
import re
import struct
import zlib

from dataflow.errors import SourceError, UsageError

FORMATS = ("gzip", "bgzf", "zlib", "zstd", "bz2", "xz", "lz4")

BACKENDS = ("zlib", "zlib-ng", "isal")

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_LZ4_MAGIC = b"\x04\x22\x4d\x18"
_LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
_SKIP_TAIL = b"\x2a\x4d\x18"            # skippable frames: 50..5F 2A 4D 18 (zstd and lz4)
_XZ_MAGIC = b"\xfd7zXZ\x00"
_XZ_FOOTER_MAGIC = b"YZ"
_BZ2_BLOCK_MAGIC = b"1AY&SY"
_BZ2_EOS_MAGIC = b"\x17\x72\x45\x38\x50\x90"
_BZ2_LEVELS = b"123456789"

_ZSTD_BLOCK_MAX = 128 << 10             # no zstd block decodes to more than this
_SLICE_MAX = 1 << 20                    # compressed bytes handed to a library per call
_SLICE_MIN = 64 << 10
_SLICE_FIRST = 8 << 10                  # the first slice of a member (then doubling)

_NONZERO = re.compile(rb"[^\x00]")
_EMPTY = memoryview(b"")


class CorruptInput(SourceError):
    """The compressed data is invalid: `message`, compressed `offset`, `member` index.

    A `SourceError` (so a `DataflowError`); the caller may set `file`. Pickles intact.
    """

    def __init__(self, message: str, *, offset: int, member: int):
        super().__init__(f"{message} (compressed offset {offset})", offset=offset)
        self.message = message
        self.member = member

    def __reduce__(self):
        return _rebuild_corrupt, (type(self), self.message, self.offset, self.member, self.file)


def _rebuild_corrupt(cls, message, offset, member, file):
    e = cls(message, offset=offset, member=member)
    e.file = file
    return e


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"unknown compressed format {fmt!r}; expected one of {', '.join(FORMATS)}")


# --------------------------------------------------------------------------------- detect

def _is_bgzf_header(head: bytes) -> bool:
    """A gzip header with FEXTRA whose extra field holds the 'BC' subfield with SLEN 2."""
    if len(head) < 12 or not head[3] & 0x04:
        return False
    xlen = head[10] | head[11] << 8
    extra = head[12:12 + xlen]
    i = 0
    while i + 4 <= len(extra):
        slen = extra[i + 2] | extra[i + 3] << 8
        if extra[i] == 66 and extra[i + 1] == 67 and slen == 2:
            return True
        i += 4 + slen
    return False


def _is_skippable(magic: bytes) -> bool:
    return len(magic) >= 4 and magic[0] & 0xF0 == 0x50 and magic[1:4] == _SKIP_TAIL


def _looks_zlib(head: bytes) -> bool:
    if len(head) < 2:
        return False
    cmf, flg = head[0], head[1]
    if cmf & 0x0F != 8 or cmf >> 4 > 7 or (cmf << 8 | flg) % 31 or flg & 0x20:
        return False
    try:                                 # text like b"x^..." passes the header check: the
        zlib.decompressobj().decompress(head)   # deflate data after it must be valid too
    except zlib.error:
        return False
    return True


def detect(head: bytes) -> str | None:
    """Format from the magic bytes at the start of a file (pass >= 18 bytes when available).

    gzip magic 1f 8b 08 -> 'bgzf' when FLG.FEXTRA and the extra field holds the 'BC' subfield
    (SLEN 2), else 'gzip'; 'zlib' when CM=8, CINFO<=7, (CMF*256+FLG)%31==0, no preset dictionary
    (FDICT=0: it could not be decoded anyway) and the deflate data in `head` is valid so far (text
    such as b"x^..." passes the header check alone); 'zstd' (28 b5 2f fd, or a skippable frame
    50..5f 2a 4d 18 first, as pzstd writes; lz4 shares skippable frames, so when the frame after
    it is inside `head` its magic decides); 'bz2' ('BZh' + '1'..'9', then, when `head` is long
    enough, the block magic '1AY&SY' or the end-of-stream magic); 'xz' (fd 37 7a 58 5a 00);
    'lz4' (04 22 4d 18). None when not recognised (plain data).
    """
    head = bytes(head[:64])
    if head[:3] == b"\x1f\x8b\x08":
        return "bgzf" if _is_bgzf_header(head) else "gzip"
    if head[:4] == _ZSTD_MAGIC:
        return "zstd"
    if head[:4] == _LZ4_MAGIC:
        return "lz4"
    if head[:6] == _XZ_MAGIC:
        return "xz"
    if head[:3] == b"BZh" and len(head) >= 4 and head[3] in _BZ2_LEVELS:
        if len(head) < 10 or head[4:10] in (_BZ2_BLOCK_MAGIC, _BZ2_EOS_MAGIC):
            return "bz2"
        return None
    p = 0
    while _is_skippable(head[p:p + 4]):
        if len(head) < p + 8:
            return "zstd"
        p += 8 + struct.unpack_from("<I", head, p + 4)[0]
        if len(head) < p + 4:
            return "zstd"
        if head[p:p + 4] == _LZ4_MAGIC:
            return "lz4"
        if head[p:p + 4] == _ZSTD_MAGIC:
            return "zstd"
        if not _is_skippable(head[p:p + 4]):
            return None
    if _looks_zlib(head):
        return "zlib"
    return None


# ----------------------------------------------------------------------------- member_cuts

class _Reader:
    """Positional reads from a seekable binary file (os.pread when it has a descriptor)."""

    def __init__(self, f, size: int):
        self.f = f
        self.size = size
        self.fd = None
        try:
            writable = f.writable()            # buffered writes: read through the buffer
        except (AttributeError, OSError, ValueError):
            writable = False
        if hasattr(os, "pread") and not writable:
            try:
                self.fd = f.fileno()
            except (AttributeError, OSError, ValueError):
                self.fd = None
        self._window = b""     # the file's bytes from _window_at on
        self._window_at = 0

    WINDOW = 1 << 20   # the scans walk forward by small headers: read a window at a time

    def read(self, off: int, n: int) -> bytes:
        n = max(0, min(n, self.size - off))
        at = off - self._window_at
        if 0 <= at and at + n <= len(self._window):
            return self._window[at:at + n]
        if n < self.WINDOW and self.fd is not None:   # (a file being written: no copies)
            self._window = self._read(off, self.WINDOW)
            self._window_at = off
            return self._window[:n]
        return self._read(off, n)

    def _read(self, off: int, n: int) -> bytes:
        n = max(0, min(n, self.size - off))
        if self.fd is not None:
            out = os.pread(self.fd, n, off)
            while len(out) < n:                      # short reads: keep going
                more = os.pread(self.fd, n - len(out), off + len(out))
                if not more:
                    break
                out += more
            return out
        self.f.seek(off)
        return self.f.read(n)


class _Cuts:
    """Collects member starts, and each member's decoded size when the headers tell it (None
    when not); `add` returns False once a member exceeds `limit`."""

    def __init__(self, limit: int):
        self.limit = limit
        self.cuts = [0]
        self.sizes: list[int | None] = []

    def add(self, off: int, decoded: int | None = None) -> bool:
        if off - self.cuts[-1] > self.limit:
            return False
        self.cuts.append(off)
        self.sizes.append(decoded)
        return True


def member_cuts(f, fmt: str, size: int, *, limit: int) -> list[int] | None:
    layout = member_layout(f, fmt, size, limit=limit)
    return None if layout is None else layout[0]


def member_layout(f, fmt: str, size: int, *,
                  limit: int) -> tuple[list[int], list[int | None]] | None:
    """Compressed offsets where independently decodable members start, from 0 to `size`.

    For a seekable binary file `f` of `size` bytes in format `fmt`: consecutive pairs are
    member byte ranges, each decodable by a fresh `Decoder`. None when the input cannot be split
    usefully: a single member, any member larger than `limit` bytes (found while walking: the
    walk stops there), an empty file, or a format that cannot be split (gzip that is not BGZF, a
    BGZF file with a block that has no BSIZE, zlib). Cheap: walks headers, never decompresses:

    - bgzf: each block's BSIZE; trailing zero bytes join the last block (the decoder, like
      `gzip -t`, accepts them).
    - zstd, lz4: frame headers and block headers (bodies skipped). A skippable frame belongs to
      the member of the frame after it; skippable frames at the end form a last member.
      Legacy lz4 frames (`lz4 -l`) are not supported (CorruptInput).
    - xz: from the end: stream footer -> index -> stream header (all CRC-32 checked); stream
      padding joins the stream before it. Errors found this way are raised with member=-1: the
      index from the front is unknown when walking backwards.
    - bz2: a scan for byte-aligned 'BZh[1-9]' followed by the block magic or the end-of-stream
      magic. A false cut needs those 80 bits byte-aligned inside compressed data by chance;
      possible in theory, never seen. Trailing garbage is left to the decoder.

    Structural errors (a header claiming more bytes than the file has, bad magic where a
    member should start) raise CorruptInput with the offset and member index. The position of
    `f` afterwards is unspecified.

    `member_layout` returns the cuts and, per member, its decoded size where the format records
    it (BGZF's ISIZE, zstd's frame content size, lz4's content size, xz's index), else None
    (bz2): callers group members so that a chunk's output fits where it must go.
    """
    _check_format(fmt)
    if fmt in ("gzip", "zlib") or size <= 0:
        return None
    r = _Reader(f, size)
    walk = {"bgzf": _cuts_bgzf, "zstd": _cuts_zstd, "lz4": _cuts_lz4, "xz": _cuts_xz,
            "bz2": _cuts_bz2}[fmt]
    c = _Cuts(limit)
    cuts = walk(r, size, c)
    if cuts is None or len(cuts) <= 2:
        return None
    return cuts, c.sizes


def _all_zero(r: _Reader, off: int, end: int) -> bool:
    while off < end:
        block = r.read(off, min(end - off, 1 << 20))
        if not block or block.count(0) != len(block):
            return False
        off += len(block)
    return True


def _cuts_bgzf(r: _Reader, size: int, c: _Cuts) -> list[int] | None:
    off = m = 0
    while off < size:
        h = r.read(off, 18)
        if m and h[:1] == b"\0" and _all_zero(r, off, size):
            c.cuts[-1] = size                          # zero padding joins the last member
            return c.cuts
        if h[:2] != _GZIP_MAGIC[:len(h)]:
            msg = f"trailing garbage after member {m - 1}" if m else "invalid header: not gzip"
            raise CorruptInput(msg, offset=off, member=m)
        if len(h) < 18:
            raise CorruptInput(f"truncated inside member {m}", offset=size, member=m)
        if h[2] != 8:
            raise CorruptInput("invalid header: unknown compression method", offset=off, member=m)
        if not h[3] & 0x04:
            return None                                # a plain gzip member: no BSIZE
        xlen = h[10] | h[11] << 8
        extra = h[12:12 + xlen] if xlen <= 6 else r.read(off + 12, xlen)
        if len(extra) < xlen:
            raise CorruptInput(f"truncated inside member {m}", offset=size, member=m)
        bsize = None
        i = 0
        while i + 4 <= xlen:
            slen = extra[i + 2] | extra[i + 3] << 8
            if extra[i:i + 2] == b"BC" and slen == 2 and i + 6 <= xlen:
                bsize = (extra[i + 4] | extra[i + 5] << 8) + 1
                break
            i += 4 + slen
        if bsize is None:
            return None
        if bsize < 12 + xlen + 8 + 2:
            raise CorruptInput(f"invalid BGZF block size {bsize}", offset=off, member=m)
        if off + bsize > size:
            raise CorruptInput(f"truncated inside member {m}: block of {bsize} bytes, "
                               f"{size - off} left", offset=off, member=m)
        isize = struct.unpack("<I", r.read(off + bsize - 4, 4))[0]
        off += bsize
        m += 1
        if not c.add(off, isize):
            return None
    return c.cuts


def _frame_start(r: _Reader, off: int, size: int, m: int, member_start: int, magic: bytes,
                 name: str) -> bytes:
    """The 4 magic bytes at a frame start, or CorruptInput (truncated / not a frame)."""
    h = r.read(off, 4)
    ok = h == magic[:len(h)] or (h[:1] and h[0] & 0xF0 == 0x50 and h[1:] == _SKIP_TAIL[:len(h) - 1])
    if ok and len(h) < 4:
        raise CorruptInput(f"truncated inside member {m}", offset=size, member=m)
    if not ok:
        if off == 0:
            raise CorruptInput(f"invalid header: not {name}", offset=off, member=m)
        if off == member_start:
            raise CorruptInput(f"trailing garbage after member {m - 1}", offset=off, member=m)
        raise CorruptInput(f"invalid header: bad magic in member {m}", offset=off, member=m)
    return h


def _skippable_end(r: _Reader, off: int, size: int, m: int) -> int:
    h = r.read(off, 8)
    if len(h) < 8:
        raise CorruptInput(f"truncated inside member {m}", offset=size, member=m)
    end = off + 8 + struct.unpack_from("<I", h, 4)[0]
    if end > size:
        raise CorruptInput(f"truncated inside member {m}: skippable frame claims "
                           f"{end - off} bytes, {size - off} left", offset=off, member=m)
    return end


def _cuts_zstd(r: _Reader, size: int, c: _Cuts) -> list[int] | None:
    off = m = start = 0
    while off < size:
        magic = _frame_start(r, off, size, m, start, _ZSTD_MAGIC, "zstd")
        if magic != _ZSTD_MAGIC:
            off = _skippable_end(r, off, size, m)
            if off - start > c.limit:
                return None
            continue
        h = r.read(off, 18)
        if len(h) < 6:
            raise CorruptInput(f"truncated inside member {m}", offset=size, member=m)
        fhd = h[4]
        if fhd & 0x08:
            raise CorruptInput("invalid header: reserved bit set in frame header",
                               offset=off + 4, member=m)
        single = fhd >> 5 & 1
        fcs_at = 5 + (not single) + (0, 1, 2, 4)[fhd & 3]
        fcs_size = (single, 2, 4, 8)[fhd >> 6]
        hlen = fcs_at + fcs_size
        decoded = None
        if fcs_size and len(h) >= hlen:
            decoded = int.from_bytes(h[fcs_at:hlen], "little") + (256 if fcs_size == 2 else 0)
        p = off + hlen
        while True:
            b = r.read(p, 3)
            if len(b) < 3:
                raise CorruptInput(f"truncated inside member {m}", offset=size, member=m)
            bh = b[0] | b[1] << 8 | b[2] << 16
            btype = bh >> 1 & 3
            if btype == 3:
                raise CorruptInput(f"invalid block type in member {m}", offset=p, member=m)
            p += 3 + (1 if btype == 1 else bh >> 3)
            if p > size:
                raise CorruptInput(f"truncated inside member {m}: block claims "
                                   f"{p - size} bytes past the end", offset=size, member=m)
            if p - start > c.limit:
                return None
            if bh & 1:
                break
        p += 4 if fhd & 0x04 else 0
        if p > size:
            raise CorruptInput(f"truncated inside member {m}", offset=size, member=m)
        off = p
        m += 1
        if not c.add(off, decoded):
            return None
        start = off
    if start < size and not c.add(size, 0):             # trailing skippable frames
        return None
    return c.cuts


def _cuts_lz4(r: _Reader, size: int, c: _Cuts) -> list[int] | None:
    off = m = start = 0
    while off < size:
        if r.read(off, 4) == _LZ4_LEGACY_MAGIC:
            raise CorruptInput("legacy lz4 frame format (lz4 -l) is not supported",
                               offset=off, member=m)
        magic = _frame_start(r, off, size, m, start, _LZ4_MAGIC, "lz4")
        if magic != _LZ4_MAGIC:
            off = _skippable_end(r, off, size, m)
            if off - start > c.limit:
                return None
            continue
        h = r.read(off, 15)
        if len(h) < 7:
            raise CorruptInput(f"truncated inside member {m}", offset=size, member=m)
        flg, bd = h[4], h[5]
        decoded = struct.unpack_from("<Q", h, 6)[0] if flg & 0x08 and len(h) >= 14 else None
        if flg >> 6 != 1 or flg & 0x02 or bd & 0x8F or bd >> 4 < 4:
            raise CorruptInput("invalid header: bad frame descriptor", offset=off + 4, member=m)
        bmax = 1 << (2 * (bd >> 4) + 8)
        p = off + 7 + (8 if flg & 0x08 else 0) + (4 if flg & 0x01 else 0)
        bcheck = 4 if flg & 0x10 else 0
        while True:
            b = r.read(p, 4)
            if len(b) < 4:
                raise CorruptInput(f"truncated inside member {m}", offset=size, member=m)
            v = struct.unpack("<I", b)[0]
            p += 4
            if v == 0:
                break
            n = v & 0x7FFFFFFF
            if n > bmax:
                raise CorruptInput(f"invalid block size {n} in member {m} (maximum {bmax})",
                                   offset=p - 4, member=m)
            p += n + bcheck
            if p > size:
                raise CorruptInput(f"truncated inside member {m}: block claims "
                                   f"{p - size} bytes past the end", offset=size, member=m)
            if p - start > c.limit:
                return None
        p += 4 if flg & 0x04 else 0
        if p > size:
            raise CorruptInput(f"truncated inside member {m}", offset=size, member=m)
        off = p
        m += 1
        if not c.add(off, decoded):
            return None
        start = off
    if start < size and not c.add(size, 0):
        return None
    return c.cuts


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    """An xz multibyte integer at buf[i:] -> (value, next index); ValueError when invalid."""
    v = shift = 0
    for k in range(9):
        b = buf[i + k]
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            if b == 0 and k:
                raise ValueError("non-minimal integer")
            return v, i + k + 1
        shift += 7
    raise ValueError("integer too long")


def _cuts_xz(r: _Reader, size: int, c: _Cuts) -> list[int] | None:
    ends = []                       # (stream start, end of its padding), walking backwards
    end = size

    def bad(msg, off):
        return CorruptInput(msg, offset=off, member=-1)

    if size % 4:
        raise bad("file size is not a multiple of 4 (truncated or trailing garbage)", size)
    while end > 0:
        padded_end = end
        while end > 0:                                  # stream padding: zeros, 4-aligned
            tail = r.read(max(0, end - 4096), min(end, 4096))
            stripped = len(tail.rstrip(b"\0"))
            end -= (len(tail) - stripped) & ~3
            if stripped != 0 or end == 0:
                break
        if end == 0:
            raise bad("invalid header: not xz (zero bytes before the first stream)", 0)
        if end < 24:
            raise bad("truncated stream", end)
        footer = r.read(end - 12, 12)
        if footer[10:12] != _XZ_FOOTER_MAGIC:
            raise bad("no xz stream footer (truncated or trailing garbage)", end - 12)
        if zlib.crc32(footer[4:10]) != struct.unpack_from("<I", footer)[0]:
            raise bad("bad CRC-32 of stream footer", end - 12)
        index_size = (struct.unpack_from("<I", footer, 4)[0] + 1) * 4
        flags = footer[8:10]
        index_start = end - 12 - index_size
        if index_start < 12:
            raise bad("invalid stream footer: index larger than the file", end - 12)
        index = r.read(index_start, index_size)
        stored_crc = struct.unpack_from("<I", index, index_size - 4)[0]
        if index[0] != 0 or zlib.crc32(index[:-4]) != stored_crc:
            raise bad("invalid or corrupt stream index", index_start)
        try:
            count, i = _varint(index, 1)
            blocks = decoded = 0
            for _ in range(count):
                unpadded, i = _varint(index, i)
                usize, i = _varint(index, i)
                blocks += (unpadded + 3) & ~3
                decoded += usize
            if (i + 3) & ~3 != index_size - 4 or any(index[i:index_size - 4]):
                raise ValueError("index padding")
        except (ValueError, IndexError):
            raise bad("invalid or corrupt stream index", index_start) from None
        start = index_start - blocks - 12
        if start < 0:
            raise bad("stream index claims more bytes than the file has", index_start)
        header = r.read(start, 12)
        if (header[:6] != _XZ_MAGIC or header[6:8] != flags
                or zlib.crc32(header[6:8]) != struct.unpack_from("<I", header, 8)[0]):
            raise bad("invalid stream header (or the index does not match the blocks)", start)
        ends.append((start, padded_end, decoded))
        end = start
    for start, padded_end, decoded in reversed(ends):
        if not c.add(padded_end, decoded):
            return None
    return c.cuts


def _cuts_bz2(r: _Reader, size: int, c: _Cuts) -> list[int] | None:
    head = r.read(0, 10)
    if not _bz2_stream_start(head, 0) and len(head) >= 10:
        raise CorruptInput("invalid header: not bz2", offset=0, member=0)
    if len(head) < 10:
        return None
    step = 8 << 20
    off = 1
    while off < size:
        chunk = r.read(off, step + 9)
        i = chunk.find(b"BZh")
        while i >= 0:
            if i + 10 <= len(chunk) and _bz2_stream_start(chunk, i):
                if not c.add(off + i):
                    return None
            i = chunk.find(b"BZh", i + 1)
        if off + step >= size:
            break
        if off + step - c.cuts[-1] > c.limit:
            return None
        off += step
    if not c.add(size):
        return None
    return c.cuts


def _bz2_stream_start(buf: bytes, i: int) -> bool:
    return (buf[i:i + 3] == b"BZh" and len(buf) >= i + 10 and buf[i + 3] in _BZ2_LEVELS
            and buf[i + 4:i + 10] in (_BZ2_BLOCK_MAGIC, _BZ2_EOS_MAGIC))


# -------------------------------------------------------------------------------- Decoder

def zlib_module(backend: str):
    if backend == "zlib":
        return zlib
    try:
        if backend == "zlib-ng":
            from zlib_ng import zlib_ng
            return zlib_ng
        if backend == "isal":
            from isal import isal_zlib
            return isal_zlib
    except ImportError as e:
        raise UsageError(f"backend {backend!r} is not installed ({e})") from None
    raise UsageError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")


def _deflate_message(err: Exception, fmt: str) -> str:
    text = str(err)
    low = text.lower()
    if "incorrect data check" in low:
        return "bad Adler-32" if fmt == "zlib" else "bad CRC-32"
    if "incorrect length check" in low:
        return "length mismatch (ISIZE)"
    if "incorrect checksum" in low:                    # isal: CRC-32 and ISIZE alike
        return "bad Adler-32" if fmt == "zlib" else "bad CRC-32 or length mismatch (ISIZE)"
    if "header" in low or "compression method" in low or "compress method" in low \
            or "window size" in low:
        return f"invalid header ({text.split(': ', 1)[-1]})"
    if "invalid block type" in low:
        return "invalid block type"
    return f"corrupt deflate data ({text.split(': ', 1)[-1]})"


def _zstd_message(err: Exception) -> str:
    text = str(err).split("error: ", 1)[-1]
    low = text.lower()
    if "checksum" in low:
        return "bad checksum (XXH64)"
    if "frame parameter" in low or "unknown frame descriptor" in low or "prefix" in low:
        return f"invalid header ({text})"
    if "too much memory" in low or "window" in low:
        return f"unsupported frame: {text} (window too large)"
    return f"corrupt data ({text})"


_LZ4_MESSAGES = {
    "contentChecksum_invalid": "bad content checksum (XXH32)",
    "blockChecksum_invalid": "bad block checksum (XXH32)",
    "headerChecksum_invalid": "invalid header (bad header checksum)",
    "frameSize_wrong": "length mismatch (content size)",
    "decompressionFailed": "corrupt data",
}


def _lz4_message(err: Exception) -> str:
    code = str(err).rsplit("ERROR_", 1)[-1].strip()
    if code in _LZ4_MESSAGES:
        return _LZ4_MESSAGES[code]
    if code.startswith(("frameType", "maxBlockSize", "reservedFlag", "headerVersion",
                        "frameHeader", "parameter")):
        return f"invalid header ({code})"
    return f"corrupt data ({code})"


class Decoder:
    """Strict streaming decoder for one format over a sequence of members.

    Decoder(fmt, backend='zlib'): `backend` picks the deflate implementation for gzip, bgzf and
    zlib ('zlib', 'zlib-ng' or 'isal'); other formats ignore it.

    decompress(data, max_length=-1) -> bytes: feed compressed bytes, get up to `max_length`
    bytes of output (-1: all). When `max_length` limits the output the unconsumed input stays
    inside (a reference for `bytes` input, a copy otherwise): call decompress(b'', max_length)
    again until `needs_input` is True.
    needs_input: True when all given input is consumed and more is needed (or the data may end
    here); then call finish() at the end of the input, which raises CorruptInput when the data
    ended inside a member or held no member at all (but lz4: see the module rules).
    members: members completed so far. offset: base + compressed bytes consumed so far.
    base: set by the caller to the compressed offset of the first byte given.

    Errors raise CorruptInput ('bad CRC-32', 'length mismatch', 'invalid header', 'truncated
    inside member 3', 'trailing garbage after member 2', 'invalid block type', ...) with the
    compressed offset and the member index; after an error every call raises it again.
    """

    def __init__(self, fmt: str, backend: str = "zlib"):
        _check_format(fmt)
        self.fmt = fmt
        self.backend = backend
        self.base = 0
        self.members = 0
        self._buf = _EMPTY          # pending input (a memoryview)
        self._pos = 0               # consumed up to here
        self._owned = True          # _buf cannot change under us (bytes)
        self._held = 0              # bytes before _pos an inner bz2/lzma object may still hold
        self._before = 0            # input bytes dropped before _buf[0]
        self._excess = b""          # zstd output beyond max_length
        self._excess_pos = 0
        self._needs_input = True
        self._error: CorruptInput | None = None
        self._finished = False
        self._state = "head"
        self._inner = None
        self._more = False          # the inner decoder may have output without more input
        self._mdone = 0             # input consumed in the current member
        self._mleft = 0             # input left in the current member when known (BGZF)
        self._pad = 0               # xz stream padding bytes in a row
        self._skip_left = 0
        self._skipped = False       # skippable frames seen in the current member
        if fmt in ("gzip", "bgzf", "zlib"):
            self._zmod = zlib_module(backend)
            self._zerr = self._zmod.error
            self._wbits = 15 if fmt == "zlib" else 31
            self._step = Decoder._step_deflate  # unbound: no cycle through self
        elif fmt == "zstd":
            import zstandard
            self._zstd = zstandard
            self._zctx = zstandard.ZstdDecompressor()
            self._step = Decoder._step_zstd
        elif fmt == "lz4":
            import lz4.frame
            self._lz4 = lz4.frame
            self._step = Decoder._step_lz4
        else:
            self._step = Decoder._step_stream

    # -- public ---------------------------------------------------------------------------

    @property
    def needs_input(self) -> bool:
        return self._needs_input

    @property
    def offset(self) -> int:
        return self.base + self._before + self._pos

    def decompress(self, data=b"", max_length: int = -1) -> bytes:
        out = self.decompress_parts(data, max_length)
        return out[0] if len(out) == 1 else b"".join(out)

    def decompress_parts(self, data=b"", max_length: int = -1) -> list[bytes]:
        """decompress(), the output as the parts the inner decoder made (one per BGZF block,
        say): a caller that copies them somewhere saves the join (and on large outputs the
        fresh pages it would fault in)."""
        if self._error is not None:
            raise self._error
        if self._finished:
            raise UsageError("Decoder.decompress() after finish()")
        mv = memoryview(data)
        if mv.ndim != 1 or mv.format not in ("B", "b", "c"):
            mv = mv.cast("B")
        if len(mv):
            self._append(mv, isinstance(mv.obj, bytes))
        if max_length is None or max_length < 0:
            max_length = -1
        out = []
        n = 0
        starved = False
        if self._excess:
            n = len(self._excess) - self._excess_pos
            if max_length >= 0 and n > max_length:
                n = max_length
            out.append(self._excess[self._excess_pos:self._excess_pos + n])
            self._excess_pos += n
            if self._excess_pos == len(self._excess):
                self._excess = b""
                self._excess_pos = 0
        try:
            while max_length < 0 or n < max_length:
                room = -1 if max_length < 0 else max_length - n
                chunk = self._step(self, room)
                if chunk is None:
                    starved = True
                    break
                if chunk:
                    if 0 <= room < len(chunk):
                        self._excess = chunk
                        self._excess_pos = room
                        chunk = chunk[:room]
                    out.append(chunk)
                    n += len(chunk)
        except CorruptInput as e:
            self._error = e
            self._inner = None
            self._before += self._pos
            self._buf = _EMPTY
            self._pos = self._held = 0
            raise
        finally:
            self._settle()
        self._needs_input = starved and not self._excess
        return out

    def finish(self) -> None:
        if self._error is not None:
            raise self._error
        if self._finished:
            return
        if not self._needs_input:
            raise UsageError("Decoder.finish() with undecoded data: call decompress(b'', n) "
                             "until needs_input is True")
        m = self.members
        end = self.offset + len(self._buf) - self._pos
        err = None
        if self._state in ("member", "frame", "skip") or len(self._buf) > self._pos:
            err = f"truncated inside member {m}"
        elif self._state == "head" and m == 0 and not self._skipped and self.fmt != "lz4":
            err = f"empty input: no {self.fmt} data"
        elif self._state == "pad" and self.fmt == "xz" and self._pad % 4:
            err = f"invalid stream padding after member {m - 1} (not a multiple of 4 bytes)"
        if err is not None:
            self._error = CorruptInput(err, offset=end, member=m)
            raise self._error
        if self._skipped:                          # trailing skippable frames: one member
            self.members += 1
            self._skipped = False
        self._finished = True

    # -- input buffer ---------------------------------------------------------------------

    def _append(self, mv: memoryview, immutable: bool) -> None:
        keep = self._pos - self._held
        if keep >= len(self._buf):
            self._before += len(self._buf)
            self._buf = mv
            self._pos = 0
            self._held = 0
            self._owned = immutable
        else:
            self._before += keep
            self._buf = memoryview(bytes(self._buf[keep:]) + bytes(mv))
            self._pos -= keep
            self._owned = True

    def _settle(self) -> None:
        keep = self._pos - self._held
        if keep >= len(self._buf):
            self._before += len(self._buf)
            self._buf = _EMPTY
            self._pos = self._held = 0
            self._owned = True
        elif not self._owned:
            self._before += keep
            self._buf = memoryview(bytes(self._buf[keep:]))
            self._pos -= keep
            self._owned = True

    def _unread(self, end: int, unused: bytes) -> None:
        """An inner decoder that has taken input up to `end` finished its member and hands
        back `unused`, the bytes after the member: continue from there. (A decoder that read
        ahead in an earlier call hands back bytes we no longer hold: take them from `unused`.)"""
        pos = end - len(unused)
        if pos >= 0:
            self._pos = pos
            return
        self._before += pos
        self._buf = memoryview(bytes(unused) + bytes(self._buf[end:]))
        self._pos = 0
        self._owned = True

    def _corrupt(self, message: str, at: int | None = None) -> CorruptInput:
        pos = self._pos if at is None else at
        return CorruptInput(message, offset=self.base + self._before + pos, member=self.members)

    def _garbage(self, at: int | None = None) -> CorruptInput:
        return self._corrupt(f"trailing garbage after member {self.members - 1}", at)

    def _slice(self, room: int) -> memoryview:
        """The next input slice for the inner decoder: at most 1 MiB (less when `room` is
        small), and within a member's first bytes small and doubling, up to the BGZF block
        size when known: a library copies what it did not use at a member's end (zlib's, bz2's
        and lzma's unused_data), so slices much longer than the member are waste."""
        size = _SLICE_MAX if room < 0 else max(_SLICE_MIN, min(_SLICE_MAX, room >> 2))
        if self._mleft > 0:
            size = min(size, self._mleft)
        else:
            size = min(size, max(_SLICE_FIRST, 2 * self._mdone))
        return self._buf[self._pos:self._pos + size]

    def _start_member(self, inner, size_hint: int = 0) -> bytes:
        self._inner = inner
        self._more = False
        self._held = 0
        self._mdone = 0
        self._mleft = size_hint
        self._state = "member"
        return b""

    def _consumed(self, n: int) -> None:
        self._pos += n
        self._mdone += n
        self._mleft = max(0, self._mleft - n)

    def _magic(self, magic: bytes, first: bool, name: str) -> bytes | None:
        """Check the next bytes against `magic` (or a skippable frame's for zstd/lz4).

        Returns the available bytes (up to len(magic)) when they match or can still match,
        None when there are none; raises when they cannot be a member start.
        """
        avail = len(self._buf) - self._pos
        if not avail:
            return None
        k = min(avail, len(magic))
        h = bytes(self._buf[self._pos:self._pos + k])
        if h == magic[:k]:
            return h
        if self.fmt in ("zstd", "lz4") and h[0] & 0xF0 == 0x50 and h[1:] == _SKIP_TAIL[:k - 1]:
            return h
        if first:
            raise self._corrupt(f"invalid header: not {name}")
        raise self._garbage()

    # -- gzip, bgzf, zlib ------------------------------------------------------------------

    def _step_deflate(self, room: int):
        if self._state == "member":
            piece = self._slice(room)
            if not len(piece) and not self._more:
                return None
            d = self._inner
            try:
                out = d.decompress(piece, room if room > 0 else 0)
            except self._zerr as e:
                raise self._corrupt(_deflate_message(e, self.fmt)) from None
            if d.eof:
                self._unread(self._pos + len(piece), d.unused_data)
                self.members += 1
                self._inner = None
                self._more = False
                self._state = "head"
            else:
                used = len(piece) - len(d.unconsumed_tail)
                self._consumed(used)
                self._more = 0 <= room <= len(out)
                if not out and not used:
                    return None
            return out
        if self._state == "pad":
            m = _NONZERO.search(self._buf, self._pos)
            if m is not None:
                raise self._garbage(m.start())
            if self._pos == len(self._buf):
                return None
            self._pos = len(self._buf)
            return b""
        # head: a member start, zero padding or garbage
        avail = len(self._buf) - self._pos
        if not avail:
            return None
        first = self.members == 0
        if self.fmt == "zlib":
            if not first:
                raise self._garbage()
        elif self._buf[self._pos] == 0 and not first:
            self._state = "pad"
            return b""
        else:
            h = self._magic(_GZIP_MAGIC, first, "gzip")
            if len(h) < 2:
                return None
        hint = 0
        if self.fmt == "bgzf":                   # BSIZE, when the header is here already
            head = bytes(self._buf[self._pos:self._pos + 18])
            if len(head) == 18 and head[3] & 0x04 and head[10:16] == b"\x06\x00BC\x02\x00":
                hint = (head[16] | head[17] << 8) + 1
        return self._start_member(self._zmod.decompressobj(self._wbits), hint)

    # -- bz2, xz ---------------------------------------------------------------------------

    def _step_stream(self, room: int):
        xz = self.fmt == "xz"
        if self._state == "member":
            d = self._inner
            if d.needs_input:
                piece = self._slice(room)
                if not len(piece):
                    return None
            else:
                piece = _EMPTY
            at = self._pos - self._held
            self._consumed(len(piece))
            try:
                out = d.decompress(piece, room)
            except (OSError, EOFError, lzma.LZMAError, ValueError) as e:
                self._pos -= len(piece)
                raise self._corrupt(self._stream_message(e), at) from None
            if d.eof:
                self._unread(self._pos, d.unused_data)
                self._held = 0
                self.members += 1
                self._inner = None
                self._state = "head"
            elif d.needs_input:
                self._held = 0
            else:
                self._held += len(piece)
            return out
        if self._state == "pad":
            m = _NONZERO.search(self._buf, self._pos)
            end = len(self._buf) if m is None else m.start()
            self._pad += end - self._pos
            self._pos = end
            if m is None:
                return None
            if self._pad % 4:
                raise self._corrupt(f"invalid stream padding after member {self.members - 1} "
                                    "(not a multiple of 4 bytes)")
            self._state = "head"
            self._pad = 0
            return b""
        avail = len(self._buf) - self._pos
        if not avail:
            return None
        first = self.members == 0
        if xz:
            if not first and self._buf[self._pos] == 0:
                self._state = "pad"
                self._pad = 0
                return b""
            h = self._magic(_XZ_MAGIC, first, "xz")
            if len(h) < 6:
                return None
            return self._start_member(lzma.LZMADecompressor(lzma.FORMAT_XZ))
        else:
            h = self._magic(b"BZh", first, "bz2")
            if len(h) < 3:
                return None
            if avail < 4:
                return None
            if self._buf[self._pos + 3] not in _BZ2_LEVELS:
                if first:
                    raise self._corrupt("invalid header: not bz2")
                raise self._garbage()
            return self._start_member(bz2.BZ2Decompressor())

    def _stream_message(self, e: Exception) -> str:
        text = str(e)
        if self.fmt == "bz2":
            return f"corrupt data: bad CRC or invalid block ({text})"
        if "format not supported" in text:
            return f"invalid header ({text})"
        return f"corrupt data: bad check or invalid block ({text})"

    # -- zstd ------------------------------------------------------------------------------

    def _step_skip(self):
        take = min(self._skip_left, len(self._buf) - self._pos)
        if not take and self._skip_left:
            return None
        self._pos += take
        self._skip_left -= take
        if not self._skip_left:
            self._state = "head"
        return b""

    def _head_frames(self, magic: bytes, name: str):
        """Common head state of zstd and lz4: returns the 4 magic bytes of a real frame at
        _pos, None when more input is needed, or b'' after starting a skippable frame."""
        first = self.members == 0 and not self._skipped
        h = self._magic(magic, first, name)
        if h is None or len(h) < 4:
            return None
        if h != magic:                                  # skippable frame
            if len(self._buf) - self._pos < 8:
                return None
            self._skip_left = struct.unpack_from("<I", self._buf, self._pos + 4)[0]
            self._pos += 8
            self._skipped = True
            self._state = "skip"
            return b""
        return h

    def _frame_done(self):
        self.members += 1
        self._skipped = False
        self._inner = None
        self._state = "head"

    def _step_zstd(self, room: int):
        if self._state == "skip":
            return self._step_skip()
        if self._state == "head":
            h = self._head_frames(_ZSTD_MAGIC, "zstd")
            if not h:
                return h
            buf, pos = self._buf, self._pos
            if len(buf) - pos < 6:
                return None
            fhd = buf[pos + 4]
            if fhd & 0x08:
                raise self._corrupt("invalid header: reserved bit set in frame header", pos + 4)
            single = fhd >> 5 & 1
            hlen = 5 + (not single) + (0, 1, 2, 4)[fhd & 3] + (single, 2, 4, 8)[fhd >> 6]
            if len(buf) - pos < hlen:
                return None
            self._inner = self._zctx.decompressobj()
            self._zcheck = 4 if fhd & 0x04 else 0
            self._unit = hlen                           # bytes of the current unit to feed
            self._most = 0                              # output bound of the current block
            self._phase = "block"
            self._state = "frame"
            return b""
        # frame: feed whole blocks, at most `room` bytes of output's worth (at least one block)
        buf, pos = self._buf, self._pos
        end = len(buf)
        p = pos
        unit, phase = self._unit, self._phase
        budget = self._most if unit and phase != "end" else 0   # a block fed in part
        while True:
            if unit:
                take = min(unit, end - p)
                p += take
                unit -= take
                if unit:
                    break
            if phase == "block":
                if end - p < 3 or p - pos >= _SLICE_MAX:
                    break
                bh = buf[p] | buf[p + 1] << 8 | buf[p + 2] << 16
                btype = bh >> 1 & 3
                size = bh >> 3
                if btype == 3:
                    self._pos, self._unit, self._phase = p, unit, phase
                    raise self._corrupt(f"invalid block type in member {self.members}", p)
                most = _ZSTD_BLOCK_MAX if btype == 2 else size
                if room >= 0 and budget and budget + most > room:
                    break
                budget += most
                self._most = most
                p += 3
                unit = 1 if btype == 1 else size
                if bh & 1:
                    phase = "check"
            elif phase == "check":
                unit = self._zcheck
                phase = "end"
            else:
                break
        done = phase == "end" and not unit
        if p == pos and not done:
            return None
        out = b""
        if p > pos:
            try:
                out = self._inner.decompress(buf[pos:p])
            except self._zstd.ZstdError as e:
                raise self._corrupt(_zstd_message(e)) from None
        self._pos, self._unit, self._phase = p, unit, phase
        if done:
            if not self._inner.eof:
                raise self._corrupt(f"corrupt data: frame of member {self.members} does not end "
                                    "after its last block", p)
            self._frame_done()
        return out

    # -- lz4 -------------------------------------------------------------------------------

    def _step_lz4(self, room: int):
        if self._state == "skip":
            return self._step_skip()
        if self._state == "head":
            if bytes(self._buf[self._pos:self._pos + 4]) == _LZ4_LEGACY_MAGIC:
                raise self._corrupt("legacy lz4 frame format (lz4 -l) is not supported")
            h = self._head_frames(_LZ4_MAGIC, "lz4")
            if not h:
                return h
            self._start_member(self._lz4.create_decompression_context())
            self._state = "frame"
            return b""
        piece = self._slice(room)
        if not len(piece) and not self._more:
            return None
        try:
            out, used, eof = self._lz4.decompress_chunk(self._inner, piece, max_length=room)
        except RuntimeError as e:
            raise self._corrupt(_lz4_message(e)) from None
        self._consumed(used)
        if eof:
            self._more = False
            self._frame_done()
        else:
            self._more = 0 <= room <= len(out)
            if not out and not used:
                return None
        return out
