"""dataflow.containers against the reference tools: every input is made by the real compressor
(gzip, pigz, bgzip, zstd, pzstd, bzip2, pbzip2, xz, lz4); detection, member cuts (checked
against bgzip's .gzi index and against the sizes of concatenated files), decoding whole, in
pieces and with bounded output, each member alone, and a table of corrupt inputs whose outcome
must agree with the tool's `-t` exit status (bzip2's acceptance of trailing garbage is the one
documented exception)."""
from __future__ import annotations

import io
import pickle
import random
import struct
import subprocess
import tracemalloc

import pytest

from dataflow.containers import (FORMATS, CorruptInput, Decoder, detect, member_cuts,
                                 member_layout)
from dataflow.errors import DataflowError, SourceError, UsageError
from dataflow.generate import generate_blocks

from conftest import require_tool

BIG = 1 << 40          # a member limit that never applies

COMPRESS = {"gzip": ["gzip", "-c"], "bgzf": ["bgzip", "-c"], "zlib": ["pigz", "-z", "-c"],
            "zstd": ["zstd", "-q", "-c"], "bz2": ["bzip2", "-c"], "xz": ["xz", "-1", "-c"],
            "lz4": ["lz4", "-q", "-c"]}
TEST = {"gzip": ["gzip", "-t"], "bgzf": ["gzip", "-t"], "zlib": ["pigz", "-t"],
        "zstd": ["zstd", "-q", "-t"], "bz2": ["bzip2", "-t"], "xz": ["xz", "-t"],
        "lz4": ["lz4", "-q", "-t"]}


def tool(*argv: str, input: bytes | None = None) -> bytes:
    require_tool(argv[0])
    return subprocess.run(argv, input=input, capture_output=True, check=True).stdout


def optional_tool(*argv: str, input: bytes | None = None) -> bytes:
    """pzstd (in Debian's zstd package) and pbzip2: .ci/run installs them too."""
    require_tool(argv[0])
    return subprocess.run(argv, input=input, capture_output=True, check=True).stdout


def tool_accepts(fmt: str, data: bytes) -> bool:
    argv = TEST[fmt]
    require_tool(argv[0])
    return subprocess.run(argv, input=data, capture_output=True).returncode == 0


def decode(fmt: str, data: bytes, **kw) -> tuple[bytes, Decoder]:
    d = Decoder(fmt, **kw)
    out = d.decompress(data)
    assert d.needs_input
    d.finish()
    return out, d


def decode_pieces(fmt: str, data: bytes, max_length: int, seed: int, most: int = 200_000,
                  backend: str = "zlib") -> bytes:
    """Random-size pieces, at most `max_length` bytes out per call (-1: unbounded)."""
    rng = random.Random(seed)
    d = Decoder(fmt, backend)
    parts = []
    i = 0
    while i < len(data):
        k = rng.randint(1, most)
        parts.append(d.decompress(data[i:i + k], max_length))
        i += k
        while not d.needs_input:
            parts.append(d.decompress(b"", max_length))
        assert max_length < 0 or all(len(p) <= max_length for p in parts[-3:])
    d.finish()
    assert d.offset == len(data)
    return b"".join(parts)


def cuts_of(fmt: str, data: bytes, limit: int = BIG):
    return member_cuts(io.BytesIO(data), fmt, len(data), limit=limit)


# ---------------------------------------------------------------------------- the corpus

@pytest.fixture(scope="module")
def text() -> bytes:
    return b"".join(generate_blocks(3 << 20, 3))


@pytest.fixture(scope="module")
def noise() -> bytes:
    return random.Random(5).randbytes(300_000)


def parts(data: bytes, n: int) -> list[bytes]:
    step = len(data) // n
    return [data[i * step:(i + 1) * step if i < n - 1 else len(data)] for i in range(n)]


