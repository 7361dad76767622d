"""The asyncio API: astream() and apipeline() run the job off the event loop, keep its
backpressure, and tear it down when the consumer leaves or the task is cancelled."""
from __future__ import annotations

import asyncio
import contextlib
import os
import time

import psutil
import pytest

import dataflow
from dataflow import FileSink, FileSource, GenerateSource, apipeline, astream, stream
from dataflow.errors import StageError

from helper_transforms import RaiseOn, Slow

JOB = dict(workers=2, memory_limit="256MiB", chunk_size="256KiB")


def tree_pss() -> int:
    me = psutil.Process()
    total = 0
    for p in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_full_info().pss
    return total


def test_astream_yields_what_stream_yields(sample_log):
    expect = b"".join(stream(FileSource(sample_log), dataflow.Grep(" 404 "), **JOB))

    async def main() -> bytes:
        return b"".join([p async for p in astream(FileSource(sample_log),
                                                 dataflow.Grep(" 404 "), **JOB)])

    got = asyncio.run(main())
    assert got == expect and got.count(b"\n") > 100


def test_a_slow_async_consumer_keeps_memory_flat_and_the_loop_free():
    """128 MiB through a consumer that sleeps per piece: the tree's memory stays near the
    job's own plan (the source is held back), and other tasks keep running meanwhile."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    async def main() -> tuple[int, int, int]:
        tick_task = asyncio.create_task(ticker())
        total = peak = 0
        samples = 0
        async for piece in astream(GenerateSource(128 << 20), **JOB):
            total += len(piece)
            await asyncio.sleep(0.002)
            if samples % 32 == 0:
                peak = max(peak, tree_pss())
            samples += 1
        tick_task.cancel()
        return total, peak, samples

    before = tree_pss()
    total, peak, pieces = asyncio.run(main())
    assert 127 << 20 < total <= 128 << 20
    assert pieces >= 400
    # the job's plan under 256 MiB, plus this test process: far below the 128 MiB of input
    # that an unbounded queue would hold on top
    assert peak - before < 200 << 20, (peak - before) >> 20
    assert ticks > 50          # the loop was never blocked for long


def test_breaking_out_of_astream_tears_the_job_down():
    async def main() -> float:
        async with contextlib.aclosing(astream(GenerateSource(512 << 20), Slow(0.01),
                                               **JOB)) as pieces:
            async for _ in pieces:
                break
        return time.monotonic()

    started = time.monotonic()
    ended = asyncio.run(main())
    assert ended - started < 10
    assert [c for c in psutil.Process().children()
            if "resource_tracker" not in " ".join(c.cmdline())] == []


def test_an_error_in_the_job_reaches_the_async_consumer():
    async def main() -> None:
        async for _ in astream(GenerateSource(8 << 20), RaiseOn(2), **JOB):
            pass

    with pytest.raises(StageError, match="bad chunk 2"):
        asyncio.run(main())


def test_apipeline_returns_stats_and_writes_the_file(tmp_path, sample_log):
    out = tmp_path / "out.log"

    async def main():
        return await apipeline(FileSource(sample_log), dataflow.Grep("POST"), FileSink(out),
                               **JOB)

    stats = asyncio.run(main())
    with open(sample_log, "rb") as f:
        expect = b"".join(line for line in f if b"POST" in line)
    assert out.read_bytes() == expect and stats.bytes_out == len(expect)


async def seconds_to_cancel(job, after: float) -> float:
    """Run coroutine `job` as a task, cancel it `after` seconds, and return how long the
    cancellation took to land (it must raise CancelledError)."""
    task = asyncio.create_task(job)
    await asyncio.sleep(after)
    task.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    return time.monotonic() - started


def test_cancelling_the_apipeline_task_aborts_the_job(tmp_path):
    out = tmp_path / "out.log"

    job = apipeline(GenerateSource(1 << 30), Slow(0.02), FileSink(out), **JOB)
    assert asyncio.run(seconds_to_cancel(job, after=1.0)) < 5
    assert os.listdir(tmp_path) == []


def test_an_async_callable_sink_under_apipeline_gets_every_piece_in_order():
    got: list[bytes] = []

    async def sink(data: bytes) -> None:
        await asyncio.sleep(0)
        got.append(data)

    async def main():
        return await apipeline(GenerateSource(4 << 20, seed=3), dataflow.Grep("GET"),
                               dataflow.CallableSink(sink), **JOB)

    stats = asyncio.run(main())
    expect = b"".join(stream(GenerateSource(4 << 20, seed=3), dataflow.Grep("GET"), **JOB))
    assert b"".join(got) == expect and stats.bytes_out == len(expect) > 0


def test_an_async_callable_sink_outside_apipeline_is_refused():
    async def sink(data: bytes) -> None:
        pass

    with pytest.raises(dataflow.SinkError, match="apipeline"):
        dataflow.pipeline(GenerateSource(1000), dataflow.CallableSink(sink), **JOB)


def test_a_loop_closed_without_closing_the_stream_still_tears_the_job_down():
    """No aclose() (the loop is closed under a suspended astream): the job's thread notices
    and tears down; no worker, thread or segment is left (the autouse fixture checks)."""
    import gc
    import threading

    loop = asyncio.new_event_loop()
    pieces = astream(GenerateSource(256 << 20), **JOB)
    loop.run_until_complete(pieces.__anext__())
    loop.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(t.name == "dataflow-astream"
                                              for t in threading.enumerate()):
        time.sleep(0.05)
    assert not any(t.name == "dataflow-astream" for t in threading.enumerate())
    del pieces
    gc.collect()


def test_cancelling_apipeline_cancels_an_async_sink_that_waits():
    async def sink(data: bytes) -> None:
        await asyncio.sleep(3600)

    job = apipeline(GenerateSource(1 << 20), dataflow.CallableSink(sink), **JOB)
    assert asyncio.run(seconds_to_cancel(job, after=1.5)) < 5


def test_async_hooks_of_a_sync_callable_sink_run_under_apipeline():
    events = []

    async def on_close() -> None:
        await asyncio.sleep(0)
        events.append("closed")

    async def main():
        return await apipeline(GenerateSource(1 << 20), dataflow.CallableSink(
            lambda b: None, close=on_close), **JOB)

    asyncio.run(main())
    assert events == ["closed"]
    with pytest.raises(dataflow.SinkError, match="coroutine function"):
        dataflow.pipeline(GenerateSource(1000), dataflow.CallableSink(lambda b: None,
                                                                      close=on_close), **JOB)
