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
  pipes (enlarged to 256 KiB when the system allows): no threads. The chunk is written straight
  from its shared-memory slot, without a copy. Stdout goes to the engine as it is read (the
  transform returns an iterator of parts), so an output much larger than the chunk never sits
  whole in the worker's memory.
- Process hygiene (PITFALLS 7). Each command starts in its own session, so its own process
  group: a Ctrl-C on the terminal does not reach it (the engine stops it). It dies with its
  worker: PR_SET_PDEATHSIG=SIGKILL is armed before it runs, by util-linux `setpriv
  --pdeathsig KILL` when that is installed (Popen can then vfork: no Python runs in the
  child), else by a preexec_fn that also checks the parent pid after arming it (a full fork of
  the worker: 2-4 ms more per chunk). PDEATHSIG reaches the command, not its children; the
  group kills below do. It inherits the worker's ignored SIGINT (harmless in its own session).
- When the command exits, whatever it left in its process group is killed (a background child
  holding stdout open would otherwise hang the chunk). On an error, or when the engine drops
  the chunk's output (GeneratorExit), the whole group is SIGKILLed and reaped. A SIGTERM to the
  worker (chunk_timeout, teardown) kills the groups of all running commands, reaps them, then
  the worker dies by SIGTERM, as it would have without the handler.
- One process per chunk costs a spawn plus the command's own start-up (about 1.5 ms for `tr`,
  20 ms for `jq`, 40 ms for `python3`): use big chunks (the 4 MiB default or more).
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import json
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
PIPE_SIZE = 256 << 10       # pipe capacity asked for: fewer wake-ups than 64 KiB; not 1 MiB,
                            # which counts against the user's pipe-user-pages-soft quota
PR_SET_PDEATHSIG = 1


class CommandError(DataflowError):
    """The command failed on a chunk: an exit code not in ok_exit_codes, or a signal."""

    def __init__(self, message: str, *, argv: list[str] | None = None,
                 returncode: int | None = None, stderr: bytes = b""):
        self.argv = argv or []
        self.returncode = returncode
        self.stderr = stderr          # the kept tail (at most STDERR_KEEP bytes)
        super().__init__(message)


def OptionError(field: str, message: str) -> ValueError:
    """A bad option: a plain ValueError whose `field` names it, so the job error can point at
    stages[i].exec.<field>."""
    error = ValueError(message)
    error.field = field   # type: ignore[attr-defined]
    return error


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
        self._spawn_argv: list[str] | None = None   # _run_argv, behind setpriv when we can
        self._preexec: Any = None                    # else the PDEATHSIG set-up in the child

    # ------------------------------------------------------------------ validation
    def check(self) -> None:
        """Raise ValueError (with `.field`) when the command could not run as configured."""
        argv = self.argv
        if not argv:
            raise OptionError("argv", 'argv is empty: give the program and its arguments, '
                                      'e.g. ["jq", "-c", "."]')
        if self.shell and len(argv) != 1:
            raise OptionError("argv", f"with shell: true, argv is exactly one string, the "
                                      f"command line for /bin/sh -c (got {len(argv)} items: "
                                      f"{_listed(argv)}); join them into one string, or drop "
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
        if self.stderr not in ("capture", "inherit"):
            raise OptionError("stderr", f"stderr is 'capture' or 'inherit', got {self.stderr!r}")
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
            hint = (f"; argv is a list of words: did you mean {_listed(shlex.split(program))}, "
                    f"or shell: true?")
        raise OptionError("argv", f"program {program!r} not found on the PATH{hint}")

    # ------------------------------------------------------------------ running
    def setup(self) -> None:
        self.check()   # as this worker sees the PATH and the file system
        self._prepare()
        _install_sigterm_handler()

    def _prepare(self) -> None:
        self._popen_env = {**os.environ, **self.env} if self.env else None
        setpriv = _setpriv()
        if setpriv is not None:   # fast: Popen can vfork (no Python code in the child)
            self._spawn_argv = [setpriv, "--pdeathsig", "KILL", "--", *self._run_argv]
            self._preexec = None
        else:                     # slow: a full fork to run _in_child (2-4 ms more a chunk)
            self._spawn_argv = list(self._run_argv)
            self._preexec = functools.partial(_in_child, os.getpid(), _prctl())

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Iterator[bytes]:
        if self._spawn_argv is None:   # used without setup(): no SIGTERM handler then
            self._prepare()
        return self._run(data)      # a generator: nothing starts until the engine pulls

    def _run(self, data: Any) -> Iterator[bytes]:
        own_view = not (isinstance(data, memoryview) and data.format == "B" and data.ndim == 1)
        mv = memoryview(data).cast("B") if own_view else data
        try:
            proc = self._start()
            tail = bytearray()
            stderr_total = 0
            io = _communicate(proc, mv)
            try:
                for kind, part in io:
                    if kind:
                        yield part
                    else:
                        stderr_total += len(part)
                        tail += part
                        if len(tail) > 2 * STDERR_KEEP:
                            del tail[:-STDERR_KEEP]
                returncode = _finish(proc)
            except BaseException:   # an error, or the engine closing us (GeneratorExit)
                if _kill_group(proc.pid):
                    _RUNNING.pop(proc.pid, None)
                    with contextlib.suppress(Exception):
                        proc.wait()
                raise
            finally:
                io.close()
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
        # a SIGTERM while the child is made and registered waits (the handler would not find
        # it yet); not by blocking the signal: the child would inherit the mask
        global _spawning
        _spawning = True
        try:
            try:
                proc = subprocess.Popen(
                    self._spawn_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE if self.stderr == "capture" else None, bufsize=0,
                    close_fds=True, cwd=self.cwd, env=self._popen_env,
                    start_new_session=True, preexec_fn=self._preexec)
            except OSError as e:
                raise CommandError(f"cannot run `{_shown(self._run_argv)}`: "
                                   f"{e.strerror or e}", argv=self._run_argv) from None
            _RUNNING[proc.pid] = proc
        finally:
            _spawning = False
            if _deferred:
                _on_sigterm(signal.SIGTERM, None)
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
            count = _total_lines(tail, total)
            shown = ("" if len(lines) == count else
                     f" (last {len(lines)} of {count} lines)" if count > 0 else
                     f" (last {len(lines)} lines of {format_size(total)})")
            message += f"; its stderr{shown}:\n" + "\n".join(f"  | {line}" for line in lines)
        return CommandError(message, argv=self._run_argv, returncode=returncode, stderr=tail)


# ---------------------------------------------------------------------- the I/O loop
def _communicate(proc: subprocess.Popen, data: memoryview) -> Iterator[tuple[bool, bytes]]:
    """Feed `data` to the command's stdin while reading its stdout (yielded as (True, part))
    and stderr ((False, part)) until both end and the command has exited."""
    sel = selectors.DefaultSelector()
    pidfd = -1
    try:
        with contextlib.suppress(OSError, AttributeError):   # Linux >= 5.3
            pidfd = os.pidfd_open(proc.pid)
            sel.register(pidfd, selectors.EVENT_READ, "exit")
        read_size = max(_grow(proc.stdout.fileno()), 1 << 16)
        pos, end = 0, len(data)
        if end:
            _grow(proc.stdin.fileno())
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin, selectors.EVENT_WRITE, "in")
        else:
            proc.stdin.close()
        for f, what in ((proc.stdout, "out"), (proc.stderr, "err")):
            if f is not None:
                os.set_blocking(f.fileno(), False)
                sel.register(f, selectors.EVENT_READ, what)
        while sel.get_map():
            for key, _ in sel.select():
                what, fd = key.data, key.fd
                if what == "in":
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
                elif what == "exit":   # the command exited: end what it left in its group
                    sel.unregister(fd)
                    _kill_group(proc.pid)  # safe: the leader, unreaped, still holds the pgid
                else:
                    try:
                        part = os.read(fd, read_size)
                    except BlockingIOError:
                        continue
                    if part:
                        yield what == "out", part
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
_spawning = False    # a command is being started: a SIGTERM now is handled right after
_deferred = False