@pytest.fixture(scope="module")
def corpus(text, noise) -> dict:
    """name -> (format, compressed, original, expected cuts or None when not known in advance:
    'none' means member_cuts must say None)."""
    c = {}

    def concat(name, fmt, argv, pieces, padding=b""):
        blobs = [tool(*argv, input=p) for p in pieces]
        data = padding.join(blobs)
        cuts = [0]
        for b in blobs:
            cuts.append(cuts[-1] + len(b) + len(padding))
        cuts[-1] -= len(padding)
        c[name] = (fmt, data, b"".join(pieces), cuts)

    for fmt in FORMATS:
        c[fmt] = (fmt, tool(*COMPRESS[fmt], input=text), text, "none")
        c[fmt + "-noise"] = (fmt, tool(*COMPRESS[fmt], input=noise), noise, "none")
    c["pigz"] = ("gzip", tool("pigz", "-p", "2", "-c", input=text), text, "none")
    c["pigz-i"] = ("gzip", tool("pigz", "-i", "-p", "2", "-b", "128", "-c", input=text), text,
                   "none")
    c["gzip-multi"] = ("gzip", b"".join(tool("gzip", "-c", input=p) for p in parts(text, 3)),
                       text, "none")
    concat("zstd-multi", "zstd", COMPRESS["zstd"], parts(text, 3))
    concat("zstd-nocheck", "zstd", ["zstd", "-q", "--no-check", "-c"], parts(text, 2))
    concat("bz2-multi", "bz2", COMPRESS["bz2"], parts(text, 3))
    concat("xz-multi", "xz", COMPRESS["xz"], parts(text, 3))
    concat("xz-padded", "xz", COMPRESS["xz"], parts(text, 3), padding=bytes(8))
    c["xz-blocks"] = ("xz", tool("xz", "-1", "-T2", "--block-size=256KiB", "-c", input=text),
                      text, "none")
    concat("lz4-multi", "lz4", COMPRESS["lz4"], parts(text, 3))
    concat("lz4-bx", "lz4", ["lz4", "-q", "-BX", "-B4", "--content-size", "-c"],
           parts(text, 2))
    return c


NAMES = [f for f in FORMATS] + [f + "-noise" for f in FORMATS] + [
    "pigz", "pigz-i", "gzip-multi", "zstd-multi", "zstd-nocheck", "bz2-multi", "xz-multi",
    "xz-padded", "xz-blocks", "lz4-multi", "lz4-bx"]


@pytest.mark.parametrize("name", NAMES)
def test_detect(corpus, name):
    fmt, data, _, _ = corpus[name]
    assert detect(data[:18]) == fmt
    assert detect(data[:64]) == fmt


def test_detect_plain_and_edge_cases(text, noise):
    assert detect(b"") is None
    assert detect(text[:18]) is None
    for head in (b"x^ not zlib at all", b"HK and so on......", b"x\x01abcdefghijklmnop",
                 b"BZh9 is not bz2 ...", b"\x1f\x8b", b"(\xb5/", b"\x00" * 18):
        assert detect(head) is None, head
    assert detect(b"BZh9") == "bz2"                    # too short to check the block magic
    # a skippable frame first (as pzstd writes): the frame after it decides zstd vs lz4
    skip = struct.pack("<II", 0x184D2A50, 4) + b"abcd"
    assert detect(skip + b"\x28\xb5\x2f\xfd\x00\x00") == "zstd"
    assert detect(skip + b"\x04\x22\x4d\x18\x40\x40") == "lz4"
    assert detect(struct.pack("<II", 0x184D2A5F, 1000)) == "zstd"
    # gzip with an extra field that is not BGZF's
    extra = b"XY\x02\x00ab"
    head = b"\x1f\x8b\x08\x04" + bytes(6) + struct.pack("<H", len(extra)) + extra
    assert detect(head) == "gzip"
    noise_zlib = tool("pigz", "-z", "-c", input=noise)
    assert detect(noise_zlib[:18]) == "zlib"


# ---------------------------------------------------------------------------- decoding

