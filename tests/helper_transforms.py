"""Transforms used only by tests. Spawned workers import this module by name (the test
process's sys.path, which includes tests/, is handed to them)."""
from __future__ import annotations

import os
import time

from dataflow.streams import ChunkInfo, SlotFiller, Transform


class Upper(Transform):
    name = "upper"

    def transform(self, data: memoryview, chunk: ChunkInfo) -> bytes:
        return bytes(data).upper()


class Expand(Transform):
    """Repeat every chunk `times` times: output larger than a slot travels in pieces."""

    name = "expand"

    def __init__(self, times: int):
        self.times = times

    def transform(self, data: memoryview, chunk: ChunkInfo) -> bytes:
        return bytes(data) * self.times


class ExpandFilled(Transform):
    """Expand's output, written into the output slot by a SlotFiller in whole pieces of
    `piece` bytes (a piece that does not fit waits for the next slot); `fail_at` raises once
    that many bytes are out; `declared`: the largest piece it says it needs (the piece size
    unless given: 0 pretends it always fits)."""

    name = "expand-filled"

    def __init__(self, times: int, piece: int, fail_at: int = -1, declared: int = -1):
        self.times, self.piece, self.fail_at, self.declared = times, piece, fail_at, declared

    def transform(self, data: memoryview, chunk: ChunkInfo) -> SlotFiller:
        return _Repeat(bytes(data) * self.times, self.piece, self.fail_at,
                       self.piece if self.declared < 0 else self.declared)


class _Repeat(SlotFiller):
    def __init__(self, out: bytes, piece: int, fail_at: int, largest: int):
        self.out, self.piece, self.fail_at, self.pos = out, piece, fail_at, 0
        self.largest_piece = largest
        self.done = not out

    def fill(self, dest: memoryview) -> int:
        written = 0
        while self.pos < len(self.out):
            if 0 <= self.fail_at <= self.pos:
                raise ValueError(f"failing at output byte {self.pos}")
            part = self.out[self.pos:self.pos + self.piece]
            if written + len(part) > len(dest):
                return written
            dest[written:written + len(part)] = part
            written += len(part)
            self.pos += len(part)
        self.done = True
        return written

    def __next__(self) -> bytes:
        if self.pos >= len(self.out):
            raise StopIteration
        part = self.out[self.pos:self.pos + self.piece]
        self.pos += len(part)
        return part


class CountLines(Transform):
    """Passes data through; folds the line count in order; flush emits a per-worker marker."""

    name = "count-lines"

    def __init__(self, flush_marker: bool = False):
        self.flush_marker = flush_marker
        self.seen = 0

    def transform(self, data: memoryview, chunk: ChunkInfo) -> memoryview:
        chunk.summary = [chunk.seq, bytes(data).count(b"\n")]
        self.seen += 1
        return data

    def flush(self) -> bytes | None:
        return b"#flushed\n" if self.flush_marker else None

    def initial(self):
        return {"lines": 0, "order": []}

    def fold(self, acc, summary):
        acc["lines"] += summary[1]
        acc["order"].append(summary[0])
        return acc


class KillOnce(Transform):
    """Kills its own worker the first time it sees chunk `seq` (a marker file remembers)."""

    name = "kill-once"

    def __init__(self, seq: int, marker: str, how: str = "sigkill"):
        self.seq = seq
        self.marker = marker
        self.how = how

    def transform(self, data: memoryview, chunk: ChunkInfo) -> memoryview:
        if chunk.seq == self.seq and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            if self.how == "exit0":
                os._exit(0)
            os.kill(os.getpid(), 9)
        return data


class AlwaysKill(Transform):
    """A poison chunk: kills every worker that touches chunk `seq`."""

    name = "always-kill"

    def __init__(self, seq: int):
        self.seq = seq

    def transform(self, data: memoryview, chunk: ChunkInfo) -> memoryview:
        if chunk.seq == self.seq:
            os.kill(os.getpid(), 9)
        return data


class RaiseOn(Transform):
    name = "raise-on"

    def __init__(self, seq: int):
        self.seq = seq

    def transform(self, data: memoryview, chunk: ChunkInfo) -> memoryview:
        if chunk.seq == self.seq:
            raise ValueError(f"bad chunk {chunk.seq}")
        return data


class Slow(Transform):
    name = "slow"

    def __init__(self, seconds: float):
        self.seconds = seconds

    def transform(self, data: memoryview, chunk: ChunkInfo) -> memoryview:
        time.sleep(self.seconds)
        return data


