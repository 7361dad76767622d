"""RecordLimit: how much of the ordered output to keep so that it holds the first `n` records
(the `head` stage). Pure: fed output pieces in order, it says how many bytes of each to keep.

Rules:
- Records end with the format's delimiter (a newline for JSON lines and CSV). In CSV a newline
  inside a quoted field does not end a record: the quote parity is carried across pieces.
- The first `skip` bytes (a CSV header written at the start of the output) are kept and not
  counted.
"""
from __future__ import annotations


class RecordLimit:
    def __init__(self, n: int, *, delimiter: bytes = b"\n", csv: bool = False, skip: int = 0):
        self.remaining = n
        self.delimiter = delimiter
        self.csv = csv
        self.skip = skip
        self.quoted = False   # CSV: inside a quoted field at the end of the last piece

    @property
    def done(self) -> bool:
        return self.remaining <= 0

    def take(self, piece: memoryview | bytes) -> int:
        """Bytes of `piece` to keep; after a return shorter than the piece, `done` is true."""
        if self.done:
            return 0
        data = bytes(piece)
        start = min(self.skip, len(data))
        self.skip -= start
        pos = start
        d = self.delimiter
        if not self.csv:
            found = data.count(d, pos)
            if found < self.remaining:
                self.remaining -= found
                return len(data)
            while self.remaining:
                pos = data.index(d, pos) + len(d)
                self.remaining -= 1
            return pos
        while True:
            nl = data.find(b"\n", pos)
            if nl < 0:
                self.quoted ^= data.count(b'"', pos) % 2 == 1
                return len(data)
            self.quoted ^= data.count(b'"', pos, nl) % 2 == 1
            pos = nl + 1
            if not self.quoted:
                self.remaining -= 1
                if self.remaining == 0:
                    return pos
