"""DirectorySink: one output file per input file, under mirrored names (recompress a tree).

Rules:
- The source is a FileSource of one or more files (paths or globs, `**` for a tree). Each
  input `IN` becomes `directory / relpath(IN, root)`, with `strip_suffix` removed from the end
  of the name when present and `suffix` added: `logs/a/x.log.gz` -> `out/a/x.log.zst` with
  `strip_suffix: .gz, suffix: .zst`. `root` defaults to the deepest directory that holds
  every input; an input outside an explicit `root` is an error.
- Everything that can be refused is refused before the first file starts: two inputs that
  map to one output, an output that is one of the inputs, an existing output without
  `overwrite`, a directory that cannot be made or written.
- Each file is its own job (the same stages, options and memory cap) writing through a
  FileSink: temp file, then rename. A failure stops the run: the files already written are
  complete and stay; the failing file's output never appears; the error says which input
  failed and how many were done.
- Stats add up over the files; `results` maps each input path to its job's fold results.
- One job per file costs the workers' start-up each time (a few tenths of a second): fine
  for a tree of large files, slow for thousands of tiny ones.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from .errors import SinkError, UsageError


class DirectorySink:
    """Write one output per input file of a FileSource, mirroring the inputs' names."""

    def __init__(self, directory: str | os.PathLike, *, suffix: str = "",
                 strip_suffix: str = "", root: str | os.PathLike | None = None,
                 overwrite: bool = True, sync: bool = True, keep_cache: bool = False):
        self.directory = os.fspath(directory)
        self.suffix = suffix
        self.strip_suffix = strip_suffix
        self.root = os.fspath(root) if root is not None else None
        self.overwrite = overwrite
        self.sync = sync
        self.keep_cache = keep_cache
        self.bytes = 0
        self.outputs: list[str] = []   # files written so far

    def targets(self, paths: list[str]) -> list[str]:
        """The output path of each input path, in order."""
        absolute = [os.path.abspath(p) for p in paths]
        root = os.path.abspath(self.root) if self.root is not None else \
            os.path.commonpath([os.path.dirname(p) for p in absolute])
        out = []
        for path, full in zip(paths, absolute):
            rel = os.path.relpath(full, root)
            if rel == os.pardir or rel.startswith(os.pardir + os.sep):
                raise SinkError(f"input {path} is outside root {self.root}: its output name "
                                f"cannot be mirrored under {self.directory}")
            if self.strip_suffix and rel.endswith(self.strip_suffix) and \
                    len(os.path.basename(rel)) > len(self.strip_suffix):
                rel = rel[:-len(self.strip_suffix)]
            out.append(os.path.join(self.directory, rel + self.suffix))
        return out

    # a DirectorySink is driven by pipeline() one file at a time, never written to directly
    def _not_a_stream(self, *args: Any) -> None:
        raise UsageError("a DirectorySink writes one file per input: use it as the sink of "
                         "pipeline() with a FileSource, not in stream() or a Tee")

    open = write = close = _not_a_stream

    def abort(self) -> None:
        pass


def _one_file(source: Any, path: str) -> Any:
    from .sources import FileSource

    return FileSource(path, split=source.split, delimiter=source.delimiter,
                      max_record_size=source.max_record_size, record_start=source.record_start,
                      record_size=source.record_size,
                      header=source.header if source.split in ("csv", "tsv") else None,
                      errors=source.errors)


def run_each(source: Any, stages: list[Any], sink: DirectorySink,
             run: Callable[[Any, Any], Any], empty_stats: Any) -> Any:
    """Run `run(file_source, file_sink)` for each input; return the summed Stats."""
    from .sinks import FileSink
    from .sources import FileSource, stat_files

    if type(source) is not FileSource:
        raise UsageError(f"a DirectorySink needs a file source (one output per input file), "
                         f"not {type(source).__name__}")
    if source.ranged:
        raise UsageError("a DirectorySink cannot be used with a byte range")
    paths = source.paths or source.expand()   # each file is checked by its own job
    targets = sink.targets(paths)
    seen: dict[str, str] = {}
    for path, target in zip(paths, targets):
        key = os.path.normcase(os.path.abspath(target))
        if key in seen:
            raise SinkError(f"inputs {seen[key]} and {path} would both be written to {target}: "
                            f"change suffix/strip_suffix or root")
        seen[key] = path
    inputs = [(st.st_dev, st.st_ino) for st in stat_files(paths)]
    sinks = []
    for target in targets:
        folder = os.path.dirname(os.path.abspath(target))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise SinkError(f"cannot make directory {folder} for {target}: {e.strerror}") \
                from None
        file_sink = FileSink(target, sync=sink.sync, overwrite=sink.overwrite,
                             keep_cache=sink.keep_cache)
        file_sink.check(inputs)
        sinks.append(file_sink)
    total = empty_stats
    sink.outputs = []
    for n, (path, file_sink) in enumerate(zip(paths, sinks)):
        try:
            stats = run(_one_file(source, path), file_sink)
        except BaseException as e:
            if hasattr(e, "add_note"):
                e.add_note(f"while writing {file_sink.path} from {path} (file {n + 1} of "
                           f"{len(paths)}; the {n} before it were written)")
            raise
        sink.outputs.append(file_sink.path)
        sink.bytes += stats.bytes_out
        total = _add(total, stats, path)
    return total


def _add(total: Any, stats: Any, path: str) -> Any:
    for field in ("bytes_in", "bytes_out", "chunks", "retries", "recycled", "timed_out",
                  "memory_kills"):
        setattr(total, field, getattr(total, field) + getattr(stats, field))
    for field in ("wall_seconds", "paused_seconds"):
        setattr(total, field, getattr(total, field) + getattr(stats, field))
    total.peak_memory = max(total.peak_memory, stats.peak_memory)
    for key in ("workers", "slots", "slot_size", "memory_limit"):
        setattr(total, key, getattr(stats, key))
    total.stage_seconds = {k: total.stage_seconds.get(k, 0.0) + v
                           for k, v in stats.stage_seconds.items()}
    if stats.results:
        total.results = {**total.results, path: stats.results}
    return total