def _kill_group(pid: int) -> bool:
    """SIGKILL the process group of command `pid` if it is not reaped yet (while the leader is
    unreaped, even as a zombie, its pgid cannot be reused); False if it was."""
    if pid not in _RUNNING:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    return True


def _install_sigterm_handler() -> None:
    global _previous_sigterm, _handler_installed
    if _handler_installed or threading.current_thread() is not threading.main_thread():
        return
    _previous_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)
    _handler_installed = True


def _on_sigterm(signum: int, frame: Any) -> None:
    """Kill every running command's group and reap it; then do what SIGTERM did before: die
    by it (the default; the coordinator sees -15, a shell 143), or call the previous handler."""
    global _deferred
    if _spawning:
        _deferred = True
        return
    _deferred = False
    pids = list(_RUNNING)
    for pid in pids:
        _kill_group(pid)
    for pid in pids:   # popped before reaping: nothing kills a reaped (reusable) pid
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
def _setpriv() -> str | None:
    """util-linux `setpriv` if it has --pdeathsig (2.33+): it arms PDEATHSIG and execs the
    command, so Popen needs no preexec_fn and can vfork."""
    path = shutil.which("setpriv")
    if path is None:
        return None
    try:
        r = subprocess.run([path, "--pdeathsig", "KILL", "--", path, "--version"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return path if r.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def _prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _in_child(parent: int, prctl: Any) -> None:
    """Runs in the forked child before exec, when there is no setpriv (keep it tiny: no
    imports, no locks): die with the worker, even if it died before this ran."""
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:   # the worker died before PDEATHSIG was armed
        os._exit(127)


# ---------------------------------------------------------------------- messages
def _total_lines(tail: bytes, total: int) -> int:
    """How many lines the command wrote to stderr, when all of it was kept (else -1)."""
    if total > len(tail):
        return -1
    return tail.count(b"\n") + (0 if tail.endswith(b"\n") else 1)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _shown(argv: list[str]) -> str:
    """The command line as a shell would take it, shortened."""
    return _cut(shlex.join(argv), COMMAND_CHARS)


def _listed(argv: list[str]) -> str:
    """A list of words as YAML (flow style) and JSON write it, shortened."""
    return _cut(json.dumps(argv, ensure_ascii=False), COMMAND_CHARS)
