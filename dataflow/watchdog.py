"""Supervision policies the coordinator applies to its workers. Pure: the caller passes the
clock and the memory samples in, and carries out the decisions.

Chunk timeouts (`chunk_timeout`)
--------------------------------
A worker holding tasks must show progress (a finished chunk, a piece of output) within the
timeout, or it is treated as dead: SIGTERM (and SIGCONT, so a stopped worker receives it),
then SIGKILL after a grace period; its chunks run again elsewhere, as after any death. Time
spent waiting for the sink to take a piece is not the worker's: the clock is held meanwhile.

Memory (`memory_limit`)
-----------------------
The coordinator samples the process tree every so often: the summed PSS (the shared arena
counts once) and each worker's USS (what recycling it would give back). In steady state a job
runs at up to ~90% of its limit by design (the slot plan fills it), so the levels sit above
that:

    a worker grew past its allowance   retire it once its tasks are done (a leak: the growth
                                       since it started exceeds its scratch space plus its
                                       share of what the plan left free)
    tree >= PAUSE  x limit             stop reading: no new chunk takes a credit (resume
                                       below RESUME)
    tree >= RECYCLE x limit            retire the worker with the largest USS, if it holds
                                       more than its share (interpreter + scratch)
    tree >= KILL   x limit             kill that worker now; its chunks run again. Only a
                                       worker that had run no chunk before (its growth is
                                       this chunk's) counts against `max_attempts`: a chunk
                                       that needs more than the limit fails the job

One retirement at a time: the next waits until the replacement has started.
"""
from __future__ import annotations

import msgspec

PAUSE = 0.95
RESUME = 0.90
RECYCLE = 1.00
KILL = 1.10
MIN_ALLOWANCE = 32 << 20  # a worker's heap may keep this much after a big chunk (malloc)
TERM_GRACE_SECONDS = 1.0  # after SIGTERM, a timed-out worker gets this long before SIGKILL


class ChunkClock(msgspec.Struct):
    """Which workers are past `timeout` seconds without progress on the chunks they hold."""

    timeout: float
    since: dict[int, float] = msgspec.field(default_factory=dict)  # busy worker -> clock start
    held: set[int] = msgspec.field(default_factory=set)            # waiting for the sink: not timed

    def busy(self, worker: int, now: float) -> None:
        """`worker` got a task; its clock starts unless it is running already."""
        self.since.setdefault(worker, now)

    def progress(self, worker: int, now: float, still_busy: bool) -> None:
        """`worker` reported output; it restarts its clock, or stops it when idle."""
        self.held.discard(worker)
        if still_busy:
            self.since[worker] = now
        else:
            self.since.pop(worker, None)

    def hold(self, worker: int) -> None:
        """`worker` waits for the sink to take a piece of its output."""
        self.held.add(worker)

    def release(self, worker: int, now: float) -> None:
        """The sink took the piece: the worker goes on with a fresh clock."""
        if worker in self.held:
            self.held.discard(worker)
            if worker in self.since:
                self.since[worker] = now

    def forget(self, worker: int) -> None:
        self.since.pop(worker, None)
        self.held.discard(worker)

    def overdue(self, now: float) -> list[int]:
        return sorted(w for w, t in self.since.items()
                      if w not in self.held and now - t >= self.timeout)


class PauseReading(msgspec.Struct, frozen=True):
    paused: bool


class Retire(msgspec.Struct, frozen=True):
    worker: int


class KillWorker(msgspec.Struct, frozen=True):
    worker: int


class MemoryWatchdog(msgspec.Struct):
    """Turns memory samples into decisions; see the module docstring for the levels."""

    limit: int
    worker_share: int        # USS a worker may hold in steady state: interpreter + scratch
    allowance: int           # growth past its first sample after which a worker is retired
    can_retire: bool = True  # False when a stage keeps per-worker state until its flush
    paused: bool = False
    retiring: int | None = None  # a retired worker whose replacement has not started yet
    start: dict[int, int] = msgspec.field(default_factory=dict)  # worker -> USS when first seen

    def observe(self, tree: int, worker_uss: dict[int, int]) -> list[object]:
        out: list[object] = []
        if not self.paused and tree >= PAUSE * self.limit:
            self.paused = True
            out.append(PauseReading(True))
        elif self.paused and tree < RESUME * self.limit:
            self.paused = False
            out.append(PauseReading(False))
        if not worker_uss:
            return out
        for w, uss in worker_uss.items():
            self.start.setdefault(w, uss)
        worker, uss = max(worker_uss.items(), key=lambda kv: (kv[1], -kv[0]))
        if tree >= KILL * self.limit and uss > self.worker_share:
            out.append(KillWorker(worker))
            return out
        grown = [w for w, u in worker_uss.items() if u - self.start[w] > self.allowance]
        if tree >= RECYCLE * self.limit and uss > self.worker_share:
            grown.append(worker)
        if grown and self.can_retire and self.retiring is None:
            self.retiring = max(grown, key=lambda w: (worker_uss[w], -w))
            out.append(Retire(self.retiring))
        return out

    def replaced(self, worker: int) -> None:
        """`worker` has a fresh process (its replacement is up, or it died)."""
        self.start.pop(worker, None)
        if self.retiring == worker:
            self.retiring = None
