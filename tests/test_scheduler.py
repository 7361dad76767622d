"""The scheduler, driven by a simulated world of workers in random orders (no processes).

The simulation models what real workers do: tasks run in the order received, output comes in
one or more pieces, a worker waiting for an Ack runs a queued lower-numbered task first, and
workers die at random. Whatever the order, the job must finish with every output byte written
exactly once and in order (or in any order, unordered), and never hold more slots than exist.
"""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflow import scheduler as S


def expected_output(seq: int, pieces: int) -> list[bytes]:
    return [f"<{seq}.{i}>".encode() for i in range(pieces)]


class World:
    def __init__(self, nchunks, nslots, nworkers, pieces, ordered, deaths, rng, identity,
                 flush=True, max_chunks=None, interventions=0):
        self.s = S.Scheduler(nslots, nworkers, ordered=ordered, prefetch=2, flush=flush,
                             worker_max_chunks=max_chunks)
        self.interventions = interventions  # random retirements and pause toggles allowed
        self.restarts = 0
        self.paused = False
        self.nchunks = nchunks
        self.pieces = pieces          # seq -> number of output pieces
        self.identity = identity      # seqs whose transform hands back the input slot
        self.rng = rng
        self.deaths_left = deaths
        self.slots: dict[int, bytes] = {}   # slot -> content (to check nobody overwrites)
        self.owner: dict[int, str] = {}     # slot -> who holds it (for conflict checks)
        self.queue: dict[int, list] = {w: [] for w in range(nworkers)}
        self.stack: dict[int, list] = {w: [] for w in range(nworkers)}  # [task, piece, awaiting]
        self.acked: dict[int, set] = {w: set() for w in range(nworkers)}
        self.starting = set(range(nworkers))
        self.read_pending: list[S.ReadInto] = []
        self.written: list[tuple[int, bytes]] = []
        self.finished = False
        self.aborted = None
        self.nread = 0
        self.apply(self.s.start())

    # -------------------------------------------------------------- actions
    def apply(self, actions):
        for a in actions:
            if isinstance(a, S.ReadInto):
                assert a.slot not in self.owner, f"read into busy slot {a.slot}"
                self.owner[a.slot] = f"in{a.seq}"
                self.read_pending.append(a)
            elif isinstance(a, S.Dispatch):
                assert a.out_slot not in self.owner, f"output slot {a.out_slot} busy"
                self.owner[a.out_slot] = f"out{a.seq}"
                self.queue[a.worker].append(a)
            elif isinstance(a, S.DispatchFlush):
                assert a.out_slot not in self.owner
                self.owner[a.out_slot] = f"out{a.seq}"
                self.queue[a.worker].append(a)
            elif isinstance(a, S.Write):
                data = self.slots[a.slot]
                assert len(data) == a.length
                self.written.append((a.seq, data[a.skip:]))
                if a.last:
                    self.release(a.slot)
            elif isinstance(a, S.SendAck):
                self.acked[a.worker].add(a.seq)
            elif isinstance(a, S.StartWorker):
                self.starting.add(a.worker)
            elif isinstance(a, S.RestartWorker):
                w = a.worker
                assert not self.queue[w] and not self.stack[w], "restarted a busy worker"
                assert w not in self.starting
                self.starting.add(w)
                self.restarts += 1
            elif isinstance(a, S.Finish):
                self.finished = True
            elif isinstance(a, S.Abort):
                self.aborted = a
            else:
                raise AssertionError(a)
        # slots the scheduler considers free must not be held in the world
        for slot in self.s.free:
            assert slot not in self.owner, f"slot {slot} freed while held by {self.owner[slot]}"

    def release(self, slot):
        self.owner.pop(slot, None)
        self.slots.pop(slot, None)

    # -------------------------------------------------------------- possible steps
    def steps(self):
        out = []
        if self.read_pending:
            out.append(("read",))
        for w in self.starting:
            out.append(("ready", w))
        if self.interventions:
            out.append(("pause",))
            out.extend(("retire", w) for w in self.queue if w not in self.starting)
        for w in self.queue:
            if w in self.starting:
                continue
            if self.runnable(w) is not None:
                out.append(("work", w))
            holds_flush = any(isinstance(t, S.DispatchFlush)
                              for t in self.queue[w] + [e[0] for e in self.stack[w]])
            if self.deaths_left and (self.queue[w] or self.stack[w]) and not holds_flush:
                out.append(("die", w))
        return out

    def runnable(self, w):
        stack = self.stack[w]
        if stack and not stack[-1][2]:
            return "continue"
        if stack and stack[-1][0].seq in self.acked[w]:
            return "acked"
        low = min((t.seq for t in self.queue[w]), default=None)
        if low is None:
            return None
        if stack and low > min(e[0].seq for e in stack):
            return None  # waiting for an Ack; only lower-numbered tasks may run meanwhile
        return "new"

    def step(self, kind, *args):
        if kind == "read":
            a = self.read_pending.pop(0)
            if self.nread < self.nchunks:
                self.slots[a.slot] = f"input{self.nread}".encode()
                self.nread += 1
                self.apply(self.s.handle(S.ChunkRead(a.slot, self.nread * 10, 10)))
            else:
                self.release(a.slot)
                self.apply(self.s.handle(S.SourceExhausted(a.slot)))
        elif kind == "pause":
            self.interventions -= 1
            self.paused = not self.paused
            self.apply(self.s.handle(S.SetPaused(self.paused)))
        elif kind == "retire":
            self.interventions -= 1
            self.apply(self.s.handle(S.RetireWorker(args[0])))
        elif kind == "ready":
            (w,) = args
            self.starting.discard(w)
            self.apply(self.s.handle(S.WorkerReady(w)))
        elif kind == "die":
            (w,) = args
            self.deaths_left -= 1
            for t in self.queue[w] + [e[0] for e in self.stack[w]]:
                self.owner.pop(t.out_slot, None)   # the world forgets the dead worker's output
            self.queue[w] = []
            self.stack[w] = []
            self.acked[w] = set()
            self.apply(self.s.handle(S.WorkerExited(w, -9)))
        elif kind == "work":
            (w,) = args
            how = self.runnable(w)
            stack = self.stack[w]
            if how == "new":
                t = min(self.queue[w], key=lambda t: t.seq)
                self.queue[w].remove(t)
                stack.append([t, 0, False])
            elif how == "acked":
                self.acked[w].discard(stack[-1][0].seq)
                stack[-1][2] = False
            entry = stack[-1]
            t, i, _ = entry
            if isinstance(t, S.DispatchFlush):
                pieces = [f"<flush{t.seq}>".encode()]
            else:
                pieces = expected_output(t.seq, self.pieces[t.seq])
            if isinstance(t, S.Dispatch) and t.seq in self.identity and len(pieces) == 1:
                assert self.slots[t.in_slot] == f"input{t.seq}".encode()
                self.slots[t.in_slot] = pieces[0]
                self.owner[t.in_slot] = f"out{t.seq}"
                self.owner.pop(t.out_slot, None)
                stack.pop()
                self.apply(self.s.handle(S.ChunkDone(w, t.seq, t.in_slot, len(pieces[0]))))
                return
            if isinstance(t, S.Dispatch):
                assert self.slots[t.in_slot] == f"input{t.seq}".encode(), "input overwritten"
            self.slots[t.out_slot] = pieces[i]
            if i + 1 < len(pieces):
                entry[1] += 1
                entry[2] = True
                self.apply(self.s.handle(S.PieceOut(w, t.seq, t.out_slot, len(pieces[i]))))
            else:
                stack.pop()
                if isinstance(t, S.Dispatch):
                    self.release(t.in_slot)
                self.apply(self.s.handle(S.ChunkDone(w, t.seq, t.out_slot, len(pieces[i]))))

    def run(self, max_steps=100_000):
        for _ in range(max_steps):
            if self.finished or self.aborted:
                return
            options = self.steps()
            assert options, f"deadlock: {self.s.statistics()}"
            self.step(*self.rng.choice(options))
        raise AssertionError("did not finish")