@pytest.mark.parametrize("name", NAMES)
def test_decode_whole_pieces_and_bounded(corpus, name):
    fmt, data, original, _ = corpus[name]
    out, d = decode(fmt, data)
    assert out == original
    assert d.offset == len(data)
    assert decode_pieces(fmt, data, -1, seed=1) == original
    assert decode_pieces(fmt, data, 4096, seed=2, most=20_000) == original
    assert decode_pieces(fmt, data, 1 << 20, seed=3, most=1 << 20) == original


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "zlib"])
def test_byte_by_byte_across_member_boundaries(fmt):
    """Headers split between calls: members of a few hundred bytes fed one byte at a time."""
    pieces = [b"".join(generate_blocks(700, s)) for s in range(3)]
    if fmt == "bgzf":
        data = tool("bgzip", "-c", input=b"".join(pieces))
    else:
        data = b"".join(tool(*COMPRESS[fmt], input=p) for p in pieces)
    if fmt == "xz":
        data += bytes(4)
    d = Decoder(fmt)
    out = []
    for i in range(len(data)):
        out.append(d.decompress(data[i:i + 1], 7))
        while not d.needs_input:
            out.append(d.decompress(b"", 7))
    d.finish()
    assert b"".join(out) == b"".join(pieces)
    assert d.members == (2 if fmt == "bgzf" else 3)    # bgzf: data block + EOF block


@pytest.mark.parametrize("backend", ["zlib", "zlib-ng", "isal"])
@pytest.mark.parametrize("name", ["gzip", "gzip-multi", "bgzf", "zlib", "pigz-i"])
def test_deflate_backends(corpus, name, backend):
    pytest.importorskip({"zlib": "zlib", "zlib-ng": "zlib_ng", "isal": "isal"}[backend])
    fmt, data, original, _ = corpus[name]
    assert decode(fmt, data, backend=backend)[0] == original
    assert decode_pieces(fmt, data, 10_000, seed=4, backend=backend) == original
    bad = bytearray(data)
    bad[len(data) - 8 if fmt != "zlib" else len(data) - 1] ^= 1
    with pytest.raises(CorruptInput, match="bad (CRC-32|Adler-32)"):
        decode(fmt, bytes(bad), backend=backend)


def test_non_bytes_input_is_copied_when_kept(corpus):
    fmt, data, original, _ = corpus["zstd-multi"]
    buf = bytearray(data)
    d = Decoder(fmt)
    out = [d.decompress(buf, 1000)]
    buf[:] = bytes(len(buf))                           # the caller reuses its buffer
    while not d.needs_input:
        out.append(d.decompress(memoryview(b""), 100_000))
    d.finish()
    assert b"".join(out) == original


