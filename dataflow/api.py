"""The Python API: `pipeline(source, *transforms, sink)` runs a job and returns its Stats;
`stream(source, *transforms)` yields the output, in order, to the caller.

A thin layer over the plan and the coordinator: it resolves `workers="auto"` and sizes, makes
the slot plan under `memory_limit`, and drives a `Run`. A slow consumer of `stream()` stalls
the whole pipeline (no slot is freed until its bytes are taken), so memory stays flat.
"""
from __future__ import annotations

import time
from typing import Any, Iterator

from .coordinator import Run, Stats
from .chain import Chain, flatten
from .directory import DirectorySink, run_each
from .errors import DataflowError, JobTimeout, SinkError, UsageError
from .launch import START_METHODS, cpu_count
from .plan import Plan, make_plan, object_reserve
from .sizes import parse_duration, parse_size
from .resume import Checkpoints, job_key, unsupported
from .sinks import FileSink, ends_job_quietly
from .records import bind_chain, placement
from .streams import Transform

DEFAULT_CHUNK_SIZE = 4 << 20     # big enough that per-chunk costs vanish, small enough for caches
DEFAULT_MEMORY_LIMIT = 512 << 20


def resolve_workers(workers: int | str) -> int:
    if workers == "auto":
        return cpu_count()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UsageError(f"workers must be a positive integer or 'auto', got {workers!r}")
    return workers


def make_job_plan(*, workers: int | str = "auto", memory_limit: int | str = DEFAULT_MEMORY_LIMIT,
                  chunk_size: int | str = DEFAULT_CHUNK_SIZE, max_record_size: int | str = 0,
                  prefetch: int = 2, stages: Any = (), source: Any = None,
                  sink: Any = None) -> Plan:
    """The memory plan of a job: what its source and sink hold outside it (HTTP parts, a tee
    branch's own job), the context its first stage wants with each chunk and the memory its
    stages declare per worker."""
    try:
        chunk = parse_size(chunk_size)
        limit = parse_size(memory_limit)
        record = parse_size(max_record_size)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if chunk < 1:
        raise UsageError("chunk_size must be at least 1 byte")
    return make_plan(workers=resolve_workers(workers), chunk_size=chunk, memory_limit=limit,
                     max_record_size=record, prefetch=prefetch, context=context_size(stages),
                     source_buffer=source_buffer(source) + source_buffer(sink),
                     stage_memory=lambda capacity: stage_memory(stages, capacity))


def check_stages(stages: tuple[Any, ...] | list[Any]) -> list[Transform]:
    """Every stage is a Transform; only the last may write a container header or trailer."""
    for i, s in enumerate(stages):
        if not isinstance(s, Transform):
            raise UsageError(f"stage {i} ({s!r}) is not a dataflow.Transform")
        if i > 0 and s.reads_source:
            raise UsageError(f"stages[{i}] ({s.name}) decodes the source's bytes, so it must "
                             f"be the first stage")
        problem = placement(stages, i)
        if problem:
            raise UsageError(f"stages[{i}] ({s.name}) {problem}")
    return list(stages)


def source_buffer(source: Any) -> int:
    """Bytes the source (or sink) holds besides the slots (0 for most): HTTP range parts in
    the coordinator, a tee branch's own job."""
    measure = getattr(source, "buffer_bytes", None)
    return int(measure()) if callable(measure) else 0


def stage_memory(stages: Any, chunk_size: int) -> int:
    """What the stages of one worker declare they hold beyond the interpreter and the chunk:
    each stage's own (`Transform.worker_memory`: an xz encoder's tables, a model loaded in
    setup), plus the Python objects a chunk becomes (`Transform.object_memory`), reserved
    once per worker for the stage that builds the most (plan.object_reserve)."""
    own = sum(max(0, int(s.worker_memory(chunk_size))) for s in stages
              if hasattr(s, "worker_memory"))
    return own + object_reserve(stages, chunk_size)


def context_size(stages: list[Transform]) -> int:
    """Bytes of preceding stream the first stage wants with each chunk (0 for none)."""
    return max(0, int(getattr(stages[0], "context", 0))) if stages else 0