def joined(world, ordered):
    by_seq: dict[int, bytes] = {}
    order = []
    for seq, data in world.written:
        by_seq[seq] = by_seq.get(seq, b"") + data
        if seq not in order:
            order.append(seq)
    if ordered:
        assert order == sorted(order), "output out of order"
    return by_seq


@settings(max_examples=300, deadline=None)
@given(nchunks=st.integers(0, 25), nslots=st.integers(2, 9), nworkers=st.integers(1, 4),
       ordered=st.booleans(), deaths=st.integers(0, 3), seed=st.integers(0, 2**32),
       data=st.data())
def test_random_orders_write_everything_once_in_order(nchunks, nslots, nworkers, ordered,
                                                      deaths, seed, data):
    pieces = data.draw(st.lists(st.integers(1, 3), min_size=nchunks, max_size=nchunks))
    identity = set(data.draw(st.lists(st.integers(0, max(0, nchunks - 1)), max_size=5)))
    world = World(nchunks, nslots, nworkers, dict(enumerate(pieces)), ordered, deaths,
                  random.Random(seed), identity)
    world.run()
    if world.aborted:
        # only possible when deaths exceed the attempts on a chunk; not with <= 3 deaths
        raise AssertionError(f"aborted: {world.aborted}")
    by_seq = joined(world, ordered)
    for seq in range(nchunks):
        assert by_seq.get(seq) == b"".join(expected_output(seq, pieces[seq])), seq
    flushes = [seq for seq in by_seq if seq >= nchunks]
    assert len(flushes) == nworkers
    for seq in flushes:
        assert by_seq[seq] == f"<flush{seq}>".encode()
    assert sorted(world.s.free) == list(range(nslots)), "slots leaked"


