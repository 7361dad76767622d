"""The scheduler: credits, dispatch, ordered exactly-once output, retries. Pure: no I/O, no clock.

The coordinator feeds it events (`handle(event) -> list[action]`) and performs the actions in
the order given. Everything that decides *what happens next* lives here, so it can be tested
with random event orders and no processes.

Slots and credits
-----------------
A slot is one fixed-size buffer of the shared arena; holding a free slot is a credit.
- Reading a chunk takes one slot (its *input*). The input is kept until the chunk's worker
  reports it Done, so a chunk whose worker died can be run again from the same bytes.
- Dispatching a chunk takes a second slot (its *output*), which the worker fills. A transform
  that returns its input untouched reports the input slot as its output; the spare is freed.
- A slot comes back when the sink has written the bytes in it, or when a worker is done with it.

Deadlock freedom: the *head* (lowest sequence number not fully written) must always progress.
Every allocation except one made for the head leaves at least `RESERVE` slots free, so the
head can always get its output slot; the head may also be queued on a worker beyond
`prefetch` (a worker waiting for an Ack runs lower-numbered tasks first, see worker.py).

Ordering and exactly-once
-------------------------
Sequence numbers are given at read time. In ordered mode output is written strictly in
sequence order; otherwise as soon as it arrives. Output may come in pieces (a result larger
than a slot): the worker waits for an Ack before reusing the slot. A retried chunk produces the
same bytes again (transforms are pure functions of their chunk), so output already written by
an earlier attempt is skipped by byte count: nothing is lost, nothing written twice.

Recycling and pausing
---------------------
A worker may be *retired* (`RetireWorker`, or after `worker_max_chunks` chunks): it gets no new
task, and once its last one is done it is replaced (`RestartWorker`): a fresh process, for
transforms that leak. While reading is paused (`SetPaused`, the memory watchdog's first step)
only the head chunk may still be read, so the job slows down but never stalls.

End of stream
-------------
When the source is exhausted and every data chunk is done, each live worker gets one Flush
task whose output is sequenced after the data (seq = chunks + rank), then Finish. A worker
that dies during its flush fails the job: the state it was flushing died with it. Jobs whose
stages do not flush (`flush=False`) skip this step.
"""
from __future__ import annotations

import heapq
from typing import Any

import msgspec

RESERVE = 1  # slots kept free for the head chunk's output: one is enough, it needs one at a time


# ----------------------------------------------------------------------------- events
class WorkerReady(msgspec.Struct, frozen=True):
    worker: int


class ChunkRead(msgspec.Struct, frozen=True):
    """A `ReadInto(slot)` produced a chunk of `length` bytes starting at source `offset`."""

    slot: int
    offset: int
    length: int


class SourceExhausted(msgspec.Struct, frozen=True):
    """A `ReadInto(slot)` found end of input; the slot is unused."""

    slot: int


class PieceOut(msgspec.Struct, frozen=True):
    worker: int
    seq: int
    slot: int
    length: int


class ChunkDone(msgspec.Struct, frozen=True):
    worker: int
    seq: int
    slot: int
    length: int
    meta: Any = None  # opaque to the scheduler, handed back with the chunk's last Write


class WorkerExited(msgspec.Struct, frozen=True):
    """Worker `worker` is gone. `expected` when it was told to stop; `cause` says why the
    coordinator killed it ('timeout', 'memory'), None when it died by itself."""

    worker: int
    exitcode: int | None
    expected: bool = False
    cause: str | None = None


class RetireWorker(msgspec.Struct, frozen=True):
    """Replace `worker` once the tasks it holds are done."""

    worker: int


class SetPaused(msgspec.Struct, frozen=True):
    """Stop (or resume) reading new chunks; the head chunk is always read."""

    paused: bool


# ----------------------------------------------------------------------------- actions
class ReadInto(msgspec.Struct, frozen=True):
    slot: int
    seq: int


class Dispatch(msgspec.Struct, frozen=True):
    worker: int
    seq: int
    in_slot: int
    out_slot: int
    offset: int
    length: int
    attempt: int


class DispatchFlush(msgspec.Struct, frozen=True):
    worker: int
    seq: int
    out_slot: int


class Write(msgspec.Struct, frozen=True):
    """Write `slot[skip:length]` to the sink. `last` closes chunk `seq` (with its `meta`)."""

    seq: int
    slot: int
    length: int
    skip: int
    last: bool
    meta: Any = None


