"""libdeflate's C functions through ctypes: inflate a block straight into a buffer we name.

The `deflate` package (the `fast` extra) returns each inflated block as a new bytes object,
which a worker then copies into its output slot: for BGZF, a 64 KiB object and a copy per
block, 16,000 of them per GiB. Called through ctypes, libdeflate writes into the slot itself
(workers/decompress.py).

Where the library comes from: the `deflate` package's extension module, which carries
libdeflate and exports its API (so it is the same code as the package's own functions), else
the system's libdeflate (Debian's libdeflate0, which bgzip uses). `load()` returns None when
neither is there, or when the one found lacks a function: callers then keep to the package.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any, Iterator

SUCCESS = 0          # enum libdeflate_result
BAD_DATA = 1
SHORT_OUTPUT = 2
INSUFFICIENT_SPACE = 3

_loaded: Any = False   # not tried yet


class Libdeflate:
    """The functions a BGZF block needs, and one decompressor (not thread-safe: one per
    process, which is what a worker is)."""

    def __init__(self, lib: Any, path: str = ""):
        self.path = path        # the library the functions come from
        lib.libdeflate_alloc_decompressor.restype = ctypes.c_void_p
        lib.libdeflate_alloc_decompressor.argtypes = []
        # (decompressor, in, in_nbytes, out, out_nbytes_avail, actual_out_nbytes_ret)
        lib.libdeflate_deflate_decompress.restype = ctypes.c_int
        lib.libdeflate_deflate_decompress.argtypes = [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
            ctypes.c_size_t, ctypes.c_void_p]
        lib.libdeflate_crc32.restype = ctypes.c_uint32
        lib.libdeflate_crc32.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]
        self.decompressor = lib.libdeflate_alloc_decompressor()
        if not self.decompressor:
            raise MemoryError("libdeflate_alloc_decompressor failed")
        self._inflate = lib.libdeflate_deflate_decompress
        self.crc32 = lib.libdeflate_crc32   # crc32(0, address, length)

    def inflate(self, src: int, src_len: int, dst: int, size: int) -> int:
        """Inflate the raw deflate data at address `src` into exactly `size` bytes at `dst`;
        a libdeflate result code (SUCCESS, or why not: a block that decodes to more or fewer
        bytes than `size` is not SUCCESS)."""
        return self._inflate(self.decompressor, src, src_len, dst, size, None)


def load() -> Libdeflate | None:
    """libdeflate, once per process; None when it cannot be found or bound."""
    global _loaded
    if _loaded is False:
        _loaded = None
        for path in _candidates():
            try:
                _loaded = Libdeflate(ctypes.CDLL(path), path)
                break
            except (OSError, AttributeError, MemoryError):
                continue
    return _loaded


def _candidates() -> Iterator[str]:
    try:
        from deflate import _deflate   # the package's module: libdeflate, exported
        yield _deflate.__file__
    except (ImportError, AttributeError):
        pass
    system = ctypes.util.find_library("deflate")   # runs ldconfig: only when needed
    if system:
        yield system


def address(buffer: Any) -> int:
    """The address of a writable buffer's first byte (a memoryview of the arena's mapping).
    Valid while the buffer's memory stays mapped, which for a slot is the worker's lifetime;
    the export ctypes takes is released at once, so the view can be released as usual."""
    pointer = ctypes.c_char.from_buffer(buffer)
    try:
        return ctypes.addressof(pointer)
    finally:
        del pointer
