"""Tee branches with stages of their own (dataflow.Branch, `sink: {tee: [{..., stages: [...]}]}`):
one pass writes the plain output, a gzip of it and a count, each checked against real tools;
a failing branch fails the job and commits nothing; a branch whose reader leaves is dropped."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import dataflow
from dataflow import Branch, FileSink, FileSource, Tee, pipeline
from dataflow.errors import JobTimeout, StageError

from conftest import require_tool, run_cli
from helper_transforms import RaiseOn, Slow

PATTERN = " 404 "


def _expected(sample_log) -> bytes:
    grep = require_tool("grep")
    return subprocess.run([grep, PATTERN, sample_log], capture_output=True, check=True).stdout


def test_plain_and_gzipped_in_one_pass(tmp_path, sample_log):
    gz = require_tool("gzip")
    plain, packed = tmp_path / "errors.log", tmp_path / "errors.log.gz"
    pipeline(FileSource(sample_log), dataflow.Grep(PATTERN),
             Tee(FileSink(str(plain)), Branch(dataflow.Gzip(), FileSink(str(packed)), workers=2)),
             workers=2, memory_limit="512MiB", chunk_size="1MiB")
    expected = _expected(sample_log)
    assert plain.read_bytes() == expected
    subprocess.run([gz, "-t", str(packed)], check=True)
    assert subprocess.run([gz, "-dc", str(packed)], capture_output=True).stdout == expected


def test_yaml_branches_with_stages_and_a_count(tmp_path, sample_log):
    job = tmp_path / "job.yaml"
    job.write_text(f"""
source: {{file: {sample_log}}}
stages:
  - grep: {{pattern: "{PATTERN}"}}
sink:
  tee:
    - file: {tmp_path}/plain.log
    - file: {tmp_path}/plain.log.zst
      stages: [zstd]
      workers: 1
    - file: {tmp_path}/count.json
      stages: [count]
