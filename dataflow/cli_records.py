"""`dataflow grep`, `dataflow map` and `dataflow count`: one-liners over the Python API, for the
jobs too small to deserve a YAML file.

Rules:
- FILEs are read in order as one stream (`-` or none: standard input); the output goes to
  standard output, or with `-o OUT` to a file written atomically (an existing one only with
  `--force`).
- `grep` exits 0 when a line was selected and 1 when none was, as grep does; `-c` prints the
  number of selected lines instead of the lines.
- `count` prints its result as one line of JSON on standard output.
- Each is exactly the job its options describe (`--explain` shows the plan; errors are the
  same as a YAML job's): no separate code path.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from . import api
from .errors import UsageError
from .progress import Progress, summary
from .sinks import FileSink, NullSink, OutputExistsError, StdoutSink
from .records import ERRORS
from .sources import SPLITS, FileSource, StdinSource


def add_parsers(sub: Any) -> None:
    g = sub.add_parser("grep", help="print lines that match a pattern, on all cores",
                       description="Like grep -E (Python regular expressions on bytes), in "
                                   "parallel, output in input order.")
    g.add_argument("pattern", metavar="PATTERN")
    g.add_argument("files", nargs="*", metavar="FILE")
    g.add_argument("-v", "--invert-match", action="store_true", help="select non-matching lines")
    g.add_argument("-i", "--ignore-case", action="store_true")
    g.add_argument("-F", "--fixed-strings", action="store_true",
                   help="PATTERN is a string, not a regular expression")
    g.add_argument("-c", "--count", action="store_true",
                   help="print the number of selected lines instead")
    _common(g)
    g.set_defaults(func=_cmd_grep)

    m = sub.add_parser("map", help="run a Python function over every line, record or chunk",
                       description="Apply MODULE:FUNCTION (importable from the current "
                                   "directory or PYTHONPATH) to each line (default), record "
                                   "or chunk, on all cores, output in input order.")
    m.add_argument("callable", metavar="MODULE:FUNCTION")
    m.add_argument("files", nargs="*", metavar="FILE")
    m.add_argument("--mode", choices=["line", "record", "chunk"], default="line")
    m.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE",
                   help="a keyword argument for the function (VALUE read as YAML: 3, true, x)")
    m.add_argument("--setup", metavar="MODULE:FUNCTION",
                   help="called once per worker with the --arg values; its result is passed "
                        "as state=")
    _common(m, split=True)
    m.set_defaults(func=_cmd_map)

    c = sub.add_parser("count", help="count records and bytes (and matches), on all cores",
                       description="Count records (lines by default), bytes, and with "
                                   "--pattern the records that match; prints JSON.")
    c.add_argument("files", nargs="*", metavar="FILE")
    c.add_argument("--pattern", help="also count the records matching this regular expression")
    _common(c, split=True, output=False)
    c.set_defaults(func=_cmd_count)


def _common(p: argparse.ArgumentParser, *, split: bool = False, output: bool = True) -> None:
    if output:
        p.add_argument("-o", "--output", metavar="OUT", help="write to OUT instead of stdout")
        p.add_argument("--force", action="store_true", help="replace an existing OUT")
    if split:
        p.add_argument("--split", choices=list(SPLITS), default="lines",
                       help="what a record is (default: lines)")
        p.add_argument("--errors", choices=list(ERRORS), default="strict",
                       help="bytes that are not UTF-8 in text a stage reads (default: strict)")
    p.add_argument("-p", "--workers", default="auto", help="worker processes (default: auto)")
    p.add_argument("-m", "--memory-limit", default=api.DEFAULT_MEMORY_LIMIT,
                   help="for the whole process tree (default 512MiB)")
    p.add_argument("--chunk-size", default=api.DEFAULT_CHUNK_SIZE)
    p.add_argument("--explain", action="store_true", help="print the memory plan and exit")
    p.add_argument("--stats", action="store_true", help="print the job's summary on stderr")


def _source(args: argparse.Namespace) -> Any:
    kw = {"split": getattr(args, "split", "lines"), "errors": getattr(args, "errors", "strict")}
    files = [f for f in args.files if f != "-"]
    if files and len(files) != len(args.files):
        raise UsageError("standard input ('-') cannot be mixed with files")
    try:
        return FileSource(files, **kw) if files else StdinSource(**kw)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"-p/--workers: expected a number or 'auto', got {value!r}") from None


def _run(args: argparse.Namespace, stages: list[Any], sink: Any = None) -> Any:
    source = _source(args)
    if sink is None:
        sink = StdoutSink()
        if getattr(args, "output", None):
            sink = FileSink(args.output, overwrite=args.force)
    plan = api.make_job_plan(workers=_workers(args.workers), memory_limit=args.memory_limit,
                             chunk_size=args.chunk_size, stages=stages)
    if args.explain:
        print(plan.explain())
        return None
    if isinstance(sink, FileSink):
        if hasattr(source, "resolve"):
            source.resolve()
        try:
            sink.check(source.identities() if hasattr(source, "identities") else [])
        except OutputExistsError:
            raise UsageError(f"{sink.path} already exists; use --force to replace it") from None
    progress = Progress(source.size() if hasattr(source, "size") else None, live=False)
    stats = api.pipeline(source, *stages, sink, workers=plan.workers,
                         memory_limit=args.memory_limit, chunk_size=args.chunk_size,
                         progress=progress)
    if args.stats:
        print(summary(stats), file=sys.stderr)
    return stats


def _cmd_grep(args: argparse.Namespace) -> int:
    from workers.grep import Grep

    stages: list[Any] = [Grep(args.pattern, invert=args.invert_match,
                              ignore_case=args.ignore_case, fixed=args.fixed_strings)]
    if args.count:
        from workers.folds import Count

        stages.append(Count())
    stats = _run(args, stages, NullSink() if args.count else None)
    if stats is None:
        return 0
    if args.count:
        selected = _result(stats, "count")["records"]
        _print(str(selected), args)
    else:
        selected = stats.bytes_out
    return 0 if selected else 1


def _cmd_map(args: argparse.Namespace) -> int:
    from workers.python import PythonFunction

    kwargs: dict[str, Any] = {}
    for item in args.arg:
        name, eq, raw = item.partition("=")
        if not eq or not name.isidentifier():
            raise UsageError(f"--arg expects NAME=VALUE, got {item!r}")
        from .yamldoc import load_yaml
        kwargs[name] = load_yaml(raw, "--arg")[0] if raw.strip() else ""
    stage = PythonFunction(args.callable, mode=args.mode, args=kwargs, setup=args.setup)
    try:
        stage.check()
    except (ImportError, AttributeError, TypeError, ValueError) as e:
        raise UsageError(f"{args.callable}: {type(e).__name__}: {e}") from None
    _run(args, [stage])
    return 0


def _cmd_count(args: argparse.Namespace) -> int:
    from workers.folds import Count

    stats = _run(args, [Count(pattern=args.pattern)], NullSink())
    if stats is not None:
        _print(msgspec.json.encode(_result(stats, "count")).decode(), args)
    return 0


def _result(stats: Any, name: str) -> Any:
    for key, value in stats.results.items():
        if key.endswith(f":{name}"):
            return value
    raise KeyError(name)  # pragma: no cover - the stage is always there


def _print(text: str, args: argparse.Namespace) -> None:
    if getattr(args, "output", None):
        sink = FileSink(args.output, overwrite=args.force)
        sink.open()
        try:
            sink.write(memoryview((text + "\n").encode()))
            sink.close()
        except BaseException:
            sink.abort()
            raise
    else:
        print(text, flush=True)
