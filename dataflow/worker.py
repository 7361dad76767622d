"""The worker process: runs the fused chain of transforms over chunks in shared-memory slots.

Rules:
- Started with spawn (never fork). SIGINT is ignored before any user code is imported: Ctrl-C
  is the coordinator's business (PITFALLS 5). The worker dies with its coordinator: PDEATHSIG,
  a parent-pid check after arming it, and EOF on its pipe (PITFALLS 7).
- The arena is mapped by path, without the resource tracker (PITFALLS 1).
- All stages run in this process, one after the other, per chunk: no hop between stages.
- Tasks run in the order received, except while waiting for an Ack: then a queued task with a
  lower sequence number runs first, because the coordinator may be waiting for exactly that
  one before it can take our piece (see scheduler.py).
- Output that is the input view itself is reported in place (no copy). Otherwise it is copied
  into the output slot, in slot-sized pieces when larger, each acknowledged before the next.
  A transform may return a list of bytes-like parts (slices of its input, say): they are
  copied one after the other, with no join.
- A transform may return an iterator of parts instead (a decoder that produces its output as
  it goes): the parts are pulled one at a time while copying, so the whole output never sits
  in memory, and an error raised while pulling is that stage's error.
- Record stages (records.py) pass decoded records to each other: one decode and one encode
  per run of them. A CSV header is taken out of chunk 0 before the first stage, and the output
  header is put back in before the first stage that makes plain bytes (or at the end), so a
  compressor after a select compresses the new header too.
- An exception in a stage is reported as data (type, message, traceback), never pickled; a
  RecordError also gives the failing record's stream offset.
- After a clean stop the process skips the interpreter's teardown (quickexit.py: 20-60 ms
  here, which the coordinator waits for before it can finish): the exit handlers user code
  registered, multiprocessing's finalizers and the join of non-daemon threads still run
  first, then the standard streams are flushed and the process ends with status 0. Any other
  end (an error, a signal) exits the usual way.
"""
from __future__ import annotations

import ctypes
import os
import signal
import time
import traceback
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from . import messages as M
from . import quickexit
from .errors import DataflowError
from .records import (Batch, RecordError, RecordFormat, bind_chain, header_position, run_stage,
                      with_header)
from .plan import SCRATCH, object_reserve
from .registry import build
from .shm import Arena
from .streams import ChunkInfo, SlotFiller

PR_SET_PDEATHSIG = 1
M_TRIM_THRESHOLD = -1      # mallopt(3) parameters
M_MMAP_THRESHOLD = -3


def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _die_with_parent(libc: Any, parent_pid: int) -> None:
    try:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except AttributeError:   # no libc, or no prctl
        pass
    # the coordinator died before PDEATHSIG was armed? Under forkserver our parent is the
    # fork server, not the coordinator: ask whether the coordinator is still there
    if os.getppid() != parent_pid and not _alive(parent_pid):
        os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class _Stop(Exception):
    pass


