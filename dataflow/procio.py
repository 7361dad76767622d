"""A child process as a Readable (its stdout) and as a Writable (its stdin).

`CommandSource(["seq", "1", "1000000"])` reads what a command writes, like `cmd | dataflow`;
`CommandSink(["sort"])` writes the job's output into one, like `dataflow | cmd`. One command
per job, started in the coordinator; options and hygiene as for `exec` (children.py: argv or
one shell string, env, cwd, ok_exit_codes; its own session, PDEATHSIG, group kills).

Rules:
- A source command reads /dev/null. Its stdout is read straight into the slots (readv, no
  copy). Its stderr is read all along by the same selector (no thread), so a command that
  writes megabytes of it never blocks; the last 64 KiB are kept for the error message
  (`stderr="inherit"` passes it through instead). When it exits, whatever it left in its
  process group is killed, as for exec.
- End of stream is the end of its stdout; then we wait for it. An exit code not in
  ok_exit_codes, or death by a signal, is a `CommandSourceError` (a SourceError) naming the
  command, its status, how many bytes it wrote, and its stderr's last lines; the job fails.
- A sink command's stdout is ours by default (`stdout="null"`: /dev/null), and so is its
  stderr (`stderr="capture"`: kept for the error message, read by the selector while we write,
  so neither side can block the other). `write()` blocks while the command does not read:
  that is the backpressure. `close()` closes its stdin, waits for it, and fails with a
  `CommandSinkError` (a SinkError) on an exit code that is not ok.
- A sink command that stops reading early (`head -n 5`): the write gets EPIPE; we close its
  stdin and wait for it. Exited with an ok code: `SinkClosedEarly` (a `BrokenPipe`, carrying
  the code), which ends the job quietly, as `yes | head` in a shell. Any other status:
  `CommandSinkError`, the job fails. A command that keeps running after it closed its stdin
  is waited for; one that leaves a background child holding its stdin open has that child
  killed once it exits (else we would block for ever).
- `close()` of the source and `abort()` of the sink SIGKILL the command's group and reap it
  (early teardown, errors, Ctrl-C): no command outlives the job. Both are idempotent and
  never raise. Like any child with PDEATHSIG, the command dies with the *thread* that
  started it: open the source or sink in the thread that runs the job.
- Bad options: `CommandSource.check()` / `CommandSink.command.check()` raise ValueError with
  `.field` (for the config layer); at run time they surface as SourceError / SinkError.
"""
from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
from typing import Any, Iterable

from . import children
from .children import CommandError, StderrTail
from .errors import SinkError, SourceError
from .sinks import BrokenPipe
from .sources import Framed

WRITE_MAX = children.PIPE_SIZE   # bytes per write into a sink command's stdin


class CommandSourceError(SourceError):
    """The source command failed (could not start, or exited badly)."""

    def __init__(self, message: str, *, argv: list[str], returncode: int | None = None,
                 stderr: bytes = b"", offset: int | None = None):
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(message, file=children.shown(argv), offset=offset)


class CommandSinkError(SinkError):
    """The sink command failed (could not start, or exited badly)."""

    def __init__(self, message: str, *, argv: list[str], returncode: int | None = None,
                 stderr: bytes = b""):
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(message)


class SinkClosedEarly(BrokenPipe):
    """The sink command stopped reading and exited with an ok code (`head -n 5`): the job
    can end quietly, as `yes | head` does in a shell."""

    ends_job_quietly = True   # pipeline() stops the job and returns (stats.sink_closed_early)

    def __init__(self, message: str, *, argv: list[str], returncode: int, written: int):
        self.argv = argv
        self.returncode = returncode
        self.written = written      # bytes it was given before the pipe broke
        super().__init__(message)


def _drain(proc: subprocess.Popen, pidfd: int, tail: StderrTail) -> int:
    """Read the rest of the command's stderr (into `tail`) while waiting for it to exit; kill
    what it leaves in its group; reap it. Its exit code."""
    with selectors.DefaultSelector() as sel:
        if proc.stderr is not None and not proc.stderr.closed:
            os.set_blocking(proc.stderr.fileno(), False)
            sel.register(proc.stderr.fileno(), selectors.EVENT_READ, "err")
        if pidfd >= 0:
            sel.register(pidfd, selectors.EVENT_READ, "exit")
        while sel.get_map():
            for key, _ in sel.select():
                _side_event(sel, key, proc, tail)
    return children.finish(proc)