def test_a_chunk_that_kills_every_worker_aborts_after_max_attempts():
    s = S.Scheduler(4, 1, max_attempts=4)
    acts = s.start()
    acts += s.handle(S.WorkerReady(0))
    read = [a for a in acts if isinstance(a, S.ReadInto)][0]
    acts = s.handle(S.ChunkRead(read.slot, 100, 50))
    for attempt in range(1, 5):
        d = [a for a in acts if isinstance(a, S.Dispatch)]
        assert d and d[0].attempt == attempt
        acts = s.handle(S.WorkerExited(0, -9))
        if attempt < 4:
            assert any(isinstance(a, S.StartWorker) for a in acts)
            acts = s.handle(S.WorkerReady(0))
    assert acts == [S.Abort("crashed", seq=0, worker=0, exitcode=-9, attempts=4,
                            offset=100, length=50)]


def test_a_worker_dying_during_its_flush_fails_the_job():
    s = S.Scheduler(4, 1)
    acts = s.start() + s.handle(S.WorkerReady(0))
    read = [a for a in acts if isinstance(a, S.ReadInto)][0]
    acts = s.handle(S.SourceExhausted(read.slot))
    flush = [a for a in acts if isinstance(a, S.DispatchFlush)]
    assert flush == [S.DispatchFlush(0, 0, flush[0].out_slot)]
    assert s.handle(S.WorkerExited(0, -9)) == [S.Abort("crashed", seq=0, worker=0, exitcode=-9,
                                                       attempts=1)]


def test_without_flush_the_job_finishes_after_the_last_write():
    s = S.Scheduler(4, 1, flush=False)
    acts = s.start() + s.handle(S.WorkerReady(0))
    read = [a for a in acts if isinstance(a, S.ReadInto)][0]
    assert s.handle(S.SourceExhausted(read.slot)) == [S.Finish()]


def test_a_worker_dying_before_ready_is_a_setup_failure():
    s = S.Scheduler(4, 2)
    s.start()
    for attempt in range(1, 4):  # killed while starting: replaced, up to max_attempts
        assert s.handle(S.WorkerExited(1, -9)) == [S.StartWorker(1)]
    assert s.handle(S.WorkerExited(1, 1)) == [S.Abort("setup", worker=1, exitcode=1,
                                                      attempts=4)]


def test_a_ready_worker_resets_the_count_of_failed_starts():
    s = S.Scheduler(4, 1, flush=False)
    s.start()
    for _ in range(10):
        assert s.handle(S.WorkerExited(0, -9)) == [S.StartWorker(0)]
        assert s.handle(S.WorkerExited(0, -9)) == [S.StartWorker(0)]
        s.handle(S.WorkerReady(0))


def test_reading_stops_when_no_slot_is_free_and_resumes_on_write():
    s = S.Scheduler(3, 1, prefetch=1)
    acts = s.start() + s.handle(S.WorkerReady(0))
    r0 = [a for a in acts if isinstance(a, S.ReadInto)]
    assert len(r0) == 1
    acts = s.handle(S.ChunkRead(r0[0].slot, 0, 10))
    d0 = [a for a in acts if isinstance(a, S.Dispatch)][0]
    # two slots held by chunk 0 (in + out): one left, kept as the reserve -> no read
    assert not [a for a in acts if isinstance(a, S.ReadInto)]
    acts = s.handle(S.ChunkDone(0, 0, d0.out_slot, 7))
    assert acts[0] == S.Write(0, d0.out_slot, 7, 0, True, None)
    assert any(isinstance(a, S.ReadInto) for a in acts)


def test_scheduler_rejects_too_few_slots():
    with pytest.raises(ValueError):
        S.Scheduler(1, 1)


