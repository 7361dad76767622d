"""The zstd fast path of the decompress stage (a chunk that is one frame of known size decoded
in one call) against the strict streaming Decoder: the same bytes for good chunks, the same
error (message, compressed offset, member) for damaged ones, and chunks it does not take
(several frames, skippable frames, no recorded size, a frame larger than a piece) decoded by
the Decoder as before."""
from __future__ import annotations

import random

import pytest

zstandard = pytest.importorskip("zstandard")

from dataflow.containers import CorruptInput  # noqa: E402
from dataflow.streams import ChunkInfo  # noqa: E402
from workers.decompress import PIECE, Decompress  # noqa: E402

BASE = 3 << 20


def text(n: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    words = [b"GET", b"/a", b"200", b"404", b"\n", b"curl", b"-"]
    return b" ".join(rng.choice(words) for _ in range(n))


def frame(data: bytes, *, size: bool = True, check: bool = True) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_content_size=size,
                                    write_checksum=check).compress(data)


def decode(data: bytes, strict: bool) -> tuple[bytes, CorruptInput | None, bool]:
    """(output, error, whether the fast path answered)."""
    stage = Decompress(format="zstd")
    stage.setup()
    info = ChunkInfo()
    info.offset = BASE
    fast = False
    try:
        if strict:
            result = stage._pieces(memoryview(data), BASE)
        else:
            result = stage.transform(memoryview(data), info)
            fast = isinstance(result, bytes)
        out = result if isinstance(result, bytes) else b"".join(result)
    except CorruptInput as e:
        return b"", e, fast
    return out, None, fast


PAYLOAD = text(200_000)
GOOD = frame(PAYLOAD)
SKIPPABLE = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"meta"


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1:]


CASES = [
    # name, chunk, the fast path answers, the data is good
    ("one frame", GOOD, True, True),
    ("empty frame", frame(b""), True, True),
    ("two frames", GOOD + frame(b"tail\n"), False, True),
    ("skippable frame first", SKIPPABLE + GOOD, False, True),
    ("no content size", frame(PAYLOAD, size=False), False, True),
    ("larger than a piece", frame(text(1_400_000, 2)), False, True),
    ("bad checksum", GOOD[:-1] + bytes([GOOD[-1] ^ 1]), False, False),
    ("flipped byte", flipped(GOOD, len(GOOD) // 2), False, False),
    ("truncated", GOOD[:-7], False, False),
    ("trailing junk", GOOD + b"junk", False, False),
    ("bad magic", b"\x29" + GOOD[1:], False, False),
]


@pytest.mark.parametrize("name,chunk,answers,good", CASES, ids=[c[0] for c in CASES])
def test_fast_path_and_strict_decoder_agree(name, chunk, answers, good):
    if name == "larger than a piece":
        assert zstandard.frame_content_size(chunk) > PIECE
    fast_out, fast_err, fast = decode(chunk, strict=False)
    strict_out, strict_err, _ = decode(chunk, strict=True)
    assert fast == answers
    if good:
        assert fast_err is None and strict_err is None
        assert fast_out == strict_out
        if name == "one frame":
            assert fast_out == PAYLOAD
    else:
        assert fast_err is not None and strict_err is not None
        assert (fast_err.message, fast_err.offset, fast_err.member) == \
            (strict_err.message, strict_err.offset, strict_err.member)
        assert fast_err.offset >= BASE