class FailSetup(Transform):
    name = "fail-setup"

    def setup(self) -> None:
        raise RuntimeError("cannot load the model")


def shout(line: bytes) -> bytes:
    return line.upper() + b"!"


def reverse_lines(chunk: bytes) -> bytes | None:
    """Chunk mode: the chunk's lines in reverse order within the chunk (None when empty)."""
    lines = chunk.splitlines(keepends=True)
    if lines and not lines[-1].endswith(b"\n"):
        lines[-1] += b"\n"
    return b"".join(reversed(lines)) or None


def drop_odd(line: bytes, modulo: int = 2) -> bytes | None:
    return line if len(line) % modulo == 0 else None


class WorkerPids(Transform):
    """Passes data through; folds which worker pid ran each chunk, in chunk order."""

    name = "worker-pids"

    def transform(self, data: memoryview, chunk: ChunkInfo) -> memoryview:
        chunk.summary = os.getpid()
        return data

    def initial(self):
        return []

    def fold(self, acc, summary):
        acc.append(summary)
        return acc


class Leak(Transform):
    """Keeps `mib` MiB more of private memory after every chunk: a leaky transform."""

    name = "leak"

    def __init__(self, mib: int, delay: float = 0.0):
        self.mib = mib
        self.delay = delay
        self.kept: list[bytearray] = []

    def transform(self, data: memoryview, chunk: ChunkInfo) -> memoryview:
        self.kept.append(bytearray(b"x" * (self.mib << 20)))  # touched: counted in USS
        time.sleep(self.delay)
        return data


class Balloon(Transform):
    """Chunk `seq` needs `mib` MiB of private memory for a while: more than the limit allows."""

    name = "balloon"

    def __init__(self, seq: int, mib: int, seconds: float = 3.0):
        self.seq = seq
        self.mib = mib
        self.seconds = seconds

    def transform(self, data: memoryview, chunk: ChunkInfo) -> memoryview:
        if chunk.seq == self.seq:
            held = bytearray(b"x" * (self.mib << 20))
            time.sleep(self.seconds)
            del held
        return data


from dataflow.streams import RecordTransform  # noqa: E402


class FirstColumns(RecordTransform):
    """Record stage: keep the first `n` fields of each record (CSV row or JSON list/dict)."""

    name = "first-columns"

    def __init__(self, n: int):
        self.n = n

    def bind(self, fmt):
        fmt = super().bind(fmt)
        if fmt.columns is not None:
            fmt = fmt.with_columns(fmt.columns[:self.n])
        self.output_format = fmt
        return fmt

    def process(self, records, chunk):
        n = self.n
        if self.input_format.kind == "jsonl":
            return [dict(list(r.items())[:n]) if isinstance(r, dict) else r[:n] for r in records]
        return [r[:n] for r in records]


class FailOnField(RecordTransform):
    """Record stage: raise on the first record whose field `field` equals `value`."""

    name = "fail-on-field"

    def __init__(self, field: str, value: str):
        self.field = field
        self.value = value

    def bind(self, fmt):
        fmt = super().bind(fmt)
        self.get = fmt.getter(self.field)
        return fmt

    def process(self, records, chunk):
        for r in records:
            if self.get(r) == self.value:
                raise ValueError(f"found {self.value!r}")
        return records


class BadSummary(Transform):
    """Leaves a summary msgpack cannot carry (an object) on chunk `seq`."""

    name = "bad-summary"

    def __init__(self, seq: int):
        self.seq = seq

    def transform(self, data: memoryview, chunk: ChunkInfo) -> memoryview:
        chunk.summary = object() if chunk.seq == self.seq else 1
        return data

    def fold(self, acc, summary):
        return (acc or 0) + summary


# ----------------------------------------------------------------------------- fault table
def _fault_now(marker: str | None, once: bool) -> bool:
    """Touch `marker` (proof the fault happened); with `once`, only the first caller faults."""
    if marker is None:
        return True
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return not once
    os.close(fd)
    return True


def _do_fault(how: str, where: str) -> None:
    import ctypes
    import signal

    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "exit0":
        os._exit(0)                     # exit code 0, no result sent
    elif how == "segv":
        ctypes.string_at(0)             # a real segmentation fault (NULL read)
    elif how == "raise":
        raise ValueError(f"injected fault in {where}")
    elif how == "sigstop":
        os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(3600)
    elif how == "sleep":
        time.sleep(3600)
    elif how != "none":
        raise AssertionError(f"unknown fault {how!r}")


