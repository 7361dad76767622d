"""Reading the next chunk in a thread while the coordinator writes the previous ones.

The coordinator's own work is two copies: the source into a shared-memory slot, and finished
slots out to the sink. Done one after the other on one thread, a passthrough job runs at about
half the speed of `cat`. With the read in a thread the two overlap (both are system calls that
release the GIL); the scheduler already allows one outstanding `ReadInto` at a time.

Only for sources whose reads always return (`reads_return`: regular files): teardown waits for
the read under way before the arena it writes into is unmapped, and a read from a pipe or a
socket could keep it waiting for ever. The result (or the exception) of a read is taken on
the coordinator's thread, woken through a pipe it waits on with its workers' connections.
"""
from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


class ReadAhead:
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="dataflow-read")
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._future: Future | None = None
        self._tag: Any = None   # what the caller attached to the read under way

    def fileno(self) -> int:
        """Readable when the read under way has finished (for multiprocessing's wait())."""
        return self._wake_r

    @property
    def busy(self) -> bool:
        return self._future is not None

    def submit(self, read: Callable[[], Any], tag: Any = None) -> None:
        assert self._future is None, "one read at a time"
        self._tag = tag
        self._future = self._pool.submit(read)
        self._future.add_done_callback(self._wake)

    def _wake(self, _: Future) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except OSError:   # closed by a teardown that no longer waits for it
            pass

    def take(self) -> tuple[Any, Any]:
        """The finished read's (tag, result); raises what the read raised."""
        assert self._future is not None
        os.read(self._wake_r, 1)
        future, self._future = self._future, None
        tag, self._tag = self._tag, None
        return tag, future.result()

    def close(self) -> None:
        """Wait for the read under way (it writes into the arena), then stop the thread."""
        self._pool.shutdown(wait=True)
        self._future = None
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
