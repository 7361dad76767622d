"""python: run a user function over each chunk or each line.

`callable` is `module:function`. In `chunk` mode the function gets the chunk's bytes and
returns bytes (or None for nothing). In `line` mode it gets each line without its delimiter and
returns bytes or str (written with the delimiter added back) or None to drop the line; a last
line that had no delimiter gets none. `args` are passed as keyword arguments on every call.
"""
from __future__ import annotations

import inspect
from typing import Any, Literal

import msgspec

from dataflow.registry import resolve
from dataflow.streams import ChunkInfo, Transform


class PythonFunction(Transform):
    name = "python"

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        callable: str
        mode: Literal["chunk", "line"] = "chunk"
        args: dict[str, Any] = {}
        delimiter: str = "\n"

    def __init__(self, callable: str, mode: str = "chunk", args: dict[str, Any] | None = None,
                 delimiter: str = "\n"):
        self.ref = callable
        self.mode = mode
        self.args = dict(args or {})
        self.delimiter = delimiter.encode("utf-8", "surrogateescape")
        self.fn = None

    def check(self) -> None:
        """Import the function and check it can take one positional argument plus `args`."""
        fn = resolve(self.ref)
        if not callable(fn):
            raise TypeError(f"{self.ref} is not callable")
        try:
            inspect.signature(fn).bind(b"", **self.args)
        except TypeError as e:
            raise TypeError(f"{self.ref} cannot be called with one argument"
                            f"{' and ' + ', '.join(self.args) if self.args else ''}: {e}") from None
        except ValueError:
            pass  # builtins without a signature: trust them

    def setup(self) -> None:
        self.fn = resolve(self.ref, main_alias=True)

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        fn = self.fn
        kw = self.args
        if self.mode == "chunk":
            out = fn(bytes(data), **kw)
            return b"" if out is None else out
        d = self.delimiter
        lines = bytes(data).split(d)
        last = lines.pop()   # b"" when the chunk ends with a delimiter, else an open record
        out: list[bytes] = []
        for line in lines:
            r = fn(line, **kw)
            if r is not None:
                out.append(r.encode("utf-8", "surrogateescape") if isinstance(r, str) else r)
        body = d.join(out) + d if out else b""
        if last:
            r = fn(last, **kw)
            if r is not None:
                body += r.encode("utf-8", "surrogateescape") if isinstance(r, str) else r
        return body
