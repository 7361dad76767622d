"""`dataflow compress` and `dataflow decompress`: pigz-like commands over the Python API.

Rules (as gzip and pigz do, where they have a rule):
- `FILE` becomes `FILE.gz` (`.zst`, `.bz2`, ...) next to it; decompressing strips the suffix.
  With `-c` (or no FILE, or `-`) the result goes to standard output; `-o OUT` names it.
- The input is removed only after the output is complete, fsynced and renamed into place, and
  never with `-k` or `-c`. The output gets the input's permission bits and times.
- An existing output is not overwritten without `--force`; compressed data is not written to
  a terminal without `--force`.
- Several FILEs are handled one after the other; the first failure stops, naming its file
  (the files before it are done, the ones after it untouched).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from . import api
from .errors import UsageError
from .progress import Progress
from .sizes import format_size

# format -> (suffix, default level, level range, stage name, stage options)
FORMATS: dict[str, tuple[str, int, tuple[int, int], str, dict[str, Any]]] = {
    "gzip": (".gz", 6, (0, 9), "gzip", {}),
    "zlib": (".zz", 6, (0, 9), "gzip", {"format": "zlib"}),
    "raw": (".deflate", 6, (0, 9), "gzip", {"format": "raw"}),
    "bgzf": (".gz", 6, (0, 9), "bgzf", {}),
    "zstd": (".zst", 3, (-7, 22), "zstd", {}),
    "bz2": (".bz2", 9, (1, 9), "bz2", {}),
    "xz": (".xz", 6, (0, 9), "xz", {}),
    "lz4": (".lz4", 0, (0, 16), "lz4", {}),
}
BGZF_CHUNK = 64 * 0xFF00  # whole BGZF blocks per chunk: no short block at chunk edges
# suffix -> what the decompressed file is called
SUFFIXES = {".gz": "", ".bgz": "", ".zst": "", ".zstd": "", ".bz2": "", ".xz": "", ".lz4": "",
            ".zz": "", ".deflate": "", ".tgz": ".tar", ".tbz2": ".tar", ".tbz": ".tar",
            ".txz": ".tar", ".tzst": ".tar"}


def add_parsers(sub: Any) -> None:
    c = sub.add_parser("compress", help="compress files in parallel (pigz-like)",
                       description="Compress FILEs (or standard input) on all cores into "
                                   "ordinary files the standard tools read.")
    _common(c)
    c.add_argument("-f", "--format", choices=list(FORMATS), default="gzip",
                   help="gzip (default; one member, pigz-style), bgzf (bgzip), zstd, bz2, xz, "
                        "lz4, zlib, raw")
    c.add_argument("-l", "--level", type=int, help="compression level (format's default: "
                   "gzip/bgzf 6, zstd 3, bz2 9, xz 6, lz4 0)")
    for d in range(10):
        c.add_argument(f"-{d}", dest="level", action="store_const", const=d,
                       help=argparse.SUPPRESS)
    c.add_argument("-i", "--independent", action="store_true",
                   help="gzip: do not prime chunks with the previous 32 KiB (like pigz -i)")
    c.add_argument("-n", "--no-name", action="store_true",
                   help="gzip: do not store the file name and time in the header")
    c.add_argument("--backend", default="auto",
                   choices=["auto", "zlib", "zlib-ng", "isal", "libdeflate"],
                   help="deflate implementation for gzip and bgzf (default: fastest installed)")
    c.add_argument("--index", action="store_true",
                   help="bgzf: also write OUT.gzi, the index bgzip -b/-s use")
    c.set_defaults(func=cmd_compress)

    d = sub.add_parser("decompress", help="decompress files, in parallel where the format "
                       "allows", description="Decompress FILEs (or standard input); the "
                       "format is detected from the magic bytes.")
    _common(d)
    d.add_argument("-t", "--test", action="store_true",
                   help="check integrity only: decompress and discard")
    d.add_argument("--backend", default="auto",
                   choices=["auto", "zlib", "zlib-ng", "isal", "libdeflate"],
                   help="inflate implementation for gzip, bgzf and zlib (libdeflate: BGZF "
                        "blocks only; the rest takes auto's)")
    d.set_defaults(func=cmd_decompress)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", metavar="FILE", help="input files ('-' or none: stdin)")
    p.add_argument("-o", "--output", help="output file (one input only)")
    p.add_argument("-c", "--stdout", action="store_true", help="write to standard output")
    p.add_argument("-k", "--keep", action="store_true", help="keep the input files")
    p.add_argument("--force", action="store_true",
                   help="overwrite existing outputs; write compressed data to a terminal")
    p.add_argument("-p", "--workers", default="auto", help="worker processes (default: all "
                   "cores)")
    p.add_argument("--memory-limit", default=api.DEFAULT_MEMORY_LIMIT,
                   help="cap for the whole process tree (default 512MiB)")
    p.add_argument("--chunk-size", default=None, help="bytes per chunk (default 4MiB)")
    p.add_argument("--progress", choices=["auto", "on", "off"], default="auto")
    p.add_argument("-v", "--verbose", action="store_true", help="print a summary per file")
    p.add_argument("--no-sync", dest="sync", action="store_false",
                   help="do not fsync the output before renaming it into place (as gzip and "
                        "pigz do): atomic, not durable; the input is still removed after")
    p.add_argument("--keep-cache", action="store_true",
                   help="keep the output in the page cache (by default what is written and on "
                        "disk is dropped from it as the job goes: a large output does not fill "
                        "the cache)")


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise UsageError(f"-p/--workers: expected a number or 'auto', got {value!r}") from None
    if n < 1:
        raise UsageError("-p/--workers must be at least 1")
    return n


def _targets(args: argparse.Namespace, name_output) -> list[tuple[str | None, str | None]]:
    """(input path or None for stdin, output path or None for stdout) per input."""
    files = args.files or ["-"]
    if args.output and len(files) > 1:
        raise UsageError("-o/--output takes one input file; use -c to concatenate the outputs")
    if args.output and args.stdout:
        raise UsageError("-o/--output and -c/--stdout exclude each other")
    targets = []
    for f in files:
        src = None if f == "-" else f
        if args.stdout or (src is None and not args.output):
            out = None
        elif args.output:
            out = args.output
        else:
            out = name_output(src)
        targets.append((src, out))
    return targets


def _prepare(src: str | None, out: str | None, args: argparse.Namespace) -> None:
    if src is not None and not os.path.isfile(src):
        what = "does not exist" if not os.path.exists(src) else "is not a regular file"
        raise UsageError(f"{src} {what}")
    if out is not None and os.path.exists(out) and not args.force:
        raise UsageError(f"{out} already exists; use --force to overwrite it")


def _finish(src: str | None, out: str | None, args: argparse.Namespace) -> None:
    """Give the output the input's mode and times, then remove the input unless kept."""
    if src is None or out is None:
        return
    st = os.stat(src)
    try:
        os.chmod(out, st.st_mode & 0o7777)
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    except OSError:
        pass  # not ours to change (another owner): the output is still complete
    if not args.keep:
        os.unlink(src)