@pytest.mark.parametrize("fmt,argv", [
    ("zstd", "head -c 256M /dev/zero | zstd -q -c"),
    ("gzip", "head -c 64M /dev/zero | gzip -1 -c"),
    ("lz4", "head -c 64M /dev/zero | lz4 -q -c"),
    ("bz2", "head -c 64M /dev/zero | bzip2 -c"),
    ("xz", "head -c 64M /dev/zero | xz -0 -c"),
])
def test_bomb_output_is_bounded(fmt, argv):
    require_tool(argv.split("| ")[1].split()[0])
    bomb = subprocess.run(argv, shell=True, capture_output=True, check=True).stdout
    assert len(bomb) < 600_000
    limit = 64 << 10
    tracemalloc.start()
    try:
        d = Decoder(fmt)
        total = len(d.decompress(bomb, limit))
        tracemalloc.reset_peak()
        for _ in range(300):
            out = d.decompress(b"", limit)
            assert len(out) <= limit
            total += len(out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == 301 * limit
    assert peak < limit + (512 << 10), peak             # output + one zstd block, no more


# ---------------------------------------------------------------------------- member cuts

@pytest.mark.parametrize("name", NAMES)
def test_member_cuts(corpus, name, tmp_path):
    fmt, data, original, expected = corpus[name]
    path = tmp_path / "input"
    path.write_bytes(data)
    with open(path, "rb") as f:                        # a real file: os.pread
        cuts = member_cuts(f, fmt, len(data), limit=BIG)
    assert cuts == cuts_of(fmt, data)                 # BytesIO: seek and read
    if expected == "none":
        if fmt == "bgzf":
            assert cuts is not None                    # checked below and against .gzi
        elif name == "xz-blocks":
            assert cuts is None                        # one stream (blocks are not cut)
        else:
            assert cuts is None, cuts
    else:
        assert cuts == expected
    if cuts is not None:
        assert cuts[0] == 0 and cuts[-1] == len(data) and cuts == sorted(set(cuts))
        out = []
        with open(path, "rb") as f:
            layout_cuts, sizes = member_layout(f, fmt, len(data), limit=BIG)
        assert layout_cuts == cuts and len(sizes) == len(cuts) - 1
        for (a, b), decoded in zip(zip(cuts, cuts[1:]), sizes):
            piece, d = decode(fmt, data[a:b])          # each member decodes alone
            assert d.members == 1
            assert decoded is None or decoded == len(piece)  # recorded sizes are right
            out.append(piece)
        assert b"".join(out) == original
        if fmt in ("bgzf", "xz"):                      # these always record the size
            assert None not in sizes


def test_bgzf_cuts_match_bgzip_index(text, tmp_path):
    src = tmp_path / "t.log"
    src.write_bytes(text)
    require_tool("bgzip")
    subprocess.run(["bgzip", "-i", "-f", str(src)], check=True, capture_output=True)
    data = (tmp_path / "t.log.gz").read_bytes()
    gzi = (tmp_path / "t.log.gz.gzi").read_bytes()
    n = struct.unpack_from("<Q", gzi)[0]
    starts = [struct.unpack_from("<Q", gzi, 8 + 16 * i)[0] for i in range(n)]
    cuts = cuts_of("bgzf", data)
    # the .gzi lists every block start but the first (0) and the empty EOF block's
    assert cuts[1:-2] == starts
    eof_block = "1f8b08040000000000ff0600424302001b0003000000000000000000"
    assert data[cuts[-2]:] == bytes.fromhex(eof_block)
    assert decode("bgzf", data)[1].members == n + 2


def test_pzstd_frames_and_skippable_frames(text):
    data = optional_tool("pzstd", "-q", "-1", "-p", "2", "-c", input=text)
    assert data[:4] == struct.pack("<I", 0x184D2A50)   # pzstd's skippable frame first
    assert detect(data[:18]) == "zstd"
    cuts = cuts_of("zstd", data)
    assert cuts is not None and len(cuts) >= 3
    assert all(data[c:c + 4] == data[:4] for c in cuts[:-1])   # the skippable frame joins
    out, d = decode("zstd", data)
    assert out == text and d.members == len(cuts) - 1
    assert b"".join(decode("zstd", data[a:b])[0] for a, b in zip(cuts, cuts[1:])) == text
    # skippable frames at the end form one last member; the tool agrees they are valid
    tail = struct.pack("<II", 0x184D2A5E, 3) + b"xyz" + struct.pack("<II", 0x184D2A51, 0)
    assert cuts_of("zstd", data + tail) == cuts + [len(data) + len(tail)]
    out, d = decode("zstd", data + tail)
    assert out == text and d.members == len(cuts)
    assert tool_accepts("zstd", data + tail)
    assert decode("zstd", tail)[1].members == 1        # only skippable frames: not empty
    assert tool_accepts("zstd", tail)


def test_pbzip2_streams(text):
    data = optional_tool("pbzip2", "-b1", "-p2", "-c", input=text)
    cuts = cuts_of("bz2", data)
    assert cuts is not None and len(cuts) > 10
    assert all(data[c:c + 3] == b"BZh" for c in cuts[:-1])
    out, d = decode("bz2", data)
    assert out == text and d.members == len(cuts) - 1
    assert b"".join(decode("bz2", data[a:b])[0] for a, b in zip(cuts, cuts[1:])) == text


def test_lz4_skippable_frames(corpus):
    _, data, original, cuts = corpus["lz4-multi"]
    skip = struct.pack("<II", 0x184D2A53, 5) + b"hello"
    mixed = skip + data[:cuts[1]] + skip + skip + data[cuts[1]:] + skip
    assert detect(mixed[:18]) == "lz4"
    assert tool_accepts("lz4", mixed)
    out, d = decode("lz4", mixed)
    assert out == original and d.members == len(cuts)   # + the trailing skippable member
    mc = cuts_of("lz4", mixed)
    assert len(mc) == len(cuts) + 1
    assert mc[1] == len(skip) + cuts[1]                  # skippable frames join the frame after
    assert b"".join(decode("lz4", mixed[a:b])[0] for a, b in zip(mc, mc[1:])) == original


def test_member_cuts_limit_and_unsplittable(corpus):
    fmt, data, _, cuts = corpus["zstd-multi"]
    biggest = max(b - a for a, b in zip(cuts, cuts[1:]))
    assert cuts_of(fmt, data, limit=biggest) == cuts
    assert cuts_of(fmt, data, limit=biggest - 1) is None
    for name in ("xz-padded", "bz2-multi", "lz4-multi"):
        fmt, data, _, cuts = corpus[name]
        assert cuts_of(fmt, data, limit=max(b - a for a, b in zip(cuts, cuts[1:])) - 1) is None
    assert cuts_of("bgzf", corpus["bgzf"][1], limit=1000) is None
    for name in ("gzip", "gzip-multi", "zlib", "pigz-i", "zstd", "bz2", "xz", "lz4"):
        fmt, data, _, _ = corpus[name]
        assert cuts_of(fmt, data) is None
    assert cuts_of("zstd", b"") is None
    with pytest.raises(UsageError):
        cuts_of("rar", b"abc")


def test_bgzf_zero_padding_joins_last_member(corpus):
    _, data, original, _ = corpus["bgzf"]
    cuts = cuts_of("bgzf", data + bytes(100))
    assert cuts[-1] == len(data) + 100 and len(cuts) == len(cuts_of("bgzf", data))
    assert decode("bgzf", data[cuts[-2]:] + bytes(100))[0] == b""
    a_gzip_member = tool("gzip", "-c", input=b"abc")
    assert cuts_of("bgzf", data + a_gzip_member) is None     # no BSIZE: cannot split


@pytest.mark.parametrize("name", ["bgzf", "zstd-multi", "lz4-multi", "xz-padded", "bz2-multi"])
def test_member_cuts_structural_errors(corpus, name):
    fmt, data, _, cuts = corpus[name]
    if fmt == "bgzf":
        cuts = cuts_of(fmt, data)
    if fmt == "bz2":                                   # found by scanning: no structure to break
        with pytest.raises(CorruptInput, match="invalid header") as e:
            cuts_of(fmt, b"x" + data)
        assert e.value.offset == 0 and e.value.member == 0
        return
    member = -1 if fmt == "xz" else 1                  # xz: walked from the end, index unknown
    cut = cuts[1] + (cuts[2] - cuts[1]) // 2
    with pytest.raises(CorruptInput, match="truncated") as e:
        cuts_of(fmt, data[:cut])
    assert e.value.member == member
    if fmt == "xz":
        with pytest.raises(CorruptInput, match="footer") as e:
            cuts_of(fmt, data + b"junk")
        bad = bytearray(data)
        bad[cuts[2] - 8 - 12 + 1] ^= 1                 # stream 1's footer (before its padding)
        with pytest.raises(CorruptInput, match="footer"):
            cuts_of(fmt, bytes(bad))
        return
    with pytest.raises(CorruptInput, match="trailing garbage after member 1") as e:
        cuts_of(fmt, data[:cuts[2]] + b"junkjunkjunkjunkjunk" + data[cuts[2]:])
    assert e.value.member == 2 and e.value.offset == cuts[2]
    with pytest.raises(CorruptInput, match="invalid header") as e:
        cuts_of(fmt, b"junk" + data)
    assert e.value.member == 0 and e.value.offset == 0


# ---------------------------------------------------------------------------- corrupt input

def flip(data: bytes, i: int, x: int = 0x55) -> bytes:
    b = bytearray(data)
    b[i] ^= x
    return bytes(b)


@pytest.fixture(scope="module")
def two_members() -> dict:
    """format -> (data, cut): two members of ~300 KB of text (zlib: one stream; bgzf: the
    first block's end)."""
    text = b"".join(generate_blocks(600_000, 11))
    a = text[:text.index(b"\n", 300_000) + 1]
    b = text[len(a):]
    out = {}
    for fmt in FORMATS:
        if fmt in ("zlib", "bgzf"):
            data = tool(*COMPRESS[fmt], input=a + b)
            out[fmt] = (data, len(data) if fmt == "zlib" else cuts_of(fmt, data)[1])
        else:
            first = tool(*COMPRESS[fmt], input=a)
            out[fmt] = (first + tool(*COMPRESS[fmt], input=b), len(first))
    return out


def variants(fmt: str, data: bytes, cut: int) -> dict:
    n = len(data)
    v = {"ok": data, "empty": b"", "bad-magic": flip(data, 0, 0xFF),
         "flip-mid-member-1": flip(data, cut + (n - cut) // 2) if cut < n else flip(data, n // 2),
         "bad-crc-member-0": flip(data, {"gzip": cut - 8, "bgzf": cut - 8, "bz2": cut - 2}
                                  .get(fmt, cut - 1), 1),
         "truncated-3": data[:3], "truncated-half-member-0": data[:cut // 2],
         "truncated-end-member-0": data[:cut - 1], "truncated-last-byte": data[:-1],
         "junk": data + b"garbage!", "zeros-4": data + bytes(4), "zeros-1": data + bytes(1),
         "zeros-13": data + bytes(13), "zeros-then-junk": data + b"\0\0\0\0x\0\0\0"}
    if cut < n:
        v["bad-magic-member-1"] = flip(data, cut, 0xFF)
        v["truncated-1-byte-of-member-1"] = data[:cut + 1]
    if fmt in ("gzip", "bgzf"):
        v["bad-isize-member-0"] = flip(data, cut - 1, 1)
        v["lone-1f"] = data + b"\x1f"
    return v


def expected(fmt: str, variant: str, last: int):
    """None (accepted) or (message substring, member index). `last`: index of the last
    member of the intact input."""
    after = (f"trailing garbage after member {last}", last + 1)
    mid = {"gzip": "bad CRC-32", "bgzf": "bad CRC-32", "zlib": "bad Adler-32",
           "zstd": "bad checksum", "bz2": "corrupt data", "xz": "corrupt data",
           "lz4": "bad content checksum"}[fmt]
    table = {
        "ok": None,
        "empty": None if fmt == "lz4" else ("empty input", 0),
        "bad-magic": ("invalid header", 0),
        "bad-magic-member-1": ("trailing garbage after member 0", 1),
        "flip-mid-member-1": (mid, 1 if fmt != "zlib" else 0),
        "bad-crc-member-0": (mid, 0),
        "bad-isize-member-0": ("length mismatch", 0),
        "truncated-3": ("truncated inside member 0", 0),
        "truncated-half-member-0": ("truncated inside member 0", 0),
        "truncated-end-member-0": ("truncated inside member 0", 0),
        "truncated-1-byte-of-member-1": ("truncated inside member 1", 1),
        "truncated-last-byte": (f"truncated inside member {last}", last),
        "junk": after,
        "zeros-4": None if fmt in ("gzip", "bgzf", "xz") else after,
        "zeros-1": None if fmt in ("gzip", "bgzf") else
        ("invalid stream padding", last + 1) if fmt == "xz" else after,
        "zeros-13": None if fmt in ("gzip", "bgzf") else
        ("invalid stream padding", last + 1) if fmt == "xz" else after,
        "zeros-then-junk": after,
        "lone-1f": (f"truncated inside member {last + 1}", last + 1),
    }
    return table[variant]


# Where we are stricter than the reference tool: bzip2 -t (and pbzip2, lbzip2) exits 0 after
# "trailing garbage after EOF ignored"; we reject trailing garbage in every format.
DEVIATIONS = {("bz2", v) for v in ("junk", "zeros-4", "zeros-1", "zeros-13", "zeros-then-junk",
                                   "bad-magic-member-1")}


@pytest.mark.parametrize("fmt", FORMATS)
def test_corrupt_input_table(two_members, fmt):
    data, cut = two_members[fmt]
    cuts = cuts_of(fmt, data) if fmt == "bgzf" else [0, cut, len(data)]
    last = 0 if fmt == "zlib" else len(cuts) - 2
    for name, v in variants(fmt, data, cut).items():
        want = expected(fmt, name, last)
        if fmt == "bgzf" and name == "flip-mid-member-1":   # the middle is in a later block
            at = cut + (len(data) - cut) // 2
            want = (want[0], max(i for i, c in enumerate(cuts) if c <= at))
        try:
            d = Decoder(fmt)
            d.decompress(v)
            d.finish()
            got = None
        except CorruptInput as e:
            got = e
        if want is None:
            assert got is None, (name, got)
        else:
            assert got is not None, (name, "accepted")
            assert want[0] in got.message and got.member == want[1], (name, got.message,
                                                                       got.member, want)
            assert 0 <= got.offset <= len(v)
            if got.member > 0 and got.member < len(cuts) - 1:
                assert got.offset >= cuts[got.member], (name, got.offset)
            if "truncated" in got.message or "empty" in got.message:
                assert got.offset == len(v)
            # the same outcome in small pieces with bounded output
            with pytest.raises(CorruptInput) as e2:
                decode_pieces(fmt, v, 5000, seed=7, most=3000)
            assert e2.value.message == got.message and e2.value.member == got.member
        tool_ok = tool_accepts(fmt, v)
        if (fmt, name) in DEVIATIONS:
            assert tool_ok and got is not None, name
        else:
            assert tool_ok == (want is None), (name, tool_ok)


def test_gzip_zeros_between_members_are_garbage(two_members):
    data, cut = two_members["gzip"]
    padded = data[:cut] + bytes(4) + data[cut:]
    with pytest.raises(CorruptInput, match="trailing garbage after member 0") as e:
        decode("gzip", padded)
    assert e.value.member == 1 and e.value.offset == cut + 4
    assert not tool_accepts("gzip", padded)            # gzip: "trailing garbage ignored", 2


def test_xz_padding_between_streams(two_members):
    data, cut = two_members["xz"]
    for pad, ok in ((4, True), (8, True), (3, False), (6, False)):
        padded = data[:cut] + bytes(pad) + data[cut:]
        assert tool_accepts("xz", padded) == ok
        if ok:
            assert decode("xz", padded)[1].members == 2
            assert cuts_of("xz", padded) == [0, cut + pad, len(padded)]
        else:
            with pytest.raises(CorruptInput, match="invalid stream padding after member 0"):
                decode("xz", padded)
    assert not tool_accepts("xz", bytes(4) + data)
    with pytest.raises(CorruptInput, match="invalid header") as e:
        decode("xz", bytes(4) + data)
    assert e.value.member == 0
    with pytest.raises(CorruptInput, match="invalid header"):
        cuts_of("xz", bytes(4) + data)


def test_errors_carry_base_and_are_sticky(two_members):
    data, cut = two_members["zstd"]
    d = Decoder("zstd")
    d.base = 1000
    with pytest.raises(CorruptInput) as e:
        d.decompress(data + b"junk")
    assert e.value.offset == 1000 + len(data) and e.value.member == 2
    assert str(e.value) == f"trailing garbage after member 1 (compressed offset {1000 + len(data)})"
    with pytest.raises(CorruptInput) as again:
        d.decompress(b"")
    assert again.value is e.value
    with pytest.raises(CorruptInput):
        d.finish()
    d = Decoder("gzip")
    d.base = 50
    d.decompress(two_members["gzip"][0][:10])
    assert d.offset == 60
    with pytest.raises(CorruptInput, match="truncated inside member 0") as e:
        d.finish()
    assert e.value.offset == 60


def test_corrupt_input_is_a_dataflow_error_and_pickles():
    e = CorruptInput("bad CRC-32", offset=12, member=3)
    e.file = "a.gz"
    assert isinstance(e, SourceError) and isinstance(e, DataflowError)
    e2 = pickle.loads(pickle.dumps(e))
    assert (type(e2), e2.message, e2.offset, e2.member, e2.file, str(e2)) == \
        (CorruptInput, "bad CRC-32", 12, 3, "a.gz", str(e))


def test_usage_errors(two_members):
    with pytest.raises(UsageError):
        Decoder("rar")
    with pytest.raises(UsageError):
        Decoder("gzip", backend="nope")
    d = Decoder("gzip")
    d.decompress(two_members["gzip"][0], 10)
    assert not d.needs_input
    with pytest.raises(UsageError):
        d.finish()                                     # output is still pending
    d = Decoder("lz4")
    d.finish()
    assert d.members == 0
    with pytest.raises(UsageError):
        d.decompress(b"x")



@pytest.mark.parametrize("fmt", FORMATS)
def test_random_damage_agrees_with_the_tool(fmt):
    """Flipped bits, truncations, inserted and deleted bytes: only CorruptInput escapes (from
    the decoder and from member_cuts), and we reject exactly what the tool rejects, except
    bzip2's tolerance of trailing garbage."""
    text = b"".join(generate_blocks(40_000, 2))
    a, b = text[:20_000], text[20_000:]
    if fmt in ("zlib", "bgzf"):
        data = tool(*COMPRESS[fmt], input=a + b)
    else:
        data = tool(*COMPRESS[fmt], input=a) + tool(*COMPRESS[fmt], input=b)
    rng = random.Random(FORMATS.index(fmt))
    for _ in range(40):
        v = bytearray(data)
        kind = rng.choice(["flip", "flip", "truncate", "insert", "delete"])
        i = rng.randrange(len(v))
        if kind == "flip":
            v[i] ^= 1 << rng.randrange(8)
        elif kind == "truncate":
            del v[i:]
        elif kind == "insert":
            v[i:i] = bytes([rng.randrange(256)])
        else:
            del v[i]
        v = bytes(v)
        try:
            out, _ = decode(fmt, v)
            err = None
        except CorruptInput as e:
            out, err = None, e
        try:
            cuts_of(fmt, v)
        except CorruptInput:
            pass
        tool_ok = tool_accepts(fmt, v)
        if fmt == "bz2" and err is not None and "trailing garbage" in err.message:
            continue                                   # bzip2 -t ignores it (exit 0)
        assert tool_ok == (err is None), (kind, i, err)
        if err is None:
            assert out == a + b or kind == "flip"      # a flip can hit an unchecked field


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_decoder_is_freed_without_the_cycle_collector(fmt):
    """Native decoder state (a zstd context holds megabytes) must go when the last reference
    does: a reference cycle would keep it until the cycle collector runs, which allocation of
    native memory does not trigger (a worker decoding many chunks grew by 2.5 MB per chunk)."""
    import gc
    import weakref

    gc.disable()
    try:
        ref = weakref.ref(Decoder(fmt))
        assert ref() is None
    finally:
        gc.enable()


def test_positional_reader_windows_return_the_files_bytes(tmp_path):
    """member scans read through a 1 MiB window: any (offset, length), forward, backward,
    larger than the window or past the end, gives the file's own bytes."""
    from dataflow.containers import _Reader

    rng = random.Random(5)
    data = rng.randbytes(3 * (1 << 20) + 12345)
    path = tmp_path / "f"
    path.write_bytes(data)
    with open(path, "rb") as f:
        r = _Reader(f, len(data))
        off = 0
        for _ in range(2000):
            if rng.random() < 0.8:      # mostly forward, as the scans go
                off = min(len(data), off + rng.randrange(70000))
            else:
                off = rng.randrange(len(data) + 10)
            n = rng.choice([4, 18, 65536, 1 << 20, (1 << 20) + 7, rng.randrange(3 << 20)])
            assert r.read(off, n) == data[off:off + n], (off, n)