@settings(max_examples=300, deadline=None)
@given(nchunks=st.integers(0, 25), nslots=st.integers(2, 9), nworkers=st.integers(1, 4),
       ordered=st.booleans(), deaths=st.integers(0, 3), seed=st.integers(0, 2**32),
       max_chunks=st.one_of(st.none(), st.integers(1, 4)), interventions=st.integers(0, 12),
       data=st.data())
def test_recycling_and_pausing_lose_nothing(nchunks, nslots, nworkers, ordered, deaths, seed,
                                            max_chunks, interventions, data):
    pieces = data.draw(st.lists(st.integers(1, 3), min_size=nchunks, max_size=nchunks))
    world = World(nchunks, nslots, nworkers, dict(enumerate(pieces)), ordered, deaths,
                  random.Random(seed), set(), flush=False, max_chunks=max_chunks,
                  interventions=interventions)
    world.run()
    assert not world.aborted, world.aborted
    by_seq = joined(world, ordered)
    assert sorted(by_seq) == list(range(nchunks))
    for seq in range(nchunks):
        assert by_seq[seq] == b"".join(expected_output(seq, pieces[seq])), seq
    assert sorted(world.s.free) == list(range(nslots)), "slots leaked"
    assert world.restarts == world.s.recycled
    if max_chunks == 1 and nchunks > nworkers and not deaths:
        assert world.restarts >= 1  # each worker is replaced after every chunk


def test_worker_max_chunks_replaces_a_worker_once_its_tasks_are_done():
    s = S.Scheduler(8, 1, flush=False, worker_max_chunks=2, prefetch=2)
    acts = s.start() + s.handle(S.WorkerReady(0))
    lives = [0]  # chunks run by each process in turn
    for _ in range(50):
        reads = [a for a in acts if isinstance(a, S.ReadInto)]
        dispatched = [a for a in acts if isinstance(a, S.Dispatch)]
        restart = any(isinstance(a, S.RestartWorker) for a in acts)
        acts = []
        for r in reads:
            acts += s.handle(S.ChunkRead(r.slot, r.seq * 10, 10) if r.seq < 5
                             else S.SourceExhausted(r.slot))
        for d in dispatched:
            acts += s.handle(S.ChunkDone(0, d.seq, d.out_slot, 3))
            lives[-1] += 1
        if restart:
            assert not s.workers[0].tasks and not s.workers[0].ready
            lives.append(0)
            acts += s.handle(S.WorkerReady(0))
        if any(isinstance(a, S.Finish) for a in acts):
            break
    # the first process took a third chunk, queued before its second was done; the second
    # process is not replaced after its 2 chunks: the job is over
    assert lives == [3, 2]
    assert s.recycled == 1


def test_pausing_reads_only_the_head():
    s = S.Scheduler(8, 2, flush=False)
    acts = s.start() + s.handle(S.SetPaused(True)) + s.handle(S.WorkerReady(0))
    reads = [a for a in acts if isinstance(a, S.ReadInto)]
    assert [r.seq for r in reads] == [0]  # the head
    acts = s.handle(S.ChunkRead(reads[0].slot, 0, 10))
    assert not [a for a in acts if isinstance(a, S.ReadInto)]  # chunk 1 is not the head
    acts = s.handle(S.SetPaused(False))
    assert [a.seq for a in acts if isinstance(a, S.ReadInto)] == [1]


def test_timeouts_and_memory_kills_are_named_in_the_abort():
    s = S.Scheduler(4, 1, max_attempts=2, flush=False)
    acts = s.start() + s.handle(S.WorkerReady(0))
    read = [a for a in acts if isinstance(a, S.ReadInto)][0]
    s.handle(S.ChunkRead(read.slot, 0, 10))
    s.handle(S.WorkerExited(0, -15, cause="timeout"))
    s.handle(S.WorkerReady(0))
    assert s.handle(S.WorkerExited(0, -9, cause="memory")) == [
        S.Abort("crashed", seq=0, worker=0, exitcode=-9, attempts=2, offset=0, length=10,
                cause="memory")]


def test_recycling_a_worker_with_flush_state_is_refused():
    with pytest.raises(ValueError, match="flush"):
        S.Scheduler(4, 1, flush=True, worker_max_chunks=3)
    s = S.Scheduler(4, 1, flush=True)
    s.start()
    s.handle(S.WorkerReady(0))
    s.handle(S.RetireWorker(0))
    assert not s.workers[0].retiring