def _run(source: Any, stages: list[Any], sink: Any, args: argparse.Namespace,
         chunk_size: int | str, label: str) -> None:
    total = source.size() if hasattr(source, "size") else None
    progress = Progress(total, live=None if args.progress == "auto" else args.progress == "on")
    try:
        stats = api.pipeline(source, *stages, sink, workers=_workers(args.workers),
                             memory_limit=args.memory_limit, chunk_size=chunk_size,
                             progress=progress)
    finally:
        progress.close()
    if args.verbose:
        # what was read from the file (a decoding source counts decoded bytes as its input)
        size_in = total if total is not None and not stages[0].reads_source else None
        if size_in is None and label != "<stdin>":
            size_in = os.path.getsize(label)
        size_in = stats.bytes_in if size_in is None else size_in
        ratio = stats.bytes_out / size_in if size_in else 0.0
        seconds = max(stats.wall_seconds, 1e-9)
        print(f"dataflow: {label}: {format_size(size_in)} in, {format_size(stats.bytes_out)} "
              f"out (out/in {ratio:.3f}), {stats.wall_seconds:.2f}s, "
              f"{max(size_in, stats.bytes_out) / seconds / 1e6:.1f} MB/s of uncompressed data, "
              f"{stats.workers} workers, peak memory {format_size(stats.peak_memory)} of "
              f"{format_size(stats.memory_limit)}", file=sys.stderr)