def _side_event(sel: selectors.BaseSelector, key: Any, proc: subprocess.Popen,
                tail: StderrTail) -> None:
    """An "exit" event (end what the command left in its group: its pgid is still ours, the
    leader unreaped) or an "err" one (keep the stderr tail; unregister it at its end)."""
    if key.data == "exit":
        sel.unregister(key.fd)
        children.kill_group(proc.pid)
        return
    try:
        part = os.read(key.fd, 1 << 16)
    except BlockingIOError:
        return
    if part:
        tail.add(part)
    else:
        sel.unregister(key.fd)


class _Child:
    """What the source and the sink share: one running command, its stderr tail, a pidfd."""

    def __init__(self, command: children.Command):
        self.command = command
        self.proc: subprocess.Popen | None = None
        self.tail = StderrTail()
        self.pidfd = -1
        self.returncode: int | None = None

    def start(self, **streams: Any) -> subprocess.Popen:
        self.proc = self.command.start(**streams)
        self.pidfd = children.pidfd(self.proc)
        return self.proc

    def selector(self, fd: int, events: int, tag: str) -> selectors.BaseSelector:
        """A selector over `fd` (its pipe enlarged, made non-blocking) under `tag`, plus the
        command's stderr ("err", when captured) and its pidfd ("exit")."""
        assert self.proc is not None
        sel = selectors.DefaultSelector()
        children.grow(fd)
        os.set_blocking(fd, False)
        sel.register(fd, events, tag)
        if self.proc.stderr is not None:
            os.set_blocking(self.proc.stderr.fileno(), False)
            sel.register(self.proc.stderr.fileno(), selectors.EVENT_READ, "err")
        if self.pidfd >= 0:
            sel.register(self.pidfd, selectors.EVENT_READ, "exit")
        return sel

    def wait(self) -> int:
        assert self.proc is not None
        if self.returncode is None:
            self.returncode = _drain(self.proc, self.pidfd, self.tail)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL the group, reap, release everything. Never raises; idempotent."""
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(Exception):
            children.abort(proc)
        if self.pidfd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
            self.pidfd = -1
        children.close_pipes(proc)


class CommandSource(Framed):
    """A command's standard output, read as the job's input."""

    def __init__(self, argv: list[str] | str, *, shell: bool = False,
                 env: dict[str, str] | None = None, cwd: str | None = None,
                 ok_exit_codes: Iterable[int] = (0,), stderr: str = "capture",
                 split: str = "lines", delimiter: bytes | str = b"\n",
                 max_record_size: int = 0, record_start: str | None = None,
                 record_size: int = 0, header: bool | None = None, errors: str = "strict"):
        self._framing(split, delimiter, max_record_size, record_start, record_size, header,
                     errors)
        self.command = children.Command(argv, shell=shell, env=env, cwd=cwd,
                                        ok_exit_codes=ok_exit_codes, stderr=stderr)
        self._child = _Child(self.command)
        self._sel: selectors.BaseSelector | None = None
        self._offset = 0
        self._ended = False

    def check(self) -> None:
        """Raise ValueError (with `.field`) when the command could not run as configured."""
        self.command.check()

    def size(self) -> int | None:
        return None

    def open(self) -> None:
        try:
            self.command.check()
        except ValueError as e:
            raise CommandSourceError(f"cannot run source command `{self.command.shown}`: {e}",
                                     argv=self.command.run_argv) from None
        try:
            proc = self._child.start(stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        except CommandError as e:
            raise CommandSourceError(f"source {e}", argv=self.command.run_argv) from None
        self._sel = self._child.selector(proc.stdout.fileno(), selectors.EVENT_READ, "out")

    def readinto(self, buffer: memoryview) -> int:
        if self._ended or not len(buffer):
            return 0
        sel = self._sel
        assert sel is not None, "open() first"
        while True:
            for key, _ in sel.select():
                if key.data != "out":
                    _side_event(sel, key, self._child.proc, self._child.tail)
                    continue
                try:
                    n = os.readv(key.fd, [buffer])
                except BlockingIOError:
                    continue
                except OSError as e:
                    raise CommandSourceError(
                        f"cannot read the output of source command `{self.command.shown}` "
                        f"at byte {self._offset}: {e.strerror or e}",
                        argv=self.command.run_argv, offset=self._offset) from None
                if n:
                    self._offset += n
                    return n
                self._end()
                return 0

    def _end(self) -> None:
        """Its stdout ended: wait for it (reading the rest of its stderr), check its status."""
        self._ended = True
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        returncode = self._child.wait()
        if not self.command.ok(returncode):
            command = self.command
            raise CommandSourceError(
                f"source command `{command.shown}` {command.status(returncode)} after writing "
                f"{self._offset} bytes{command.stderr_text(self._child.tail)}",
                argv=command.run_argv, returncode=returncode, stderr=self._child.tail.tail(),
                offset=self._offset)

    @property
    def returncode(self) -> int | None:
        """The command's exit code once it ended (negative: killed by that signal)."""
        return self._child.returncode

    def close(self) -> None:
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        self._child.kill()

    def where(self, offset: int) -> str:
        return f"command `{self.command.shown}`: byte {offset}"

    def identities(self) -> list:
        return []


