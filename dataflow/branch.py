"""Branch: a tee branch with stages of its own (Node's `source.pipe(gzip).pipe(file)` next to
`source.pipe(file2)`; the Web Streams `tee()` then `pipeThrough` on one side).

Rules:
- `Branch(*stages, sink)` is a Writable. Opened, it starts `stages -> sink` as a job of its own
  (its own worker processes, under its own `memory_limit`, 128 MiB by default), in a thread of
  the outer job's process, reading what the tee writes to it, in order. The outer job's plan
  sets that limit aside (`buffer_bytes`), so the whole tree stays under its limit; the
  branch's job counts its own workers and arena, not the process it shares.
- `workers: auto` is as many as the CPUs, less while the branch's plan does not fit its limit.
- `write` hands the data over in pieces of at most `chunk_size` through a one-place queue: the
  outer job goes at the pace of the branch, and at most three pieces are held between them.
- The branch's job reframes the bytes by `split` (`bytes` when every stage takes any bytes,
  else `lines`), `max_record_size` (default `chunk_size`) and `errors`, as a source does.
- Committing is in two steps, so that a tee commits nothing when any branch fails: `finish`
  ends the stream and waits for the branch's job, whose sink is then complete but not yet
  committed; `close` commits it. A branch's job that ended early and well (a `head` stage, a
  command sink that stopped reading) takes no more data and commits what it wrote.
- A failure of the branch's job is raised as it is, with a note naming the branch; `abort`
  cancels the branch's job, which aborts its sink and stops its workers.
"""
from __future__ import annotations

import queue
import threading
from typing import Any

from .cancel import CancelToken
from .errors import ResourceError, SourceError, UsageError
from .sizes import parse_size

_END = object()
_POLL = 0.1     # seconds between looks at the other side while waiting
_HELD = 3       # pieces held at most: the one being put, the queued one, the one being read


class _Held:
    """The branch's sink as its job sees it: written and aborted as usual, but committed only
    when the Branch is closed (after every branch of the tee has finished)."""

    def __init__(self, sink: Any):
        self.sink = sink
        self.finished = False

    def check(self, input_ids: list[tuple[int, int]]) -> None:
        if hasattr(self.sink, "check"):
            self.sink.check(input_ids)

    def open(self) -> None:
        self.finished = False
        self.sink.open()

    def write(self, data: memoryview) -> None:
        self.sink.write(data)

    def close(self) -> None:
        self.finished = True

    def abort(self) -> None:
        self.finished = False
        self.sink.abort()


class Branch:
    """A Writable that runs `stages -> sink` over what it is given, as a job of its own."""

    def __init__(self, *stages_and_sink: Any, workers: int | str = "auto",
                 memory_limit: int | str = "128MiB", chunk_size: int | str = "4MiB",
                 split: str | None = None, max_record_size: int | str | None = None,
                 errors: str = "strict", name: str = "branch"):
        if not stages_and_sink:
            raise UsageError("Branch needs a sink as its last argument")
        *stages, sink = stages_and_sink
        from .chain import flatten
        self.stages = flatten(stages)
        self.sink = sink
        self.memory_limit = parse_size(memory_limit)
        self.chunk_size = parse_size(chunk_size)
        self.max_record_size = parse_size(max_record_size) if max_record_size is not None \
            else self.chunk_size
        if split is None:
            split = "lines" if any(s.needs_records for s in self.stages) else "bytes"
        self.split = split
        self.errors = errors
        self.name = name
        self.workers = self._workers(workers)
        self.path = getattr(sink, "path", None)   # the tee refuses two branches on one file
        self.stats: Any = None
        self.error: BaseException | None = None
        self._held = _Held(sink)
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None
        self._token: CancelToken | None = None
        self._aborting = False
        self._finished = False

    def _workers(self, workers: int | str) -> int:
        """The workers the branch's plan fits (`auto`: the most, up to the CPUs); raises
        ResourceError naming the branch when not even the number asked for fits."""
        from .api import make_job_plan, resolve_workers

        counts = range(resolve_workers(workers), 0, -1) if workers == "auto" else [workers]
        for n in counts:
            try:
                make_job_plan(workers=n, memory_limit=self.memory_limit,
                              chunk_size=self.chunk_size, max_record_size=self.max_record_size,
                              stages=self.stages)
                return int(n)
            except ResourceError as e:
                last = e
        raise ResourceError(f"{self.name}: {last}")

    def buffer_bytes(self) -> int:
        """Set aside by the outer job's plan: the branch's own limit (less the coordinator's
        share: that process is the outer job's, planned already) and the pieces held on their
        way to it."""
        from .plan import COORDINATOR
        return max(0, self.memory_limit - COORDINATOR) + _HELD * self.chunk_size

    def check(self, input_ids: list[tuple[int, int]]) -> None:
        self._held.check(input_ids)

    def open(self) -> None:
        from .iterables import IterableSource

        self._queue = queue.Queue(maxsize=1)
        self._aborting = self._finished = False
        self.error = None
        self.stats = None
        self._token = CancelToken()
        source = IterableSource(self._feed(), split=self.split, errors=self.errors,
                                max_record_size=self.max_record_size)
        self._thread = threading.Thread(target=self._run, args=(source,), daemon=True,
                                        name=f"dataflow-{self.name}")
        self._thread.start()

    def _run(self, source: Any) -> None:
        from .api import pipeline

        try:
            self.stats = pipeline(source, *self.stages, self._held, workers=self.workers,
                                  memory_limit=self.memory_limit, chunk_size=self.chunk_size,
                                  max_record_size=self.max_record_size, cancel=self._token,
                                  _nested=True)
        except BaseException as e:
            self.error = e

    def _feed(self) -> Any:
        while True:
            try:
                item = self._queue.get(timeout=_POLL)
            except queue.Empty:
                if self._aborting:
                    raise SourceError("the tee was aborted", file=f"<{self.name}>") from None
                continue
            if item is _END:
                return
            yield item

    def _put(self, item: Any) -> bool:
        """Hand `item` to the branch's job; False when that job has ended well already."""
        assert self._thread is not None
        while True:
            if not self._thread.is_alive():
                if self.error is not None:
                    raise self._named(self.error)
                return False
            try:
                self._queue.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue

    def _named(self, e: BaseException) -> BaseException:
        note = (f"(in the tee's {self.name}: "
                f"{' -> '.join([s.name for s in self.stages] + [type(self.sink).__name__])})")
        if note not in getattr(e, "__notes__", []):
            e.add_note(note)
        return e

    def write(self, data: memoryview) -> None:
        step = self.chunk_size
        for at in range(0, len(data), step):
            if not self._put(bytes(data[at:at + step])):
                return      # the branch's job ended early and well (head): it takes no more

    def finish(self) -> None:
        """End the stream and wait for the branch's job; its sink is complete, not committed."""
        if self._finished:
            return
        self._put(_END)
        assert self._thread is not None
        self._thread.join()
        self._release_token()
        if self.error is not None:
            raise self._named(self.error)
        self._finished = True

    def close(self) -> None:
        self.finish()
        if self._held.finished:
            self.sink.close()

    def abort(self) -> None:
        self._aborting = True
        if self._token is not None:
            self._token.cancel("the tee was aborted")
        if self._thread is not None:
            self._thread.join()
        self._release_token()
        if self._held.finished:      # finished, then another branch failed: not committed
            self._held.abort()

    def _release_token(self) -> None:
        if self._token is not None:
            self._token.close()
            self._token = None

