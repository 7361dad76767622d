"""Compression transforms: gzip (pigz-style, one member), BGZF, zstd, bz2, xz, lz4.

Rules:
- Every chunk is compressed on its own by a worker; the output of the job is still one
  ordinary file that the standard tools read, and it is byte-identical for any worker count
  (it depends only on the chunk boundaries, which the source fixes).
- gzip / zlib / raw deflate, pigz-style: each chunk is raw deflate primed with the 32 KiB of
  input before it (`context`, handed over by the source), ended by a sync flush (so it ends on
  a byte boundary and the next chunk's blocks follow it directly). The worker checksums its
  chunk (CRC-32 for gzip, Adler-32 for zlib); the sink folds the checksums in order
  (checksums.py) and the trailer ends the stream with an empty final block, the combined
  checksum and the length. No chunk needs to know it is the last. With `independent: true`,
  or when gzip is not the first stage (its input is then not the source's bytes), chunks are
  not primed: ~0.1% larger output at 4 MiB chunks, and each chunk can be inflated on its own.
- BGZF (bgzip's format): the chunk is cut into blocks of 65280 bytes (bgzip's block size: a
  block of incompressible data still fits the 64 KiB limit), each a complete gzip member with
  the `BC` extra field holding the block size; the trailer is the standard empty EOF block.
  `index: PATH` also writes a `.gzi` index (what `bgzip -i` writes, usable by `bgzip -b/-s`).
- zstd, lz4: one frame per chunk, with content size and checksum. bz2, xz: one stream per
  chunk (xz with a CRC-64 check). The tools read concatenated frames and streams as one file.
- Backends for deflate: `zlib` (the standard library), `zlib-ng`, `isal` and, for BGZF only,
  `libdeflate` (optional: `pip install dataflow[fast]`); `auto` takes the fastest installed one
  that supports the level and the use.
"""
from __future__ import annotations

import importlib
import struct
import zlib
from typing import Annotated, Any, Literal

import msgspec

from dataflow.checksums import adler32_combine, crc32_combine
from dataflow.streams import ChunkInfo, Transform

WINDOW = 32 << 10          # deflate's window: the most a dictionary can be used for
EMPTY_FINAL_BLOCK = b"\x03\x00"  # a final fixed-Huffman block holding only end-of-block
BGZF_BLOCK = 0xFF00        # input per BGZF block, as bgzip: deflate of incompressible data
                           # (stored blocks) plus 26 bytes of header and trailer fit in 64 KiB
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")

Level = Annotated[int, msgspec.Meta(ge=0, le=9)]
Backend = Literal["auto", "zlib", "zlib-ng", "isal", "libdeflate"]

# backend name -> (module, highest level); zlib, zlib-ng and isal share zlib's API (streaming,
# dictionaries, sync flush); libdeflate (package `deflate`) only compresses whole buffers, so
# it serves BGZF blocks, not pigz-style gzip. `auto` tries the fastest first (README:
# "Compression backends"); isal's levels 0-3 are its own scale, so only by name.
_BACKENDS: dict[str, tuple[str, int]] = {
    "libdeflate": ("deflate", 9),
    "zlib-ng": ("zlib_ng.zlib_ng", 9),
    "isal": ("isal.isal_zlib", 3),
    "zlib": ("zlib", 9),
}
STREAMING = ("zlib", "zlib-ng", "isal")
AUTO_ORDER = {"gzip": ("zlib-ng", "zlib"), "bgzf": ("libdeflate", "zlib-ng", "zlib")}
# bgzip (htslib built with libdeflate) maps zlib's levels onto libdeflate's 1-12 like this;
# using the same map makes our BGZF the size of bgzip's at the same level
LIBDEFLATE_LEVEL = (0, 1, 2, 3, 5, 6, 7, 8, 10, 12)