class CommandSink:
    """The job's output written to a command's standard input."""

    def __init__(self, argv: list[str] | str, *, shell: bool = False,
                 env: dict[str, str] | None = None, cwd: str | None = None,
                 ok_exit_codes: Iterable[int] = (0,), stdout: str = "inherit",
                 stderr: str = "inherit"):
        if stdout not in ("inherit", "null"):
            raise ValueError(f"stdout is 'inherit' or 'null', got {stdout!r}")
        self.command = children.Command(argv, shell=shell, env=env, cwd=cwd,
                                        ok_exit_codes=ok_exit_codes, stderr=stderr)
        self.stdout = stdout
        self._child = _Child(self.command)
        self._sel: selectors.BaseSelector | None = None
        self._stdin = -1
        self.bytes = 0

    @property
    def returncode(self) -> int | None:
        return self._child.returncode

    def check(self, input_ids: list) -> None:
        try:
            self.command.check()
        except ValueError as e:
            error = CommandSinkError(f"cannot run sink command `{self.command.shown}`: {e}",
                                     argv=self.command.run_argv)
            error.field = getattr(e, "field", None)   # type: ignore[attr-defined]
            raise error from None

    def open(self) -> None:
        self.check([])
        try:
            proc = self._child.start(
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL if self.stdout == "null" else None)
        except CommandError as e:
            raise CommandSinkError(f"sink {e}", argv=self.command.run_argv) from None
        self._stdin = proc.stdin.fileno()
        self._sel = self._child.selector(self._stdin, selectors.EVENT_WRITE, "in")

    def write(self, data: memoryview) -> None:
        if self._sel is None:
            raise SinkError(f"sink command `{self.command.shown}` is not open")
        fd = self._stdin
        pos, end = 0, len(data)
        try:
            while pos < end:
                try:   # try first: a pipe with room takes it without a select
                    with data[pos:pos + WRITE_MAX] as piece:
                        pos += os.write(fd, piece)
                    continue
                except BlockingIOError:
                    pass
                self._wait_writable()
        except BrokenPipeError:
            self.bytes += pos
            self._closed_early()
        except OSError as e:
            self.bytes += pos
            raise CommandSinkError(f"cannot write to sink command `{self.command.shown}` "
                                   f"after {self.bytes} bytes: {e.strerror or e}",
                                   argv=self.command.run_argv) from None
        self.bytes += end

    def _wait_writable(self) -> None:
        """Block until its stdin has room, reading its stderr meanwhile."""
        sel = self._sel
        assert sel is not None
        while True:
            for key, _ in sel.select():
                if key.data == "in":
                    return
                # on exit, a leftover holding its stdin is killed: the next write EPIPEs
                _side_event(sel, key, self._child.proc, self._child.tail)

    def _end_input(self) -> int:
        """Close its stdin and wait for it; its exit code."""
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        proc = self._child.proc
        assert proc is not None
        with contextlib.suppress(OSError):   # EPIPE flushing nothing: we write unbuffered
            proc.stdin.close()
        return self._child.wait()

    def _closed_early(self) -> None:
        returncode = self._end_input()
        command = self.command
        how = (f"sink command `{command.shown}` stopped reading after {self.bytes} bytes and "
               f"{command.status(returncode)}")
        self._child.kill()   # reaped already: releases the descriptors
        if command.ok(returncode):
            raise SinkClosedEarly(how, argv=command.run_argv, returncode=returncode,
                                  written=self.bytes)
        raise CommandSinkError(how + command.stderr_text(self._child.tail),
                               argv=command.run_argv, returncode=returncode,
                               stderr=self._child.tail.tail())

    def close(self) -> None:
        if self._child.proc is None:
            raise SinkError(f"sink command `{self.command.shown}` was never started")
        try:
            returncode = self._end_input()
        finally:
            self._child.kill()
        command = self.command
        if not command.ok(returncode):
            raise CommandSinkError(
                f"sink command `{command.shown}` {command.status(returncode)} after "
                f"{self.bytes} bytes were written to it{command.stderr_text(self._child.tail)}",
                argv=command.run_argv, returncode=returncode, stderr=self._child.tail.tail())

    def abort(self) -> None:
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        self._child.kill()
