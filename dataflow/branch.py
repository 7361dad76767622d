"""Branch: a tee branch with stages of its own (Node's `source.pipe(gzip).pipe(file)` next to
`source.pipe(file2)`; the Web Streams `tee()` then `pipeThrough` on one side).

Rules:
- `Branch(*stages, sink)` is a Writable. Opened, it starts `stages -> sink` as a job of its own
  (its own worker processes, under its own `memory_limit`, 128 MiB by default), in a thread of
  the outer job's process, reading what the tee writes to it in order. The outer job's plan
  sets that limit aside (`buffer_bytes`), so the whole tree stays under its limit.
- `write` hands each piece over through a one-place queue: the outer job goes at the pace of
  the branch, and at most two pieces wait between them.
- The branch's job reframes the bytes it is given by `split` (`bytes` when every stage takes
  any bytes, else `lines`), as any source does.
- A branch whose own sink ended early (a `head`) raises `SinkClosedEarly` from `write`, so the
  tee drops it and goes on. Any other failure of the branch's job is raised from `write` or
  `close` as it is, with a note naming the branch; `abort` cancels the branch's job, which
  aborts its sink (nothing is committed) and stops its workers.
- `close` ends the stream and waits for the branch's job, whose sink commits then.
"""
from __future__ import annotations

import queue
import threading
from typing import Any

from .cancel import CancelToken
from .errors import SourceError, UsageError
from .sinks import BrokenPipe
from .sizes import parse_size

_END = object()
_POLL = 0.1     # seconds between looks at the other side while waiting


class BranchEnded(BrokenPipe):
    """The branch's own sink ended early, quietly (a `head`): the tee drops the branch."""

    ends_job_quietly = True


class Branch:
    """A Writable that runs `stages -> sink` over what it is given, as a job of its own."""

    def __init__(self, *stages_and_sink: Any, workers: int | str = "auto",
                 memory_limit: int | str = "128MiB", chunk_size: int | str = "4MiB",
                 split: str | None = None, name: str = "branch"):
        if not stages_and_sink:
            raise UsageError("Branch needs a sink as its last argument")
        *stages, sink = stages_and_sink
        from .chain import flatten
        self.stages = flatten(stages)
        self.sink = sink
        self.workers = workers
        self.memory_limit = parse_size(memory_limit)
        self.chunk_size = parse_size(chunk_size)
        if split is None:
            split = "lines" if any(s.needs_records for s in self.stages) else "bytes"
        self.split = split
        self.name = name
        self.path = getattr(sink, "path", None)   # the tee refuses two branches on one file
        self.stats: Any = None
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None
        self._token: CancelToken | None = None
        self._aborting = False

    def buffer_bytes(self) -> int:
        """Set aside by the outer job's plan: the branch's own limit (less the coordinator's
        share, which is the outer job's process, planned already) and the two pieces that may
        wait on their way to it."""
        from .plan import COORDINATOR
        return max(0, self.memory_limit - COORDINATOR) + 2 * self.chunk_size

    def check(self, input_ids: list[tuple[int, int]]) -> None:
        if hasattr(self.sink, "check"):
            self.sink.check(input_ids)

    def open(self) -> None:
        from .iterables import IterableSource

        self._queue = queue.Queue(maxsize=1)
        self._aborting = False
        self.error = None
        self.stats = None
        self._token = CancelToken()
        source = IterableSource(self._feed(), split=self.split,
                                max_record_size=self.chunk_size)
        self._thread = threading.Thread(target=self._run, args=(source,), daemon=True,
                                        name=f"dataflow-{self.name}")
        self._thread.start()

    def _run(self, source: Any) -> None:
        from .api import pipeline

        try:
            self.stats = pipeline(source, *self.stages, self.sink, workers=self.workers,
                                  memory_limit=self.memory_limit, chunk_size=self.chunk_size,
                                  cancel=self._token)
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

    def _put(self, item: Any) -> None:
        assert self._thread is not None
        while True:
            if not self._thread.is_alive():
                self._ended()
            try:
                self._queue.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def _ended(self) -> None:
        """The branch's job is over before its input: say why."""
        if self.error is not None:
            raise self._named(self.error)
        if self.stats is not None and getattr(self.stats, "sink_closed_early", False):
            raise BranchEnded(f"{self.name}: its sink ended early")
        raise SourceError(f"{self.name}: its job ended before its input", file=self.name)

    def _named(self, e: BaseException) -> BaseException:
        note = f"(in the tee's {self.name}: {' -> '.join(s.name for s in self.stages)} -> " \
               f"{type(self.sink).__name__})"
        if note not in getattr(e, "__notes__", []):
            e.add_note(note)
        return e

    def write(self, data: memoryview) -> None:
        self._put(bytes(data))

    def close(self) -> None:
        self._put(_END)
        assert self._thread is not None
        self._thread.join()
        if self.error is not None:
            raise self._named(self.error)

    def abort(self) -> None:
        self._aborting = True
        if self._token is not None:
            self._token.cancel("the tee was aborted")
        if self._thread is not None:
            self._thread.join()
        if self._token is not None:
            self._token.close()
            self._token = None
