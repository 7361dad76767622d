"""python: run a user function over each chunk, each line or each record.

Rules:
- `callable` is `module:function`. `args` are passed as keyword arguments on every call.
- `chunk` mode: the function gets the chunk's bytes (whole records) and returns bytes, str or
  None (nothing).
- `line` mode: it gets each line without its delimiter (bytes) and returns bytes or str
  (written with the delimiter added back), or None to drop the line; a last line that had no
  delimiter gets none.
- `record` mode: it gets each decoded record of the source's format — a JSON value (jsonl), a
  dict keyed by the header's columns (csv/tsv with a header), a list of str (csv/tsv without),
  a str (lines, decoded as UTF-8 as the source's `errors` says) — and returns a record of the same
  kind or None to drop it; a list returned for a JSON record stays one record (a JSON array).
  Consecutive record stages share one decode (see records.py).
- The reference and the signature are checked by `dataflow validate`, before any worker starts.
- An exception in the function names the line (line mode: its line within the chunk and byte
  offset; record mode: the record's number within the chunk) and keeps the function's
  traceback; the engine adds the chunk and the stream offset.
- `setup` (optional, `module:function`) is called once per worker with `args`; what it
  returns is passed to the function as `state=`: load a model or compile a pattern once.
  `memory` (a size) is what it holds per worker: the memory plan sets it aside.
"""
from __future__ import annotations

import inspect
from typing import Any, Literal

import msgspec

from dataflow.records import OBJECTS, RecordError
from dataflow.predicates import OptionError
from dataflow.registry import resolve
from dataflow.sizes import parse_size
from dataflow.streams import ChunkInfo, RecordTransform


class PythonFunction(RecordTransform):
    name = "python"

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        callable: str
        mode: Literal["chunk", "line", "record"] = "chunk"
        args: dict[str, Any] = {}
        delimiter: str = "\n"
        setup: str | None = None
        memory: int | str = 0     # what setup loads (a model), per worker: 200MiB

    def __init__(self, callable: str, mode: str = "chunk", args: dict[str, Any] | None = None,
                 delimiter: str = "\n", setup: str | None = None, memory: int | str = 0):
        self.ref = callable
        self.mode = mode
        self.record_mode = mode == "record"   # the worker hands it decoded records
        self.args = dict(args or {})
        self.delimiter = delimiter.encode("utf-8", "surrogateescape")
        self.setup_ref = setup
        try:
            self.memory = parse_size(memory)
        except ValueError as e:
            raise OptionError(str(e), ["memory"]) from None
        self.fn: Any = None
        self.kw: dict[str, Any] = self.args

    def check(self) -> None:
        """Import the function and check it can take one positional argument plus `args`."""
        if self.mode not in ("chunk", "line", "record"):
            raise ValueError(f"mode must be chunk, line or record, got {self.mode!r}")
        extra = dict(self.args)
        if self.setup_ref is not None:
            setup = resolve(self.setup_ref)
            if not callable(setup):
                raise TypeError(f"setup {self.setup_ref} is not callable")
            _check_call(setup, self.setup_ref, (), self.args, "setup")
            extra["state"] = None
        fn = resolve(self.ref)
        if not callable(fn):
            raise TypeError(f"{self.ref} is not callable")
        _check_call(fn, self.ref, (b"",), extra, "")

    def worker_memory(self, chunk_size: int) -> int:
        return self.memory

    def object_memory(self, chunk_size: int) -> int:
        if self.mode == "line":    # the chunk's lines and what the function returns
            return OBJECTS["lines"] * chunk_size
        return super().object_memory(chunk_size) if self.mode == "record" else 0

    def bind(self, fmt: Any) -> Any:
        if self.mode == "record":
            fmt = super().bind(fmt)
            self.columns = fmt.columns if fmt.kind in ("csv", "tsv") else None
            return fmt
        from dataflow.records import RecordFormat
        self.input_format = self.output_format = RecordFormat(kind="bytes")
        return self.output_format

    def setup(self) -> None:
        self.fn = resolve(self.ref, main_alias=True)
        if self.setup_ref is not None:
            state = resolve(self.setup_ref, main_alias=True)(**self.args)
            self.kw = {**self.args, "state": state}

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        fn = self.fn
        kw = self.kw
        if self.mode == "chunk":
            out = fn(bytes(data), **kw)
            if isinstance(out, str):
                out = out.encode("utf-8", "surrogateescape")
            return b"" if out is None else out
        if self.mode == "record":
            return super().transform(data, chunk)
        d = self.delimiter
        lines = bytes(data).split(d)
        last = lines.pop()   # b"" when the chunk ends with a delimiter, else an open record
        if last:
            lines.append(last)
        out: list[Any] = []
        add = out.append     # the loop a user would write; len(out) is the failing line
        try:
            if kw:
                for line in lines:
                    add(fn(line, **kw))
            else:
                for line in lines:
                    add(fn(line))
        except Exception as e:
            i = len(out)
            raise RecordError(f"{self.ref}: {e}", i + 1, self._offset(lines, i)) from e
        tail = out.pop() if last else None   # no delimiter after an open last record
        try:                                  # every result bytes: one join
            body = d.join(out)
        except TypeError:                     # some None (dropped), str (encoded), or wrong
            out = [self._bytes(r, i, lines) for i, r in enumerate(out) if r is not None]
            body = d.join(out)
        parts = [body, d] if out else []      # copied into the slot one after the other
        if tail is not None:
            parts.append(self._bytes(tail, len(lines) - 1, lines))
        return parts

    def _bytes(self, r: Any, i: int, lines: list[bytes]) -> Any:
        if isinstance(r, str):
            return r.encode("utf-8", "surrogateescape")
        if isinstance(r, (bytes, bytearray, memoryview)):
            return r
        raise RecordError(f"{self.ref} returned {type(r).__name__}, not bytes, str or None",
                          i + 1, self._offset(lines, i))

    def _offset(self, lines: list[bytes], i: int) -> int:
        """Where line `i` (from 0) starts in the chunk."""
        return sum(len(x) + len(self.delimiter) for x in lines[:i])

    def process(self, records: list[Any], chunk: ChunkInfo) -> list[Any]:
        fn = self.fn
        kw = self.kw
        cols = self.columns
        text = self.input_format.text if self.input_format.kind == "lines" else None
        out = []
        i = 0
        try:
            for i, rec in enumerate(records):
                if cols is not None:
                    rec = dict(zip(cols, rec))
                elif text is not None:
                    rec = text(rec)
                r = fn(rec, **kw)
                if r is not None:
                    out.append(r)
        except RecordError as e:      # a line that is not UTF-8
            raise RecordError(e.reason, record=i + 1) from None
        except Exception as e:
            raise RecordError(f"{self.ref}: {e}", record=i + 1) from e
        return out


def _check_call(fn: Any, ref: str, args: tuple, kwargs: dict[str, Any], what: str) -> None:
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as e:
        shown = "one argument" if args else "no arguments"
        if kwargs:
            shown = f"{shown} and {', '.join(kwargs)}" if args else ", ".join(kwargs)
        raise TypeError(f"{what + ' ' if what else ''}{ref} cannot be called with "
                        f"{shown}: {e}") from None
    except ValueError:
        pass  # builtins without a signature: trust them
