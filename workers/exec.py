"""exec: pipe each chunk through an external command, like `parallel --pipe`.

Rules:
- One run of the command per chunk: the chunk is its standard input, and what it writes to
  standard output is the chunk's output, byte for byte (the engine writes the outputs in chunk
  order). A command that looks at its whole input (`sort`, `uniq`, `wc -l`, `head -1`) sees one
  chunk at a time, as with `parallel --pipe`: its result is per chunk.
- `argv` is run directly: no shell, no word splitting, no globbing. `shell: true` takes exactly
  one string and runs it with `/bin/sh -c`. `env` is added to the worker's environment; `cwd`
  is where the command runs. `dataflow validate` checks, before any worker starts, that the
  program is found (on the PATH, `env.PATH` if set) and executable and that `cwd` is a
  directory; each worker checks again in `setup()`.
- Success is an exit code in `ok_exit_codes` (`[0]`; grep exits 1 when nothing matched, so
  `[0, 1]` there). Any other code, or death by a signal (always a failure), fails the job with
  an error naming the command (shell-quoted, shortened), its exit code or signal, and the last
  20 lines of its stderr.
- Stderr is read all along, so a command that writes a lot of it never blocks, and only its
  last 64 KiB are kept, for that message (`stderr: inherit` passes it through to ours instead).
- A command that exits, or closes its input, before reading all of the chunk (`head -c 10`)
  is not an error in itself: feeding stops (no BrokenPipeError), its output is kept and its
  exit code alone decides, as with parallel. The unread rest of the chunk is simply dropped.
- One selector multiplexes stdin, stdout, stderr and a pidfd of the command over non-blocking
  pipes (enlarged to 1 MiB when the system allows): no threads. The chunk is written straight
  from its shared-memory slot, without a copy. Stdout goes to the engine as it is read (the
  transform returns an iterator of parts), so an output much larger than the chunk never sits
  whole in the worker's memory.
- Process hygiene (PITFALLS 7). Each command is started in its own session (so its own process
  group: a Ctrl-C on the terminal does not reach it, the engine stops it), with, before exec,
  PR_SET_PDEATHSIG=SIGKILL armed and the parent pid checked (a SIGKILLed worker takes its
  command with it), SIGINT back to default and no blocked signals (workers ignore SIGINT).
  When the command exits, whatever it left running in its process group is killed (otherwise
  a background child holding stdout open would hang the chunk). On any error, or when the
  engine abandons the chunk, the whole group is SIGKILLed and reaped. A SIGTERM to the worker
  (chunk_timeout, teardown) kills the groups of all running commands, then the worker dies by
  SIGTERM, as it would have without the handler.
- One process per chunk costs a fork and exec plus the command's own start-up (about 1 ms for
  `tr`, 20-50 ms for `jq` or `python`): use big chunks (the 4 MiB default or more).
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import threading
from typing import Any, Iterator, Literal

import msgspec

from dataflow.errors import DataflowError
from dataflow.sizes import format_size
from dataflow.streams import ChunkInfo, Transform

STDERR_KEEP = 64 << 10      # bytes of stderr kept per command, for the error message
STDERR_LINES = 20           # lines of it shown
LINE_CHARS = 300            # characters shown of one stderr line
COMMAND_CHARS = 200         # characters shown of the command line
PIPE_SIZE = 1 << 20         # pipe capacity asked for (Linux' unprivileged maximum by default)
PR_SET_PDEATHSIG = 1


class CommandError(DataflowError):
    """The command failed on a chunk: an exit code not in ok_exit_codes, or a signal."""

    def __init__(self, message: str, *, argv: list[str] | None = None,
                 returncode: int | None = None, stderr: bytes = b""):
        self.argv = argv or []
        self.returncode = returncode
        self.stderr = stderr          # the kept tail (at most STDERR_KEEP bytes)
        super().__init__(message)


class OptionError(ValueError):
    """A bad option; `field` names it, so the job error can point at stages[i].exec.<field>."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


