"""Cancellation: a CancelToken from another thread, a job timeout, leaving stream() early.
Each must tear the whole job down: no worker, no segment, no output file left behind."""
from __future__ import annotations

import os
import threading
import time

import pytest

import dataflow
from dataflow import FileSink, GenerateSource, pipeline, stream
from dataflow.cancel import CancelToken
from dataflow.errors import Cancelled, JobTimeout

from conftest import run_cli
from helper_transforms import Slow

JOB = dict(workers=2, memory_limit="256MiB", chunk_size="256KiB")


def test_a_token_cancelled_from_another_thread_stops_the_job_and_removes_the_output(tmp_path):
    token = CancelToken()
    out = tmp_path / "out.log"
    timer = threading.Timer(0.8, token.cancel, args=("the user pressed stop",))
    timer.start()
    started = time.monotonic()
    with pytest.raises(Cancelled, match="the user pressed stop") as info:
        pipeline(GenerateSource(64 << 20), Slow(0.05), FileSink(out), cancel=token, **JOB)
    elapsed = time.monotonic() - started
    timer.join()
    assert info.value.reason == "the user pressed stop"
    assert elapsed < 0.8 + 3, elapsed        # woken by the token, not by the job's end
    assert not out.exists()
    assert os.listdir(tmp_path) == []          # no temp file either
    token.close()


def test_a_token_cancelled_before_the_start_runs_nothing(tmp_path):
    token = CancelToken()
    token.cancel()
    token.cancel("a second reason is ignored")
    with pytest.raises(Cancelled, match="cancelled by the caller"):
        pipeline(GenerateSource(1 << 20), FileSink(tmp_path / "o"), cancel=token, **JOB)
    assert token.reason == "cancelled by the caller"
    assert not (tmp_path / "o").exists()


def test_timeout_stops_a_slow_job_with_job_timeout(tmp_path):
    started = time.monotonic()
    with pytest.raises(JobTimeout, match="timeout of 1 s") as info:
        pipeline(GenerateSource(64 << 20), Slow(0.05), FileSink(tmp_path / "o"),
                 timeout="1s", **JOB)
    assert 1.0 <= time.monotonic() - started < 4
    assert info.value.exit_code == 124
    assert os.listdir(tmp_path) == []


def test_a_fast_job_finishes_within_its_timeout(tmp_path):
    stats = pipeline(GenerateSource(2 << 20), FileSink(tmp_path / "o"), timeout=60, **JOB)
    assert stats.bytes_out == stats.bytes_in == (tmp_path / "o").stat().st_size > 2_000_000


def test_a_bad_timeout_is_a_usage_error():
    with pytest.raises(dataflow.UsageError, match="timeout"):
        pipeline(GenerateSource(1000), dataflow.NullSink(), timeout="soon", **JOB)


def test_stream_cancelled_while_the_consumer_iterates():
    token = CancelToken()
    got = 0
    with pytest.raises(Cancelled):
        for piece in stream(GenerateSource(64 << 20), cancel=token, **JOB):
            got += len(piece)
            if got > 1 << 20:
                token.cancel()
    assert got < 64 << 20


def test_leaving_stream_early_tears_down_at_once():
    pieces = stream(GenerateSource(256 << 20), Slow(0.01), **JOB)
    assert len(next(pieces)) > 0
    started = time.monotonic()
    pieces.close()          # what `break` does to a generator: workers stop, arena unlinked
    assert time.monotonic() - started < 5
    # the autouse fixture checks that no worker and no segment is left


def test_cli_timeout_exits_124_and_leaves_no_output(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("source: {generate: {size: 64MiB}}\n"
                   "stages: [{exec: {argv: [sh, -c, 'sleep 0.2; cat']}}]\n"
                   f"sink: {{file: {tmp_path / 'out.log'}}}\n"
                   "workers: 2\nmemory_limit: 256MiB\nchunk_size: 1MiB\ntimeout: 1s\n")
    r = run_cli("run", str(job), "--quiet")
    assert r.returncode == 124, r.stderr
    assert b"timeout of 1 s" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["job.yaml"]


def test_cancel_from_a_signal_handler_stops_the_job(tmp_path):
    import signal

    token = CancelToken()
    old = signal.signal(signal.SIGALRM, lambda *_: token.cancel("SIGALRM"))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.8)
        with pytest.raises(Cancelled, match="SIGALRM"):
            pipeline(GenerateSource(64 << 20), Slow(0.05), FileSink(tmp_path / "o"),
                     cancel=token, **JOB)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert os.listdir(tmp_path) == []


def test_closing_a_token_while_a_job_waits_on_it_is_deferred_to_the_jobs_end(tmp_path):
    token = CancelToken()
    timer = threading.Timer(0.5, token.close)
    timer.start()
    stats = pipeline(GenerateSource(8 << 20), Slow(0.02), FileSink(tmp_path / "o"),
                     cancel=token, **JOB)
    timer.join()
    assert stats.bytes_out == (tmp_path / "o").stat().st_size > 8_000_000
    assert token.fileno() == -1          # closed once the job let go of it


def test_a_sink_that_ends_early_discards_the_fold_reports(tmp_path):
    report = tmp_path / "count.json"
    job = tmp_path / "job.yaml"
    job.write_text(f"source: {{generate: {{size: 64MiB}}}}\n"
                   f"stages: [{{count: {{report: {report}}}}}]\n"
                   f"sink: {{command: [head, -n, '2']}}\nworkers: 2\nmemory_limit: 256MiB\n")
    r = run_cli("run", str(job), "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(b"\n") == 2
    assert not report.exists()           # it would count only what was read before the end