class Worker:
    def __init__(self, conn: Connection, arena: Arena, stages: list[Any], context: int = 0):
        self.conn = conn
        self.arena = arena
        self.stages = stages
        self.context = context  # bytes at the end of each input slot: the stream before it
        self.queue: deque[M.Task | M.Flush] = deque()
        self.info = ChunkInfo()
        self.header_in = 0       # bytes of source header at the start of chunk 0
        self.header_at = 0       # the stage before which chunk 0 gets the output header
        self.header_out = b""
        self.encode = M.from_worker_encoder.encode
        self.decode = M.to_worker_decoder.decode

    def bind(self, fmt: RecordFormat) -> None:
        """Tell the record stages their formats (as the coordinator did) and place the header."""
        formats = bind_chain(self.stages, fmt)
        self.info.header = fmt.header_bytes or b"" if fmt.header else b""
        self.header_in = len(self.info.header)
        at = header_position(formats, self.stages)
        self.header_at = len(self.stages) + 1 if at is None else at   # None: no header out
        self.header_out = formats[at].header_out() if at is not None else b""

    def send(self, msg: Any) -> None:
        self.conn.send_bytes(self.encode(msg))

    def recv(self) -> Any:
        try:
            return self.decode(self.conn.recv_bytes())
        except EOFError:
            raise _Stop from None

    def serve(self) -> None:
        while True:
            while self.queue:
                self.run(self.queue.popleft())
            msg = self.recv()
            if isinstance(msg, M.Stop):
                return
            if isinstance(msg, (M.Task, M.Flush)):
                self.queue.append(msg)

    def run(self, task: M.Task | M.Flush) -> None:
        if isinstance(task, M.Flush):
            self.run_flush(task)
            return
        info = self.info
        info.seq, info.offset, info.length, info.attempt = (task.seq, task.offset, task.length,
                                                            task.attempt)
        view = self.arena.view(task.slot, task.length)
        if self.context:
            size = min(self.context, task.offset)
            info.context = self.arena.view(task.slot, size, self.arena.slot_size - size)
        data: Any = view
        first = task.offset == 0 and bool(self.header_in or self.header_out)
        if first:
            data = view[self.header_in:]
        summaries: list[Any] = []
        seconds: list[float] = []
        try:
            for i, stage in enumerate(self.stages):
                if i == 1 and info.context is not None:
                    info.context.release()
                    info.context = None
                info.summary = None
                t0 = time.perf_counter()
                try:
                    if first and i == self.header_at:
                        data = self.header_out + _as_bytes(data)
                    data = run_stage(stage, data, info)
                    if data is None:
                        data = b""
                    elif i + 1 < len(self.stages):
                        data = _one_buffer(data)  # the next stage gets one buffer
                except Exception as e:
                    self.fail(task.seq, i, _name(stage), e, task.offset if i == 0 else -1)
                    return
                seconds.append(time.perf_counter() - t0)
                summaries.append(info.summary)
            if isinstance(data, Batch):
                try:
                    data = data.encode()
                except Exception as e:      # the last record stage's records cannot be written
                    last = len(self.stages) - 1
                    self.fail(task.seq, last, _name(self.stages[last]), e)
                    return
            if first and self.header_at == len(self.stages) and self.header_out:
                data = [self.header_out, *(data if isinstance(data, list) else [data])] \
                    if not hasattr(data, "__next__") else _prepend(self.header_out, data)
            summaries = self.encoded(task.seq, summaries)
            if summaries is None:
                return
            if data is view:
                self.send(M.Done(task.seq, task.slot, task.length, summaries, seconds))
            else:
                self.emit(task.seq, task.out_slot, data, summaries, seconds)
        finally:
            view.release()
            if info.context is not None:
                info.context.release()
                info.context = None

    def encoded(self, seq: int, summaries: list[Any]) -> Any:
        """The chunk's summaries, encoded once for its Done message (msgspec.Raw), [] for
        none; None after reporting the stage whose summary msgpack cannot carry."""
        if not any(s is not None for s in summaries):
            return []
        try:
            return msgspec.Raw(self.encode(summaries))
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
            for i, summary in enumerate(summaries):
                try:
                    self.encode(summary)
                except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as e:
                    self.fail(seq, i, _name(self.stages[i]), e)
                    return None
            raise

    def run_flush(self, task: M.Flush) -> None:
        out = b""
        for i, stage in enumerate(self.stages):
            # what an earlier stage flushes still goes through the later ones
            info = self.info
            info.seq, info.offset, info.length = task.seq, -1, len(out)
            try:
                if out:
                    out = _one_buffer(run_stage(stage, memoryview(out), info) or b"")
                    if isinstance(out, Batch):
                        out = out.encode()
                more = stage.flush() or b""
            except Exception as e:
                self.fail(task.seq, i, _name(stage), e)
                return
            out = bytes(out) + bytes(more)
        self.emit(task.seq, task.slot, out, [], [])

    def emit(self, seq: int, slot: int, data: Any, summaries: list[Any],
             seconds: list[float]) -> None:
        """Copy `data` (bytes-like, or a list or iterator of them to concatenate) into `slot`;
        a slot that fills while more output follows goes out as a Piece, acknowledged before
        reuse. A SlotFiller (streams.py) whose pieces fit a slot writes into the slots itself
        first; what it leaves (`rest`) is copied after. An error while pulling from an iterator
        or filling fails the last stage."""
        filler = data if isinstance(data, SlotFiller) and \
            data.largest_piece <= self.arena.slot_size else None
        lazy = filler is not None or hasattr(data, "__next__")  # pulled as we copy
        size = self.arena.slot_size
        dest = self.arena.view(slot)
        pos = 0
        t0 = time.perf_counter()
        try:
            if filler is not None:
                pos = self._fill(seq, slot, dest, filler)
                data = filler.rest
            parts = data if lazy or isinstance(data, list) else [data]
            for part in _pulled(parts, lazy):
                with memoryview(part) as mv, mv.cast("B") as out:
                    while len(out):
                        if pos == size:
                            self._piece(seq, slot, size)
                            pos = 0
                        n = min(len(out), size - pos)
                        dest[pos:pos + n] = out[:n]
                        pos += n
                        out = out[n:]
        except _PullFailed as e:
            index = len(self.stages) - 1
            self.fail(seq, index, _name(self.stages[index]), e.error)
            return
        finally:
            dest.release()
        if lazy and seconds:
            seconds[-1] += time.perf_counter() - t0  # the last stage worked while we copied
        self.send(M.Done(seq, slot, pos, summaries, seconds))

    def _fill(self, seq: int, slot: int, dest: memoryview, filler: SlotFiller) -> int:
        """Let `filler` write into the slot until it is done; the bytes in the slot then."""
        pos = 0
        while not filler.done:
            if pos == len(dest):
                self._piece(seq, slot, pos)
                pos = 0
            try:
                with dest[pos:] as free:
                    n = filler.fill(free)
                if n == 0 and pos == 0 and not filler.done:
                    raise ValueError(f"the stage's output needs more than a slot "
                                     f"({len(dest)} bytes) in one piece")
            except Exception as e:
                raise _PullFailed(e) from e
            if n == 0 and not filler.done:   # its next piece needs an empty slot
                self._piece(seq, slot, pos)
                pos = 0
            pos += n
        return pos

    def _piece(self, seq: int, slot: int, length: int) -> None:
        """Hand the full slot over as a piece of chunk `seq`; back once it is taken."""
        self.send(M.Piece(seq, slot, length))
        self.wait_ack(seq)

    def wait_ack(self, seq: int) -> None:
        while True:
            lower = [t for t in self.queue if t.seq < seq]
            for t in lower:
                self.queue.remove(t)
                self.run(t)
            msg = self.recv()
            if isinstance(msg, M.Ack) and msg.seq == seq:
                return
            if isinstance(msg, M.Stop):
                raise _Stop
            if isinstance(msg, (M.Task, M.Flush)):
                self.queue.append(msg)

    def fail(self, seq: int, index: int, name: str, exc: BaseException, offset: int = -1) -> None:
        # a DataflowError (corrupt input, say) explains itself: its traceback is noise
        own = exc.__cause__ if isinstance(exc, RecordError) and exc.__cause__ else exc
        tb = "" if own is exc and isinstance(exc, (DataflowError, RecordError)) else \
            "".join(traceback.format_exception(own))
        at = -1
        if isinstance(exc, RecordError) and exc.offset is not None and offset >= 0:
            at = offset + exc.offset + (self.header_in if offset == 0 else 0)
        self.send(M.Failed(seq, index, name, type(own).__qualname__, str(exc), tb, at))