class Exec(Transform):
    name = "exec"

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        argv: list[str]
        shell: bool = False
        ok_exit_codes: list[int] = msgspec.field(default_factory=lambda: [0])
        env: dict[str, str] = {}
        cwd: str | None = None
        stderr: Literal["capture", "inherit"] = "capture"

    def __init__(self, argv: list[str] | str, shell: bool = False,
                 ok_exit_codes: list[int] | tuple[int, ...] = (0,),
                 env: dict[str, str] | None = None, cwd: str | None = None,
                 stderr: str = "capture"):
        self.argv = [argv] if isinstance(argv, str) else list(argv)
        self.shell = shell
        self.ok_exit_codes = list(ok_exit_codes)
        self.env = dict(env or {})
        self.cwd = cwd
        self.stderr = stderr
        self._ok = frozenset(self.ok_exit_codes)
        self._run_argv = ["/bin/sh", "-c", *self.argv] if shell else list(self.argv)
        self._popen_env: dict[str, str] | None = None
        self._preexec: Any = None

    # ------------------------------------------------------------------ validation
    def check(self) -> None:
        """Raise OptionError (a ValueError) when the command could not run as configured."""
        argv = self.argv
        if not argv:
            raise OptionError("argv", 'argv is empty: give the program and its arguments, '
                                      'e.g. ["jq", "-c", "."]')
        if self.shell and len(argv) != 1:
            raise OptionError("argv", f"with shell: true, argv is exactly one string, the "
                                      f"command line for /bin/sh -c (got {len(argv)} items: "
                                      f"{_shown(argv)}); join them into one string, or drop "
                                      f"shell: true to run them without a shell")
        if any("\0" in a for a in argv):
            raise OptionError("argv", "argv contains a NUL character")
        if not self.ok_exit_codes:
            raise OptionError("ok_exit_codes", "ok_exit_codes is empty: no run could succeed "
                                               "(the default is [0])")
        bad = [c for c in self.ok_exit_codes if isinstance(c, bool) or not 0 <= c <= 255]
        if bad:
            raise OptionError("ok_exit_codes", f"exit codes are 0-255, got {bad}; a command "
                                               f"killed by a signal always fails")
        for key, value in self.env.items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise OptionError("env", f"invalid environment variable {key!r}: a name is "
                                         f"non-empty without '=' or NUL, a value without NUL")
        if self.cwd is not None:
            if not os.path.exists(self.cwd):
                raise OptionError("cwd", f"cwd {self.cwd!r} does not exist")
            if not os.path.isdir(self.cwd):
                raise OptionError("cwd", f"cwd {self.cwd!r} is not a directory")
        self._check_program()

    def _check_program(self) -> None:
        program = self._run_argv[0]
        if not program:
            raise OptionError("argv", "argv[0], the program, is empty")
        if "/" in program:   # a path, relative to cwd as for Popen
            path = os.path.join(self.cwd or ".", program)
            if not os.path.exists(path):
                raise OptionError("argv", f"{program!r} does not exist")
            if os.path.isdir(path):
                raise OptionError("argv", f"{program!r} is a directory, not a program")
            if not os.access(path, os.X_OK):
                raise OptionError("argv", f"{program!r} is not executable (chmod +x?)")
            return
        search = self.env.get("PATH", os.environ.get("PATH", os.defpath))
        if shutil.which(program, path=search) is not None:
            return
        found = [d for d in search.split(os.pathsep)
                 if os.path.isfile(os.path.join(d or ".", program))]
        if found:
            raise OptionError("argv", f"{program!r} is on the PATH ({found[0]}) but is not "
                                      f"executable")
        hint = ""
        if not self.shell and any(c.isspace() for c in program):
            hint = (f"; argv is a list of words: did you mean {_shown(shlex.split(program))}, "
                    f"or shell: true?")
        raise OptionError("argv", f"program {program!r} not found on the PATH{hint}")

    # ------------------------------------------------------------------ running
    def setup(self) -> None:
        self.check()   # as this worker sees the PATH and the file system
        self._prepare()
        _install_sigterm_handler()

    def _prepare(self) -> None:
        self._popen_env = {**os.environ, **self.env} if self.env else None
        self._preexec = functools.partial(_in_child, os.getpid(), _prctl())

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Iterator[bytes]:
        if self._preexec is None:   # used without setup(): no SIGTERM handler then
            self._prepare()
        return self._run(data)      # a generator: nothing starts until the engine pulls

    def _run(self, data: Any) -> Iterator[bytes]:
        own_view = not (isinstance(data, memoryview) and data.format == "B" and data.ndim == 1)
        mv = memoryview(data).cast("B") if own_view else data
        try:
            proc = self._start()
            tail = bytearray()
            stderr_total = 0
            try:
                for kind, part in _communicate(proc, mv):
                    if kind:
                        yield part
                    else:
                        stderr_total += len(part)
                        tail += part
                        if len(tail) > 2 * STDERR_KEEP:
                            del tail[:-STDERR_KEEP]
                returncode = _finish(proc)
            except BaseException:   # an error, or the engine closing us (GeneratorExit)
                _kill_group(proc.pid)
                _RUNNING.pop(proc.pid, None)
                with contextlib.suppress(Exception):
                    proc.wait()
                raise
            finally:
                for f in (proc.stdin, proc.stdout, proc.stderr):
                    if f is not None:
                        with contextlib.suppress(OSError):
                            f.close()
        finally:
            if own_view:
                mv.release()
        if returncode not in self._ok or returncode < 0:
            del tail[:-STDERR_KEEP]
            raise self._failure(returncode, bytes(tail), stderr_total)

    def _start(self) -> subprocess.Popen:
        # SIGTERM waits while the child is made and registered: the handler then finds it
        # (the child unblocks everything before exec)
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            try:
                proc = subprocess.Popen(
                    self._run_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE if self.stderr == "capture" else None, bufsize=0,
                    close_fds=True, cwd=self.cwd, env=self._popen_env,
                    start_new_session=True, preexec_fn=self._preexec)
            except OSError as e:
                raise CommandError(f"cannot run `{_shown(self._run_argv)}`: "
                                   f"{e.strerror or e}", argv=self._run_argv) from None
            _RUNNING[proc.pid] = proc
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return proc

    def _failure(self, returncode: int, tail: bytes, total: int) -> CommandError:
        if returncode < 0:
            try:
                how = f"was killed by {signal.Signals(-returncode).name}"
            except ValueError:
                how = f"was killed by signal {-returncode}"
        else:
            how = f"exited with code {returncode}"
            if self.ok_exit_codes != [0]:
                how += f" (ok_exit_codes: {self.ok_exit_codes})"
        message = f"command `{_shown(self._run_argv)}` {how}"
        if self.stderr == "inherit":
            message += " (its stderr was passed through)"
        elif not total:
            message += "; it wrote nothing to stderr"
        else:
            lines = tail.decode("utf-8", "replace").split("\n")
            if total > len(tail):
                lines = lines[1:]            # the first one was cut by the 64 KiB window
            if lines and lines[-1] == "":
                lines.pop()                   # the text ended with a newline
            lines = [_cut(line.rstrip("\r"), LINE_CHARS) for line in lines[-STDERR_LINES:]]
            size = "" if total == len(tail) else f" of {format_size(total)}"
            message += (f"; the last {len(lines)} lines{size} of its stderr:\n"
                        + "\n".join(f"  | {line}" for line in lines))
        return CommandError(message, argv=self._run_argv, returncode=returncode, stderr=tail)


