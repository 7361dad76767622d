"""Ending a process without the interpreter's teardown, once its work is done.

A Python process that has done its work still spends 20-60 ms in the interpreter's teardown:
module by module garbage collection, freeing memory the kernel takes back at exit anyway. For
the `dataflow` command that is time a user waits for after the output is complete; for a
worker, time its coordinator waits for before it can finish.

Rules:
- `arm()` registers an exit handler. Call it before anything else registers one: handlers run
  last-registered first, so ours runs after the others (the user's, multiprocessing's, logging's),
  and after the interpreter has joined the non-daemon threads.
- Nothing changes until `done(code)` is called: an exception on the way out still gets its
  traceback and status the usual way.
- After `done(code)`, the handler flushes stdout and stderr and ends the process with `code`;
  when stdout cannot be flushed (a full disk, a closed pipe) a 0 becomes 120, with a note on
  stderr, as the interpreter's own exit does.
- `die_by(signum)` ends the process by that signal's default action (after flushing), so the
  shell sees 130 for SIGINT and 143 for SIGTERM, once whatever the signal interrupted is
  cleaned up.
"""
from __future__ import annotations

import atexit
import os
import signal
import sys

_code: int | None = None


def arm() -> None:
    atexit.register(_exit)


def done(code: int) -> None:
    """The process's work is done and it exits with `code`: skip the teardown then."""
    global _code
    _code = code


def die_by(signum: int) -> None:
    _flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _exit() -> None:
    if _code is None:
        return
    lost = _flush()
    os._exit(120 if lost and _code == 0 else _code)


def _flush() -> bool:
    """Flush stdout and stderr; True when stdout's buffered output could not be written."""
    lost = False
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError) as e:
            if stream is sys.stdout:
                lost = True
                try:
                    sys.stderr.write(f"dataflow: error: cannot write to standard output: "
                                     f"{getattr(e, 'strerror', None) or e}\n")
                    sys.stderr.flush()
                except (OSError, ValueError, AttributeError):
                    pass
    return lost