class _PullFailed(Exception):
    def __init__(self, error: Exception):
        super().__init__(error)
        self.error = error


def _pulled(parts: Any, lazy: bool) -> Any:
    """Iterate `parts`; an exception from a lazy transform's iterator becomes _PullFailed."""
    if not lazy:
        yield from parts
        return
    it = iter(parts)
    while True:
        try:
            part = next(it)
        except StopIteration:
            return
        except Exception as e:
            raise _PullFailed(e) from e
        yield part


def _one_buffer(data: Any) -> Any:
    """A transform's output as one bytes-like object (or a Batch of records, kept): a gather
    list or an iterator is joined."""
    if isinstance(data, list) or hasattr(data, "__next__"):
        return b"".join(data)
    return data


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, Batch):
        return data.encode()
    return bytes(_one_buffer(data))


def _prepend(first: bytes, parts: Any) -> Any:
    yield first
    yield from parts


def _name(stage: Any) -> str:
    return getattr(stage, "name", type(stage).__name__)


def _keep_freed_memory(libc: Any, slot_size: int) -> None:
    """Let glibc's malloc keep a chunk's worth of freed memory instead of handing it back.

    A transform's output is a fresh object of up to a slot (a joined 4 MiB piece, a
    decompressed block run), freed once copied into its output slot. By default malloc serves
    one that large with mmap and unmaps it when freed, or trims the heap back: every chunk then
    faults its pages in again (1 GiB of BGZF decompressed: 242,000 page faults, 48,000 with
    this). Allocations up to a slot now come from the heap, and up to SCRATCH slots of free
    heap stay mapped: the memory plan counts that much per worker already (plan.SCRATCH)."""
    try:
        libc.mallopt(M_MMAP_THRESHOLD, min(slot_size + (1 << 20), 32 << 20))   # glibc's cap
        libc.mallopt(M_TRIM_THRESHOLD, SCRATCH * slot_size)
    except AttributeError:   # not glibc: its defaults stay
        pass