class Fault(Transform):
    """One fault at one stage of a chunk's life, for tests/test_fault_table.py.

    at:  "setup"     the worker's setup(), before it is ready (`seq` ignored)
         "transform" inside transform() of chunk `seq`
         "output"    after transform() of chunk `seq` produced its whole output (the chunk
                     repeated `expand` times, copied into the output slot in pieces, the first
                     ones already written by the sink), before the worker reports it done
    how: "sigkill", "exit0" (os._exit(0), no result), "segv", "raise", "sigstop", "sleep"
         (a hang), "none" (an undisturbed reference run of the same job)
    marker: a file created when the fault happens; with `once` only the first worker to get
         there faults (the retry runs normally), without it every attempt faults.
    Output is the input (`expand` 1, returned as is: no copy) or the chunk `expand` times.
    """

    name = "fault"

    def __init__(self, at: str, how: str, seq: int = 0, marker: str | None = None,
                 once: bool = False, expand: int = 1):
        self.at, self.how, self.seq = at, how, seq
        self.marker, self.once, self.expand = marker, once, expand

    def setup(self) -> None:
        if self.at == "setup" and _fault_now(self.marker, self.once):
            _do_fault(self.how, "setup")

    def transform(self, data: memoryview, chunk: ChunkInfo):
        hit = chunk.seq == self.seq and self.at in ("transform", "output")
        if hit and self.at == "transform" and _fault_now(self.marker, self.once):
            _do_fault(self.how, f"transform of chunk {chunk.seq}")
        if self.at == "output" and hit:
            return self._parts(bytes(data))
        return data if self.expand == 1 else bytes(data) * self.expand

    def _parts(self, data: bytes):
        for _ in range(self.expand):
            yield data
        # pulled once more: the output is complete, the chunk not yet reported done
        if _fault_now(self.marker, self.once):
            _do_fault(self.how, "output")


class FaultInFlush(Fault):
    """Fault at the end-of-stream flush (`at` is "flush"): every worker's flush() runs it."""

    name = "fault-in-flush"

    def flush(self) -> bytes | None:
        if self.at == "flush" and _fault_now(self.marker, self.once):
            _do_fault(self.how, "flush")
        return None


class AtExit(Transform):
    """Passes data through; its setup registers an exit handler, starts a non-daemon thread
    and prints without a newline: each leaves a trace in `directory` (or on stdout) only if the
    worker's exit runs it."""

    name = "at-exit"

    def __init__(self, directory: str):
        self.directory = directory

    def setup(self) -> None:
        import atexit
        import sys
        import threading

        pid = os.getpid()
        atexit.register(lambda: open(os.path.join(self.directory, f"atexit-{pid}"), "w").close())

        def late() -> None:
            time.sleep(0.3)
            open(os.path.join(self.directory, f"thread-{pid}"), "w").close()

        threading.Thread(target=late).start()
        sys.stdout.write(f"unflushed-{pid}")

    def transform(self, data: memoryview, chunk: ChunkInfo) -> memoryview:
        return data


class SharedMemoryUser(Transform):
    """Passes data through; its setup creates, fills, reads back and unlinks a
    multiprocessing.shared_memory block, which needs a resource tracker in the worker."""

    name = "shared-memory-user"

    def setup(self) -> None:
        from multiprocessing import shared_memory

        block = shared_memory.SharedMemory(create=True, size=4096)
        try:
            block.buf[:5] = b"hello"
            assert bytes(block.buf[:5]) == b"hello"
        finally:
            block.close()
            block.unlink()


class SlowSetupChild(Transform):
    """Passes data through. In the second worker to start, setup runs a child process for
    `seconds` and appends its exit status to `record` (the first worker's setup is instant)."""

    name = "slow-setup-child"

    def __init__(self, record: str, seconds: float = 0.6):
        self.record = record
        self.seconds = seconds

    def setup(self) -> None:
        import subprocess

        try:
            os.close(os.open(self.record + ".first", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return                                  # the first worker: ready at once
        except FileExistsError:
            pass
        status = subprocess.Popen(["sleep", str(self.seconds)]).wait()
        with open(self.record, "a") as f:
            f.write(f"{status}\n")