workers: 2
chunk_size: 1MiB
""")
    r = run_cli("run", str(job), "--quiet")
    assert r.returncode == 0, r.stderr
    expected = _expected(sample_log)
    assert (tmp_path / "plain.log").read_bytes() == expected
    zstd = require_tool("zstd")
    assert subprocess.run([zstd, "-dc", str(tmp_path / "plain.log.zst")],
                          capture_output=True, check=True).stdout == expected
    count = json.loads((tmp_path / "count.json").read_bytes())
    assert count == {"records": expected.count(b"\n"), "bytes": len(expected)}
    r = run_cli("run", str(job), "--explain")
    assert b"set aside" in r.stdout and b"tee branches' own jobs" in r.stdout
    r = run_cli("run", str(job), "--quiet")     # the outputs exist now: a branch's too
    assert r.returncode == 2
    assert f"{tmp_path}/plain.log already exists; use --force".encode() in r.stderr
    (tmp_path / "plain.log").unlink()
    r = run_cli("run", str(job), "--quiet")
    assert r.returncode == 2
    assert f"{tmp_path}/plain.log.zst already exists; use --force".encode() in r.stderr
    r = run_cli("run", str(job), "--quiet", "--force")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "plain.log").read_bytes() == expected


def test_a_failing_branch_fails_the_job_and_commits_nothing(tmp_path, sample_log):
    outs = [tmp_path / "a.log", tmp_path / "b.log"]
    outs[0].write_bytes(b"old a\n")
    with pytest.raises(StageError) as e:
        pipeline(FileSource(sample_log), dataflow.Grep(PATTERN),
                 Tee(FileSink(str(outs[0]), overwrite=True),
                     Branch(RaiseOn(2), FileSink(str(outs[1])), workers=1, chunk_size="64KiB")),
                 workers=2, memory_limit="512MiB", chunk_size="256KiB")
    assert "stages[0] (raise-on) failed on chunk 2" in str(e.value)
    assert any("tee's branch" in n and "raise-on" in n for n in e.value.__notes__)
    assert outs[0].read_bytes() == b"old a\n" and not outs[1].exists()
    assert sorted(os.listdir(tmp_path)) == ["a.log"]


def test_a_branch_whose_reader_leaves_is_dropped_and_the_rest_goes_on(tmp_path, sample_log):
    first = tmp_path / "first.txt"
    stats = pipeline(FileSource(sample_log), dataflow.Grep(PATTERN),
                     Tee(FileSink(str(tmp_path / "all.log")),
                         Branch(dataflow.Gzip(), dataflow.CommandSink(
                             ["sh", "-c", f"head -c 100 > {first}"]), workers=1)),
                     workers=2, memory_limit="512MiB", chunk_size="256KiB")
    assert (tmp_path / "all.log").read_bytes() == _expected(sample_log)
    assert first.read_bytes()[:2] == b"\x1f\x8b" and len(first.read_bytes()) == 100
    assert not stats.sink_closed_early      # the job itself went to its end


def test_cancelling_a_job_with_a_slow_branch_leaves_nothing(tmp_path, sample_log):
    with pytest.raises(JobTimeout):
        pipeline(FileSource(sample_log),
                 Tee(FileSink(str(tmp_path / "a.log")),
                     Branch(Slow(0.2), FileSink(str(tmp_path / "b.log")), workers=1,
                            chunk_size="64KiB")),
                 workers=2, memory_limit="512MiB", chunk_size="64KiB", timeout=1.5)
    assert os.listdir(tmp_path) == []


def test_branch_options_outside_a_tee_or_without_stages_are_refused(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("source: {file: in.log}\nsink: {file: out, stages: [gzip]}\n")
    r = run_cli("validate", str(job))
    assert r.returncode == 2
    assert b"sink.stages: stages goes with a tee branch (sink: {tee: [...]})" in r.stderr
    job.write_text("source: {file: in.log}\nsink:\n  tee:\n    - file: a\n"
                   "    - {file: b, workers: 2}\n")
    r = run_cli("validate", str(job))
    assert b"sink.tee[1].workers: workers goes with a tee branch that has stages of its own" \
        in r.stderr
    job.write_text("source: {file: in.log}\nsink:\n  tee:\n    - file: a\n"
                   "    - {file: b, stages: [decompress]}\n")
    r = run_cli("validate", str(job))
    assert b"sink.tee[1].stages[0]: decompress decodes the source's bytes, so it must be the " \
           b"first stage of the job" in r.stderr


def test_a_branch_that_fails_at_its_end_leaves_every_output_uncommitted(tmp_path):
    """The branch's error comes out only when the tee closes (one small chunk): the plain
    branch before it must not have been committed by then."""
    src = tmp_path / "in.log"
    src.write_bytes(b"one line\n" * 100)
    plain, other = tmp_path / "a.log", tmp_path / "b.log"
    plain.write_bytes(b"old a\n")
    with pytest.raises(StageError, match=r"raise-on\) failed on chunk 0"):
        pipeline(FileSource(str(src)),
                 Tee(FileSink(str(plain), overwrite=True),
                     Branch(RaiseOn(0), FileSink(str(other)), workers=1)),
                 workers=1, memory_limit="512MiB")
    assert plain.read_bytes() == b"old a\n" and not other.exists()
    assert sorted(os.listdir(tmp_path)) == ["a.log", "in.log"]


def test_a_head_in_a_branch_ends_that_branch_only(tmp_path, sample_log):
    first = tmp_path / "first.log"
    pipeline(FileSource(sample_log),
             Tee(FileSink(str(tmp_path / "all.log")),
                 Branch(dataflow.Head(5), FileSink(str(first)), workers=1,
                        chunk_size="64KiB")),
             workers=2, memory_limit="512MiB", chunk_size="256KiB")
    data = Path(sample_log).read_bytes()
    assert first.read_bytes() == b"".join(data.splitlines(keepends=True)[:5])
    assert (tmp_path / "all.log").read_bytes() == data


def test_big_outer_pieces_reach_a_branch_in_its_chunk_size_and_nothing_leaks(tmp_path,
                                                                             sample_log):
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    outs = []
    for i in range(3):
        out = tmp_path / f"b{i}.log"
        pipeline(FileSource(sample_log), Tee(FileSink(str(tmp_path / f"a{i}.log")),
                                             Branch(dataflow.Grep(PATTERN), FileSink(str(out)),
                                                    workers=1, chunk_size="256KiB")),
                 workers=2, memory_limit="512MiB", chunk_size="8MiB")
        outs.append(fds())
    assert (tmp_path / "b2.log").read_bytes() == _expected(sample_log)
    assert outs[0] == outs[1] == outs[2]     # no descriptor left per run (cancel tokens)


def test_auto_workers_fit_the_branch_limit_on_a_big_machine(monkeypatch):
    import dataflow.api
    monkeypatch.setattr(dataflow.api, "cpu_count", lambda: 16)
    branch = Branch(dataflow.Gzip(), dataflow.NullSink())          # 128 MiB by default
    assert 1 <= branch.workers < 16
    plan = dataflow.api.make_job_plan(workers=branch.workers, memory_limit="128MiB",
                                      stages=branch.stages)
    assert plan.estimate() <= 128 << 20


def test_branch_limits_and_records_are_checked_at_validate(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("source: {file: in.log}\nsink:\n  tee:\n    - file: a\n"
                   "    - {file: b, stages: [{xz: {level: 9}}], workers: 4, "
                   "memory_limit: 64MiB}\n")
    r = run_cli("validate", str(job))
    assert r.returncode == 2
    assert b"sink.tee[1].memory_limit: branch 1: memory_limit 64.0 MiB is too small for 4 " \
           b"workers" in r.stderr, r.stderr


def test_a_branch_takes_long_records_and_non_utf8_text_when_told(tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(b"k,v\n" + b"x" * (3 << 20) + b",1\ncaf\xe9,2\n")
    out = tmp_path / "b.csv"
    pipeline(FileSource(str(src), split="csv", max_record_size="4MiB",
                        errors="surrogateescape"),
             Tee(dataflow.NullSink(),
                 Branch(dataflow.Select([2]), FileSink(str(out)), split="csv",
                        errors="surrogateescape", max_record_size="4MiB", workers=1)),
             workers=1, memory_limit="512MiB", chunk_size="1MiB")
    assert out.read_bytes() == b"v\n1\n2\n"
