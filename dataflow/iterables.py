"""Python objects as stream ends: an iterable as a Readable (Node's `Readable.from`), a
callable as a Writable.

Rules:
- `IterableSource` takes any iterable (a list, a generator, a file object) of bytes-like
  items or str (encoded as UTF-8, or `encoding`). Items are copied into the slots as they
  come, cut into chunks by the usual framing (`split`); an item may hold many records or part
  of one. An item of another type fails the job naming its index and type. The iterable is
  pulled only as fast as slots free up (backpressure reaches a generator), and a generator is
  closed (`close()`) when the job ends, however it ends.
- It can be read once: a second job over the same generator would see it exhausted. A list is
  read again from the start each time.
- `CallableSink` calls `fn(data)` with each output piece, in order, as `bytes` (a copy: the
  piece's memory is reused as soon as the call returns). `close` and `abort`, when given, are
  called at the end (commit) and on error. A coroutine function is allowed under
  `apipeline()`, which runs it on the caller's event loop (see aio.py).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable

from .errors import SinkError, SourceError
from .sources import Framed


class IterableSource(Framed):
    """A Readable over a Python iterable of bytes or str."""

    def __init__(self, iterable: Iterable[Any], *, encoding: str = "utf-8",
                 split: str = "lines", delimiter: bytes | str = b"\n",
                 max_record_size: int = 0, record_start: str | None = None,
                 record_size: int = 0, header: bool | None = None, errors: str = "strict"):
        if isinstance(iterable, (bytes, bytearray, memoryview, str)):
            iterable = [iterable]   # one item, not an iterable of ints or characters
        self.iterable = iterable
        self.encoding = encoding
        self._framing(split, delimiter, max_record_size, record_start, record_size, header,
                     errors)
        self._it: Any = None
        self._item = memoryview(b"")
        self._index = -1
        self._offset = 0

    def size(self) -> int | None:
        return None

    def open(self) -> None:
        try:
            self._it = iter(self.iterable)
        except TypeError:
            raise SourceError(f"{type(self.iterable).__name__} is not iterable",
                              file="<iterable>") from None
        self._item = memoryview(b"")
        self._index = -1
        self._offset = 0

    def readinto(self, buffer: memoryview) -> int:
        while not len(self._item):
            self._item.release()   # the generator may reuse (resize) the item it gave us
            if self._it is None:
                return 0
            try:
                item = next(self._it)
            except StopIteration:
                self._it = None
                return 0
            except Exception as e:   # the user's generator raised: name the item it was at
                raise SourceError(f"the iterable raised {type(e).__name__}: {e} (after item "
                                  f"{self._index}, byte {self._offset})", file="<iterable>",
                                  offset=self._offset) from e
            self._index += 1
            if isinstance(item, str):
                item = item.encode(self.encoding)
            elif not isinstance(item, (bytes, bytearray, memoryview)):
                raise SourceError(f"item {self._index} of the iterable is "
                                  f"{type(item).__name__}; expected bytes or str",
                                  file="<iterable>", offset=self._offset)
            self._item = memoryview(item).cast("B")
        n = min(len(buffer), len(self._item))
        buffer[:n] = self._item[:n]
        self._item = self._item[n:]
        self._offset += n
        return n

    def close(self) -> None:
        it, self._it = self._it, None
        self._item.release()
        self._item = memoryview(b"")
        close = getattr(it, "close", None)
        if close is not None:   # a generator: run its finally blocks now
            close()

    def where(self, offset: int) -> str:
        return f"<iterable>: byte {offset}"

    def identities(self) -> list[tuple[int, int]]:
        return []


class CallableSink:
    """A Writable that hands each output piece, in order, to `fn(data: bytes)`."""

    def __init__(self, fn: Callable[[bytes], Any], *, close: Callable[[], Any] | None = None,
                 abort: Callable[[], Any] | None = None):
        if not callable(fn):
            raise TypeError(f"CallableSink needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.on_close = close
        self.on_abort = abort
        self.bytes = 0
        self.is_async = inspect.iscoroutinefunction(fn)
        self.runner: Callable[[Any], Any] | None = None   # set by apipeline for async fns

    def check(self, input_ids: list[tuple[int, int]]) -> None:
        hooks = (self.on_close, self.on_abort)
        if self.runner is None and any(inspect.iscoroutinefunction(h) for h in hooks):
            raise SinkError("a hook of the callable sink is a coroutine function: run the job "
                            "with `await dataflow.apipeline(...)`")
        if self.is_async and self.runner is None:
            raise SinkError(f"{getattr(self.fn, '__qualname__', self.fn)} is a coroutine "
                            f"function: run the job with `await dataflow.apipeline(...)`")

    def open(self) -> None:
        self.bytes = 0

    def write(self, data: memoryview) -> None:
        result = self.fn(bytes(data))
        if self.is_async:
            assert self.runner is not None
            self.runner(result)    # waits for the coroutine on the caller's event loop
        self.bytes += len(data)

    def _await(self, result: Any, hook: str) -> None:
        if not inspect.isawaitable(result):
            return
        if self.runner is None:
            close = getattr(result, "close", None)
            if close is not None:
                close()            # never awaited: say so, rather than drop it silently
            raise SinkError(f"the {hook} hook of the callable sink is a coroutine function: "
                            f"run the job with `await dataflow.apipeline(...)`")
        self.runner(result)

    def close(self) -> None:
        if self.on_close is not None:
            self._await(self.on_close(), "close")

    def abort(self) -> None:
        if self.on_abort is not None:
            try:
                self._await(self.on_abort(), "abort")
            except Exception:   # abort must not hide the error that caused it
                pass