# Python's small-object allocator (pymalloc) takes memory from the system in 1 MiB arenas and
# hands an arena back as soon as its last object is freed. A chunk's lines or records fill
# arenas and are all freed together when it is done, so every chunk mapped them again and
# faulted their pages in: 1 GiB of a per-line function cost 372,000 page faults (1.2 s of
# system time) against 27,000 for the same loop in one process, which keeps the previous
# block's lines alive while splitting the next. A few small objects left in each arena keep it
# mapped; the chunks' objects then fill its free pools instead of new arenas.
_RESERVE_OBJECT = 400       # bytes(400): 433 bytes with its header,
_RESERVE_CLASS = 448        # served from pymalloc's 448-byte size class
_RESERVE_KEEP = 512         # keep one object in this many: >= 4 in each 1 MiB arena
_reserve: list[bytes] = []


def _reserve_object_memory(size: int) -> None:
    """Keep about `size` bytes of pymalloc arenas mapped for the rest of the process."""
    blocks = [bytes(_RESERVE_OBJECT) for _ in range(size // _RESERVE_CLASS)]
    _reserve[:] = blocks[::_RESERVE_KEEP]


def _become_worker(parent_pid: int) -> Any:
    """What a worker process does first: Ctrl-C is the coordinator's, the environment is the
    user's again, and it dies with its parent. Returns libc (None when not found)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # also drops a Ctrl-C pending since birth
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})  # our parent's
    if os.environ.pop("_DATAFLOW_SAFE_PATH", None):    # set for our start (launch.py)
        os.environ.pop("PYTHONSAFEPATH", None)
    libc = _libc()
    _die_with_parent(libc, parent_pid)
    return libc


def standby(conn: Connection, parent_pid: int) -> None:
    """Entry point of a worker started before its job was known (launch.prestart): it waits
    for the job's arguments (main's, after `conn`, msgpack-encoded) and runs main; when no
    job takes it, the coordinator closes the pipe and it ends here."""
    libc = _become_worker(parent_pid)
    try:
        args = msgspec.msgpack.decode(conn.recv_bytes())
    except (EOFError, OSError):
        return
    main(conn, *args, libc=libc)


def main(conn: Connection, arena_name: str, slots: int, slot_size: int, specs: bytes,
         parent_pid: int, context: int = 0, record_format: bytes = b"", *,
         libc: Any = False) -> None:
    """Entry point of a worker process (the target of a spawned multiprocessing.Process).
    `libc` is given by `standby`, which has already made the process a worker."""
    if libc is False:
        libc = _become_worker(parent_pid)
    quickexit.arm()     # before user code registers its exit handlers: ours runs after them
    _keep_freed_memory(libc, slot_size)
    arena = Arena.attach(arena_name, slots, slot_size)
    w = Worker(conn, arena, [], context)
    try:
        for i, spec in enumerate(msgspec.msgpack.decode(specs)):
            stage = None
            try:
                stage = build(spec)
                stage.setup()
            except Exception as e:
                w.fail(-1, i, _name(stage) if stage is not None else
                       str(spec.get("class", "?")), e)
                return
            w.stages.append(stage)
        if record_format:
            fmt = msgspec.msgpack.decode(record_format, type=RecordFormat)
            if fmt.header_bytes:     # the columns come as the header's bytes (coordinator.py)
                fmt = with_header(fmt, fmt.header_bytes)
            w.bind(fmt)
        _reserve_object_memory(object_reserve(w.stages, slot_size - context))
        w.send(M.Ready(os.getpid()))
        w.serve()
        quickexit.done(0)                  # serve() returns on the coordinator's Stop only
    except (_Stop, BrokenPipeError, ConnectionResetError):
        pass
    finally:
        w.stages.clear()
        arena.close()
        conn.close()
