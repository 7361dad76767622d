"""The BGZF fast path of the decompress stage (whole blocks inflated in one call and checked
against their CRC-32 and length) against the strict streaming Decoder it falls back to: the
same bytes for good input, and for damaged input the same error (message, compressed offset,
member), whatever block the damage is in and whichever backend inflates."""
from __future__ import annotations

import random
import struct
import subprocess
import zlib

import pytest

from dataflow.containers import CorruptInput
from dataflow.streams import ChunkInfo, SlotFiller
from workers.compress import BGZF_EOF
from workers.decompress import Decompress

from conftest import require_tool

BACKENDS = ["auto", "libdeflate", "isal", "zlib-ng", "zlib"]
BASE = 1 << 20  # the chunk's offset in the compressed stream: errors count from the stream


def block(payload: bytes, *, deflated: bytes | None = None, crc: int | None = None,
          size: int | None = None) -> bytes:
    """One BGZF block of `payload` (deflate data, CRC and length overridable)."""
    if deflated is None:
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        deflated = c.compress(payload) + c.flush()
    crc = zlib.crc32(payload) if crc is None else crc
    size = len(payload) if size is None else size
    bsize = 18 + len(deflated) + 8 - 1
    head = b"\x1f\x8b\x08\x04" + bytes(6) + struct.pack("<H2sHH", 6, b"BC", 2, bsize)
    return head + deflated + struct.pack("<II", crc & 0xFFFFFFFF, size)


def payloads(n: int = 12) -> list[bytes]:
    rng = random.Random(7)
    words = [b"GET", b"POST", b"/index.html", b"200", b"404", b"\n", b"-", b"curl/8.0"]
    return [b" ".join(rng.choice(words) for _ in range(rng.randrange(1, 9000)))
            for _ in range(n)]


def decode(data: bytes, backend: str, strict: bool) -> tuple[bytes, CorruptInput | None]:
    """The stage's output and error: through its fast path, or (`strict`) through the
    streaming Decoder alone, with the inflater the fast path falls back to (messages differ a
    little between libraries). Every backend is installed for the tests (dataflow[fast])."""
    stage = Decompress(format="bgzf", backend=backend)
    stage.setup()
    info = ChunkInfo()
    info.offset = BASE
    view = memoryview(data)
    out = bytearray()
    try:
        for piece in stage._pieces(view, BASE) if strict else stage.transform(view, info):
            out += piece
    except CorruptInput as e:
        return bytes(out), e
    return bytes(out), None


def run_fast(data: bytes, backend: str) -> tuple[bytes, CorruptInput | None]:
    return decode(data, backend, strict=False)


FILLED = ("auto", "libdeflate")   # the backends whose chunks fill the output slot themselves


def run_fill(data: bytes, backend: str, slot: int = 1 << 20) -> tuple[bytes, CorruptInput | None]:
    """The stage's output written into `slot`-sized output slots, as the worker drives a
    SlotFiller (worker.emit_filled): the input is writable shared memory there, so here too."""
    stage = Decompress(format="bgzf", backend=backend)
    stage.setup()
    info = ChunkInfo()
    info.offset = BASE
    filler = stage.transform(memoryview(bytearray(data)), info)
    assert isinstance(filler, SlotFiller)
    out = bytearray()
    dest = memoryview(bytearray(slot))
    pos = 0
    try:
        while not filler.done:
            n = filler.fill(dest[pos:])
            if n == 0 and not filler.done:
                assert pos > 0, "a block that does not fit an empty slot"
                out += dest[:pos]      # the worker sends the slot as a piece
                pos = 0
            pos += n
            if pos == slot:
                out += dest[:pos]
                pos = 0
        out += dest[:pos]
        pos = 0
        for part in filler.rest:       # the strict decoder's, past the plain blocks
            out += part
    except CorruptInput as e:
        return bytes(out + dest[:pos]), e
    return bytes(out), None


def run_strict(data: bytes, backend: str) -> tuple[bytes, CorruptInput | None]:
    return decode(data, backend, strict=True)


