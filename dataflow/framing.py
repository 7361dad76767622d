"""Record framing: where a chunk may end so that no record is split. Pure: no I/O.

Framers: `Framer` (a delimiter, newline by default, or none: bytes), `CsvFramer` (RFC 4180
CSV/TSV: never cut inside a quoted field, which may hold newlines), `RecordStartFramer` (a
regular expression that starts a record at the beginning of a line: multi-line records such as
stack traces) and `FixedFramer` (records of a fixed size).

Rules:
- A chunk is cut just after the last delimiter it contains; the bytes after the cut (the
  *tail*, a partial record) are carried to the start of the next chunk.
- At end of input the tail is the last record, even without a final delimiter.
- A buffer that is full (`length == capacity`) yet holds no delimiter contains a record longer
  than the capacity: `RecordTooLong` reports where that record starts.
- Byte framing (`split: bytes`) cuts anywhere: the whole buffer is always a chunk.
- Only the configured delimiter is a boundary: `\\r` alone is data (see PITFALLS 11).
- CSV: a newline ends a record when the quotes before it, from the start of the record, are
  even in number (`""` inside a quoted field counts twice). That is exact for RFC 4180 files;
  a stray quote inside an unquoted field (`5" disk`) is caught by the CSV decoder in the
  worker, which reports the record (see records.py).
- Record start: the pattern must match at the start of a line; a chunk ends just before the
  last complete match that is not the chunk's first record. A match touching the end of what
  was read may be incomplete, so it is not trusted before end of input.
- `first(data)` gives the length of the first record (a CSV header), or 0 if it is not complete.

The framer works on anything with `rfind(sub, start, end)`: bytes, bytearray, mmap.
"""
from __future__ import annotations

import re
from typing import Protocol


class _Findable(Protocol):
    def rfind(self, sub: bytes, start: int = ..., end: int = ...) -> int: ...


class RecordTooLong(Exception):
    """No delimiter within `capacity` bytes from the start of a record."""

    def __init__(self, capacity: int):
        super().__init__(capacity)
        self.capacity = capacity


class Framer:
    """Finds cut points. `delimiter=None` means byte framing."""

    def __init__(self, delimiter: bytes | None = b"\n"):
        if delimiter is not None and not delimiter:
            raise ValueError("the delimiter cannot be empty")
        self.delimiter = delimiter

    def cut(self, buf: _Findable, start: int, length: int, capacity: int, eof: bool) -> int:
        """Return how many bytes from `start` form whole records.

        `buf[start:start+length]` holds the carried tail followed by freshly read bytes;
        `capacity` is the most the buffer could hold. At `eof` everything is a record.
        A return of 0 with `length < capacity` means: read more before cutting.
        """
        if eof or self.delimiter is None:
            return length
        pos = buf.rfind(self.delimiter, start, start + length)
        if pos >= 0:
            return pos - start + len(self.delimiter)
        if length >= capacity:
            raise RecordTooLong(capacity)
        return 0


    def first(self, data: bytes) -> int:
        if self.delimiter is None:
            return len(data)
        pos = data.find(self.delimiter)
        return 0 if pos < 0 else pos + len(self.delimiter)


class CsvFramer(Framer):
    """Cuts after a newline that is outside quoted fields (quote parity from the chunk start)."""

    def __init__(self, quote: bytes = b'"'):
        super().__init__(b"\n")
        self.quote = quote

    def cut(self, buf: _Findable, start: int, length: int, capacity: int, eof: bool) -> int:
        if eof:
            return length
        data = bytes(buf[start:start + length])  # type: ignore[index]  # C-speed count needs bytes
        q = self.quote
        before = data.count(q)          # quotes before `pos`, kept up to date going backwards
        pos = hi = len(data)
        while True:
            pos = data.rfind(b"\n", 0, pos)
            if pos < 0:
                break
            before -= data.count(q, pos, hi)
            hi = pos
            if before % 2 == 0:
                return pos + 1
        if length >= capacity:
            raise RecordTooLong(capacity)
        return 0

    def first(self, data: bytes) -> int:
        q = self.quote
        pos = quotes = 0
        while True:
            nl = data.find(b"\n", pos)
            if nl < 0:
                return 0
            quotes += data.count(q, pos, nl)
            pos = nl + 1
            if quotes % 2 == 0:
                return pos


class RecordStartFramer(Framer):
    """Cuts just before the last line that starts a record (`pattern` matches at its start)."""

    WINDOW = 64 << 10

    def __init__(self, pattern: str | bytes):
        super().__init__(b"\n")
        raw = pattern.encode("utf-8", "surrogateescape") if isinstance(pattern, str) else pattern
        self.pattern = pattern
        self.regex = re.compile(rb"(?m)^(?:" + raw + rb")")

    def cut(self, buf: _Findable, start: int, length: int, capacity: int, eof: bool) -> int:
        if eof:
            return length
        end = start + length
        lo = start + 1                  # the chunk's first record starts at `start`: not a cut
        window = self.WINDOW
        while True:
            ws = max(lo, end - window)
            last = -1
            for m in self.regex.finditer(buf, ws, end):  # type: ignore[call-overload]
                if m.end() < end:       # something follows: the match is complete
                    last = m.start()
            if last >= 0:
                return last - start
            if ws == lo:
                break
            window *= 4
        if length >= capacity:
            raise RecordTooLong(capacity)
        return 0

    def first(self, data: bytes) -> int:
        m = self.regex.search(data, 1)
        return m.start() if m is not None and m.end() < len(data) else 0


class FixedFramer(Framer):
    """Records of exactly `size` bytes (the last one may be shorter)."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError("record_size must be at least 1 byte")
        super().__init__(None)
        self.size = size

    def cut(self, buf: _Findable, start: int, length: int, capacity: int, eof: bool) -> int:
        if eof:
            return length
        cut = length - length % self.size
        if not cut and length >= capacity:
            raise RecordTooLong(capacity)
        return cut

    def first(self, data: bytes) -> int:
        return self.size if len(data) >= self.size else 0