def _run(source: Any, stages: tuple[Any, ...], *, workers: int | str, memory_limit: int | str,
         chunk_size: int | str, ordered: bool, max_record_size: int | str | None,
         progress: Any, start_method: str, max_attempts: int = 4,
         chunk_timeout: float | str | None = None, worker_max_chunks: int | None = None,
         cancel: Any = None, timeout: float | str | None = None, sink: Any = None,
         nested: bool = False) -> Run:
    if start_method not in START_METHODS:
        # fork copies the caller's threads and their held locks into every worker: one
        # that was held by another thread at that moment stays held for ever
        raise UsageError(f"start_method must be one of {', '.join(START_METHODS)}, got "
                         f"{start_method!r} (fork is never used)")
    record = max_record_size if max_record_size is not None else getattr(
        source, "max_record_size", 0)
    checked = check_stages(flatten(stages))
    if hasattr(source, "record_format"):
        # the kind of records sizes the stages' object memory in the plan (a JSON line's
        # objects take less than a CSV row's), as a job file's load does; the run binds them
        # again once it has the header, and reports what does not bind (a user's stage may
        # need the header's columns: whatever it raises here is its business then)
        try:
            bind_chain(checked, source.record_format())
        except Exception:
            pass
    plan = make_job_plan(workers=workers, memory_limit=memory_limit, chunk_size=chunk_size,
                         max_record_size=record, stages=checked, source=source, sink=sink)
    chunk = parse_size(chunk_size)
    per_chunk = _duration(chunk_timeout, "chunk_timeout") if chunk_timeout is not None else None
    if worker_max_chunks is not None:
        if worker_max_chunks < 1:
            raise UsageError(f"worker_max_chunks must be at least 1, got {worker_max_chunks}")
        for i, stage in enumerate(checked):
            if stage.flushes:
                raise UsageError(f"worker_max_chunks: stages[{i}] ({stage.name}) keeps state "
                                 f"in each worker until its flush(), so its workers cannot "
                                 f"be replaced mid-job")
    decoder = checked[0].name if checked and checked[0].reads_source else None
    if decoder is not None:
        from .decoding import prepare

        source, checked = prepare(source, checked, plan.capacity, chunk)
    run = Run(source, checked, plan, ordered=ordered,
               chunk_size=chunk, progress=progress,
               start_method=start_method, max_attempts=max_attempts,
               chunk_timeout=per_chunk, worker_max_chunks=worker_max_chunks, cancel=cancel,
               timeout=_duration(timeout, "timeout") if timeout is not None else None,
               nested=nested)
    run.decoder = decoder
    return run