def same_outcome(data: bytes, backend: str, truth: bytes = b"") -> CorruptInput | None:
    """Run both; with an error, what the fast path gave out before it is a prefix of `truth`
    (the job discards a failed chunk's output, but it must not be garbage)."""
    strict_out, strict_err = run_strict(data, backend)
    runs = [run_fast(data, backend)]
    if backend in FILLED:
        runs += [run_fill(data, backend), run_fill(data, backend, slot=70_000)]
    for fast_out, fast_err in runs:
        if strict_err is None:
            assert fast_err is None, fast_err
            assert fast_out == strict_out
            continue
        assert fast_err is not None, "the fast path accepted what the strict decoder refuses"
        assert (fast_err.message, fast_err.offset, fast_err.member) == \
            (strict_err.message, strict_err.offset, strict_err.member)
        assert fast_out == truth[:len(fast_out)]
    return runs[0][1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_good_blocks_decode_to_the_payloads(backend):
    parts = payloads()
    data = b"".join(block(p) for p in parts) + BGZF_EOF
    out, err = run_fast(data, backend)
    assert err is None and out == b"".join(parts)
    assert same_outcome(data, backend) is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_files_made_by_bgzip_decode_like_the_strict_decoder(tmp_path, backend):
    require_tool("bgzip")
    text = b"".join(payloads(40))
    data = subprocess.run(["bgzip", "-c"], input=text, capture_output=True, check=True).stdout
    out, err = run_fast(data, backend)
    assert err is None and out == text
    if backend in FILLED:
        assert run_fill(data, backend) == (text, None)


@pytest.mark.parametrize("slot", [1 << 16, (1 << 16) + 1, 100_000, 3 << 20])
def test_blocks_fill_slots_of_any_size_whole(slot):
    """A block goes into the slot whole or waits for the next one: any slot that holds the
    largest block (64 KiB) takes the output, in order, without a byte lost or repeated."""
    require_tool("bgzip")
    text = b"".join(payloads(60))
    data = subprocess.run(["bgzip", "-c"], input=text, capture_output=True, check=True).stdout
    assert run_fill(data, "libdeflate", slot) == (text, None)


def _damaged() -> tuple[list[tuple[str, bytes, str | None]], bytes]:
    parts = payloads(6)
    good = [block(p) for p in parts]
    third = parts[2]
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    deflated = c.compress(third) + c.flush()

    def chunk(bad: bytes) -> bytes:
        return b"".join(good[:2]) + bad + b"".join(good[3:]) + BGZF_EOF

    flipped = bytearray(good[2])
    flipped[18 + len(deflated) // 2] ^= 0xFF
    return [
        ("bad CRC", chunk(block(third, crc=zlib.crc32(third) ^ 1)), "CRC"),
        ("bad length", chunk(block(third, size=len(third) + 1)), "length"),
        ("length over 64 KiB", chunk(block(third, size=1 << 20)), "length"),
        ("flipped deflate byte", chunk(bytes(flipped)), ""),
        ("truncated last block", (b"".join(good))[:-5], "truncated"),
        ("truncated header", b"".join(good) + good[0][:10], "truncated"),
        ("trailing junk", b"".join(good) + b"junk!", "trailing"),
        ("bad magic mid-chunk", chunk(b"\x1f\x8c" + good[2][2:]), ""),
        ("deflate data past the trailer", chunk(block(third, deflated=deflated[:-3])), ""),
        # legal gzip that is not a plain BGZF block: zero padding, a gzip member without BC
        ("zero padding", b"".join(good) + bytes(64), None),
        ("plain gzip member", b"".join(good[:3]) + zlib_gzip(third) + b"".join(good[3:]), None),
        ("good", chunk(good[2]), None),
    ], b"".join(parts)


def zlib_gzip(payload: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    return c.compress(payload) + c.flush()


DAMAGED, TRUTH = _damaged()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,data,fragment", DAMAGED, ids=[d[0] for d in DAMAGED])
def test_damage_anywhere_gives_the_strict_decoders_error(backend, name, data, fragment):
    err = same_outcome(data, backend, TRUTH)
    if fragment is None:
        assert err is None
    else:
        assert err is not None, f"{name}: accepted"
        assert fragment.lower() in err.message.lower()
        assert err.offset >= BASE


@pytest.mark.parametrize("backend", ["isal", "zlib-ng", "zlib", "libdeflate"])
def test_bytes_between_the_deflate_end_and_the_trailer(backend):
    """A block whose deflate data ends early, padded to its trailer, with a right CRC-32 and
    length: the zlib-family backends refuse it as the strict decoder does; libdeflate cannot see
    where the deflate data ends and passes the (intact) data, as documented."""
    payload = b"intact data\n" * 500
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    padded = c.compress(payload) + c.flush() + b"\x00pad"
    data = block(b"x" * 100) + block(payload, deflated=padded) + BGZF_EOF
    out, err = run_fast(data, backend)
    if backend == "libdeflate":
        assert err is None and out == b"x" * 100 + payload
    else:
        strict_out, strict_err = run_strict(data, backend)
        assert strict_err is not None and err is not None
        assert (err.message, err.offset, err.member) == \
            (strict_err.message, strict_err.offset, strict_err.member)
        assert err.member == 1


@pytest.mark.parametrize("source", ["package", "system"])
def test_libdeflate_through_ctypes_inflates_into_a_buffer(source):
    """dataflow.libdeflate binds the deflate package's copy of libdeflate, or the system's
    (libdeflate0, which bgzip links) when the package is missing: a block inflated into a
    buffer we name, its CRC-32 and libdeflate's verdict on a wrong size all as expected."""
    import ctypes.util
    import os
    import sys

    require_tool("bgzip")      # brings the system's libdeflate on Debian
    if source == "system" and ctypes.util.find_library("deflate") is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("no system libdeflate")
    code = r"""
import sys, zlib
if sys.argv[1] == "system":
    sys.modules["deflate"] = None          # as if the package were not installed
from dataflow import libdeflate
lib = libdeflate.load()
assert lib is not None
if sys.argv[1] == "package":
    from deflate import _deflate
    assert lib.path == _deflate.__file__, lib.path
else:
    assert "libdeflate" in lib.path, lib.path
payload = b"GET /index.html 200\n" * 3000
c = zlib.compressobj(6, zlib.DEFLATED, -15)
raw = bytearray(c.compress(payload) + c.flush())
out = bytearray(len(payload) + 10)
src, dst = libdeflate.address(raw), libdeflate.address(out)
assert lib.inflate(src, len(raw), dst, len(payload)) == libdeflate.SUCCESS
assert bytes(out[:len(payload)]) == payload
assert lib.crc32(0, dst, len(payload)) == zlib.crc32(payload)
assert lib.inflate(src, len(raw), dst, len(payload) + 1) == libdeflate.SHORT_OUTPUT
assert lib.inflate(src, len(raw), dst, len(payload) - 1) == libdeflate.INSUFFICIENT_SPACE
raw[len(raw) // 2] ^= 0xFF
assert lib.inflate(src, len(raw), dst, len(payload)) != libdeflate.SUCCESS
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code, source], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