def deflate_backend(backend: str, level: int, use: str = "gzip") -> tuple[str, Any]:
    """(name, module) of the backend for `use` ("gzip" or "bgzf") at `level`. Raises
    ValueError when it is unknown, not installed, or cannot do that level or use."""
    names = AUTO_ORDER[use] if backend == "auto" else (backend,)
    for name in names:
        if name not in _BACKENDS:
            raise ValueError(f"unknown backend {name!r}; one of auto, {', '.join(_BACKENDS)}")
        if use == "gzip" and name not in STREAMING:
            raise ValueError(f"backend {name} cannot prime chunks or sync-flush, so it cannot "
                             f"write pigz-style gzip; use it for bgzf, or one of "
                             f"{', '.join(STREAMING)}")
        module, top = _BACKENDS[name]
        if level > top:
            if backend == "auto":
                continue
            raise ValueError(f"backend {name} supports levels 0-{top}, not {level}")
        try:
            return name, importlib.import_module(module)
        except ImportError:
            if backend == "auto":
                continue
            package = {"zlib-ng": "zlib-ng", "isal": "isal", "libdeflate": "deflate"}[name]
            raise ValueError(f"backend {name} is not installed: pip install "
                             f"'dataflow[fast]' (or pip install {package})") from None
    return "zlib", zlib  # pragma: no cover - zlib is always last in AUTO_ORDER


def fastest_checksums() -> tuple[Any, Any]:
    """(crc32, adler32) from the fastest installed implementation: the checksum is the same
    whoever computes it, and zlib-ng's or isal's run ~13x faster than the standard zlib's
    here (53 vs 4 GB/s), a few percent of a gzip -6 job's CPU."""
    for module in ("zlib_ng.zlib_ng", "isal.isal_zlib"):
        try:
            m = importlib.import_module(module)
            return m.crc32, m.adler32
        except (ImportError, AttributeError):
            continue
    return zlib.crc32, zlib.adler32


class _Deflate(Transform):
    """Shared by gzip and bgzf: level, backend, the deflate module loaded per worker."""

    level: int
    backend: str
    use = "gzip"
    needs_records = False

    def check(self) -> None:
        deflate_backend(self.backend, self.level, self.use)

    def setup(self) -> None:
        self._backend, self._z = deflate_backend(self.backend, self.level, self.use)
        self._crc32, self._adler32 = fastest_checksums()


class Gzip(_Deflate):
    name = "gzip"
    context = WINDOW

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        level: Level = 6
        format: Literal["gzip", "zlib", "raw"] = "gzip"
        independent: bool = False
        name: str | None = None
        mtime: Annotated[int, msgspec.Meta(ge=0, lt=1 << 32)] = 0
        backend: Backend = "auto"

    def __init__(self, level: int = 6, format: str = "gzip", independent: bool = False,
                 name: str | None = None, mtime: int = 0, backend: str = "auto"):
        if format not in ("gzip", "zlib", "raw"):
            raise ValueError(f"format must be gzip, zlib or raw, not {format!r}")
        if not 0 <= level <= 9:
            raise ValueError(f"level must be 0-9, not {level}")
        self.level = level
        self.format = format
        self.independent = independent
        self.name_field = name
        self.mtime = mtime
        self.backend = backend

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        z = self._z
        zdict = chunk.context if chunk.context is not None and not self.independent else None
        if zdict is not None and len(zdict):
            c = z.compressobj(self.level, z.DEFLATED, -15, 8, z.Z_DEFAULT_STRATEGY, zdict)
        else:
            c = z.compressobj(self.level, z.DEFLATED, -15, 8, z.Z_DEFAULT_STRATEGY)
        out = c.compress(data) + c.flush(z.Z_SYNC_FLUSH)
        if self.format == "gzip":
            chunk.summary = [self._crc32(data), len(data)]
        elif self.format == "zlib":
            chunk.summary = [self._adler32(data), len(data)]
        return out

    # the ordered fold: (checksum, length) of everything so far
    def initial(self) -> Any:
        return [0 if self.format == "gzip" else 1, 0]

    def fold(self, acc: Any, summary: Any) -> Any:
        check, length = summary
        combine = crc32_combine if self.format == "gzip" else adler32_combine
        return [combine(acc[0], check, length), acc[1] + length]

    def result(self, acc: Any) -> Any:
        if self.format == "raw":
            return None
        key = "crc32" if self.format == "gzip" else "adler32"
        return {key: acc[0], "bytes_in": acc[1]}

    def header(self) -> bytes:
        if self.format == "raw":
            return b""
        if self.format == "zlib":
            flevel = 0 if self.level < 2 else 1 if self.level < 6 else 2 if self.level == 6 else 3
            cmf = 0x78  # deflate, 32 KiB window
            flg = flevel << 6
            flg |= 31 - (cmf * 256 + flg) % 31
            return bytes([cmf, flg])
        flags = 0
        name = b""
        if self.name_field:
            name = self.name_field.encode("latin-1", "replace").replace(b"\0", b"_") + b"\0"
            flags |= 0x08  # FNAME
        xfl = 2 if self.level == 9 else 4 if self.level == 1 else 0
        return struct.pack("<BBBBIBB", 0x1F, 0x8B, 8, flags, self.mtime, xfl, 3) + name

    def trailer(self, result: Any) -> bytes:
        if self.format == "raw":
            return EMPTY_FINAL_BLOCK
        if self.format == "zlib":
            return EMPTY_FINAL_BLOCK + struct.pack(">I", result["adler32"])
        return EMPTY_FINAL_BLOCK + struct.pack("<II", result["crc32"],
                                               result["bytes_in"] & 0xFFFFFFFF)


