"""Decompression end to end: files made by the real tools come back byte for byte, in parallel
where the format can be cut at members, sequentially where it cannot; corrupt input fails
with the file, offset and member named and leaves no output behind."""
from __future__ import annotations

import gzip
import os
import subprocess

import pytest

import dataflow
from dataflow import FileSink, FileSource, NullSink, pipeline
from dataflow.errors import SourceError, StageError

from conftest import require_tool, run_cli

OPTS = dict(workers=2, memory_limit="256MiB", chunk_size="256KiB")

# name -> argv that compresses stdin to stdout
MAKERS = {
    "gzip": ["gzip", "-6", "-c"],
    "pigz": ["pigz", "-6", "-c"],
    "pigz-i": ["pigz", "-6", "-i", "-c"],
    "bgzip": ["bgzip", "-c"],
    "zstd": ["zstd", "-q", "-3", "-c"],
    "bzip2": ["bzip2", "-c"],
    "xz": ["xz", "-1", "-c"],
    "xz-T2": ["xz", "-1", "-T2", "--block-size=1MiB", "-c"],
    "lz4": ["lz4", "-q", "-c"],
}
PARALLEL = {"bgzip"}  # one file from these tools splits into many members


@pytest.fixture(scope="module")
def text(sample_log, tmp_path_factory):
    path = tmp_path_factory.mktemp("decompress") / "text.log"
    with open(sample_log, "rb") as f:
        path.write_bytes(f.read(5 << 20))
    return path


def make(argv, data: bytes) -> bytes:
    require_tool(argv[0])
    return subprocess.run(argv, input=data, capture_output=True, check=True).stdout


def decompress_to(tmp_path, path, **kw):
    out = tmp_path / "out"
    stats = pipeline(FileSource(str(path), split="bytes"), _decompress(), FileSink(out),
                     **{**OPTS, **kw})
    return out.read_bytes(), stats


def _decompress(**kw):
    return dataflow.Decompress(**kw)


@pytest.mark.parametrize("maker", list(MAKERS))
def test_files_made_by_the_tools_come_back_byte_for_byte(tmp_path, text, maker):
    data = text.read_bytes()
    path = tmp_path / f"in.{maker}"
    path.write_bytes(make(MAKERS[maker], data))
    got, stats = decompress_to(tmp_path, path)
    assert got == data
    if maker in PARALLEL:
        assert stats.chunks > 2  # cut at member boundaries, decoded by the workers


@pytest.mark.parametrize("fmt", ["zstd", "bz2", "xz", "lz4", "bgzf"])
def test_our_multi_member_output_is_decoded_in_parallel(tmp_path, text, fmt):
    compressed = tmp_path / "in.z"
    stage = getattr(dataflow, {"bgzf": "Bgzf", "zstd": "Zstd", "bz2": "Bz2", "xz": "Xz",
                               "lz4": "Lz4"}[fmt])()
    pipeline(FileSource(str(text), split="bytes"), stage, FileSink(compressed), **OPTS)
    got, stats = decompress_to(tmp_path, compressed)
    assert got == text.read_bytes()
    assert stats.chunks > 2


def test_concatenated_files_and_several_inputs(tmp_path, text):
    data = text.read_bytes()
    half = len(data) // 2
    two = tmp_path / "two.gz"
    two.write_bytes(gzip.compress(data[:half]) + gzip.compress(data[half:]))
    got, _ = decompress_to(tmp_path, two)
    assert got == data  # two members: both, like gzip -d
    a, b = tmp_path / "a.zst", tmp_path / "b.bz2"
    a.write_bytes(make(MAKERS["zstd"], data[:half]))
    b.write_bytes(make(MAKERS["bzip2"], data[half:]))
    out = tmp_path / "ab"
    pipeline(FileSource([str(a), str(b)], split="bytes"), _decompress(), FileSink(out), **OPTS)
    assert out.read_bytes() == data  # each file in its own format


def test_decompress_then_record_stages_then_compress(tmp_path, text):
    data = text.read_bytes()
    src = tmp_path / "in.gz"
    src.write_bytes(make(MAKERS["pigz"], data))
    out = tmp_path / "out.gz"
    pipeline(FileSource(str(src)), _decompress(), dataflow.Grep(" 404 "), dataflow.Gzip(),
             FileSink(out), **OPTS)
    expected = b"".join(line for line in data.splitlines(keepends=True) if b" 404 " in line)
    assert gzip.decompress(out.read_bytes()) == expected