# ---------------------------------------------------------------------- the I/O loop
def _communicate(proc: subprocess.Popen, data: memoryview) -> Iterator[tuple[bool, bytes]]:
    """Feed `data` to the command's stdin while reading its stdout (yielded as (True, part))
    and stderr ((False, part)) until both end and the command has exited."""
    sel = selectors.DefaultSelector()
    pidfd = -1
    try:
        stdin, stdout = proc.stdin.fileno(), proc.stdout.fileno()
        stderr = proc.stderr.fileno() if proc.stderr is not None else -1
        read_size = max(_grow(stdout), 1 << 16)
        _grow(stdin)
        for fd in (stdin, stdout, stderr):
            if fd >= 0:
                os.set_blocking(fd, False)
        pos, end = 0, len(data)
        if end:
            sel.register(stdin, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        sel.register(stdout, selectors.EVENT_READ)
        if stderr >= 0:
            sel.register(stderr, selectors.EVENT_READ)
        with contextlib.suppress(OSError, AttributeError):   # Linux >= 5.3
            pidfd = os.pidfd_open(proc.pid)
            sel.register(pidfd, selectors.EVENT_READ)
        while sel.get_map():
            for key, _ in sel.select():
                fd = key.fd
                if fd == stdin:
                    try:
                        with data[pos:pos + PIPE_SIZE] as piece:
                            pos += os.write(fd, piece)
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:   # it stopped reading (head): take its output
                        pos = end
                    if pos >= end:
                        sel.unregister(fd)
                        proc.stdin.close()
                elif fd == pidfd:   # the command exited: end what it left in its group
                    sel.unregister(fd)
                    _kill_group(proc.pid)  # safe: the leader, unreaped, still holds the pgid
                else:
                    try:
                        part = os.read(fd, read_size)
                    except BlockingIOError:
                        continue
                    if part:
                        yield fd == stdout, part
                    else:
                        sel.unregister(fd)
    finally:
        sel.close()
        if pidfd >= 0:
            os.close(pidfd)


def _finish(proc: subprocess.Popen) -> int:
    """Wait for the command to exit, kill what it left in its group, reap it."""
    pid = proc.pid
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)   # exited, not reaped: pgid still ours
    _kill_group(pid)
    _RUNNING.pop(pid, None)
    return proc.wait()


