"""Python objects as stream ends: Readable.from_iterable and Writable.from_callable."""
from __future__ import annotations

import pytest

import dataflow
from dataflow import CallableSink, IterableSource, Readable, Writable, pipeline, stream
from dataflow.errors import SourceError

JOB = dict(workers=2, memory_limit="256MiB", chunk_size="64KiB")


def test_a_generator_of_str_and_bytes_feeds_a_job_in_order():
    lines = [f"{i} {'even' if i % 2 == 0 else 'odd'}\n" for i in range(200_000)]

    def items():
        for i, line in enumerate(lines):
            yield line if i % 3 else line.encode()

    got = b"".join(stream(Readable.from_iterable(items()), dataflow.Grep("even"), **JOB))
    assert got == "".join(l for l in lines if "even" in l).encode()


def test_items_are_cut_into_records_whatever_their_size():
    data = b"".join(b"record-%d\n" % i for i in range(50_000))
    # pieces that end mid-record, some empty: the framing still keeps records whole
    pieces = [data[i:i + 777] for i in range(0, len(data), 777)] + [b""]
    out = b"".join(stream(IterableSource(pieces), dataflow.Grep("7$"), **JOB))
    assert out == b"".join(l + b"\n" for l in data.split(b"\n") if l.endswith(b"7"))


def test_a_bad_item_names_its_index():
    with pytest.raises(SourceError, match="item 2 of the iterable is int"):
        b"".join(stream(IterableSource([b"a\n", "b\n", 3]), **JOB))


def test_a_raising_generator_fails_the_job_and_is_closed():
    closed = []

    def items():
        try:
            yield b"x\n" * 1000
            raise RuntimeError("upstream broke")
        finally:
            closed.append(True)

    with pytest.raises(SourceError, match="RuntimeError: upstream broke"):
        pipeline(IterableSource(items()), dataflow.NullSink(), **JOB)
    assert closed == [True]


def test_a_generator_is_closed_when_the_consumer_leaves_early():
    state = {"made": 0, "closed": False}

    def endless():
        try:
            while True:
                state["made"] += 1
                yield b"line\n" * 10_000
        finally:
            state["closed"] = True

    pieces = stream(IterableSource(endless()), **JOB)
    next(pieces)
    pieces.close()
    assert state["closed"] and state["made"] < 1000   # pulled only as slots freed up


def test_a_callable_sink_gets_every_piece_and_close():
    got, events = [], []
    sink = Writable.from_callable(got.append, close=lambda: events.append("close"),
                                  abort=lambda: events.append("abort"))
    stats = pipeline(dataflow.GenerateSource(1 << 20, seed=5), sink, **JOB)
    assert b"".join(got) == b"".join(stream(dataflow.GenerateSource(1 << 20, seed=5), **JOB))
    assert events == ["close"] and sink.bytes == stats.bytes_out


def test_a_callable_sink_raising_aborts():
    events = []

    def fn(data: bytes) -> None:
        raise ValueError("no room")

    with pytest.raises(ValueError, match="no room"):
        pipeline(dataflow.GenerateSource(1 << 20), CallableSink(fn, abort=lambda: events.append(1)),
                 **JOB)
    assert events == [1]


def test_a_generator_may_reuse_its_bytearray():
    def reuse():
        buf = bytearray()
        for i in range(20_000):
            buf.clear()
            buf += b"item %d\n" % i
            yield buf

    got = b"".join(stream(IterableSource(reuse()), **JOB))
    assert got == b"".join(b"item %d\n" % i for i in range(20_000))
