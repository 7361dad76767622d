"""CancelToken: stop a running job from another thread (or a signal handler, or asyncio).

Rules:
- `cancel(reason)` may be called from any thread, any number of times; the first reason wins.
- The coordinator waits on the token's file descriptor next to its workers' pipes, so a cancel
  wakes it at once; it then raises `Cancelled` out of the run, and the usual teardown runs
  (workers stopped, arena unlinked, a file sink's temp file removed).
- A cancel cannot interrupt a call already blocked in the source's `readinto` or the sink's
  `write` (a stalled peer): it takes effect when that call returns. Network Readables and
  Writables take a `timeout` for that reason.
- A token is for one job; it holds a pipe (two descriptors) until `close()` or collection.
"""
from __future__ import annotations

import os
import threading


class CancelToken:
    """Cancel a job from outside: `token = CancelToken(); pipeline(..., cancel=token)`, then
    `token.cancel("why")` from another thread. Like an AbortSignal in the Web Streams API."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reason: str | None = None
        self._r, self._w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    @property
    def cancelled(self) -> bool:
        return self.reason is not None

    def cancel(self, reason: str = "cancelled by the caller") -> None:
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            if self._w >= 0:
                try:
                    os.write(self._w, b"x")
                except OSError:  # full (cannot be: one byte) or closed
                    pass

    def fileno(self) -> int:
        """Readable once cancelled (for `multiprocessing.connection.wait` and selectors)."""
        return self._r

    def close(self) -> None:
        with self._lock:
            for fd in (self._r, self._w):
                if fd >= 0:
                    os.close(fd)
            self._r = self._w = -1

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = f"cancelled: {self.reason}" if self.cancelled else "active"
        return f"<CancelToken {state}>"
