"""Compression stages through real worker processes, checked with the real tools: gzip, pigz,
bgzip, zstd, bzip2, xz, lz4 read what we write; one gzip member; identical bytes for any
worker count; edge inputs; sizes against pigz and bgzip."""
from __future__ import annotations

import gzip as gzip_module
import os
import struct
import subprocess
import zlib

import pytest

import dataflow
from dataflow import FileSink, FileSource, pipeline
from dataflow.errors import UsageError
from workers.compress import deflate_backend

from conftest import require_tool

# chunks that are not a multiple of 32 KiB (nor of BGZF's 65280-byte blocks)
SMALL = dict(memory_limit="256MiB", chunk_size=300_001)


@pytest.fixture(scope="module")
def text(sample_log, tmp_path_factory) -> str:
    """6 MiB of the shared access log."""
    path = tmp_path_factory.mktemp("compress") / "text.log"
    with open(sample_log, "rb") as f, open(path, "wb") as out:
        out.write(f.read(6 << 20))
    return str(path)


def compress(src: str, stage, out, workers=2, **kw) -> bytes:
    pipeline(FileSource(src, split="bytes"), stage, FileSink(out), workers=workers,
             **{**SMALL, **kw})
    with open(out, "rb") as f:
        return f.read()


def tool(*argv: str, input: bytes | None = None) -> bytes:
    require_tool(argv[0])
    return subprocess.run(argv, input=input, capture_output=True, check=True).stdout


