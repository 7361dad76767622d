"""CancelToken: stop a running job from another thread (or a signal handler, or asyncio).

Rules:
- `cancel(reason)` may be called from any thread or a signal handler, any number of times;
  the first reason is kept. It takes no lock (a handler interrupting a `cancel()` in the same
  thread must not wait for itself): it sets the reason and writes one byte to a pipe.
- The coordinator waits on the token's file descriptor next to its workers' pipes, so a cancel
  wakes it at once; it then raises `Cancelled` out of the run, and the usual teardown runs
  (workers stopped, arena unlinked, a file sink's temp file removed).
- A token in use by a job is not closed under it: `close()` then waits for the job's end.
- A cancel cannot interrupt a call already blocked in the source's `readinto` or the sink's
  `write` (a stalled peer): it takes effect when that call returns. Network Readables and
  Writables take a `timeout` for that reason.
- A token holds a pipe (two descriptors) until `close()` or collection.
"""
from __future__ import annotations

import os
import threading


class CancelToken:
    """Cancel a job from outside: `token = CancelToken(); pipeline(..., cancel=token)`, then
    `token.cancel("why")` from another thread. Like an AbortSignal in the Web Streams API."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._r, self._w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._users = 0              # jobs waiting on the descriptor now
        self._closing = False
        self._lock = threading.Lock()   # for use/close bookkeeping only, never in cancel()

    @property
    def cancelled(self) -> bool:
        return self.reason is not None

    def cancel(self, reason: str = "cancelled by the caller") -> None:
        if self.reason is None:
            self.reason = reason
        try:
            os.write(self._w, b"x")  # non-blocking: a full pipe is already readable
        except OSError:              # closed, or full
            pass

    def fileno(self) -> int:
        """Readable once cancelled (for `multiprocessing.connection.wait` and selectors)."""
        return self._r

    def acquire(self) -> None:
        """A job starts waiting on the token: its descriptors stay open until `release`."""
        with self._lock:
            if self._r < 0:
                raise ValueError("this CancelToken is closed")
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._closing:
                self._close_fds()

    def close(self) -> None:
        with self._lock:
            self._closing = True
            if self._users == 0:
                self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._r, self._w):
            if fd >= 0:
                os.close(fd)
        self._r = self._w = -1

    def __del__(self) -> None:
        try:
            self._close_fds()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = f"cancelled: {self.reason}" if self.cancelled else "active"
        return f"<CancelToken {state}>"
