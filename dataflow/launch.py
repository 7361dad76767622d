"""Starting worker processes: as multiprocessing's spawn starts them, without its resource
tracker; with a safe sys.path and without the user's __main__; and, for the `dataflow`
command, before the job is known.

Rules:
- spawn starts a resource tracker (a third interpreter: 20-30 ms of CPU, taken while the
  workers start on the same cores) and hands each child its descriptor, for the semaphores
  and shared memory the child might create. Our workers create neither: the arena is created
  and unlinked by the coordinator alone and mapped by path (shm.py). So the child gets no
  tracker descriptor; if user code in it does create such a resource, multiprocessing starts
  a tracker for that process then, as for any process.
- Everything else is spawn's own: the command line, the preparation data and the pickled
  Process object written to the child over a pipe, the sentinel (the read end of a pipe whose
  write end only the child holds), the finalizer that closes our ends.
- Other start methods (forkserver) keep multiprocessing's classes, tracker included.
- Standby workers: the `dataflow` command (dataflow/__main__.py) starts the workers its job
  will want before it imports the engine (`prestart`), so that their start (an interpreter and
  the worker's imports: 80-90 ms of CPU each) runs beside the coordinator's imports and set-up
  (about 150 ms) instead of after them. A standby worker arms what any worker arms (dying with
  its parent, signals) and waits for its job's arguments (worker.standby). The job's
  coordinator takes them one by one (`take`) in place of starting new ones, and ends the rest
  once its own have started (`discard`: they have run nothing but our imports, and are
  killed); the command discards any left at its end, whatever happened. The Python API never
  prestarts: a program's own jobs start their workers as before.
"""
from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator

from multiprocessing import context, popen_spawn_posix, reduction, spawn, util


class _Popen(popen_spawn_posix.Popen):
    def _launch(self, process_obj: object) -> None:
        start_data = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            reduction.dump(spawn.get_preparation_data(process_obj._name), start_data)
            reduction.dump(process_obj, start_data)
        finally:
            context.set_spawning_popen(None)
        ours: list[int] = []       # closed by the finalizer
        theirs: list[int] = []     # the child's ends, closed here once it has them
        try:
            sentinel, child_end = os.pipe()     # EOF on `sentinel` once the child is gone
            ours.append(sentinel)
            theirs.append(child_end)
            data_in, data_out = os.pipe()       # the child reads its start data from data_in
            ours.append(data_out)
            theirs.append(data_in)
            self._fds.extend(theirs)
            command = spawn.get_command_line(pipe_handle=data_in)
            self.pid = util.spawnv_passfds(spawn.get_executable(), command, self._fds)
            self.sentinel = sentinel
            with open(data_out, "wb", closefd=False) as f:
                f.write(start_data.getbuffer())
        finally:
            self.finalizer = util.Finalize(self, util.close_fds, ours)
            for fd in theirs:
                os.close(fd)


class SpawnWithoutTracker(context.SpawnProcess):
    @staticmethod
    def _Popen(process_obj: object) -> object:
        return _Popen(process_obj)


# Held while this process starts a child. Workers start with PYTHONSAFEPATH set in os.environ
# (starting_workers): a command started meanwhile from another thread (a CommandSink, a tee
# branch's job: children.py) must not inherit that.
STARTING = threading.RLock()


START_METHODS = ("spawn", "forkserver")   # never fork (PITFALLS 12)


def process_class(start_method: str) -> object:
    """The Process class that starts workers by `start_method`."""
    if start_method == "spawn":
        return SpawnWithoutTracker
    return multiprocessing.get_context(start_method).Process


SAFE_PATH_OURS = "_DATAFLOW_SAFE_PATH"   # set with PYTHONSAFEPATH when the user had not set it