def _bgzf_member(body: bytes, crc: int, length: int) -> bytes:
    header = struct.pack("<BBBBIBBHBBHH", 0x1F, 0x8B, 8, 4, 0, 0, 0xFF, 6, 66, 67, 2,
                         len(body) + 25)
    return b"".join((header, body, struct.pack("<II", crc, length)))


class Bgzf(_Deflate):
    name = "bgzf"

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        level: Level = 6
        backend: Backend = "auto"
        index: str | None = None

    def __init__(self, level: int = 6, backend: str = "auto", index: str | None = None):
        if not 0 <= level <= 9:
            raise ValueError(f"level must be 0-9, not {level}")
        self.level = level
        self.backend = backend
        self.index = index

    use = "bgzf"

    def setup(self) -> None:
        super().setup()
        z, level = self._z, self.level
        if self._backend == "libdeflate":
            lib_level = LIBDEFLATE_LEVEL[level]
            self._deflate = lambda block: z.deflate_compress(block, lib_level)
        else:
            def deflate(block: memoryview) -> bytes:
                c = z.compressobj(level, z.DEFLATED, -15, 8, z.Z_DEFAULT_STRATEGY)
                return c.compress(block) + c.flush()
            self._deflate = deflate

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        deflate, crc32 = self._deflate, self._crc32
        blocks = []
        for i in range(0, len(data), BGZF_BLOCK):
            block = data[i:i + BGZF_BLOCK]
            # BGZF_BLOCK bytes always fit in BGZF_MAX once deflated (stored blocks at worst)
            blocks.append(_bgzf_member(deflate(block), crc32(block), len(block)))
        if self.index is not None:
            chunk.summary = [len(b) for b in blocks] + [len(data)]
        return blocks

    # the fold builds the index: (compressed, uncompressed) offset of every block but the first
    def initial(self) -> Any:
        return [[], 0, 0] if self.index is not None else None

    def fold(self, acc: Any, summary: Any) -> Any:
        entries, coffset, uoffset = acc
        *sizes, length = summary
        for n, size in enumerate(sizes):
            if coffset:
                entries.append((coffset, uoffset + n * BGZF_BLOCK))
            coffset += size
        return [entries, coffset, uoffset + length]

    def result(self, acc: Any) -> Any:
        if acc is None:
            return None
        self._entries = acc[0]
        return {"blocks": len(acc[0]) + (1 if acc[1] else 0), "bytes_in": acc[2],
                "index": self.index}

    def trailer(self, result: Any) -> bytes:
        if self.index is not None:
            self.write_index(self._entries)
        return BGZF_EOF

    def write_index(self, entries: list[tuple[int, int]]) -> None:
        """Write the .gzi: the entry count, then (compressed, uncompressed) offset pairs, all
        little-endian u64; through a FileSink, so it lands whole or not at all."""
        from dataflow.sinks import FileSink

        assert self.index is not None
        data = struct.pack("<Q", len(entries)) + b"".join(
            struct.pack("<QQ", c, u) for c, u in entries)
        sink = FileSink(self.index)
        sink.open()
        try:
            sink.write(memoryview(data))
            sink.close()
        except BaseException:
            sink.abort()
            raise