def test_bgzf_then_grep_keeps_lines_whole(tmp_path, text):
    """Member boundaries are not line boundaries: record stages get the sequential path."""
    data = text.read_bytes()
    src = tmp_path / "in.bgz"
    src.write_bytes(make(MAKERS["bgzip"], data))
    out = tmp_path / "out"
    pipeline(FileSource(str(src)), _decompress(), dataflow.Grep(" 404 "), FileSink(out), **OPTS)
    expected = b"".join(line for line in data.splitlines(keepends=True) if b" 404 " in line)
    assert out.read_bytes() == expected


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


# (name, how to damage a gzip file of the text, expected message fragment)
CORRUPT_GZIP = [
    ("flipped byte mid-stream", lambda d: _flip(d, len(d) // 2), None),
    ("bad header", lambda d: d[:2] + b"\x07" + d[3:], "not in a known compressed format"),
    ("bad CRC", lambda d: d[:-8] + bytes([d[-8] ^ 1]) + d[-7:], "CRC"),
    ("bad length", lambda d: d[:-4] + bytes([d[-4] ^ 1]) + d[-3:], "length"),
    ("truncated", lambda d: d[:len(d) * 2 // 3], "truncated"),
    ("truncated trailer", lambda d: d[:-3], "truncated"),
    ("trailing junk", lambda d: d + b"junk!", "trailing"),
]


@pytest.mark.parametrize("name,damage,fragment", CORRUPT_GZIP, ids=[c[0] for c in CORRUPT_GZIP])
@pytest.mark.parametrize("maker", ["pigz", "bgzip"])
def test_corrupt_input_fails_naming_the_file_and_leaves_no_output(tmp_path, text, name, damage,
                                                                  fragment, maker):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(damage(make(MAKERS[maker], text.read_bytes())))
    require_tool("gzip")
    assert subprocess.run(["gzip", "-t", str(bad)], capture_output=True).returncode != 0
    r = run_cli("decompress", "-k", "-p", "2", "--chunk-size", "1MiB", str(bad))
    assert r.returncode == 1, r.stderr
    err = r.stderr.decode()
    assert "Traceback" not in err and "internal error" not in err
    assert "bad.gz" in err
    if fragment != "not in a known compressed format":
        assert "byte" in err  # the compressed offset
    if fragment:
        assert fragment.lower() in err.lower(), err
    assert sorted(os.listdir(tmp_path)) == ["bad.gz"]  # no output, no temp file; input kept


def test_empty_and_unknown_inputs_are_refused_before_starting(tmp_path):
    empty = tmp_path / "empty.gz"
    empty.write_bytes(b"")
    plain = tmp_path / "plain.gz"
    plain.write_bytes(b"just text\n")
    for path, fragment in ((empty, "empty"), (plain, "not in a known compressed format")):
        with pytest.raises(SourceError, match=fragment):
            pipeline(FileSource(str(path), split="bytes"), _decompress(), NullSink(), **OPTS)


def test_a_corrupt_member_in_a_parallel_job_names_the_stage_and_chunk(tmp_path, text):
    data = make(MAKERS["bgzip"], text.read_bytes())
    bad = tmp_path / "bad.bgz"
    bad.write_bytes(_flip(data, len(data) // 2))
    with pytest.raises((StageError, SourceError)) as info:
        pipeline(FileSource(str(bad), split="bytes"), _decompress(), FileSink(tmp_path / "o"),
                 **OPTS)
    assert "bad.bgz" in str(info.value) or "chunk" in str(info.value)
    assert not (tmp_path / "o").exists()


def test_cli_names_outputs_keeps_or_removes_inputs_and_filters_stdin(tmp_path, text):
    data = text.read_bytes()
    src = tmp_path / "app.log.zst"
    src.write_bytes(make(MAKERS["zstd"], data))
    r = run_cli("decompress", str(src))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "app.log").read_bytes() == data and not src.exists()
    r = run_cli("decompress", "-c", input=make(MAKERS["xz"], data))
    assert r.returncode == 0 and r.stdout == data
    r = run_cli("decompress", "-t", str(tmp_path / "app.log"))
    assert r.returncode == 1 and b"not in a known compressed format" in r.stderr
    odd = tmp_path / "data.bin"
    odd.write_bytes(gzip.compress(b"x"))
    r = run_cli("decompress", str(odd))
    assert r.returncode == 2 and b"unknown suffix" in r.stderr


def test_reader_leaving_early_is_quiet(tmp_path, text):
    src = tmp_path / "big.gz"
    src.write_bytes(make(MAKERS["pigz"], text.read_bytes() * 4))
    p = subprocess.Popen(f"{os.sys.executable} -m dataflow decompress -c {src} | head -c 100",
                         shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    out, err = p.communicate(timeout=60)
    assert len(out) == 100
    assert b"Traceback" not in err and b"error" not in err


def test_decompress_must_come_first(tmp_path, text):
    from dataflow.errors import UsageError

    with pytest.raises(UsageError, match=r"stages\[1\] \(decompress\) .* must be the first"):
        pipeline(FileSource(str(text)), dataflow.Passthrough(), _decompress(), NullSink(),
                 **OPTS)


@pytest.mark.parametrize("chunk", ["4KiB", "32KiB", "63KiB", "64KiB"])
def test_bgzf_with_slots_smaller_than_a_block_comes_back_whole(tmp_path, text, chunk):
    """A BGZF block decodes to up to 64 KiB: with smaller slots (a small chunk_size) the
    blocks are not inflated in place but iterated, and travel in slot-sized pieces."""
    data = text.read_bytes()[:3 << 20] + bytes(1 << 20)     # a run of zeros: a big ratio
    path = tmp_path / "in.gz"
    path.write_bytes(make(["bgzip", "-c"], data))
    got, stats = decompress_to(tmp_path, path, chunk_size=chunk)
    assert got == data
    assert stats.chunks > 2
    r = run_cli("decompress", "-c", "-k", "--chunk-size", chunk.replace("iB", ""), str(path))
    assert r.returncode == 0 and r.stdout == data, r.stderr.decode()


def test_members_are_grouped_so_each_chunk_decodes_into_one_slot():
    from dataflow.decoding import GUESSED_RATIO, group_members

    cuts = [0, 10, 20, 30, 40, 50]
    assert group_members(cuts, [100] * 5, 250, 1000) == [20, 40, 50]   # output bound
    assert group_members(cuts, [1] * 5, 1000, 25) == [20, 40, 50]      # input bound
    assert group_members(cuts, [1000, 1, 1, 1, 1], 250, 1000) == [10, 50]  # one big member
    guessed = 10 * GUESSED_RATIO
    assert group_members(cuts, [None] * 5, 2 * guessed, 1000) == [20, 40, 50]
    assert group_members([0, 7], [5], 1, 1) == [7]                      # never empty


def test_parallel_decompression_stays_under_the_memory_limit(tmp_path, sample_log):
    # Run as its own `dataflow run`: the engine counts its coordinator's memory, and inside
    # this test process the coordinator would be the whole pytest session.
    compressed = tmp_path / "in.zst"
    pipeline(FileSource(sample_log, split="bytes"), dataflow.Zstd(level=1),
             FileSink(compressed), workers=2, memory_limit="256MiB", chunk_size="1MiB")
    job = tmp_path / "job.yaml"
    job.write_text(f"source: {{file: '{compressed}', split: bytes}}\n"
                   "stages: [decompress]\nsink: {null: true}\n"
                   "workers: 2\nmemory_limit: 128MiB\nchunk_size: 1MiB\n")
    r = run_cli("run", str(job), "--quiet", "--stats", str(tmp_path / "stats.json"))
    assert r.returncode == 0, r.stderr.decode()
    import msgspec
    stats = msgspec.json.decode((tmp_path / "stats.json").read_bytes())
    assert stats["chunks"] >= 20 and stats["bytes_out"] == os.path.getsize(sample_log)
    assert 0 < stats["peak_memory"] <= 1.1 * (128 << 20), stats["peak_memory"]