class SendAck(msgspec.Struct, frozen=True):
    worker: int
    seq: int


class StartWorker(msgspec.Struct, frozen=True):
    worker: int


class RestartWorker(msgspec.Struct, frozen=True):
    """Stop retired worker `worker` (it is idle) and start a fresh one in its place."""

    worker: int


class Finish(msgspec.Struct, frozen=True):
    pass


class Abort(msgspec.Struct, frozen=True):
    """Stop the job. `reason` is 'crashed' (attempts exhausted) or 'setup' (died before ready);
    `cause` is the last death's (see WorkerExited)."""

    reason: str
    seq: int | None = None
    worker: int | None = None
    exitcode: int | None = None
    attempts: int = 0
    offset: int = 0
    length: int = 0
    cause: str | None = None


Event = (WorkerReady | ChunkRead | SourceExhausted | PieceOut | ChunkDone | WorkerExited
         | RetireWorker | SetPaused)
Action = (ReadInto | Dispatch | DispatchFlush | Write | SendAck | StartWorker | RestartWorker
          | Finish | Abort)


# ----------------------------------------------------------------------------- state
class _Chunk(msgspec.Struct):
    seq: int
    in_slot: int | None
    offset: int = 0
    length: int = 0
    flush: bool = False
    bound: int | None = None     # flush chunks run on one given worker
    attempts: int = 0
    worker: int | None = None
    out_slot: int | None = None
    produced: int = 0            # output bytes of the current attempt seen so far
    emitted: int = 0             # output bytes of this seq written by any attempt
    done: bool = False
    waiting: tuple[int, int, bool, Any] | None = None  # (slot, length, last, meta) not yet written


class _Worker(msgspec.Struct):
    ready: bool = False
    stopping: bool = False
    retiring: bool = False
    tasks: list[int] = msgspec.field(default_factory=list)
    chunks_done: int = 0


class Statistics(msgspec.Struct):
    slots: int
    free_slots: int
    pending: int
    in_flight: int
    waiting_to_write: int
    busy_workers: int
    chunks_read: int
    chunks_written: int
    retries: int
    recycled: int


