"""The `dataflow` command (the console script, and `python -m dataflow`).

This module is the light front of the command: before the engine is imported (msgspec, psutil,
the config loader, the coordinator: about 100 ms), it starts the workers a job will want
(launch.prestart), so that their start (80-90 ms each: an interpreter and the worker's imports)
runs beside the coordinator's instead of after it. It also arms quickexit first, so the
command ends without the interpreter's teardown once its work is done. The command itself is
dataflow.cli.
"""
from __future__ import annotations

import re
import signal
import sys

from . import quickexit
from .errors import Interrupted

# commands that run a job, and so want workers
JOB_COMMANDS = ("run", "compress", "decompress", "grep", "map", "count")


def standby_count(argv: list[str]) -> int:
    """How many workers to start before the engine is imported: the command's `-p/--workers`
    (for `run`: `--set workers=N`, else the job file's top-level `workers:`), all cores for
    `auto`, and never more than the cores (a job that wants more starts the rest itself). 0
    for commands that run no job, help, --explain, and anything that does not parse: the
    command reports that itself."""
    if not argv or argv[0] not in JOB_COMMANDS or \
            any(a in ("-h", "--help", "--explain") for a in argv):
        return 0
    value = _job_file_workers(argv[1:]) if argv[0] == "run" else "auto"
    for i, a in enumerate(argv):
        if a in ("-p", "--workers") and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith("--workers="):
            value = a.split("=", 1)[1]
        elif a.startswith("-p") and len(a) > 2 and a[2:].isdigit():
            value = a[2:]
        elif a == "--set" and i + 1 < len(argv) and argv[i + 1].startswith("workers="):
            value = argv[i + 1].split("=", 1)[1]
    from .launch import cpu_count

    cores = cpu_count()
    if value == "auto":
        return cores
    return min(int(value), cores) if value.isdigit() and int(value) > 0 else 0


# options of `run` that take a value (the job file is the first other argument)
_RUN_VALUES = ("--set", "--stats", "--progress")


def _job_file_workers(args: list[str]) -> str:
    """The `workers:` line of the job file, read without a YAML parser; "auto" when there is
    none (the default) or the file cannot be read (the command will say why)."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in _RUN_VALUES else 1
    if i >= len(args):
        return "auto"
    try:
        with open(args[i], encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError:
        return "auto"
    found = re.search(r"^workers:[ \t]*([0-9]+|auto)[ \t]*(?:#.*)?$", text, re.MULTILINE)
    return found.group(1) if found else "auto"


def main() -> int:
    quickexit.arm()     # first: every other exit handler runs before it
    # A Ctrl-C or SIGTERM before the command has its own handling is held while the workers
    # start and the engine is imported (an interrupted C extension's set-up can crash the
    # interpreter: msgspec's Decoder() does), then raised as KeyboardInterrupt (not an
    # Exception, which an `except Exception` could swallow): the standby workers are ended and
    # the process dies by the signal, as the command would have.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGTERM, _interrupt)
    launch = None       # the module, once imported
    try:
        try:
            from . import launch
            launch.importable_cwd()    # the workers inherit sys.path as it is when they start
            launch.prestart(standby_count(sys.argv[1:]))
            from .cli import main as command
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)   # one that came lands here
        code = command()
    except KeyboardInterrupt:
        if launch is not None:
            launch.discard()
        signum = _signalled or signal.SIGINT
        print(f"dataflow: {Interrupted(signum)}; cleaned up", file=sys.stderr)
        quickexit.die_by(signum)
        raise                      # not reached
    finally:
        if launch is not None:
            launch.discard()
    quickexit.done(code)
    return code


_signalled = 0


def _interrupt(signum: int, frame: object) -> None:
    global _signalled
    _signalled = signum
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