class Zstd(Transform):
    name = "zstd"
    needs_records = False

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        level: Annotated[int, msgspec.Meta(ge=-7, le=22)] = 3
        checksum: bool = True

    def __init__(self, level: int = 3, checksum: bool = True):
        self.level = level
        self.checksum = checksum

    def check(self) -> None:
        _optional("zstandard", "zstd")

    def worker_memory(self, chunk_size: int) -> int:
        try:
            import zstandard
        except ImportError:
            return 0        # check() says so
        params = zstandard.ZstdCompressionParameters.from_level(self.level,
                                                                source_size=chunk_size)
        return params.estimated_compression_context_size()

    def setup(self) -> None:
        zstandard = _optional("zstandard", "zstd")
        self._c = zstandard.ZstdCompressor(level=self.level, write_checksum=self.checksum,
                                           write_content_size=True)

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        return self._c.compress(data)


class Bz2(Transform):
    name = "bz2"
    needs_records = False

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        level: Annotated[int, msgspec.Meta(ge=1, le=9)] = 9

    def __init__(self, level: int = 9):
        self.level = level

    def worker_memory(self, chunk_size: int) -> int:
        return (400 << 10) + 8 * self.level * 100_000   # bzip2(1): 400k + 8 x block size

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        import bz2

        return bz2.compress(data, self.level)


# xz(1) presets 0-9: (compressor memory, dictionary size), MiB
XZ_ENCODER = [(3, 0.25), (9, 1), (17, 2), (32, 4), (48, 4), (94, 8), (94, 8), (186, 16),
              (370, 32), (674, 64)]


class Xz(Transform):
    name = "xz"
    needs_records = False

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        level: Annotated[int, msgspec.Meta(ge=0, le=9)] = 6
        extreme: bool = False

    def __init__(self, level: int = 6, extreme: bool = False):
        self.level = level
        self.extreme = extreme

    def worker_memory(self, chunk_size: int) -> int:
        """xz(1)'s encoder memory per preset is for input as long as the dictionary; most of
        it (the match finder's 8 bytes and the buffer's byte per dictionary position) is
        touched only as far as the input goes (presets 4-9, binary-tree match finders):
        measured here, a 4 MiB chunk at -6 took 54 MiB, at -9 101 MiB; this bound gives 58
        and 134. Presets 0-3 count in full."""
        total, dictionary = (int(n * (1 << 20)) for n in XZ_ENCODER[self.level])
        if self.level <= 3:     # hash-chain match finders: their tables are most of it
            return total
        return total - 9 * dictionary + 9 * min(chunk_size, dictionary)

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        import lzma

        preset = self.level | (lzma.PRESET_EXTREME if self.extreme else 0)
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                             preset=preset)


class Lz4(Transform):
    name = "lz4"
    needs_records = False

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        level: Annotated[int, msgspec.Meta(ge=0, le=16)] = 0

    def __init__(self, level: int = 0):
        self.level = level

    def check(self) -> None:
        _optional("lz4.frame", "lz4")

    def setup(self) -> None:
        self._frame = _optional("lz4.frame", "lz4")

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        return self._frame.compress(data, compression_level=self.level, content_checksum=True,
                                    store_size=True)


def _optional(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise ImportError(f"{what} needs the {package} package: pip install "
                          f"'dataflow[compression]' (or pip install {package})") from None