class Scheduler:
    """Decides reads, dispatches, writes and retries. See the module docstring for the rules."""

    def __init__(self, slots: int, workers: int, *, ordered: bool = True, prefetch: int = 2,
                 max_attempts: int = 4, flush: bool = True,
                 worker_max_chunks: int | None = None):
        if slots < 2:
            raise ValueError("the scheduler needs at least 2 slots (one input, one output)")
        if workers < 1:
            raise ValueError("at least one worker is needed")
        self.nslots = slots
        self.ordered = ordered
        self.prefetch = max(1, prefetch)
        self.max_attempts = max_attempts
        if flush and worker_max_chunks:
            raise ValueError("a worker whose stages keep state until their flush cannot be "
                             "recycled (worker_max_chunks)")
        self.worker_max_chunks = worker_max_chunks
        self.can_retire = not flush
        self.paused = False
        self.free: list[int] = list(range(slots - 1, -1, -1))  # pop() gives slot 0 first
        self.workers = {w: _Worker() for w in range(workers)}
        self.chunks: dict[int, _Chunk] = {}
        self.pending: list[int] = []        # heap of seqs waiting for a worker
        self.next_seq = 0                   # next sequence number to read
        self.data_chunks: int | None = None  # known once the source is exhausted
        self.reading = False                # a ReadInto is outstanding
        self.head = 0                       # lowest seq not fully written
        self.completed: set[int] = set()    # fully written seqs >= head (unordered mode)
        self.flush_sent = not flush      # no stage flushes: nothing to send at the end
        self.finished = False
        self.aborted = False
        self.retries = 0
        self.failed_starts = 0  # workers in a row that died before they were ready
        self.recycled = 0
        self.chunks_written = 0

    # ------------------------------------------------------------------ public
    def start(self) -> list[Action]:
        return self._progress([])

    def handle(self, event: Event) -> list[Action]:
        if self.finished or self.aborted:
            return []
        out: list[Action] = []
        if isinstance(event, ChunkRead):
            self._on_read(event)
        elif isinstance(event, SourceExhausted):
            self.reading = False
            self.free.append(event.slot)
            self.data_chunks = self.next_seq
        elif isinstance(event, WorkerReady):
            self.workers[event.worker].ready = True
            self.failed_starts = 0
        elif isinstance(event, PieceOut):
            self._on_output(event.worker, event.seq, event.slot, event.length, False, None)
        elif isinstance(event, ChunkDone):
            self._on_output(event.worker, event.seq, event.slot, event.length, True, event.meta)
        elif isinstance(event, WorkerExited):
            abort = self._on_exit(event, out)
            if abort is not None:
                self.aborted = True
                return [abort]
        elif isinstance(event, RetireWorker):
            w = self.workers[event.worker]
            if w.ready and not w.stopping and self.can_retire:
                w.retiring = True
        elif isinstance(event, SetPaused):
            self.paused = event.paused
        else:  # pragma: no cover - guarded by the type
            raise TypeError(f"unknown event {event!r}")
        return self._progress(out)

    def stop_all(self) -> None:
        """Mark every worker as stopping: their exits are expected from now on."""
        for w in self.workers.values():
            w.stopping = True

    def statistics(self) -> Statistics:
        in_flight = sum(1 for c in self.chunks.values() if c.worker is not None and not c.done)
        return Statistics(
            slots=self.nslots, free_slots=len(self.free), pending=len(self.pending),
            in_flight=in_flight,
            waiting_to_write=sum(1 for c in self.chunks.values() if c.waiting is not None),
            busy_workers=sum(1 for w in self.workers.values() if w.tasks),
            chunks_read=self.next_seq, chunks_written=self.chunks_written, retries=self.retries,
            recycled=self.recycled)

    def chunk_range(self, seq: int) -> tuple[int, int]:
        c = self.chunks.get(seq)
        return (c.offset, c.length) if c else (0, 0)

    # ------------------------------------------------------------------ events
    def _on_read(self, ev: ChunkRead) -> None:
        self.reading = False
        seq = self.next_seq
        self.next_seq += 1
        self.chunks[seq] = _Chunk(seq, ev.slot, ev.offset, ev.length)
        heapq.heappush(self.pending, seq)

    def _on_output(self, worker: int, seq: int, slot: int, length: int, last: bool,
                   meta: Any) -> None:
        c = self.chunks[seq]
        if c.worker != worker or c.done:
            raise AssertionError(f"output for chunk {seq} from worker {worker}, "
                                 f"which does not hold it")
        if last:
            c.done = True
            w = self.workers[worker]
            w.tasks.remove(seq)
            if not c.flush:
                w.chunks_done += 1
                if self.worker_max_chunks and w.chunks_done >= self.worker_max_chunks:
                    w.retiring = True
            spare = c.in_slot if slot == c.out_slot else c.out_slot
            if spare is not None and spare != slot:
                self.free.append(spare)
            c.in_slot = None
            c.out_slot = slot
        c.waiting = (slot, length, last, meta)

    def _on_exit(self, ev: WorkerExited, out: list[Action]) -> Abort | None:
        w = self.workers[ev.worker]
        if ev.expected or w.stopping:
            w.ready = False
            return None
        was_ready = w.ready
        lost = list(w.tasks)
        # a worker killed for memory after running other chunks may have grown on them (a
        # leak): its chunks get the attempt back. A fresh worker's growth is the chunk's own.
        forgive = ev.cause == "memory" and w.chunks_done > 0
        self.workers[ev.worker] = _Worker()
        for seq in lost:
            c = self.chunks[seq]
            if forgive:
                c.attempts -= 1
            if c.flush:
                return Abort("crashed", seq=seq, worker=ev.worker, exitcode=ev.exitcode,
                             attempts=c.attempts, cause=ev.cause)
            if c.attempts >= self.max_attempts:
                return Abort("crashed", seq=seq, worker=ev.worker, exitcode=ev.exitcode,
                             attempts=c.attempts, offset=c.offset, length=c.length,
                             cause=ev.cause)
            # a piece of the dead attempt not yet written is dropped: the retry makes it again
            if c.out_slot is not None:
                self.free.append(c.out_slot)
            c.waiting = None
            c.out_slot = None
            c.worker = None
            c.produced = 0
            heapq.heappush(self.pending, seq)
            self.retries += 1
        if not was_ready and not lost:
            # died while starting: killed from outside (a soak test, the OOM killer) or broken
            # (a crash while importing); the job fails after max_attempts starts in a row
            self.failed_starts += 1
            if self.failed_starts >= self.max_attempts:
                return Abort("setup", worker=ev.worker, exitcode=ev.exitcode, cause=ev.cause,
                             attempts=self.failed_starts)
        out.append(StartWorker(ev.worker))
        return None

    # ------------------------------------------------------------------ progress
    def _progress(self, out: list[Action]) -> list[Action]:
        self._write(out)
        self._dispatch(out)
        self._maybe_flush(out)
        self._read(out)
        if (not self.finished and self.data_chunks is not None and self.flush_sent
                and self.head >= self.next_seq):
            self.finished = True
            self.stop_all()
            out.append(Finish())
        self._recycle(out)
        return out

    def _recycle(self, out: list[Action]) -> None:
        if self.finished:
            return
        work_left = (self.data_chunks is None or bool(self.pending) or not self.flush_sent
                     or any(not c.done for c in self.chunks.values()))
        for index, w in self.workers.items():
            if w.retiring and not w.tasks and not w.stopping:
                if not work_left:
                    continue  # the job is ending: no point in a fresh process
                self.workers[index] = _Worker()
                self.recycled += 1
                out.append(RestartWorker(index))

    def _write(self, out: list[Action]) -> None:
        if self.ordered:
            while True:
                c = self.chunks.get(self.head)
                if c is None or c.waiting is None:
                    return
                self._emit(c, out)
        else:
            for c in list(self.chunks.values()):
                if c.waiting is not None:
                    self._emit(c, out)

    def _emit(self, c: _Chunk, out: list[Action]) -> None:
        slot, length, last, meta = c.waiting  # type: ignore[misc]
        c.waiting = None
        start = c.produced
        c.produced += length
        skip = max(0, min(length, c.emitted - start))
        c.emitted = max(c.emitted, c.produced)
        out.append(Write(c.seq, slot, length, skip, last, meta))
        if not last:
            out.append(SendAck(c.worker, c.seq))  # type: ignore[arg-type]
            return
        self.free.append(slot)
        c.out_slot = None
        del self.chunks[c.seq]
        self.chunks_written += 1
        self.completed.add(c.seq)
        while self.head in self.completed:
            self.completed.discard(self.head)
            self.head += 1

    def _dispatch(self, out: list[Action]) -> None:
        while self.pending and self.free:
            seq = self.pending[0]
            is_head = seq == self.head
            if not is_head and len(self.free) <= RESERVE:
                return
            ready = [w for w, st in self.workers.items()
                     if st.ready and not st.stopping and not st.retiring]
            c = self.chunks[seq]
            if c.bound is not None:
                ready = [w for w in ready if w == c.bound]
            fits = [w for w in ready if len(self.workers[w].tasks) < self.prefetch]
            choice = fits or (ready if is_head else [])
            if not choice:
                return
            w = min(choice, key=lambda k: (len(self.workers[k].tasks), k))
            heapq.heappop(self.pending)
            c.attempts += 1
            c.worker = w
            c.out_slot = self.free.pop()
            self.workers[w].tasks.append(seq)
            if c.flush:
                out.append(DispatchFlush(w, seq, c.out_slot))
            else:
                out.append(Dispatch(w, seq, c.in_slot, c.out_slot, c.offset, c.length,
                                    c.attempts))

    def _maybe_flush(self, out: list[Action]) -> None:
        if self.flush_sent or self.data_chunks is None:
            return
        if any(not c.done for c in self.chunks.values()) or self.pending:
            return
        live = [w for w, st in self.workers.items() if st.ready and not st.stopping]
        if len(live) < len(self.workers):
            return  # a replacement is still starting; flush once everyone is there
        self.flush_sent = True
        for w in sorted(live):
            seq = self.next_seq
            self.next_seq += 1
            self.chunks[seq] = _Chunk(seq, None, flush=True, bound=w)
            heapq.heappush(self.pending, seq)
        self._dispatch(out)

    def _read(self, out: list[Action]) -> None:
        if self.reading or self.data_chunks is not None or not self.free:
            return
        is_head = self.next_seq == self.head
        if self.paused and not is_head:
            return  # the memory watchdog asked for a pause; the head keeps the job moving
        # every chunk waiting for a worker will need an output slot, plus the reserve
        if not is_head and len(self.free) <= RESERVE + len(self.pending):
            return
        if len(self.pending) >= self.prefetch * len(self.workers):
            return  # enough read ahead to keep every worker busy
        self.reading = True
        out.append(ReadInto(self.free.pop(), self.next_seq))