def _grow(fd: int) -> int:
    """Ask for a PIPE_SIZE pipe (fewer wake-ups); return the pipe's capacity (0 if unknown)."""
    with contextlib.suppress(OSError, AttributeError):
        return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    with contextlib.suppress(OSError, AttributeError):
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    return 0


# ---------------------------------------------------------------------- process hygiene
_RUNNING: dict[int, subprocess.Popen] = {}   # pid (= pgid) -> command, not yet reaped
_previous_sigterm: Any = None
_handler_installed = False


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _install_sigterm_handler() -> None:
    global _previous_sigterm, _handler_installed
    if _handler_installed or threading.current_thread() is not threading.main_thread():
        return
    _previous_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)
    _handler_installed = True


def _on_sigterm(signum: int, frame: Any) -> None:
    """Kill every running command's group and reap it; then do what SIGTERM did before: die
    by it (the default; the coordinator sees -15, a shell 143), or call the previous handler."""
    pids = list(_RUNNING)
    for pid in pids:
        _kill_group(pid)
    for pid in pids:
        _RUNNING.pop(pid, None)
        with contextlib.suppress(ChildProcessError, InterruptedError):
            os.waitpid(pid, 0)   # not Popen.wait: the main code may hold its lock
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    os._exit(128 + signal.SIGTERM)   # not reached: the signal ends us first


@functools.lru_cache(maxsize=1)
def _prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _in_child(parent: int, prctl: Any) -> None:
    """Runs in the forked child before exec (keep it tiny: no imports, no allocation-heavy
    work). Die with the worker; undo the worker's signal setup."""
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:   # the worker died before PDEATHSIG was armed
        os._exit(127)
    signal.signal(signal.SIGINT, signal.SIG_DFL)   # ignored by workers; inherited by exec
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


# ---------------------------------------------------------------------- messages
def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _shown(argv: list[str]) -> str:
    return _cut(shlex.join(argv), COMMAND_CHARS)
