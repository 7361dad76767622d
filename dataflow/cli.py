"""The `dataflow` command: a thin layer over the config loader and the Python API.

Exit codes: 0 ok; 1 the job failed; 2 usage or config error (an existing sink.file without
--force included); 3 a bug in dataflow (with a report); 128+N killed by signal N after cleaning
up (130 Ctrl-C, 143 SIGTERM); 141 when the reader of our output went away (`| head`), quietly.

Output safety: `run` checks the sink before any worker starts (its directory exists and is
writable, it is not a directory nor an input, it does not exist unless --force). A full
disk or a file-size limit (`ulimit -f`; CPython ignores SIGXFSZ, so write() fails with EFBIG)
is a clean error with the temp file removed. `cleanup` removes segments and temp files whose
owner is dead.

Signals: SIGINT and SIGTERM raise `Interrupted` once; the coordinator tears everything down;
then the process re-raises the signal with its default action so the shell sees 130/143.
Further signals during teardown are noted, not raised, so cleanup always completes.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from typing import Any

import msgspec

from . import api
from .branch import Branch
from .config import load_job
from .errors import ConfigError, DataflowError, Interrupted, ResourceError, UsageError
from . import quickexit
from .launch import discard, importable_cwd
from .progress import Progress, summary
from .sinks import BrokenPipe, FileSink, OutputExistsError


class _Signals:
    """Turn the first SIGINT/SIGTERM into `Interrupted`; later ones wait for cleanup."""

    def __init__(self) -> None:
        self.received: int | None = None

    def __enter__(self) -> "_Signals":
        self.old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
            raise Interrupted(signum)

    def __exit__(self, *exc: Any) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)


def _plan(job: Any) -> Any:
    spec = job.spec
    try:
        return api.make_job_plan(workers=spec.workers, memory_limit=spec.memory_limit,
                                 chunk_size=spec.chunk_size,
                                 max_record_size=job.source.max_record_size,
                                 stages=job.stages, source=job.source, sink=job.sink)
    except ResourceError as e:
        raise ConfigError(str(e), path="memory_limit", file=job.file) from None


def _cmd_run(args: argparse.Namespace) -> int:
    job = load_job(args.job, args.set)
    spec = job.spec
    plan = _plan(job)
    if args.explain:
        print(plan.explain())
        return 0
    if args.stats:
        _check_writable(args.stats, "--stats")
    _check_sink(job, args.force)
    ends = [("source", job.source)] + [("sink", s) for s in _leaf_sinks(job.sink)]
    for role, end in ends:
        if getattr(end, "listen", False) and hasattr(end, "bind"):
            address = end.bind()     # before the job: the peer may be waiting to connect
            if not args.quiet:
                print(f"dataflow: {role} listening on {address}", file=sys.stderr)
    total = job.source.size() if hasattr(job.source, "size") else None
    progress = Progress(total, live=None if args.progress == "auto" else args.progress == "on")
    try:
        stats = api.pipeline(job.source, *job.stages, job.sink, workers=plan.workers,
                             memory_limit=spec.memory_limit, chunk_size=spec.chunk_size,
                             ordered=spec.ordered, progress=progress,
                             max_attempts=spec.max_attempts,
                             chunk_timeout=spec.chunk_timeout,
                             worker_max_chunks=spec.worker_max_chunks, resume=args.resume,
                             checkpoint_interval=spec.checkpoint_interval,
                             timeout=spec.timeout)
    except OutputExistsError as e:   # a directory sink's output (its files are known late)
        raise UsageError(f"{e.path} already exists; use --force to replace it") from None
    finally:
        progress.close()
    if args.resume and stats.resumed_at is None and not args.quiet:
        print("dataflow: nothing to resume (no checkpoint of this job's output); ran it from "
              "the beginning", file=sys.stderr)
    if args.stats:
        try:
            with open(args.stats, "wb") as f:
                f.write(msgspec.json.format(msgspec.json.encode(stats), indent=2) + b"\n")
        except OSError as e:
            raise DataflowError(f"the job finished but --stats {args.stats} could not be "
                                f"written: {e.strerror}") from None
    if not args.quiet:
        print(summary(stats), file=sys.stderr)
        for name, result in stats.results.items():
            print(f"  {name}: {msgspec.json.encode(result).decode()}", file=sys.stderr)
    return 0


def _leaf_sinks(sink: Any) -> list[Any]:
    """The sinks that write somewhere: a tee's branches (a Branch's own sink), or the sink."""
    return [getattr(s, "sink", s) if isinstance(s, Branch) else s
            for s in getattr(sink, "sinks", [sink])]


def _check_sink(job: Any, force: bool) -> None:
    """Refuse, before anything starts, an output that cannot or must not be written."""
    sink = job.sink
    for s in _leaf_sinks(sink):
        if hasattr(s, "overwrite"):
            s.overwrite = force  # the final rename refuses a file that appears meanwhile too
    if not hasattr(sink, "check"):
        return
    source = job.source
    if hasattr(source, "resolve") and not getattr(source, "paths", None):
        source.resolve()
    try:
        sink.check(source.identities() if hasattr(source, "identities") else [])
    except OutputExistsError as e:
        field = "sink.file" if isinstance(sink, FileSink) else "sink"
        raise UsageError(f"{e.path} already exists; use --force to replace it, or choose "
                         f"another {field}") from None


def _check_writable(path: str, what: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"{what} {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK) or (os.path.exists(path)
                                              and not os.access(path, os.W_OK)):
        raise UsageError(f"{what} {path}: not writable")
    if os.path.isdir(path):
        raise UsageError(f"{what} {path}: is a directory")


def _cmd_validate(args: argparse.Namespace) -> int:
    job = load_job(args.job, args.set)
    plan = _plan(job)
    names = ", ".join(s.name for s in job.stages) or "no stages"
    print(f"{args.job}: ok ({names}; {plan.workers} workers, {plan.slots} slots of "
          f"{plan.slot_size} bytes)")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from .generate import write_sample
    from .sizes import parse_size

    try:
        size = parse_size(args.size)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.format != "log":
        from .sample_records import sample_blocks
        out = sys.stdout.buffer if args.output == "-" else None
        sink = FileSink(args.output) if out is None else None
        if sink is not None:
            sink.open()
        n = 0
        try:
            for block in sample_blocks(size, args.seed, args.format):
                n += len(block)
                if sink is not None:
                    sink.write(memoryview(block))
                else:
                    out.write(block)  # type: ignore[union-attr]
            if sink is not None:
                sink.close()
        except BaseException:
            if sink is not None:
                sink.abort()
            raise
    elif args.output == "-":
        n = write_sample(sys.stdout.buffer, size, args.seed)
    else:
        n = write_sample(args.output, size, args.seed)
    if args.output != "-" and not args.quiet:
        what = {"log": "access log", "jsonl": "JSON lines", "csv": "CSV"}[args.format]
        print(f"dataflow: wrote {n} bytes of {what} to {args.output}", file=sys.stderr)
    return 0


def _cmd_cleanup(args: argparse.Namespace) -> int:
    from .shm import SHM_DIR, remove_stale
    from .sinks import remove_stale_temps

    directories = args.directories or ["."]
    for d in directories:
        if not os.path.isdir(d):
            raise UsageError(f"cleanup {d}: not a directory")
    removed = [os.path.join(SHM_DIR, name) for name in remove_stale()]
    for d in directories:
        removed += remove_stale_temps(d)
    for path in removed:
        print(f"removed {path}")
    if not removed:
        print("nothing to clean up")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dataflow", description="Stream large files through "
                                "parallel worker processes, in order, under a memory cap.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def job_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("job", help="the YAML job file")
        sp.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                        help="override a job setting, e.g. --set workers=4 "
                             "--set sink.file=out.log --set stages[0].grep.invert=true")

    r = sub.add_parser("run", help="run a YAML job")
    job_args(r)
    r.add_argument("--explain", action="store_true",
                   help="print the memory plan (workers, slots x size) and exit")
    r.add_argument("--stats", metavar="FILE", help="write the job's statistics as JSON")
    r.add_argument("--progress", choices=["auto", "on", "off"], default="auto",
                   help="progress bar on stderr (auto: when stderr is a terminal)")
    r.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    r.add_argument("--force", action="store_true",
                   help="replace an existing sink.file (by default the job refuses to start)")
    r.add_argument("--resume", action="store_true",
                   help="continue a killed run of this job from its last checkpoint")
    r.set_defaults(func=_cmd_run)

    v = sub.add_parser("validate", help="check a YAML job without running it")
    job_args(v)
    v.set_defaults(func=_cmd_validate)

    s = sub.add_parser("sample", help="write a realistic synthetic access log")
    s.add_argument("-o", "--output", default="access.log", help="file to write ('-': stdout)")
    s.add_argument("--size", default="100MiB", help="how much (default 100MiB)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--format", choices=["log", "jsonl", "csv"], default="log",
                   help="log (combined format, default), or the same requests as JSON lines "
                        "or CSV with a header (SIZE is then the log's size)")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=_cmd_sample)

    from .cli_compress import add_parsers
    add_parsers(sub)
    from .cli_records import add_parsers as add_record_parsers
    add_record_parsers(sub)

    c = sub.add_parser("cleanup", help="remove shared memory and temp files left by dead "
                       "dataflow processes")
    c.add_argument("directories", nargs="*", metavar="DIR",
                   help="where to look for temp files (.NAME.PID.HEX.dataflow-tmp) of killed "
                        "runs (default: the current directory); /dev/shm is always swept")
    c.set_defaults(func=_cmd_cleanup)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command in `argv` (the process's arguments when None); return its exit code.
    The `dataflow` command comes in through dataflow/__main__.py, which starts the workers
    early and skips the interpreter's teardown at the end."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:   # FILEs after an option (`dataflow map f --mode record in.jsonl`): argparse
        if hasattr(args, "files") and not any(e.startswith("-") and e != "-" for e in extra):
            args.files += extra   # stops filling a "*" positional at the first option
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    importable_cwd()
    try:
        with _Signals():
            return args.func(args)
    except Interrupted as e:
        print(f"dataflow: {e}; cleaned up", file=sys.stderr)
        if argv is None:
            discard()        # standby workers no job took yet (launch.prestart)
            quickexit.die_by(e.signum)
        return e.exit_code
    except BrokenPipe:
        # the reader left (`| head`): quiet, like other Unix tools
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 128 + signal.SIGPIPE
    except DataflowError as e:
        print(f"dataflow: error: {e}", file=sys.stderr)
        for note in getattr(e, "__notes__", ()):
            print(f"dataflow: {note}", file=sys.stderr)
        if getattr(e, "worker_traceback", ""):
            print(f"worker traceback:\n{e.worker_traceback}", file=sys.stderr, end="")
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception:
        print("dataflow: internal error (a bug; please report it with this output):",
              file=sys.stderr)
        traceback.print_exc()
        return 3


if __name__ == "__main__":   # `python -m dataflow.cli`: the command, without its front
    sys.exit(main())