def cmd_compress(args: argparse.Namespace) -> int:
    from .registry import stage_class
    from .sinks import FileSink, StdoutSink
    from .sources import FileSource, StdinSource

    suffix, default_level, (lo, hi), stage_name, options = FORMATS[args.format]
    level = default_level if args.level is None else args.level
    if not lo <= level <= hi:
        raise UsageError(f"{args.format} levels are {lo} to {hi}, not {level}")
    if args.index and args.format != "bgzf":
        raise UsageError("--index is for -f bgzf")

    def name_output(src: str) -> str:
        if src.endswith(suffix) and not args.force:
            raise UsageError(f"{src} already has the {suffix} suffix; unchanged")
        return src + suffix

    targets = _targets(args, name_output)
    chunk_size = args.chunk_size or (BGZF_CHUNK if args.format == "bgzf" else
                                     api.DEFAULT_CHUNK_SIZE)
    for src, out in targets:
        _prepare(src, out, args)
        if out is None and sys.stdout.isatty() and not args.force:
            raise UsageError("compressed data not written to a terminal; use -o, redirect, "
                             "or --force")
        opts: dict[str, Any] = dict(options, level=level)
        if stage_name == "gzip":
            opts.update(independent=args.independent, backend=args.backend)
            if src is not None and not args.no_name and opts.get("format") is None:
                opts.update(name=os.path.basename(src),
                            mtime=int(os.stat(src).st_mtime) & 0xFFFFFFFF)
        elif stage_name == "bgzf":
            opts.update(backend=args.backend)
            if args.index:
                if out is None:
                    raise UsageError("--index needs an output file, not standard output")
                opts.update(index=out + ".gzi")
        elif args.backend != "auto":
            raise UsageError(f"--backend is for gzip and bgzf, not {args.format}")
        stage = stage_class(stage_name)(**opts)
        if hasattr(stage, "check"):
            try:
                stage.check()
            except (ValueError, ImportError) as e:
                raise UsageError(str(e)) from None
        source = FileSource(src, split="bytes") if src else StdinSource(split="bytes")
        sink = FileSink(out, sync=args.sync, keep_cache=args.keep_cache) if out else \
            StdoutSink()
        _run(source, [stage], sink, args, chunk_size, src or "<stdin>")
        _finish(src, out, args)
    return 0


def cmd_decompress(args: argparse.Namespace) -> int:
    from .registry import stage_class
    from .sinks import FileSink, NullSink, StdoutSink
    from .sources import FileSource, StdinSource

    def name_output(src: str) -> str:
        for suffix, replacement in SUFFIXES.items():
            if src.endswith(suffix) and len(src) > len(suffix):
                return src[:-len(suffix)] + replacement
        raise UsageError(f"{src}: unknown suffix (one of {', '.join(SUFFIXES)}); use -o or -c")

    if args.test:
        targets = [(None if f == "-" else f, None) for f in (args.files or ["-"])]
    else:
        targets = _targets(args, name_output)
    for src, out in targets:
        _prepare(src, out, args)
        source = FileSource(src, split="bytes") if src else StdinSource(split="bytes")
        sink = NullSink() if args.test else \
            FileSink(out, sync=args.sync, keep_cache=args.keep_cache) if out else \
            StdoutSink()
        _run(source, [stage_class("decompress")(backend=args.backend)], sink, args,
             args.chunk_size or api.DEFAULT_CHUNK_SIZE, src or "<stdin>")
        if not args.test:
            _finish(src, out, args)
    return 0
