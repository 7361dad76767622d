"""DirectorySink: one output per input, names mirrored; checks before the first file."""
from __future__ import annotations

import gzip
import os
import subprocess

import pytest

import dataflow
from dataflow import DirectorySink, FileSource, pipeline
from dataflow.errors import SinkError, StageError, UsageError

from conftest import require_tool, run_cli
from helper_transforms import RaiseOn

JOB = dict(workers=2, memory_limit="256MiB", chunk_size="64KiB")


@pytest.fixture
def tree(tmp_path):
    """logs/a.log.gz, logs/sub/b.log.gz, logs/sub/deeper/c.log.gz, different contents."""
    from dataflow.generate import generate_blocks

    root = tmp_path / "logs"
    files = {}
    for i, rel in enumerate(["a.log.gz", "sub/b.log.gz", "sub/deeper/c.log.gz"]):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = b"".join(generate_blocks((i + 1) * 200_000, seed=i))
        path.write_bytes(gzip.compress(data))
        files[rel] = data
    return root, files


def test_recompress_a_tree_of_gz_to_zst_with_mirrored_names(tmp_path, tree):
    zstd = require_tool("zstd")
    root, files = tree
    out = tmp_path / "out"
    sink = DirectorySink(out, strip_suffix=".gz", suffix=".zst")
    stats = pipeline(FileSource(str(root / "**" / "*.gz")), dataflow.Decompress(),
                     dataflow.Zstd(), sink, **JOB)
    assert sorted(os.path.relpath(p, out) for p in sink.outputs) == \
        ["a.log.zst", "sub/b.log.zst", "sub/deeper/c.log.zst"]
    for rel, data in files.items():
        target = out / (rel[:-3] + ".zst")
        subprocess.run([zstd, "-tq", str(target)], check=True)
        got = subprocess.run([zstd, "-dc", str(target)], capture_output=True, check=True).stdout
        assert got == data, rel
    assert stats.bytes_in == sum(len(d) for d in files.values())


def test_two_inputs_that_map_to_one_output_are_refused_before_any_work(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.log").write_bytes(b"a\n")
    (tmp_path / "in" / "x.log.gz").write_bytes(gzip.compress(b"b\n"))
    out = tmp_path / "out"
    with pytest.raises(SinkError, match="would both be written to"):
        pipeline(FileSource([str(tmp_path / "in" / "x.log"), str(tmp_path / "in" / "x.log.gz")]),
                 DirectorySink(out, strip_suffix=".gz"), **JOB)
    assert not out.exists() or not any(out.iterdir())


def test_an_existing_output_is_refused_without_overwrite(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.log").write_bytes(b"a\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.log.out").write_bytes(b"old")
    with pytest.raises(SinkError, match="already exists"):
        pipeline(FileSource(str(tmp_path / "in" / "x.log")),
                 DirectorySink(tmp_path / "out", suffix=".out", overwrite=False), **JOB)
    assert (tmp_path / "out" / "x.log.out").read_bytes() == b"old"


def test_a_failure_keeps_the_finished_files_and_names_the_failing_input(tmp_path, tree):
    root, files = tree
    out = tmp_path / "out"
    # chunk 5 exists only in the bigger files: a.log.gz (200 kB, 4 chunks) passes, b fails
    with pytest.raises(StageError) as info:
        pipeline(FileSource(str(root / "**" / "*.gz")), dataflow.Decompress(), RaiseOn(5),
                 DirectorySink(out, strip_suffix=".gz"), **JOB)
    note = " ".join(getattr(info.value, "__notes__", []))
    assert "sub/b.log.gz" in note and "file 2 of 3" in note
    assert (out / "a.log").read_bytes() == files["a.log.gz"]
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert left == ["a.log"]           # no half-written b.log, no temp file


def test_a_directory_sink_needs_a_file_source(tmp_path):
    with pytest.raises(UsageError, match="file source"):
        pipeline(dataflow.GenerateSource(1000), DirectorySink(tmp_path), **JOB)


def test_directory_sink_in_yaml_and_force(tmp_path, tree):
    root, files = tree
    job = tmp_path / "job.yaml"
    job.write_text(f"""
source: {{file: "{root}/**/*.gz"}}
stages: [decompress, {{grep: {{pattern: " 404 "}}}}]
sink: {{directory: {tmp_path / 'out'}, strip_suffix: .gz, suffix: .hits}}
workers: 2
memory_limit: 256MiB
""")
    r = run_cli("run", str(job), "--quiet")
    assert r.returncode == 0, r.stderr
    for rel, data in files.items():
        expect = b"".join(l for l in data.splitlines(keepends=True) if b" 404 " in l)
        assert (tmp_path / "out" / (rel[:-3] + ".hits")).read_bytes() == expect
    again = run_cli("run", str(job), "--quiet")
    assert again.returncode == 2 and b"already exists; use --force" in again.stderr
    assert run_cli("run", str(job), "--quiet", "--force").returncode == 0


def test_csv_files_each_keep_their_header(tmp_path):
    (tmp_path / "in").mkdir()
    for name, rows in (("a.csv", 3), ("b.csv", 5)):
        (tmp_path / "in" / name).write_text("id,name\n" + "".join(
            f"{i},n{i}\n" for i in range(rows)))
    sink = DirectorySink(tmp_path / "out", suffix=".jsonl", strip_suffix=".csv")
    pipeline(FileSource(str(tmp_path / "in" / "*.csv"), split="csv"), dataflow.CsvToJsonl(),
             sink, **JOB)
    assert (tmp_path / "out" / "a.jsonl").read_text().splitlines() == [
        '{"id":"0","name":"n0"}', '{"id":"1","name":"n1"}', '{"id":"2","name":"n2"}']
    assert len((tmp_path / "out" / "b.jsonl").read_text().splitlines()) == 5


def test_timeout_bounds_the_whole_directory_run(tmp_path, tree):
    from dataflow.errors import JobTimeout
    from helper_transforms import Slow

    root, _ = tree
    with pytest.raises(JobTimeout):
        pipeline(FileSource(str(root / "**" / "*.gz")), dataflow.Decompress(), Slow(0.6),
                 DirectorySink(tmp_path / "out", strip_suffix=".gz"), timeout=1.5, **JOB)


def test_each_file_keeps_the_sources_errors_setting(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("a.csv", "b.csv"):
        (tmp_path / "in" / name).write_bytes(b"id,city\n1,caf\xe9\n")
    pipeline(FileSource(str(tmp_path / "in" / "*.csv"), split="csv", errors="surrogateescape"),
             dataflow.Select(["city"]),
             DirectorySink(tmp_path / "out", suffix=".out", strip_suffix=".csv"), **JOB)
    for name in ("a.out", "b.out"):
        assert (tmp_path / "out" / name).read_bytes() == b"city\ncaf\xe9\n"