def _duration(value: float | str, name: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as e:
        raise UsageError(f"{name}: {e}") from None


def pipeline(source: Any, *stages_and_sink: Any, workers: int | str = "auto",
             memory_limit: int | str = DEFAULT_MEMORY_LIMIT,
             chunk_size: int | str = DEFAULT_CHUNK_SIZE, ordered: bool = True,
             max_record_size: int | str | None = None, progress: Any = None,
             start_method: str = "spawn", max_attempts: int = 4,
             chunk_timeout: float | str | None = None,
             worker_max_chunks: int | None = None, resume: bool = False,
             checkpoint_interval: float | str = 10.0, cancel: Any = None,
             timeout: float | str | None = None, _nested: bool = False) -> Stats:
    """Run source -> transforms -> sink (the last argument) and return the job's Stats.

    A file-to-file job saves checkpoints as it goes; `resume=True` continues a killed run of
    the same job from its last one (see dataflow/resume.py). `cancel` takes a CancelToken
    (cancel.py); `timeout` (seconds, or "10m") stops the job with JobTimeout past it.
    (`_nested`: run inside another job's process, by a tee Branch: its memory is not this
    job's.)"""
    if not stages_and_sink:
        raise UsageError("pipeline() needs a sink as its last argument")
    *stages, sink = stages_and_sink
    if isinstance(sink, (Transform, Chain)):
        raise UsageError("the last argument of pipeline() must be a Writable sink, "
                         f"not the transform {sink!r}")
    options = dict(workers=workers, memory_limit=memory_limit, chunk_size=chunk_size,
                   ordered=ordered, max_record_size=max_record_size, progress=progress,
                   start_method=start_method, max_attempts=max_attempts,
                   chunk_timeout=chunk_timeout, worker_max_chunks=worker_max_chunks,
                   resume=resume, checkpoint_interval=checkpoint_interval, cancel=cancel,
                   timeout=timeout)
    if isinstance(sink, DirectorySink):
        stages = flatten(stages)
        check_stages(stages)
        limit = _duration(timeout, "timeout") if timeout is not None else None
        deadline = time.monotonic() + limit if limit is not None else None

        def one_file(src: Any, out: Any) -> Stats:
            if deadline is not None:   # `timeout` bounds the whole run, not each file
                left = deadline - time.monotonic()
                if left <= 0:
                    raise JobTimeout(limit)
                options["timeout"] = left
            return pipeline(src, *stages, out, **options)
        return run_each(source, stages, sink, one_file, Stats())
    run = _run(source, tuple(stages), workers=workers, memory_limit=memory_limit,
               chunk_size=chunk_size, ordered=ordered, max_record_size=max_record_size,
               progress=progress, start_method=start_method, max_attempts=max_attempts,
               chunk_timeout=chunk_timeout, worker_max_chunks=worker_max_chunks,
               cancel=cancel, timeout=timeout, sink=sink, nested=_nested)
    if hasattr(source, "resolve") and not getattr(source, "paths", None):
        source.resolve()
    if hasattr(sink, "check"):
        sink.check(source.identities() if hasattr(source, "identities") else [])
    checkpoints = _checkpoints(run, sink, ordered, resume, checkpoint_interval)
    point = checkpoints.load() if checkpoints is not None and resume else None
    if point is not None:
        sink.adopt(point.temp, point.output_bytes)
        run.resume_point = point
    else:
        sink.open()
        if checkpoints is not None:
            checkpoints.start()
    if checkpoints is not None:
        run.on_commit = checkpoints.commit
    reports = _reports(run)
    it = iter(run)
    try:
        try:
            for piece in it:
                sink.write(piece)
        except SinkError as e:
            if not ends_job_quietly(e):
                raise
            # the job ends here; the folds saw part of the input only: no results, no reports
            it.close()
            run.stats.sink_closed_early = True
            for _, stage in reports:
                stage.discard_report()
            reports = []
        for key, stage in reports:    # a fold's `report:` file, renamed into place after
            stage.prepare_report(run.stats.results[key])          # the output is committed
        if checkpoints is not None:
            checkpoints.wait()
        sink.close()
        for _, stage in reports:
            stage.commit_report()
    except BaseException as e:
        # the first error is the one raised: one from the clean-up only becomes a note on it
        for undo in [*(stage.discard_report for _, stage in reports),
                     *([checkpoints.wait] if checkpoints is not None else []), sink.abort]:
            try:
                undo()
            except Exception as later:  # noqa: BLE001 - reported on the first error
                e.add_note(f"while cleaning up after it: {type(later).__name__}: {later}")
        raise
    finally:
        it.close()  # teardown now, even when the error was raised outside the generator
        if checkpoints is not None and sink.tmp is None:
            checkpoints.remove()  # finished, or failed and cleaned up: nothing to resume
    return run.stats


def _reports(run: Run) -> list[tuple[str, Any]]:
    return [(key, s) for key, s in zip(run.stage_keys, run.stages) if getattr(s, "report", None)]


def _checkpoints(run: Run, sink: Any, ordered: bool, resume: bool,
                 interval: float | str) -> Checkpoints | None:
    """Checkpoints for a resumable file-to-file job; None (or UsageError with `resume`)."""
    if not isinstance(sink, FileSink):
        if resume:
            raise UsageError("cannot resume: only a job that writes a file can be resumed")
        return None
    why = unsupported(run.source, run.stages, ordered)
    if run.decoder is not None:
        why = f"stages[0] ({run.decoder}) decodes the source; its jobs cannot resume"
    if why is not None:
        if resume:
            raise UsageError(f"cannot resume: {why}")
        Checkpoints.discard(sink.path)  # an older run's manifest would mislead a later resume
        return None
    key = job_key(run.source, run.stages, capacity=run.plan.capacity,
                  chunk_size=run.chunk_size, context=run.plan.context)
    return Checkpoints(sink, run.source, key, interval=_duration(interval, "checkpoint_interval"))


def stream(source: Any, *stages: Any, workers: int | str = "auto",
           memory_limit: int | str = DEFAULT_MEMORY_LIMIT,
           chunk_size: int | str = DEFAULT_CHUNK_SIZE, ordered: bool = True,
           max_record_size: int | str | None = None, start_method: str = "spawn",
           max_attempts: int = 4, chunk_timeout: float | str | None = None,
           worker_max_chunks: int | None = None, cancel: Any = None,
           timeout: float | str | None = None) -> Iterator[bytes]:
    """Yield the output as bytes, in order. Leaving the loop early tears the job down."""
    run = _run(source, stages, workers=workers, memory_limit=memory_limit, chunk_size=chunk_size,
               ordered=ordered, max_record_size=max_record_size, progress=None,
               start_method=start_method, max_attempts=max_attempts,
               chunk_timeout=chunk_timeout, worker_max_chunks=worker_max_chunks,
               cancel=cancel, timeout=timeout)
    it = iter(run)
    try:
        for piece in it:
            yield bytes(piece)
        for key, stage in _reports(run):
            stage.write_report(run.stats.results[key])
    finally:
        it.close()


__all__ = ["pipeline", "stream", "DataflowError"]
