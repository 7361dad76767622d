"""External commands: how we configure, check, start, watch, end and describe child processes.

Shared by the `exec` stage (one command per chunk, in a worker) and by the command source
and sink (one command per job, in the coordinator).

Rules:
- `argv` is run directly: no shell, no word splitting, no globbing. `shell=True` takes exactly
  one string and runs it with `/bin/sh -c`. `env` is added to our environment; `cwd` is where
  the command runs. `Command.check()` finds the program (on the PATH, `env.PATH` if set) and
  tells a bad option by a ValueError whose `field` names it, before anything runs.
- Success is an exit code in `ok_exit_codes`; death by a signal is always a failure. The error
  names the command (shell-quoted, shortened), its exit code or signal, and the last 20 lines
  of its stderr (`StderrTail` keeps the last 64 KiB of it, however much it writes).
- Process hygiene (PITFALLS 7). Each command starts in its own session, so its own process
  group: a Ctrl-C on the terminal does not reach it (we stop it). It dies with the thread that
  started it: PR_SET_PDEATHSIG=SIGKILL is armed before it runs, by util-linux `setpriv
  --pdeathsig KILL` when that is installed (Popen can then vfork: no Python runs in the child),
  else by a preexec_fn that also checks the parent pid after arming it (a full fork: 2-4 ms
  more per start). PDEATHSIG reaches the command, not its children; the group kills do.
- Every started command is in `_RUNNING` (pid = pgid) until it is reaped: while the leader is
  unreaped, even as a zombie, its pgid cannot be reused, so `kill_group` is always safe.
  `finish()` waits for the exit, kills what the command left in its group (a background child
  holding a pipe open would otherwise hang us), and reaps; `abort()` SIGKILLs the group and
  reaps. Both are idempotent.
- `install_sigterm_handler()` (a worker's choice, not the coordinator's: it has its own) makes
  a SIGTERM kill and reap every running command's group, then die by SIGTERM as before. A
  SIGTERM that lands while a command is being started waits until it is registered.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import json
import os
import shlex
import shutil
import signal
import subprocess
import threading
from typing import Any, Iterable

from .errors import DataflowError
from .launch import STARTING
from .sizes import format_size


STDERR_KEEP = 64 << 10      # bytes of stderr kept per command, for the error message
STDERR_LINES = 20           # lines of it shown
LINE_CHARS = 300            # characters shown of one stderr line
COMMAND_CHARS = 200         # characters shown of the command line
PIPE_SIZE = 256 << 10       # pipe capacity asked for: fewer wake-ups than 64 KiB; not 1 MiB,
                            # which counts against the user's pipe-user-pages-soft quota
PR_SET_PDEATHSIG = 1


class CommandError(DataflowError):
    """A command failed: it could not start, or exited with a code not in ok_exit_codes, or
    was killed by a signal."""

    def __init__(self, message: str, *, argv: list[str] | None = None,
                 returncode: int | None = None, stderr: bytes = b""):
        self.argv = argv or []
        self.returncode = returncode
        self.stderr = stderr          # the kept tail (at most STDERR_KEEP bytes)
        super().__init__(message)


def OptionError(field: str, message: str) -> ValueError:
    """A bad option: a plain ValueError whose `field` names it, so a config error can point at
    e.g. stages[i].exec.<field>."""
    error = ValueError(message)
    error.field = field   # type: ignore[attr-defined]
    return error


class StderrTail:
    """The last STDERR_KEEP bytes of what a command wrote to stderr, and how much it wrote."""

    __slots__ = ("data", "total")

    def __init__(self) -> None:
        self.data = bytearray()
        self.total = 0

    def add(self, part: bytes) -> None:
        self.total += len(part)
        self.data += part
        if len(self.data) > 2 * STDERR_KEEP:   # trimmed now and then, not on every read
            del self.data[:-STDERR_KEEP]

    def tail(self) -> bytes:
        return bytes(self.data[-STDERR_KEEP:])


class Command:
    """An external command as configured. Plain data in, a running `subprocess.Popen` out."""

    def __init__(self, argv: list[str] | str, *, shell: bool = False,
                 env: dict[str, str] | None = None, cwd: str | None = None,
                 ok_exit_codes: Iterable[int] = (0,), stderr: str = "capture"):
        self.argv = [argv] if isinstance(argv, str) else list(argv)
        self.shell = shell
        self.env = dict(env or {})
        self.cwd = cwd
        self.ok_exit_codes = list(ok_exit_codes)
        self.stderr = stderr
        self._ok = frozenset(self.ok_exit_codes)
        self.run_argv = ["/bin/sh", "-c", *self.argv] if shell else list(self.argv)
        self._popen_env: dict[str, str] | None = None
        self._spawn_argv: list[str] | None = None   # run_argv, behind setpriv when we can
        self._preexec: Any = None                    # else the PDEATHSIG set-up in the child

    @property
    def shown(self) -> str:
        """The command line as a shell would take it, shortened: for messages."""
        return shown(self.run_argv)

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
                                      f"{listed(argv)}); join them into one string, or drop "
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
        program = self.run_argv[0]
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
            hint = (f"; argv is a list of words: did you mean {listed(shlex.split(program))}, "
                    f"or shell: true?")
        raise OptionError("argv", f"program {program!r} not found on the PATH{hint}")

    # ------------------------------------------------------------------ starting
    def prepare(self, setpriv_path: str | None) -> None:
        """Decide how PDEATHSIG gets armed: `setpriv_path` (see `setpriv()`), or a preexec_fn
        when it is None."""
        self._popen_env = {**os.environ, **self.env} if self.env else None
        if setpriv_path is not None:   # fast: Popen can vfork (no Python code in the child)
            self._spawn_argv = [setpriv_path, "--pdeathsig", "KILL", "--", *self.run_argv]
            self._preexec = None
        else:                          # slow: a full fork to run _in_child (2-4 ms more)
            self._spawn_argv = list(self.run_argv)
            self._preexec = functools.partial(_in_child, os.getpid(), _prctl())

    @property
    def prepared(self) -> bool:
        return self._spawn_argv is not None

    def start(self, *, stdin: Any = subprocess.PIPE,
              stdout: Any = subprocess.PIPE) -> subprocess.Popen:
        """Start the command in its own session, registered in _RUNNING; stderr is a pipe
        (capture) or ours (inherit). Raises CommandError when it cannot be started."""
        if self._spawn_argv is None:
            self.prepare(setpriv())
        # a SIGTERM while the child is made and registered waits (the handler would not find
        # it yet); not by blocking the signal: the child would inherit the mask
        global _spawning
        _spawning = True
        try:
            try:
                with STARTING:   # not while the coordinator sets PYTHONSAFEPATH for spawn
                    proc = subprocess.Popen(
                        self._spawn_argv, stdin=stdin, stdout=stdout,
                        stderr=subprocess.PIPE if self.stderr == "capture" else None,
                        bufsize=0, close_fds=True, cwd=self.cwd, env=self._popen_env,
                        start_new_session=True, preexec_fn=self._preexec)
            except OSError as e:
                raise CommandError(f"cannot run `{self.shown}`: {e.strerror or e}",
                                   argv=self.run_argv) from None
            _RUNNING[proc.pid] = proc
        finally:
            _spawning = False
            if _deferred:
                _on_sigterm(signal.SIGTERM, None)
        return proc

    # ------------------------------------------------------------------ the outcome
    def ok(self, returncode: int) -> bool:
        return returncode >= 0 and returncode in self._ok

    def status(self, returncode: int) -> str:
        """'exited with code 3 (ok_exit_codes: [0, 1])' or 'was killed by SIGSEGV'."""
        if returncode < 0:
            try:
                return f"was killed by {signal.Signals(-returncode).name}"
            except ValueError:
                return f"was killed by signal {-returncode}"
        how = f"exited with code {returncode}"
        if self.ok_exit_codes != [0]:
            how += f" (ok_exit_codes: {self.ok_exit_codes})"
        return how

    def failure(self, returncode: int, tail: StderrTail, *, what: str = "") -> str:
        """The message for a failed run: the command, `what` (e.g. 'after 12 bytes'), its
        status, and the end of its stderr."""
        message = f"command `{self.shown}`{' ' + what if what else ''} {self.status(returncode)}"
        return message + self.stderr_text(tail)

    def stderr_text(self, tail: StderrTail) -> str:
        if self.stderr == "inherit":
            return " (its stderr was passed through)"
        if not tail.total:
            return "; it wrote nothing to stderr"
        kept = tail.tail()
        lines = kept.decode("utf-8", "replace").split("\n")
        if tail.total > len(kept):
            lines = lines[1:]            # the first one was cut by the 64 KiB window
        if lines and lines[-1] == "":
            lines.pop()                   # the text ended with a newline
        lines = [cut(line.rstrip("\r"), LINE_CHARS) for line in lines[-STDERR_LINES:]]
        count = _total_lines(kept, tail.total)
        shown_ = ("" if len(lines) == count else
                  f" (last {len(lines)} of {count} lines)" if count > 0 else
                  f" (last {len(lines)} lines of {format_size(tail.total)})")
        return f"; its stderr{shown_}:\n" + "\n".join(f"  | {line}" for line in lines)

    def error(self, returncode: int, tail: StderrTail) -> CommandError:
        return CommandError(self.failure(returncode, tail), argv=self.run_argv,
                            returncode=returncode, stderr=tail.tail())


# ---------------------------------------------------------------------- ending a command
def finish(proc: subprocess.Popen) -> int:
    """Wait for the command to exit, kill what it left in its group, reap it; its code."""
    pid = proc.pid
    if pid in _RUNNING:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)   # exited, not reaped: pgid ours
        kill_group(pid)
        _RUNNING.pop(pid, None)
    return proc.wait()


def abort(proc: subprocess.Popen) -> None:
    """SIGKILL the command's whole group and reap it. Never raises; idempotent."""
    if kill_group(proc.pid):
        _RUNNING.pop(proc.pid, None)
        with contextlib.suppress(Exception):
            proc.wait()


