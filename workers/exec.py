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
- Exec is a Duplex (dataflow/duplex.py): its pump multiplexes stdin, stdout, stderr and a
  pidfd of the command over non-blocking pipes (enlarged to 256 KiB when the system allows),
  with no threads; the chunk is written straight from its shared-memory slot, and stdout goes
  to the engine as it is read, so an output much larger than the chunk never sits whole in
  the worker's memory.
- Process hygiene is dataflow/children.py's (PITFALLS 7): each command runs in its own
  session and dies with its worker (PDEATHSIG, by util-linux `setpriv` when installed, else a
  preexec_fn: 2-4 ms more per chunk). When the command exits, whatever it left in its process
  group is killed (a background child holding stdout open would otherwise hang the chunk). On
  an error, or when the engine drops the chunk's output (GeneratorExit), the whole group is
  SIGKILLed and reaped. A SIGTERM to the worker (chunk_timeout, teardown) kills the groups of
  all running commands, reaps them, then the worker dies by SIGTERM.
- One process per chunk costs a spawn plus the command's own start-up (about 1.5 ms for `tr`,
  20 ms for `jq`, 40 ms for `python3`): use big chunks (the 4 MiB default or more).
"""
from __future__ import annotations

import os
import subprocess
from typing import Literal

import msgspec

from dataflow import children
from dataflow.children import (CommandError, OptionError, StderrTail,   # noqa: F401 (public)
                               setpriv as _setpriv)
from dataflow.duplex import Duplex, Peer
from dataflow.streams import ChunkInfo

__all__ = ["Exec", "CommandError", "OptionError"]


class Exec(Duplex):
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
        self.command = children.Command(argv, shell=shell, env=env, cwd=cwd,
                                        ok_exit_codes=ok_exit_codes, stderr=stderr)
        self.argv = self.command.argv
        self.shell = shell
        self.ok_exit_codes = self.command.ok_exit_codes
        self.env = self.command.env
        self.cwd = cwd
        self.stderr = stderr

    def check(self) -> None:
        """Raise ValueError (with `.field`) when the command could not run as configured."""
        self.command.check()

    def setup(self) -> None:
        self.check()   # as this worker sees the PATH and the file system
        self._prepare()
        children.install_sigterm_handler()

    def _prepare(self) -> None:
        self.command.prepare(_setpriv())

    def transform(self, data: memoryview, chunk: ChunkInfo):
        if not self.command.prepared:   # used without setup(): no SIGTERM handler then
            self._prepare()
        return self._exchange(data, chunk)   # a generator: nothing starts until pulled

    def connect(self, chunk: ChunkInfo) -> Peer:
        return CommandPeer(self.command, self.command.start())


class CommandPeer(Peer):
    """A running command as a Duplex peer: stdin, stdout, stderr (kept as a tail), a pidfd."""

    def __init__(self, command: children.Command, proc: subprocess.Popen):
        self.command = command
        self.proc = proc
        self.tail = StderrTail()
        self.input = proc.stdin
        self.output = proc.stdout
        self.side = (proc.stderr,) if proc.stderr is not None else ()
        self._pidfd = children.pidfd(proc)
        self.watch = (self._pidfd,) if self._pidfd >= 0 else ()
        self.read_size = max(children.grow(proc.stdout.fileno()), 1 << 16)
        children.grow(proc.stdin.fileno())

    def end_input(self) -> None:
        self.proc.stdin.close()

    def on_side(self, fd: int, part: bytes) -> None:
        self.tail.add(part)

    def on_watch(self, fd: int) -> None:
        # the command exited: end what it left in its group (safe: the leader, unreaped,
        # still holds the pgid)
        children.kill_group(self.proc.pid)

    def finish(self) -> None:
        returncode = children.finish(self.proc)
        if not self.command.ok(returncode):
            raise self.command.error(returncode, self.tail)

    def abort(self) -> None:
        children.abort(self.proc)

    def close(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        children.close_pipes(self.proc)
