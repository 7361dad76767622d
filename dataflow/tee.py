"""Tee: one job's output to several Writables in one pass (the Web Streams `tee()`, bounded).

Rules:
- Each output piece is written to every branch in turn before the next piece is taken, so the
  job runs at the pace of the slowest branch and nothing queues up: memory stays what the job
  alone needs (the Web API's `tee()` buffers without bound for a slow branch; this does not).
- `check` and `open` go to every branch before any data flows; a branch that fails to open
  aborts the branches opened before it.
- A branch whose reader left early in the normal way (a command sink like `head` that exited
  with an ok code: `SinkClosedEarly`) is dropped and the others go on; when the last one
  leaves, the job ends quietly. Any other error in one branch fails the job, and every
  branch is aborted.
- A branch with stages of its own is a `Branch` (branch.py): a job of its own, fed in order.
  `close` first waits for every such job to finish (`finish`), so that a failing one leaves
  nothing committed, then commits the branches in order. Commits cannot be made atomic across several files:
  if one fails, the branches after it are aborted, those before it stay committed (their
  outputs are complete and correct), and the error names the branch.
"""
from __future__ import annotations

from typing import Any

from .errors import SinkError
from .sinks import ends_job_quietly


class Tee:
    """A Writable that writes everything to each of `sinks`."""

    def __init__(self, *sinks: Any):
        if len(sinks) < 2:
            raise TypeError("Tee needs at least two sinks")
        for i, s in enumerate(sinks):
            for method in ("open", "write", "close", "abort"):
                if not callable(getattr(s, method, None)):
                    raise TypeError(f"Tee branch {i} ({s!r}) has no {method}(): not a Writable")
        self.sinks = list(sinks)
        self.live = list(sinks)
        self.ended: list[tuple[int, BaseException]] = []   # branches whose reader left early
        self.bytes = 0

    def buffer_bytes(self) -> int:
        """What the branches hold outside the job's plan (a Branch runs a job of its own)."""
        return sum(int(s.buffer_bytes()) for s in self.sinks if hasattr(s, "buffer_bytes"))

    def check(self, input_ids: list[tuple[int, int]]) -> None:
        paths = [getattr(s, "path", None) for s in self.sinks]
        seen = [p for p in paths if p is not None]
        if len(set(seen)) != len(seen):
            raise SinkError(f"two branches of the tee write the same file: "
                            f"{sorted(p for p in seen if seen.count(p) > 1)[0]}")
        for i, s in enumerate(self.sinks):
            if hasattr(s, "check"):
                try:
                    s.check(input_ids)
                except SinkError as e:
                    raise type(e)(f"tee branch {i}: {e}") if type(e) is SinkError else e

    def open(self) -> None:
        self.live = list(self.sinks)
        self.ended = []
        opened = []
        try:
            for s in self.sinks:
                s.open()
                opened.append(s)
        except BaseException:
            for s in opened:
                s.abort()
            raise

    def write(self, data: memoryview) -> None:
        for s in list(self.live):
            try:
                s.write(data)
            except Exception as e:
                if not ends_job_quietly(e):
                    raise
                self.live.remove(s)
                self.ended.append((self.sinks.index(s), e))
                s.abort()
                if not self.live:
                    raise   # every reader has left: the job ends quietly here
        self.bytes += len(data)

    def close(self) -> None:
        for s in self.live:      # branches running jobs of their own end them first: if one
            if hasattr(s, "finish"):   # fails, nothing has been committed yet
                s.finish()
        for i, s in enumerate(self.live):
            try:
                s.close()
            except BaseException as e:
                for rest in self.live[i + 1:]:
                    rest.abort()
                if isinstance(e, SinkError) and type(e) is SinkError:
                    raise SinkError(f"tee branch {self.sinks.index(s)}: {e}") from e
                raise

    def abort(self) -> None:
        for s in self.live:
            try:
                s.abort()
            except Exception:
                pass
