"""Supervision: chunk timeouts (a hung or stopped worker), recycling (worker_max_chunks), and
the memory watchdog (a leaking transform, a chunk that needs more than the limit).

Jobs whose memory is judged run in a fresh interpreter (the coordinator's own memory counts,
and inside pytest the coordinator would be the whole test session)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import msgspec
import pytest

import dataflow
from dataflow import FileSink, FileSource, pipeline
from dataflow.errors import UsageError, WorkerCrashedError

from helper_transforms import CountLines, Expand, HangOnce, KillInSetupOnce, Slow, WorkerPids

TESTS = os.path.dirname(os.path.abspath(__file__))
SMALL = dict(memory_limit="128MiB", chunk_size="256KiB")


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def log(sample_log, tmp_path_factory):
    """6 MiB of the sample log: 24 chunks of 256 KiB."""
    path = tmp_path_factory.mktemp("faults") / "in.log"
    with open(sample_log, "rb") as f:
        path.write_bytes(f.read(6 << 20))
    return str(path)


def no_temp_files(directory) -> bool:
    return not [p for p in os.listdir(directory) if p.endswith(".dataflow-tmp")]


# --------------------------------------------------------------------------- chunk_timeout
@pytest.mark.parametrize("how", ["sleep", "sigstop"])
def test_a_hung_or_stopped_worker_is_replaced_after_chunk_timeout(tmp_path, log, how):
    marker = tmp_path / "hung"
    out = tmp_path / "out"
    started = time.monotonic()
    stats = pipeline(FileSource(log), HangOnce(5, str(marker), how), FileSink(out),
                     workers=2, chunk_timeout=1.5, **SMALL)
    assert marker.exists(), "the fault did not happen"
    assert stats.timed_out == 1 and stats.retries >= 1
    assert read(out) == read(log)
    assert time.monotonic() - started < 30


def test_a_chunk_that_always_hangs_fails_naming_the_timeout(tmp_path, log):
    out = tmp_path / "out"
    out.write_bytes(b"old output")
    with pytest.raises(WorkerCrashedError) as e:
        pipeline(FileSource(log), Slow(3600), FileSink(out), workers=2, chunk_timeout="1s",
                 max_attempts=2, **SMALL)
    msg = str(e.value)
    assert "failed 2 times" in msg and "chunk_timeout (1 s" in msg, msg
    assert "SIGTERM(-15)" in msg and log in msg
    assert read(out) == b"old output" and no_temp_files(tmp_path)


class SlowSink:
    """A Writable that takes `seconds` for each of its first `slow` writes."""

    def __init__(self, seconds: float, slow: int):
        self.seconds, self.slow = seconds, slow
        self.data = bytearray()

    def open(self) -> None:
        pass

    def write(self, piece: memoryview) -> None:
        if self.slow > 0:
            self.slow -= 1
            time.sleep(self.seconds)
        self.data += piece

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def test_waiting_for_a_slow_sink_is_not_a_timeout(log):
    # each chunk's output is 3 slots long, so workers wait for the sink between pieces
    sink = SlowSink(1.2, slow=4)
    stats = pipeline(FileSource(log), Expand(3), sink, workers=2, chunk_timeout=1.0,
                     memory_limit="128MiB", chunk_size="1MiB")
    assert stats.timed_out == 0 and stats.retries == 0
    assert bytes(sink.data) == b"".join(
        bytes(read(log)[o:o + n]) * 3 for o, n in _chunks(log, 1 << 20))


def _chunks(path, size):
    """(offset, length) of line-aligned chunks as the engine cuts them (records end on \\n)."""
    data = read(path)
    out, start = [], 0
    while start < len(data):
        end = min(start + size, len(data))
        if end < len(data):
            end = data.rindex(b"\n", start, end) + 1
        out.append((start, end - start))
        start = end
    return out


def test_chunk_timeout_is_validated():
    with pytest.raises(UsageError, match="chunk_timeout"):
        list(dataflow.stream(FileSource(__file__), chunk_timeout="soon"))


def test_a_worker_killed_while_starting_is_replaced(tmp_path, log):
    marker = tmp_path / "killed"
    out = tmp_path / "out"
    pipeline(FileSource(log), KillInSetupOnce(str(marker)), FileSink(out), workers=2, **SMALL)
    assert marker.exists(), "the fault did not happen"
    assert read(out) == read(log)


# --------------------------------------------------------------------------- recycling
def test_worker_max_chunks_replaces_workers_and_keeps_the_output(tmp_path, log):
    out = tmp_path / "out"
    stats = pipeline(FileSource(log), WorkerPids(), FileSink(out), workers=2,
                     worker_max_chunks=3, **SMALL)
    pids = stats.results["0:worker-pids"]
    assert len(pids) == stats.chunks >= 24
    runs = {pid: pids.count(pid) for pid in pids}
    # a worker takes at most 3 chunks plus the ones queued for it before its 3rd was done
    assert max(runs.values()) <= 3 + 1, runs
    assert len(runs) >= 24 // 4 and stats.recycled >= len(runs) - 2
    assert read(out) == read(log)


def test_worker_max_chunks_refuses_stages_with_per_worker_state(log):
    with pytest.raises(UsageError, match=r"stages\[0\] \(count-lines\).*flush"):
        pipeline(FileSource(log), CountLines(flush_marker=True), dataflow.NullSink(),
                 worker_max_chunks=5)


# --------------------------------------------------------------------------- memory watchdog
def run_script(tmp_path, body: str, timeout: float = 120) -> tuple[int, dict | None, str]:
    """Run `body` (which sets `stats`) in a fresh interpreter; return exit code, the stats
    as a dict, and stderr."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {TESTS!r})
        import msgspec
        import dataflow
        from dataflow import FileSink, FileSource, pipeline
        from helper_transforms import *

        if __name__ == "__main__":
            try:
        {textwrap.indent(textwrap.dedent(body).strip(), " " * 16)}
            except dataflow.DataflowError as e:
                print(e, file=sys.stderr)
                sys.exit(1)
            sys.stdout.buffer.write(msgspec.json.encode(stats))
        """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=timeout,
                       cwd=tmp_path, start_new_session=True)
    stats = msgspec.json.decode(r.stdout) if r.returncode == 0 else None
    return r.returncode, stats, r.stderr.decode()


def test_a_leaking_transform_is_recycled_and_the_job_stays_near_the_limit(tmp_path, log):
    code, stats, err = run_script(tmp_path, f"""
        stats = pipeline(FileSource({log!r}), Leak(mib=6, delay=0.1), FileSink("out"),
                         workers=2, memory_limit="128MiB", chunk_size="256KiB")
    """)
    assert code == 0, err
    assert read(tmp_path / "out") == read(log)
    # unchecked, 24 chunks x 6 MiB would leave ~144 MiB in the workers on top of the job
    assert stats["recycled"] + stats["memory_kills"] >= 1, stats
    assert stats["peak_memory"] <= 1.25 * (128 << 20), stats


def test_a_chunk_needing_more_than_the_limit_fails_naming_it(tmp_path, log):
    (tmp_path / "out").write_bytes(b"old output")
    code, stats, err = run_script(tmp_path, f"""
        stats = pipeline(FileSource({log!r}), Balloon(seq=2, mib=400, seconds=30),
                         FileSink("out"), workers=2, memory_limit="128MiB",
                         chunk_size="256KiB", max_attempts=2)
    """)
    assert code == 1, err
    assert "chunk 2" in err and "failed 2 times" in err and "memory_limit (128.0 MiB" in err, err
    assert read(tmp_path / "out") == b"old output" and no_temp_files(tmp_path)
