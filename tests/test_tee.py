"""Tee: one pass, several Writables, bounded by the slowest; errors abort every branch."""
from __future__ import annotations

import gzip
import os
import time

import pytest

import dataflow
from dataflow import FileSink, FileSource, Tee, pipeline
from dataflow.errors import SinkError

from conftest import run_cli

JOB = dict(workers=2, memory_limit="256MiB", chunk_size="256KiB")


class Recorder:
    """A Writable that records what it got; `delay` per write makes it the slow branch."""

    def __init__(self, delay: float = 0.0, fail_at: int | None = None):
        self.delay = delay
        self.fail_at = fail_at
        self.pieces: list[bytes] = []
        self.state = "new"
        self.bytes = 0

    def open(self) -> None:
        self.state = "open"

    def write(self, data: memoryview) -> None:
        if self.fail_at is not None and len(self.pieces) == self.fail_at:
            raise SinkError("recorder full")
        time.sleep(self.delay)
        self.pieces.append(bytes(data))

    def close(self) -> None:
        self.state = "closed"

    def abort(self) -> None:
        self.state = "aborted"


def test_tee_writes_the_same_bytes_to_every_branch(tmp_path, sample_log):
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    rec = Recorder()
    stats = pipeline(FileSource(sample_log), dataflow.Grep(" 200 "),
                     Tee(FileSink(a), FileSink(b), rec), **JOB)
    with open(sample_log, "rb") as f:
        expect = b"".join(line for line in f if b" 200 " in line)
    assert a.read_bytes() == b.read_bytes() == b"".join(rec.pieces) == expect
    assert stats.bytes_out == len(expect) and rec.state == "closed"


def test_the_fast_branch_never_runs_ahead_of_the_slow_one(sample_log):
    """Writes are in lock step: when the slow branch has taken k pieces, the fast one has at
    most k + 1 (the piece being written), so nothing queues up for the slow one."""
    fast = Recorder()
    lags = []

    class Slow(Recorder):
        def write(self, data: memoryview) -> None:
            lags.append(len(fast.pieces) - len(self.pieces))
            super().write(data)

    slow = Slow(delay=0.002)
    pipeline(FileSource(sample_log), Tee(fast, slow), **JOB)
    assert len(fast.pieces) == len(slow.pieces) > 50
    assert max(lags) == 1 and min(lags) == 1


def test_an_error_in_one_branch_aborts_all_and_leaves_no_file(tmp_path, sample_log):
    a = tmp_path / "a.log"
    bad = Recorder(fail_at=3)
    with pytest.raises(SinkError, match="recorder full"):
        pipeline(FileSource(sample_log), Tee(FileSink(a), bad), **JOB)
    assert bad.state == "aborted"
    assert os.listdir(tmp_path) == []


def test_two_branches_writing_one_file_are_refused_before_the_start(tmp_path, sample_log):
    out = tmp_path / "x"
    with pytest.raises(SinkError, match="same file"):
        pipeline(FileSource(sample_log), Tee(FileSink(out), FileSink(out)), **JOB)
    assert not out.exists()


def test_tee_in_yaml_writes_plain_and_counts_in_one_pass(tmp_path, sample_log):
    job = tmp_path / "job.yaml"
    job.write_text(f"""
source: {{file: {sample_log}}}
stages:
  - count: {{report: {tmp_path / 'count.json'}}}
  - gzip
sink:
  tee:
    - file: {tmp_path / 'copy1.log.gz'}
    - file: {tmp_path / 'copy2.log.gz'}
workers: 2
memory_limit: 256MiB
""")
    r = run_cli("run", str(job), "--quiet")
    assert r.returncode == 0, r.stderr
    with open(sample_log, "rb") as f:
        data = f.read()
    for name in ("copy1.log.gz", "copy2.log.gz"):
        assert gzip.decompress((tmp_path / name).read_bytes()) == data
    assert b'"records":%d' % data.count(b"\n") in (tmp_path / "count.json").read_bytes().replace(b" ", b"")


def test_a_branch_whose_command_ends_early_is_dropped_and_the_others_go_on(tmp_path):
    out = tmp_path / "copy.log"
    head = dataflow.CommandSink(["sh", "-c", "head -c 10 > /dev/null"])
    stats = pipeline(dataflow.GenerateSource(16 << 20, seed=4), Tee(head, FileSink(out)), **JOB)
    expect = b"".join(dataflow.stream(dataflow.GenerateSource(16 << 20, seed=4), **JOB))
    assert out.read_bytes() == expect and stats.bytes_out == len(expect)
    assert not stats.sink_closed_early       # the job itself ran to the end


def test_when_every_branch_ends_early_the_job_ends_quietly():
    def endless():
        while True:
            yield b"line\n" * 1000

    stats = pipeline(dataflow.IterableSource(endless()),
                     Tee(dataflow.CommandSink(["head", "-n", "1"], stdout="null"),
                         dataflow.CommandSink(["head", "-n", "2"], stdout="null")),
                     timeout=60, **JOB)
    assert stats.sink_closed_early
