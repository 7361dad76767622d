"""The public stream protocols, in the Node.js vocabulary.

- A **Readable** produces bytes: the coordinator calls `open()`, then `readinto(buffer)` until it
  returns 0, then `close()`. It reads straight into shared memory: no intermediate bytes.
- A **Transform** runs in every worker: `setup()` once per worker, `transform(data, chunk)` per
  chunk, `flush()` once per worker at end of stream. It may leave a small per-chunk summary in
  `chunk.summary`; the sink combines summaries in order with `fold(acc, summary)`, starting
  from `initial()`, and `result(acc)` gives the stage's final result (reported in the stats).
  The last stage may wrap the output in a container: `header()` is written before the first
  byte and `trailer(result)` after the last (a gzip header, and a trailer with the CRC that
  the fold combined). A first stage may ask for `context`: up to that many bytes of the stream
  just before each chunk, handed over by the source in `chunk.context` (pigz-style priming).
  Output can be bytes-like, a list of parts, an iterator of parts (made as they are
  copied), or a `SlotFiller`: output the transform writes straight into the output slot.
- A **Writable** consumes bytes in order in the coordinator: `open()`, `write(data)`,
  `close()` to commit, `abort()` to drop everything written (called instead of close on error).

Built-ins and user plugins implement the same protocols. Transforms reach workers as a spec
(registry name or `module:Class` plus plain-data arguments), never as pickled objects.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import msgspec


class ChunkInfo:
    """What a transform knows about the chunk it is given. Reused per worker: do not keep it."""

    __slots__ = ("seq", "offset", "length", "attempt", "summary", "context", "header")

    def __init__(self) -> None:
        self.seq = 0
        self.offset = 0
        self.length = 0
        self.attempt = 1
        self.summary: Any = None
        # the stream's bytes just before this chunk (first stage only, when it asks for them)
        self.context: memoryview | None = None
        # the source's header record (a CSV header), the same for every chunk; b"" for none
        self.header = b""


class SlotFiller:
    """A transform's output that it writes into the output slot itself, saving a copy (BGZF
    blocks inflated in place: workers/decompress.py). The worker calls `fill(dest)` with the
    free part of the slot until `done`; each call writes from dest[0] and returns how many
    bytes it wrote. Writing nothing into a slot that has room for nothing else means "my next
    piece needs an empty slot"; into an empty one, it is an error. Once done, what it could
    not write itself (`rest`: bytes-like parts) is copied after, as any output. When another
    stage follows, the worker iterates the filler instead (its parts, as bytes-like objects),
    so a subclass is also an iterator. One way or the other, once. `largest_piece`: the most
    one piece may need; with smaller slots the worker iterates the filler instead."""

    done = False
    largest_piece = 0
    rest: Any = ()

    def fill(self, dest: memoryview) -> int:
        raise NotImplementedError

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        raise NotImplementedError


class _ReadableMeta(type(Protocol)):  # type: ignore[misc]
    # constructors live on the metaclass: on the Protocol itself they would count as members
    # that every Readable must have
    def from_iterable(cls, iterable: Any, **framing: Any) -> Any:
        """A Readable over an iterable (or generator) of bytes or str, like Node's
        `Readable.from`; `framing` as for any source (split, delimiter, ...)."""
        from .iterables import IterableSource

        return IterableSource(iterable, **framing)


class _WritableMeta(type(Protocol)):  # type: ignore[misc]
    def from_callable(cls, fn: Any, **hooks: Any) -> Any:
        """A Writable that calls `fn(bytes)` with each output piece, in order."""
        from .iterables import CallableSink

        return CallableSink(fn, **hooks)


@runtime_checkable
class Readable(Protocol, metaclass=_ReadableMeta):
    def open(self) -> None: ...
    def readinto(self, buffer: memoryview) -> int: ...
    def close(self) -> None: ...


@runtime_checkable
class Writable(Protocol, metaclass=_WritableMeta):
    def open(self) -> None: ...
    def write(self, data: memoryview) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class Transform:
    """Base class for transforms. Subclasses override `transform`, and as needed the rest.

    Constructor arguments must be plain data (str, int, float, bool, bytes, lists, dicts):
    they are how the transform is rebuilt inside each worker process.
    `transform` returns the output as a bytes-like object, or None for no output; returning
    `data` itself (unchanged) costs no copy at all.
    """

    name = "transform"
    flushes = False  # True when flush() may return output; set automatically for overrides
    # bytes of the stream before each chunk this transform wants in `chunk.context`; honoured
    # for the first stage only (its input is the source's bytes), elsewhere context is None
    context = 0
    # False for stages that take any bytes (compressors, passthrough): their chunks may be cut
    # anywhere, e.g. at the member boundaries of a compressed input decoded in parallel
    needs_records = True
    # True for a stage that decodes the source itself (decompress): it must come first
    reads_source = False
    # True for a byte stage whose output holds whole records of its input's format (grep keeps
    # or drops lines): the record stages after it still see CSV rows or JSON values
    keeps_format = False

    def __new__(cls, *args: Any, **kwargs: Any) -> "Transform":
        self = super().__new__(cls)
        self._spec_args = (list(args), dict(kwargs))
        return self

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.flush is not Transform.flush:
            cls.flushes = True

    def setup(self) -> None:
        """Once per worker, before the first chunk: compile, load, connect."""

    def worker_memory(self, chunk_size: int) -> int:
        """Bytes this stage holds in each worker beyond the chunk it is given and the output it
        builds (an encoder's tables, a model loaded in setup), for chunks of `chunk_size`. The
        memory plan sets this much aside per worker, and the watchdog allows it."""
        return 0

    def object_memory(self, chunk_size: int) -> int:
        """Bytes of Python objects (lines, records, their fields) this stage builds from a chunk
        of `chunk_size` and drops after it. The worker keeps that much of Python's small-object
        memory mapped for the whole run (worker._reserve_object_memory): without it, the
        memory of every chunk's objects goes back to the system when they are freed and is
        faulted in again for the next chunk. The memory plan counts it per worker."""
        return 0

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        return data

    def flush(self) -> bytes | None:
        """Once per worker at end of stream; output is written after all chunks, by worker."""
        return None

    # ordered fold, run at the sink in the coordinator
    def initial(self) -> Any:
        return None

    def fold(self, acc: Any, summary: Any) -> Any:
        return acc

    def result(self, acc: Any) -> Any:
        return acc

    # container framing, written by the sink around the output (last stage only)
    def header(self) -> bytes | None:
        """Bytes written before the first output byte (a container header)."""
        return None

    def trailer(self, result: Any) -> bytes | None:
        """Bytes written after the last output byte, given this stage's `result(acc)`."""
        return None

    @classmethod
    def frames_output(cls) -> bool:
        """True when this transform writes a header or trailer (so it must be the last stage)."""
        return cls.header is not Transform.header or cls.trailer is not Transform.trailer

    def spec(self) -> dict[str, Any]:
        """How a worker rebuilds this transform: class reference plus constructor arguments."""
        args, kwargs = getattr(self, "_spec_args", ([], {}))
        cls = type(self)
        ref = f"{cls.__module__}:{cls.__qualname__}"
        try:
            msgspec.msgpack.encode([args, kwargs])
        except (TypeError, msgspec.EncodeError) as e:
            raise TypeError(f"{ref}: constructor arguments must be plain data to reach worker "
                            f"processes: {e}") from None
        return {"class": ref, "args": args, "kwargs": kwargs}


class RecordTransform(Transform):
    """A transform over records (lines, JSON values, CSV rows): override `process`.

    The worker decodes a chunk once for a run of record stages and encodes it once after them
    (see records.py). `bind(fmt)` sees the input's RecordFormat before any data flows, in the
    coordinator and in each worker: check fields there (`fmt.getter(name)` raises ValueError
    for a field the format cannot have) and return the output's format (`fmt` by default).
    """

    record_mode = True
    needs_records = True
    input_format: Any = None    # set by bind()
    output_format: Any = None

    def bind(self, fmt: Any) -> Any:
        if not fmt.records:
            raise ValueError("its input has no records here: a stage before it (a compressor, "
                             "a chunk function, exec) turned them into plain bytes; put it "
                             "earlier in the chain")
        self.input_format = self.output_format = fmt
        return fmt

    def process(self, records: list[Any], chunk: ChunkInfo) -> list[Any]:
        return records

    def object_memory(self, chunk_size: int) -> int:
        """The records a chunk of the input format decodes into (records.OBJECTS); before
        bind(), the most any format needs."""
        from .records import MOST_OBJECTS, OBJECTS

        fmt = self.input_format
        return (MOST_OBJECTS if fmt is None else OBJECTS.get(fmt.kind, MOST_OBJECTS)) * chunk_size

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        records = self.process(self.input_format.decode(data), chunk)
        return self.output_format.encode(records)
