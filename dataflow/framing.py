"""Record framing: where a chunk may end so that no record is split. Pure: no I/O.

Rules:
- A chunk is cut just after the last delimiter it contains; the bytes after the cut (the
  *tail*, a partial record) are carried to the start of the next chunk.
- At end of input the tail is the last record, even without a final delimiter.
- A buffer that is full (`length == capacity`) yet holds no delimiter contains a record longer
  than the capacity: `RecordTooLong` reports where that record starts.
- Byte framing (`split: bytes`) cuts anywhere: the whole buffer is always a chunk.
- Only the configured delimiter is a boundary: `\\r` alone is data (see PITFALLS 11).

The framer works on anything with `rfind(sub, start, end)`: bytes, bytearray, mmap.
"""
from __future__ import annotations

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

