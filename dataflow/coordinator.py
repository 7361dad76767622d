"""The coordinator: owns the arena, the workers and the reading; feeds the scheduler; yields
output in order. The only place where processes, pipes and shared memory meet.

```
 Readable ──chunks──► [coordinator] ──slot ids──► Transform workers (N processes)
 (file, stdin,        reads straight into        transform the slot and write the
  generate)           a free shared-memory slot   result into an output slot
                      only when it holds a credit          │
                                 ▲                          │ Done(seq, slot, len)
                                 │ credit returned          ▼
 Writable ◄── in sequence order ── [reorder: scheduler.py] ◄┘
```

Rules:
- Workers are spawned (never forked) and kept for the whole job; a dead one is replaced.
- The loop waits on every worker's pipe *and* its process sentinel: a dead worker is an event.
- Everything the coordinator does is an action the scheduler asked for; decisions live there.
- `Run` is a generator of output views: whoever iterates it (a sink, `stream()`) applies
  backpressure just by not asking for more. Views are valid until the next iteration.
- Supervision (watchdog.py decides, this module acts): a worker past `chunk_timeout` gets
  SIGTERM + SIGCONT, then SIGKILL; the memory watchdog pauses reading, retires or kills the
  largest worker. A killed worker's chunks run again like any dead worker's.
- Teardown always runs (normal end, error, interrupt, the consumer leaving): workers told to
  stop, then terminated, then killed; the arena unlinked. The first real error is the one
  raised; errors during teardown never hide it.
"""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from collections import deque
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait
from typing import Any, Iterator

import msgspec
import psutil

from . import messages as M
from . import scheduler as S
from .errors import (Cancelled, DataflowError, JobTimeout, RemoteTraceback, StageError,
                     SourceError, UsageError, WorkerCrashedError)
from .framing import Framer
from .launch import (discard, end, process_class, signals_held, start, starting_workers,
                     take)
from .limit import RecordLimit
from .records import RecordError, RecordFormat, bind_chain, header_position, with_header
from .plan import COORDINATOR, SCRATCH, WORKER, Plan
from .shm import Arena
from .sources import ChunkReader, line_number
from .sources import where as describe
from .streams import Transform
from .sizes import format_size
from . import watchdog as W
from . import worker as worker_module
from .readahead import ReadAhead

MEMORY_SAMPLE_SECONDS = 0.25  # how often the process tree's PSS is measured (~0.4 ms a process)
MEMORY_SAMPLE_SECONDS_NEAR_LIMIT = 0.1  # ... when it is within 10% of memory_limit
STOP_GRACE_SECONDS = 2.0      # a worker told to stop gets this long before SIGTERM, then SIGKILL


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "unknown exit"
    if exitcode < 0:
        try:
            return f"{signal.Signals(-exitcode).name}({exitcode})"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def _kill_descendants(pid: int) -> None:
    """SIGKILL what a worker started (an external command and its children): they run in
    their own session, so no signal to the worker reaches them, and once the worker is gone
    they are no longer its descendants."""
    for child in _descendant_processes(pid):
        with contextlib.suppress(psutil.Error):
            child.kill()


def _descendant_processes(pid: int) -> list[psutil.Process]:
    """`pid`'s descendants as psutil Processes: a kill through one checks that the pid is
    still the same process (a descendant that exits and whose pid is taken between the /proc
    walk and here, microseconds, is a window psutil's own children() has as well)."""
    found = []
    for child in descendants(pid):
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(child))
    return found


# Linux lists a task's children in /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN)
_PROC_CHILDREN = os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def descendants(pid: int) -> list[int]:
    """The pids of `pid`'s descendants (at this moment: best effort, as any such list), from
    the few /proc files that list each task's children; psutil instead reads every process's
    on the machine (40 ms a worker with 2,000 processes running), which a teardown would do
    for each worker. Through psutil where the kernel has no such file."""
    if not _PROC_CHILDREN:
        with contextlib.suppress(psutil.Error):
            return [p.pid for p in psutil.Process(pid).children(recursive=True)]
        return []
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue                    # gone meanwhile
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", "rb") as f:
                    kids = [int(x) for x in f.read().split()]
            except (OSError, ValueError):
                continue
            found += kids
            todo += kids
    return found