@contextlib.contextmanager
def starting_workers(specs: bytes = b"") -> Iterator[None]:
    """Around starting workers (and multiprocessing's resource tracker), one job at a time in
    this process (STARTING: jobs run in threads too, a tee branch's or apipeline's):

    - PYTHONSAFEPATH is set: spawn runs `python -c ...`, which would put the current directory
      first on sys.path, so a `pickle.py` or `json.py` lying there would run in every worker
      (and in the tracker) before our code. The worker gets the parent's sys.path, where the
      current directory is last (importable_cwd), and drops the variable again
      (worker.main) unless the user had set it, so the commands it runs see the environment
      as it was.
    - spawn re-runs the parent's `__main__` (its file, or the module of `python -m`) in each
      worker, which costs every worker the import of everything the parent's main imports
      (for `dataflow ...`, the whole CLI: about 130 ms of CPU per worker) and makes a script
      without an `if __name__ == "__main__":` guard start its job again in every worker. No
      transform of ours lives there, so unless a stage names `__main__:...` (a class or
      function the user's script defines) the main module is hidden from spawn; when one does
      and the main "file" does not exist (code read from stdin, a REPL), it is hidden too.
    """
    with STARTING:
        ours = "PYTHONSAFEPATH" not in os.environ
        if ours:
            os.environ["PYTHONSAFEPATH"] = os.environ[SAFE_PATH_OURS] = "1"
        main = sys.modules.get("__main__")
        hidden: dict[str, object] = {}
        if main is not None:
            path = getattr(main, "__file__", None)
            if b"__main__:" not in specs or (path is not None and not os.path.exists(path)):
                hidden = {k: v for k, v in vars(main).items() if k in ("__spec__", "__file__")}
                main.__spec__ = None
                vars(main).pop("__file__", None)
        try:
            yield
        finally:
            if hidden:
                vars(main).update(hidden)  # type: ignore[arg-type]
            if ours:
                os.environ.pop("PYTHONSAFEPATH", None)
                os.environ.pop(SAFE_PATH_OURS, None)


def start(process_class: object, target: object, name: str, args: tuple,
          specs: bytes = b"") -> tuple[object, object]:
    """Start a worker process running `target(conn, *args)`; return it and our end of its
    pipe. Call it with signals held (signals_held), as every worker start is."""
    from multiprocessing.connection import Pipe

    parent, child = Pipe(duplex=True)
    process = process_class(target=target, name=name, args=(child, *args))
    try:
        with starting_workers(specs):
            process.start()
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()       # the child has its own copy once started
    return process, parent


def cpu_count() -> int:
    """The cores this process may run on (its CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def importable_cwd() -> None:
    """User functions (`python: {callable: mod:fn}`, `dataflow map mod:fn`) may live in the
    current directory, as with `python -m`; it goes last on sys.path, so a file there never
    shadows the standard library or an installed package (workers inherit sys.path)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


# ----------------------------------------------------------------------------- standby workers
_standby: list[tuple[object, object]] = []   # (process, our end of its pipe): started, not yet taken


def prestart(count: int) -> None:
    """Start `count` workers before their job is known: the `dataflow` command does this
    before it imports the engine, so the workers' start (an interpreter and the worker's
    imports: 80-90 ms each) overlaps the coordinator's. Each waits for its job's arguments
    (worker.standby); `take()` hands one to a job, `discard()` ends those no job took. Best
    effort: when a process cannot be started (a process or file limit), the job will start
    its workers itself and say so if it cannot either."""
    for _ in range(count):
        # SIGINT and SIGTERM blocked while it starts, as for any worker (coordinator.py); it
        # is ours to discard before a pending one lands
        with signals_held():
            try:
                started = start(SpawnWithoutTracker, _standby_main, "dataflow-worker",
                                (os.getpid(),))
            except OSError:
                return
            with STARTING:
                _standby.append(started)


def take() -> tuple[object, object] | None:
    """A standby worker still alive, and our end of its pipe, or None. Call it with signals
    held: what it returns is the caller's to register before a signal can land."""
    with STARTING:
        while _standby:
            process, conn = _standby.pop(0)
            if process.is_alive():
                return process, conn
            end(process, conn)
    return None


def discard() -> None:
    """End the standby workers no job took (a job that wanted fewer, or failed first). They
    have run nothing but our imports: they are killed outright."""
    while True:
        with STARTING:
            if not _standby:
                return
            process, conn = _standby[0]
            end(process, conn)       # off the list only once it is gone
            _standby.pop(0)


def end(process: object, conn: object) -> None:
    """Close our end of a worker's pipe, kill it and reap it."""
    conn.close()
    process.kill()
    process.join()


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM held (blocked) inside: one that comes meanwhile lands on leaving."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _standby_main(conn: object, parent_pid: int) -> None:
    from .worker import standby

    standby(conn, parent_pid)
