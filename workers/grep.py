"""grep: keep (or with `invert`, drop) the lines that match a regular expression.

Rules:
- Patterns are Python `re` syntax on bytes; `fixed: true` takes the pattern literally and
  `ignore_case` folds ASCII case, as GNU grep does in the C locale.
- A line is the bytes up to and including the delimiter (newline by default); a match never
  spans two lines, as in grep: a candidate match that crosses a delimiter is re-checked within
  its own line.
- The chunk is scanned with one C-level search per matching line, so the cost grows with the
  number of matches, not the number of lines; runs of kept lines are copied as one slice.
- Each chunk's summary counts lines kept and lines dropped; the stage's result sums them.
"""
from __future__ import annotations

import re

import msgspec

from dataflow.streams import ChunkInfo, Transform


class Grep(Transform):
    name = "grep"

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        pattern: str
        invert: bool = False
        ignore_case: bool = False
        fixed: bool = False
        delimiter: str = "\n"

    def __init__(self, pattern: str, invert: bool = False, ignore_case: bool = False,
                 fixed: bool = False, delimiter: str = "\n"):
        self.pattern = pattern
        self.invert = invert
        self.ignore_case = ignore_case
        self.fixed = fixed
        self.delimiter = delimiter.encode("utf-8", "surrogateescape")
        self._re = self.compile()

    def compile(self) -> re.Pattern[bytes]:
        raw = self.pattern.encode("utf-8", "surrogateescape")
        if self.fixed:
            raw = re.escape(raw)
        flags = re.MULTILINE | (re.IGNORECASE if self.ignore_case else 0)
        return re.compile(raw, flags)

    def transform(self, data: memoryview, chunk: ChunkInfo) -> bytes:
        buf = bytes(data)
        search = self._re.search
        d = self.delimiter
        dl = len(d)
        end = len(buf)
        keep: list[bytes] = []
        run_start = 0        # start of the current run of output (invert: lines not matching)
        pos = 0
        matched = 0
        while pos < end:
            m = search(buf, pos)
            if m is None:
                break
            ms = m.start()
            if ms >= end:
                break
            ls = buf.rfind(d, pos, ms) if ms > pos else -1
            ls = pos if ls < 0 else ls + dl
            le = buf.find(d, ms)
            le = end if le < 0 else le
            hit = m.end() <= le or search(buf, ls, le) is not None
            nxt = le + dl if le < end else end
            if hit:
                matched += 1
                if self.invert:
                    if ls > run_start:
                        keep.append(buf[run_start:ls])
                    run_start = nxt
                else:
                    keep.append(buf[ls:nxt])
            pos = nxt
        if self.invert and run_start < end:
            keep.append(buf[run_start:])
        chunk.summary = matched
        if self.invert and not matched:
            return buf
        return b"".join(keep)

    def initial(self) -> int:
        return 0

    def fold(self, acc: int, summary: int) -> int:
        return acc + (summary or 0)

    def result(self, acc: int) -> dict[str, int]:
        return {"matching_lines": acc}