class Stats(msgspec.Struct):
    bytes_in: int = 0
    bytes_out: int = 0
    chunks: int = 0
    retries: int = 0
    workers: int = 0
    slots: int = 0
    slot_size: int = 0
    wall_seconds: float = 0.0
    stage_seconds: dict[str, float] = {}
    peak_memory: int = 0          # summed PSS of coordinator + workers, bytes
    memory_limit: int = 0
    host_memory: int = 0          # the calling process's PSS beyond a coordinator's share at
                                  # the start (a big program calling pipeline()): not the job's
    recycled: int = 0             # workers replaced by worker_max_chunks or the memory watchdog
    timed_out: int = 0            # workers killed by chunk_timeout
    memory_kills: int = 0         # workers killed by the memory watchdog
    paused_seconds: float = 0.0   # time reading was paused by the memory watchdog
    resumed_at: int | None = None # source offset a resumed run (--resume) started at
    results: dict[str, Any] = {}  # each folding stage's result
    sink_closed_early: bool = False  # the sink's reader finished first (a `head` command)


class _Proc:
    __slots__ = ("process", "conn", "pid")

    def __init__(self, process: Any, conn: Connection):
        self.process = process
        self.conn = conn
        self.pid = process.pid


class Run:
    """One execution of a job. Iterate it to get the output; `stats` is filled as it goes."""

    def __init__(self, source: Any, stages: list[Any], plan: Plan, *, ordered: bool = True,
                 chunk_size: int = 0, progress: Any = None, start_method: str = "spawn",
                 max_attempts: int = 4, chunk_timeout: float | None = None,
                 worker_max_chunks: int | None = None, cancel: Any = None,
                 timeout: float | None = None, nested: bool = False):
        self.source = source
        # a job run inside another job's process (a tee branch): that process's memory is the
        # other job's; this one counts its workers and its arena
        self.nested = nested
        self.cancel = cancel      # a CancelToken (cancel.py): waited on next to the workers
        self.timeout = timeout    # seconds the whole job may take (JobTimeout past it)
        self._deadline = float("inf")
        self.decoder: str | None = None  # the stage that decodes the source (decompress)
        self.resume_point: Any = None  # resume.Point: continue a killed run from there
        # called with (source offset, output bytes, chunks, folds) each time a chunk's output
        # has been taken by the consumer: resume.Checkpoints.commit
        self.on_commit: Any = None
        self._ends: dict[int, int] = {}  # seq -> stream offset where the chunk ends
        self.stages = stages
        self.plan = plan
        self.ordered = ordered
        self.chunk_size = min(chunk_size or plan.capacity, plan.capacity)
        self.progress = progress
        self.process_class = process_class(start_method)
        self.start_method = start_method
        self.max_attempts = max_attempts
        self.chunk_timeout = chunk_timeout
        self.worker_max_chunks = worker_max_chunks
        self.stage_keys = [f"{i}:{s.name}" for i, s in enumerate(stages)]  # stats keys
        self.stats = Stats(workers=plan.workers, slots=plan.slots, slot_size=plan.slot_size,
                           memory_limit=plan.memory_limit,
                           stage_seconds=dict.fromkeys(self.stage_keys, 0.0))
        self.specs = msgspec.msgpack.encode([s.spec() for s in stages])
        self.folds = [s.initial() for s in stages]
        self.procs: dict[int, _Proc] = {}
        self.retired: list[_Proc] = []          # told to stop, not yet reaped
        # worker -> (pid, SIGKILL deadline, cause) of a process being ended by the supervision
        self.killing: dict[int, tuple[int, float, str]] = {}
        self.arena: Arena | None = None
        self.record_format = b""  # the source's RecordFormat for the workers (msgpack)
        self.limit: RecordLimit | None = None   # `head`: the output stops after n records
        self._psutil: dict[int, psutil.Process] = {}
        self._last_sample = 0.0
        self._sample_every = MEMORY_SAMPLE_SECONDS
        self._paused_at: float | None = None
        self.clock = W.ChunkClock(chunk_timeout) if chunk_timeout else None
        spare = max(0, plan.memory_limit - plan.estimate()) // plan.workers
        self.memory = W.MemoryWatchdog(
            plan.memory_limit, WORKER + plan.stage_memory + SCRATCH * plan.slot_size,
            allowance=max(W.MIN_ALLOWANCE, plan.stage_memory + SCRATCH * plan.slot_size + spare),
            can_retire=not any(getattr(s, "flushes", False) for s in stages))

    # ------------------------------------------------------------------ processes
    def _start_worker(self, index: int) -> None:
        assert self.arena is not None
        args = (self.arena.name, self.arena.slots, self.arena.slot_size, self.specs,
                os.getpid(), self.plan.context, self.record_format)
        # SIGINT and SIGTERM are held while a worker is taken or started, and it is registered
        # before a pending one lands (teardown then stops it before the arena goes). A child
        # inherits the mask, so a Ctrl-C cannot interrupt its bootstrap (the worker ignores
        # SIGINT, then unblocks both); raised inside start(), our Interrupted left the child
        # reading a closed pipe: an EOFError traceback on stderr.
        with signals_held():
            # a worker the command started before it knew the job (launch.prestart), if any:
            # started by spawn, with no user __main__ to see
            while self.start_method == "spawn" and b"__main__:" not in self.specs and \
                    (standby := take()) is not None:
                process, conn = standby
                try:
                    conn.send_bytes(msgspec.msgpack.encode(args))
                except OSError:          # it died meanwhile: the next, or a new one
                    end(process, conn)
                    continue
                self.procs[index] = _Proc(process, conn)
                return
            p, conn = start(self.process_class, worker_module.main,
                            f"dataflow-worker-{index}", args, self.specs)
            self.procs[index] = _Proc(p, conn)

    def _stop_workers(self, done: bool = False) -> None:
        """Stop every worker, and what they started. `done`: every chunk is done, so no
        worker is inside an exec command, and what they started is ended once they have
        stopped: a worker still in its setup may be starting a process it needs (killed
        under it, a shared-memory block's resource tracker made it leave the block behind)."""
        for i, proc in enumerate(self.retired):
            self.procs[-1 - i] = proc  # stopped already; reaped (or killed) with the rest
        self.retired.clear()
        lingering: list[psutil.Process] = []
        for proc in self.procs.values():
            if done:
                lingering += _descendant_processes(proc.pid)
            else:
                # a worker inside an exec command reads no Stop until the command ends: end it
                _kill_descendants(proc.pid)
        for proc in self.procs.values():
            try:
                proc.conn.send_bytes(M.to_worker_encoder.encode(M.Stop()))
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for proc in self.procs.values():
            proc.process.join(max(0.0, deadline - time.monotonic()))
        for sig_method, grace in (("terminate", 1.0), ("kill", 1.0)):
            alive = [p for p in self.procs.values() if p.process.is_alive()]
            if not alive:
                break
            for proc in alive:
                _kill_descendants(proc.pid)
                getattr(proc.process, sig_method)()
            for proc in alive:
                proc.process.join(grace)
        for child in lingering:     # what outlived its worker
            with contextlib.suppress(psutil.Error):
                child.kill()
        for proc in self.procs.values():
            proc.conn.close()
            try:
                proc.process.close()
            except ValueError:
                pass
        self.procs.clear()

    # ------------------------------------------------------------------ memory
    def _sample_memory(self, now: float, sched: S.Scheduler | None = None) -> list[object]:
        """Measure the tree; return the memory watchdog's decisions (watchdog.py)."""
        if now - self._last_sample < self._sample_every:
            return []
        self._last_sample = now
        total = 0
        uss: dict[int, int] = {}
        pids: list[tuple[int | None, int]] = []
        if self.nested:
            total = self.arena.slots * self.arena.slot_size if self.arena is not None else 0
        else:
            pids.append((None, os.getpid()))
        pids += [(i, p.pid) for i, p in self.procs.items()]
        pids += [(None, p.pid) for p in self.retired]
        tracker = getattr(resource_tracker._resource_tracker, "_pid", None)
        if tracker and not self.nested:  # spawn's helper is part of our tree's memory too
            pids.append((None, tracker))
        for index, pid in pids:
            proc = self._psutil.get(pid)
            try:
                if proc is None:
                    proc = self._psutil[pid] = psutil.Process(pid)
                info = proc.memory_full_info()
            except (psutil.Error, AttributeError, OSError):
                self._psutil.pop(pid, None)
                continue
            total += info.pss
            if (index is not None and index not in self.killing and sched is not None
                    and sched.workers[index].ready):
                uss[index] = info.uss  # a worker the watchdog may act on
        if total > self.stats.peak_memory:
            self.stats.peak_memory = total
        job = total - self.stats.host_memory
        # near the limit, look more often: a leak can grow fast
        self._sample_every = (MEMORY_SAMPLE_SECONDS if job < W.RESUME * self.plan.memory_limit
                              else MEMORY_SAMPLE_SECONDS_NEAR_LIMIT)
        return self.memory.observe(job, uss)

    def _supervise(self, now: float, sched: S.Scheduler, actions: deque[Any]) -> None:
        """Carry out the memory watchdog's decisions and the chunk timeouts."""
        for decision in self._sample_memory(now, sched):
            if isinstance(decision, W.PauseReading):
                if decision.paused:
                    self._paused_at = now
                elif self._paused_at is not None:
                    self.stats.paused_seconds += now - self._paused_at
                    self._paused_at = None
                actions.extend(sched.handle(S.SetPaused(decision.paused)))
            elif isinstance(decision, W.Retire):
                actions.extend(sched.handle(S.RetireWorker(decision.worker)))
            elif isinstance(decision, W.KillWorker):
                self.stats.memory_kills += 1
                self._kill(decision.worker, "memory", now, term=False)
        if self.clock is not None:
            for w in self.clock.overdue(now):
                self.stats.timed_out += 1
                self._kill(w, "timeout", now, term=True)
        for w, (pid, deadline, _) in self.killing.items():
            proc = self.procs.get(w)
            if proc is not None and proc.pid == pid and now >= deadline:
                proc.process.kill()  # SIGTERM was not enough (or it was a memory kill)
        self.retired = [p for p in self.retired if p.process.is_alive()]

    def _kill(self, w: int, cause: str, now: float, *, term: bool) -> None:
        """End worker `w` for `cause`; its exit comes back through its sentinel."""
        proc = self.procs.get(w)
        if proc is None or w in self.killing:
            return
        if self.clock is not None:
            self.clock.forget(w)
        _kill_descendants(proc.pid)   # an exec stage's command, in its own session
        if term:
            proc.process.terminate()
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)  # a stopped worker must see the SIGTERM
            self.killing[w] = (proc.pid, now + W.TERM_GRACE_SECONDS, cause)
        else:
            proc.process.kill()
            self.killing[w] = (proc.pid, now, cause)

    # ------------------------------------------------------------------ the loop
    def __iter__(self) -> Iterator[memoryview]:
        started = time.monotonic()
        if self.timeout is not None:
            self._deadline = started + self.timeout
        plan = self.plan
        sched = S.Scheduler(plan.slots, plan.workers, ordered=self.ordered,
                            prefetch=plan.prefetch, max_attempts=self.max_attempts,
                            flush=any(getattr(s, "flushes", False) for s in self.stages),
                            worker_max_chunks=self.worker_max_chunks)
        if hasattr(self.source, "framer"):  # a source with its own cut points (members)
            framer = self.source.framer()
        else:
            # a user's Readable need not say how to cut it: lines, like FileSource's default
            split = getattr(self.source, "split", "lines")
            framer = Framer(getattr(self.source, "delimiter", b"\n") if split == "lines"
                            else None)
        reader = ChunkReader(self.source, framer=framer, chunk_size=self.chunk_size,
                             max_record_size=plan.capacity, context=plan.context)
        point = self.resume_point
        base_out = base_chunks = 0
        if point is not None:
            self.source.resume_at = reader.offset = point.source_offset
            self.folds = point.folds
            base_out, base_chunks = point.output_bytes, point.chunks
            self.stats.resumed_at = point.source_offset
        last = self.stages[-1] if self.stages else None
        framing = last is not None and last.frames_output()
        if self.cancel is not None:
            self.cancel.acquire()   # its descriptor stays open while we wait on it
        ahead: ReadAhead | None = None
        all_done = False   # the scheduler said Finish: every chunk and flush is done
        try:
            if not self.nested:
                with contextlib.suppress(psutil.Error, OSError):
                    own = psutil.Process().memory_full_info().pss
                    self.stats.host_memory = max(0, own - COORDINATOR)
            self.arena = Arena.create(plan.slots, plan.slot_size)
            self.source.open()
            if getattr(self.source, "reads_return", False):
                ahead = ReadAhead()
            if point is not None and plan.context:
                reader.tail = self.source.read_before(point.source_offset, plan.context)
            self._bind(reader, point)
            if self.start_method != "spawn":   # forkserver's, not ours (launch.py)
                # multiprocessing starts its tracker on first use and unblocks SIGINT around
                # it, which would undo the mask _start_worker relies on: start it first
                with starting_workers():
                    resource_tracker.ensure_running()
            for i in range(plan.workers):
                self._start_worker(i)
            if not self.nested:   # a tee branch's job leaves them to the main one
                discard()         # standby workers this job did not want (launch.prestart)
            actions: deque[Any] = deque(sched.start())
            finished = self.limit is not None and self.limit.done   # head: {n: 0}
            if framing and point is None and (header := last.header()):
                self.stats.bytes_out += len(header)
                yield memoryview(header)
            while True:
                while actions and not finished:
                    a = actions.popleft()
                    if isinstance(a, S.Write):
                        view = self.arena.view(a.slot, a.length)
                        try:
                            end = a.length
                            if self.limit is not None and a.length > a.skip:
                                with view[a.skip:] as piece:
                                    end = a.skip + self.limit.take(piece)
                            if end > a.skip:
                                with view[a.skip:end] as piece:
                                    self.stats.bytes_out += len(piece)
                                    yield piece
                        finally:
                            view.release()
                        if self.limit is not None and self.limit.done:
                            finished = True   # head: enough records; stop reading, tear down
                            break
                        if a.last:
                            self._fold(a.meta)
                            end = self._ends.pop(a.seq, None)
                            if self.on_commit is not None and end is not None:
                                self.on_commit(end, base_out + self.stats.bytes_out,
                                               base_chunks + sched.chunks_written, self.folds)
                    elif isinstance(a, S.ReadInto):
                        if ahead is not None:   # overlapped with the writes (readahead.py)
                            ahead.submit(functools.partial(self._read, reader, a.slot), a.seq)
                        else:
                            actions.extend(self._read_done(a.seq, self._read(reader, a.slot),
                                                           reader, sched))
                    elif isinstance(a, S.Dispatch):
                        self._send(a.worker, M.Task(a.seq, a.in_slot, a.out_slot, a.length,
                                                    a.offset, a.attempt))
                        if self.clock is not None:
                            self.clock.busy(a.worker, time.monotonic())
                    elif isinstance(a, S.DispatchFlush):
                        self._send(a.worker, M.Flush(a.seq, a.out_slot))
                        if self.clock is not None:
                            self.clock.busy(a.worker, time.monotonic())
                    elif isinstance(a, S.SendAck):
                        self._send(a.worker, M.Ack(a.seq))
                        if self.clock is not None:
                            self.clock.release(a.worker, time.monotonic())
                    elif isinstance(a, S.StartWorker):
                        old = self.procs.pop(a.worker, None)
                        if old is not None:
                            old.conn.close()
                        self._start_worker(a.worker)
                    elif isinstance(a, S.RestartWorker):
                        old = self.procs.pop(a.worker)
                        self.killing.pop(a.worker, None)  # being killed: as good as stopped
                        self._send_to(old, M.Stop())
                        old.conn.close()
                        self.retired.append(old)
                        self.stats.recycled += 1
                        self._start_worker(a.worker)
                    elif isinstance(a, S.Abort):
                        raise self._abort_error(a, sched)
                    elif isinstance(a, S.Finish):
                        finished = all_done = True
                if finished:
                    break
                by_conn = {p.conn: i for i, p in self.procs.items()}
                by_sentinel = {p.process.sentinel: i for i, p in self.procs.items()}
                waited: list[Any] = list(by_conn) + list(by_sentinel)
                if self.cancel is not None:
                    waited.append(self.cancel)
                if ahead is not None and ahead.busy:
                    waited.append(ahead)
                ready = wait(waited, timeout=max(0.0, min(
                    self._sample_every, self._deadline - time.monotonic())))
                now = time.monotonic()
                self._check_cancel()
                dead: list[int] = []
                for obj in ready:
                    if obj is ahead:
                        seq, event = ahead.take()   # raises what the read raised
                        actions.extend(self._read_done(seq, event, reader, sched))
                    elif obj in by_conn:
                        w = by_conn[obj]
                        if not self._drain(w, sched, actions):
                            dead.append(w)
                    elif obj in by_sentinel:       # (the cancel token raised above)
                        dead.append(by_sentinel[obj])
                for w in dict.fromkeys(dead):
                    proc = self.procs.get(w)
                    if proc is None:
                        continue
                    self._drain(w, sched, actions)       # results sent before it died count
                    proc.process.join(1.0)
                    cause = self.killing.pop(w, (0, 0.0, None))[2]
                    if self.clock is not None:
                        self.clock.forget(w)
                    self.memory.replaced(w)
                    actions.extend(sched.handle(S.WorkerExited(w, proc.process.exitcode,
                                                               cause=cause)))
                self._supervise(now, sched, actions)
                if self.progress is not None:
                    self.progress.update(self, sched)
            self.stats.chunks = sched.chunks_written
            self.stats.retries = sched.retries
            if self._paused_at is not None:
                self.stats.paused_seconds += time.monotonic() - self._paused_at
            if framing and (trailer := last.trailer(last.result(self.folds[-1]))):
                self.stats.bytes_out += len(trailer)
                yield memoryview(trailer)
        finally:
            self.stats.wall_seconds = time.monotonic() - started
            try:
                if ahead is not None:
                    ahead.close()     # the read under way writes into the arena: wait for it
                self._sample_memory(time.monotonic() + MEMORY_SAMPLE_SECONDS)
                sched.stop_all()
                self._stop_workers(done=all_done)
            finally:
                try:
                    self.source.close()
                finally:
                    if self.arena is not None:
                        self.arena.close()
                        self.arena = None
                    if self.cancel is not None:
                        self.cancel.release()
        self.stats.results = {key: s.result(acc)
                              for key, s, acc in zip(self.stage_keys, self.stages, self.folds)
                              if type(s).fold is not Transform.fold}

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.cancelled:
            raise Cancelled(self.cancel.reason or "")
        if time.monotonic() >= self._deadline:
            raise JobTimeout(self.timeout)

    def _bind(self, reader: ChunkReader, point: Any) -> None:
        """Read the header (a CSV's first row), tell the record stages their formats, and keep
        the source's format for the workers. A field a stage names that the header lacks
        fails here, before any worker starts."""
        fmt = (self.source.record_format() if hasattr(self.source, "record_format")
               else RecordFormat())
        if fmt.header:
            if point is None:
                header = reader.read_header(self.plan.capacity)
            else:   # a resumed run: the header is at the start of the stream, long written
                head = min(point.source_offset, self.plan.capacity)
                raw = self.source.read_before(head, head)
                header = raw[:reader.framer.first(raw) or len(raw)]
            try:
                fmt = with_header(fmt, header)
            except RecordError as e:    # a header that is not UTF-8 (errors: strict)
                where = describe(self.source, 0)
                raise SourceError(f"the header at {where}: {e.reason}", offset=0) from None
        try:
            formats = bind_chain(self.stages, fmt)
        except ValueError as e:
            i = getattr(e, "stage_index", 0)
            raise UsageError(f"stages[{i}] ({self.stages[i].name}): {e}") from None
        if fmt.records or fmt.header:
            # the columns travel as the header's bytes (a name may hold a byte that is not
            # UTF-8, kept by errors: surrogateescape, which msgpack text cannot carry)
            sent = msgspec.structs.replace(fmt, columns=None) if fmt.header_bytes else fmt
            self.record_format = msgspec.msgpack.encode(sent)
        last = self.stages[-1] if self.stages else None
        if getattr(last, "limit", None) is not None:
            out = formats[-1]
            header = len(out.header_out()) if header_position(formats, self.stages) == \
                len(self.stages) else 0
            self.limit = RecordLimit(last.limit, delimiter=out.delimiter,
                                     csv=out.kind in ("csv", "tsv"), skip=header)

    def _read(self, reader: ChunkReader, slot: int) -> S.Event:
        assert self.arena is not None
        offset = reader.offset
        plan = self.plan
        with self.arena.view(slot) as view:
            if plan.context:
                with view[:plan.capacity] as data, view[plan.capacity:] as context:
                    n = reader.fill(self.arena.map, self.arena.offset(slot), data, context)
            else:
                n = reader.fill(self.arena.map, self.arena.offset(slot), view)
        if n == 0:
            return S.SourceExhausted(slot)
        return S.ChunkRead(slot, offset, n)

    def _read_done(self, seq: int, event: S.Event, reader: ChunkReader,
                   sched: S.Scheduler) -> list[Any]:
        if isinstance(event, S.ChunkRead):
            self.stats.bytes_in += event.length
        self._ends[seq] = reader.offset
        return sched.handle(event)

    def _send(self, w: int, msg: Any) -> None:
        self._send_to(self.procs[w], msg)

    @staticmethod
    def _send_to(proc: _Proc, msg: Any) -> None:
        try:
            proc.conn.send_bytes(M.to_worker_encoder.encode(msg))
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the worker died; its sentinel reports it

    def _drain(self, w: int, sched: S.Scheduler, actions: deque[Any]) -> bool:
        """Handle every message waiting from worker `w`; False when its pipe is closed."""
        proc = self.procs.get(w)
        if proc is None:
            return True
        conn = proc.conn
        try:
            while conn.poll():
                msg = M.from_worker_decoder.decode(conn.recv_bytes())
                if isinstance(msg, M.Done):
                    for key, sec in zip(self.stage_keys, msg.seconds):
                        self.stats.stage_seconds[key] += sec
                    actions.extend(sched.handle(S.ChunkDone(w, msg.seq, msg.slot, msg.length,
                                                            msg.summaries or None)))
                    if self.clock is not None and w not in self.killing:
                        self.clock.progress(w, time.monotonic(), bool(sched.workers[w].tasks))
                elif isinstance(msg, M.Piece):
                    actions.extend(sched.handle(S.PieceOut(w, msg.seq, msg.slot, msg.length)))
                    if self.clock is not None and w not in self.killing:
                        self.clock.progress(w, time.monotonic(), True)
                        self.clock.hold(w)
                elif isinstance(msg, M.Ready):
                    self.memory.replaced(w)
                    actions.extend(sched.handle(S.WorkerReady(w)))
                elif isinstance(msg, M.Failed):
                    raise self._stage_error(msg, sched)
        except (EOFError, OSError):
            return False
        return True

    def _fold(self, summaries: Any) -> None:
        if not summaries:
            return
        for i, (stage, summary) in enumerate(zip(self.stages, summaries)):
            if summary is not None:
                self.folds[i] = stage.fold(self.folds[i], summary)

    # ------------------------------------------------------------------ errors
    def _stage_error(self, msg: M.Failed, sched: S.Scheduler) -> DataflowError:
        if msg.seq < 0:
            err = StageError(f"stages[{msg.stage_index}] ({msg.stage}) failed to start in a "
                             f"worker: {msg.error_type}: {msg.message}", stage=msg.stage,
                             stage_index=msg.stage_index, seq=-1, offset=0,
                             error_type=msg.error_type, worker_traceback=msg.traceback)
        elif sched.chunk_range(msg.seq)[1] == 0:    # not a chunk: the end-of-stream flush
            err = StageError(f"stages[{msg.stage_index}] ({msg.stage}) failed in its "
                             f"end-of-stream flush: {msg.error_type}: {msg.message}",
                             stage=msg.stage, stage_index=msg.stage_index, seq=msg.seq,
                             offset=0, error_type=msg.error_type,
                             worker_traceback=msg.traceback)
        else:
            offset, length = sched.chunk_range(msg.seq)
            where = describe(self.source, offset)
            record = ""
            if msg.record_offset >= 0:
                record = f"; the record starts at {describe(self.source, msg.record_offset)}"
                line = line_number(self.source, msg.record_offset)
                if line is not None:
                    record += f" (line {line})"
            err = StageError(f"stages[{msg.stage_index}] ({msg.stage}) failed on chunk "
                             f"{msg.seq} ({where}, {length} bytes): {msg.error_type}: "
                             f"{msg.message}{record}", stage=msg.stage, stage_index=msg.stage_index,
                             seq=msg.seq, offset=offset, error_type=msg.error_type,
                             worker_traceback=msg.traceback)
        err.__cause__ = RemoteTraceback(msg.traceback)
        return err

    def _abort_error(self, a: S.Abort, sched: S.Scheduler) -> DataflowError:
        how = describe_exit(a.exitcode)
        if a.cause == "timeout":
            how = f"running past chunk_timeout ({self.chunk_timeout:g} s; ended by {how})"
        elif a.cause == "memory":
            how = (f"growing the job past memory_limit ({format_size(self.plan.memory_limit)}; "
                   f"{how}): the chunk needs more memory than the limit leaves a worker")
        if a.reason == "setup":
            return WorkerCrashedError(f"workers died while starting {a.attempts} times in a "
                                      f"row, the last (worker {a.worker}) by {how}; check the "
                                      f"stages' setup", exitcode=a.exitcode)
        if a.length:
            where = describe(self.source, a.offset)
            return WorkerCrashedError(
                f"chunk {a.seq} ({where}, bytes {a.offset}-{a.offset + a.length}) failed "
                f"{a.attempts} times, each time its worker died; the last by {how}; giving up",
                seq=a.seq, exitcode=a.exitcode)
        return WorkerCrashedError(f"worker {a.worker} died during its end-of-stream flush "
                                  f"({how})", seq=a.seq, exitcode=a.exitcode)