def raw(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def gzip_members(data: bytes) -> int:
    members = 0
    while data:
        d = zlib.decompressobj(31)
        d.decompress(data)
        assert d.eof, "truncated member"
        data = d.unused_data
        members += 1
    return members


def test_gzip_is_one_member_that_gzip_pigz_and_python_read(tmp_path, text):
    out = tmp_path / "out.gz"
    data = compress(text, dataflow.Gzip(), out)
    original = raw(text)
    tool("gzip", "-t", str(out))
    assert tool("gzip", "-dc", str(out)) == original
    assert tool("pigz", "-dc", str(out)) == original
    assert gzip_module.decompress(data) == original
    assert gzip_members(data) == 1
    crc, size = struct.unpack("<II", data[-8:])
    assert (crc, size) == (zlib.crc32(original), len(original))


@pytest.mark.parametrize("make", [
    lambda: dataflow.Gzip(level=6, backend="zlib"),
    lambda: dataflow.Gzip(level=1),
    lambda: dataflow.Gzip(level=9, independent=True),
    lambda: dataflow.Bgzf(level=6),
    lambda: dataflow.Bgzf(level=6, backend="zlib"),
], ids=["gzip-zlib", "gzip-1", "gzip-9-independent", "bgzf", "bgzf-zlib"])
def test_output_is_identical_for_any_worker_count(tmp_path, text, make):
    outputs = {compress(text, make(), tmp_path / f"w{w}", workers=w) for w in (1, 2, 3, 4)}
    assert len(outputs) == 1
    assert gzip_module.decompress(outputs.pop()) == raw(text)


def test_priming_with_the_previous_chunk_makes_it_smaller_and_costs_only_the_dictionary(
        tmp_path, text):
    primed = compress(text, dataflow.Gzip(backend="zlib"), tmp_path / "p.gz")
    independent = compress(text, dataflow.Gzip(backend="zlib", independent=True),
                           tmp_path / "i.gz")
    assert gzip_module.decompress(independent) == gzip_module.decompress(primed) == raw(text)
    assert len(primed) < len(independent)
    # an independent chunk inflates on its own: the first chunk's deflate stream, alone
    d = zlib.decompressobj(-15)
    first = d.decompress(independent[10:])
    assert raw(text).startswith(first[:SMALL["chunk_size"]])


@pytest.mark.parametrize("content", [b"", b"x", os.urandom(700_000)],
                         ids=["empty", "one-byte", "incompressible"])
@pytest.mark.parametrize("fmt", ["gzip", "bgzf"])
def test_edge_inputs(tmp_path, content, fmt):
    src = tmp_path / "in"
    src.write_bytes(content)
    out = tmp_path / "out.gz"
    stage = dataflow.Gzip() if fmt == "gzip" else dataflow.Bgzf()
    compress(str(src), stage, out)
    tool("gzip", "-t", str(out))
    assert tool("gzip", "-dc", str(out)) == content
    if fmt == "bgzf":
        tool("bgzip", "-t", str(out))
        assert tool("bgzip", "-dc", str(out)) == content
    else:
        assert gzip_members(raw(out)) == 1


def test_gzip_header_fields_and_the_zlib_and_raw_formats(tmp_path, text):
    original = raw(text)
    data = compress(text, dataflow.Gzip(level=9, name="text.log", mtime=1_700_000_000),
                    tmp_path / "n.gz")
    assert data[3] == 0x08 and data[10:19] == b"text.log\0"
    assert struct.unpack("<I", data[4:8])[0] == 1_700_000_000
    assert data[8] == 2  # XFL: maximum compression
    listing = tool("gzip", "-lvN", str(tmp_path / "n.gz")).decode()
    assert "text.log" in listing
    z = compress(text, dataflow.Gzip(format="zlib", level=1), tmp_path / "z")
    assert zlib.decompress(z) == original  # checks the header and the Adler-32
    r = compress(text, dataflow.Gzip(format="raw"), tmp_path / "r")
    assert zlib.decompress(r, -15) == original


def test_results_report_the_combined_checksum(tmp_path, text):
    stats = pipeline(FileSource(text, split="bytes"), dataflow.Gzip(format="zlib"),
                     FileSink(tmp_path / "z"), workers=2, **SMALL)
    assert stats.results["0:gzip"] == {"adler32": zlib.adler32(raw(text)),
                                       "bytes_in": os.path.getsize(text)}


def test_gzip_after_a_record_stage_is_valid_and_unprimed(tmp_path, text):
    data = compress(text, dataflow.Grep(" 404 "), tmp_path / "g.log")
    pipeline(FileSource(text), dataflow.Grep(" 404 "), dataflow.Gzip(), FileSink(tmp_path / "g.gz"),
             workers=2, **SMALL)
    assert gzip_module.decompress(raw(tmp_path / "g.gz")) == data


def test_a_container_stage_must_be_last(tmp_path, text):
    with pytest.raises(UsageError, match=r"stages\[0\] \(gzip\) .* must be the last stage"):
        pipeline(FileSource(text), dataflow.Gzip(), dataflow.Passthrough(),
                 FileSink(tmp_path / "x"), workers=1)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("fmt,stage,test_argv,decode_argv", [
    ("zst", lambda: dataflow.Zstd(level=3), ["zstd", "-q", "-t"], ["zstd", "-q", "-dc"]),
    ("bz2", lambda: dataflow.Bz2(level=9), ["bzip2", "-t"], ["bzip2", "-dc"]),
    ("xz", lambda: dataflow.Xz(level=1), ["xz", "-t"], ["xz", "-dc"]),
    ("lz4", lambda: dataflow.Lz4(), ["lz4", "-q", "-t"], ["lz4", "-q", "-dc"]),
    ("bgz", lambda: dataflow.Bgzf(), ["bgzip", "-t"], ["bgzip", "-dc"]),
])
def test_frames_and_streams_are_read_by_the_reference_tool(tmp_path, text, fmt, stage,
                                                           test_argv, decode_argv):
    out = tmp_path / f"out.{fmt}"
    compress(text, stage(), out)
    tool(*test_argv, str(out))
    assert tool(*decode_argv, str(out)) == raw(text)


def test_gzip_is_within_half_a_percent_of_pigz_at_the_same_level(tmp_path, sample_log):
    for level in (1, 6, 9):
        ours = compress(sample_log, dataflow.Gzip(level=level, backend="zlib"),
                        tmp_path / f"o{level}.gz", chunk_size="4MiB")
        pigz = tool("pigz", f"-{level}", "-n", "-c", sample_log)
        assert len(ours) <= 1.005 * len(pigz), (level, len(ours), len(pigz))


def test_bgzf_is_within_one_percent_of_bgzip_at_the_same_level(tmp_path, text):
    if not os.environ.get("CI"):
        pytest.importorskip("deflate")
    for level in (1, 6):  # (9 is libdeflate's slowest level: minutes of CPU here, no news)
        ours = compress(text, dataflow.Bgzf(level=level), tmp_path / f"o{level}.gz",
                        chunk_size=64 * 65280)
        theirs = tool("bgzip", "-l", str(level), "-c", text)
        assert len(ours) <= 1.01 * len(theirs), (level, len(ours), len(theirs))


def test_bgzf_index_serves_bgzip_random_access(tmp_path, text):
    out = tmp_path / "out.gz"
    stats = pipeline(FileSource(text, split="bytes"), dataflow.Bgzf(index=str(out) + ".gzi"),
                     FileSink(out), workers=2, **SMALL)
    assert stats.results["0:bgzf"]["blocks"] > 90
    original = raw(text)
    for offset, size in [(0, 10), (65279, 2), (300_000, 70_000), (len(original) - 5, 5)]:
        got = tool("bgzip", "-b", str(offset), "-s", str(size), str(out))
        assert got == original[offset:offset + size]
    # the same entries bgzip itself writes for the same block layout
    whole = tmp_path / "whole.gz"
    pipeline(FileSource(text, split="bytes"), dataflow.Bgzf(index=str(whole) + ".gzi"),
             FileSink(whole), workers=1, memory_limit="256MiB", chunk_size=64 * 65280)
    ref = tmp_path / "ref"
    ref.write_bytes(original)
    tool("bgzip", "-i", "-k", str(ref))
    ours = raw(str(whole) + ".gzi")
    theirs = raw(str(ref) + ".gz.gzi")
    def entries(index: bytes) -> list[tuple[int, int]]:
        count, = struct.unpack_from("<Q", index)
        assert len(index) == 8 + 16 * count
        return [struct.unpack_from("<QQ", index, 8 + 16 * i) for i in range(count)]

    # the same blocks as bgzip's own index (compressed offsets differ with the compressor)
    assert [u for _, u in entries(ours)] == [u for _, u in entries(theirs)]


@pytest.mark.parametrize("backend", ["zlib", "zlib-ng", "isal"])
def test_every_installed_backend_writes_valid_gzip(tmp_path, text, backend):
    level = 3 if backend == "isal" else 6
    try:
        deflate_backend(backend, level)
    except ValueError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{backend} is not installed")
    out = tmp_path / "out.gz"
    compress(text, dataflow.Gzip(level=level, backend=backend), out)
    tool("gzip", "-t", str(out))
    assert gzip_members(raw(out)) == 1
    assert gzip_module.decompress(raw(out)) == raw(text)


def test_backend_errors_are_clear(monkeypatch):
    with pytest.raises(ValueError, match="isal supports levels 0-3, not 6"):
        deflate_backend("isal", 6)
    with pytest.raises(ValueError, match="libdeflate cannot prime"):
        deflate_backend("libdeflate", 6, "gzip")
    import sys

    monkeypatch.setitem(sys.modules, "zlib_ng.zlib_ng", None)  # makes the import fail
    with pytest.raises(ValueError, match=r"zlib-ng is not installed: pip install 'dataflow\[fast\]'"):
        deflate_backend("zlib-ng", 6)
    assert deflate_backend("auto", 6)[0] == "zlib"