def close_pipes(proc: subprocess.Popen) -> None:
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()


def kill_group(pid: int) -> bool:
    """SIGKILL the process group of command `pid` if it is not reaped yet; False if it was."""
    if pid not in _RUNNING:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    return True


def pidfd(proc: subprocess.Popen) -> int:
    """A descriptor that becomes readable when the command exits (Linux >= 5.3), or -1."""
    with contextlib.suppress(OSError, AttributeError):
        return os.pidfd_open(proc.pid)
    return -1


def grow(fd: int) -> int:
    """Ask for a PIPE_SIZE pipe (fewer wake-ups); return the pipe's capacity (0 if unknown)."""
    with contextlib.suppress(OSError, AttributeError):
        return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    with contextlib.suppress(OSError, AttributeError):
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    return 0


# ---------------------------------------------------------------------- SIGTERM
_RUNNING: dict[int, subprocess.Popen] = {}   # pid (= pgid) -> command, not yet reaped
_previous_sigterm: Any = None
_handler_installed = False
_spawning = False    # a command is being started: a SIGTERM now is handled right after
_deferred = False


def install_sigterm_handler() -> None:
    """In a worker: a SIGTERM kills every running command's group first (main thread only)."""
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
        kill_group(pid)
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


# ---------------------------------------------------------------------- PDEATHSIG
@functools.lru_cache(maxsize=1)
def setpriv() -> str | None:
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
    imports, no locks): die with the parent, even if it died before this ran."""
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:   # the parent died before PDEATHSIG was armed
        os._exit(127)


# ---------------------------------------------------------------------- messages
def _total_lines(tail: bytes, total: int) -> int:
    """How many lines the command wrote to stderr, when all of it was kept (else -1)."""
    if total > len(tail):
        return -1
    return tail.count(b"\n") + (0 if tail.endswith(b"\n") else 1)


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def shown(argv: list[str]) -> str:
    """The command line as a shell would take it, shortened."""
    return cut(shlex.join(argv), COMMAND_CHARS)


def listed(argv: list[str]) -> str:
    """A list of words as YAML (flow style) and JSON write it, shortened."""
    return cut(json.dumps(argv, ensure_ascii=False), COMMAND_CHARS)
