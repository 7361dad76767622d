"""Supervision that is not one fault with one outcome: a slow sink is no timeout, recycling
(worker_max_chunks), option checks.

Single faults (a hung or SIGSTOPped worker and chunk_timeout, a chunk that always hangs, a
worker killed while it starts, a leaking transform, a chunk that needs more than memory_limit)
are rows of the fault table, tests/test_fault_table.py, run through the real CLI."""
from __future__ import annotations

import time

import pytest

import dataflow
from dataflow import FileSink, FileSource, pipeline
from dataflow.errors import UsageError

from helper_transforms import CountLines, Expand, WorkerPids

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


# --------------------------------------------------------------------------- chunk_timeout
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
