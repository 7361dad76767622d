"""The coordinator reads the next chunk in a thread (dataflow/readahead.py): the thread's
results and errors reach the coordinator, and teardown waits for a read under way before the
arena it writes into goes away."""
from __future__ import annotations

import os
import threading
import time
from multiprocessing.connection import wait

import pytest

from dataflow import FileSink, FileSource, JobTimeout, SourceError, pipeline
from dataflow.readahead import ReadAhead
from workers.grep import Grep


def test_a_read_result_wakes_the_waiter_and_comes_back_with_its_tag():
    ahead = ReadAhead()
    try:
        assert not ahead.busy
        ahead.submit(lambda: threading.current_thread().name, tag=7)
        assert ahead.busy
        assert wait([ahead], timeout=5) == [ahead]
        tag, name = ahead.take()
        assert (tag, ahead.busy) == (7, False)
        assert name.startswith("dataflow-read")        # it ran on the reading thread
        assert wait([ahead], timeout=0.05) == []         # one wake-up per read
    finally:
        ahead.close()


def test_what_a_read_raises_is_raised_by_take():
    ahead = ReadAhead()
    try:
        ahead.submit(lambda: 1 / 0, tag=0)
        assert wait([ahead], timeout=5) == [ahead]
        with pytest.raises(ZeroDivisionError):
            ahead.take()
        assert not ahead.busy
    finally:
        ahead.close()


def test_close_waits_for_the_read_under_way():
    ahead = ReadAhead()
    done = []
    ahead.submit(lambda: (time.sleep(0.3), done.append(1)), tag=0)
    ahead.close()
    assert done == [1]


class SlowFile(FileSource):
    """A file whose reads take `delay` seconds each; `returned` is when the last one did."""

    def __init__(self, path, delay):
        super().__init__(path)
        self.delay = delay
        self.returned = 0.0

    def readinto(self, buffer):
        time.sleep(self.delay)
        n = super().readinto(buffer)
        self.returned = time.monotonic()
        return n


def test_a_job_stopped_during_a_read_waits_for_it_then_cleans_up(tmp_path):
    """The timeout strikes while the reading thread sleeps inside a read into a slot: the
    coordinator waits for that read (it writes into the arena, through the source's open
    file) before it closes them, and reports the timeout alone; no reading thread is left."""
    src = tmp_path / "in.log"
    src.write_bytes(b"line\n" * 200_000)
    out = tmp_path / "out.log"
    slow = SlowFile(str(src), delay=1.5)
    with pytest.raises(JobTimeout):
        pipeline(slow, Grep("x", invert=True), FileSink(str(out)), workers=2,
                 chunk_size="64KiB", timeout=0.5)
    ended = time.monotonic()
    assert 0 < slow.returned <= ended       # the read under way had finished
    assert not [t for t in threading.enumerate() if t.name.startswith("dataflow-read")]
    assert not out.exists()
    assert os.listdir(tmp_path) == ["in.log"]


def test_a_read_error_in_the_thread_names_the_file_and_byte(tmp_path):
    """A file that shrinks while it is read: the error raised on the reading thread reaches
    the caller as the same SourceError, with the file and the byte reached."""
    src = tmp_path / "in.log"
    src.write_bytes(b"0123456789abcde\n" * 65536)   # 1 MiB

    class Shrinking(FileSource):
        def readinto(self, buffer):
            n = super().readinto(buffer)
            if self._pos >= 256 * 1024 and os.path.getsize(src) > 300_000:
                os.truncate(src, 300_000)
            return n

    with pytest.raises(SourceError, match=r"in\.log shrank while it was read"):
        pipeline(Shrinking(str(src)), Grep("x", invert=True),
                 FileSink(str(tmp_path / "out.log")), workers=2, chunk_size="64KiB")
    assert not (tmp_path / "out.log").exists()
