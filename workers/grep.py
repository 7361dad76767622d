"""grep: keep (or with `invert`, drop) the lines that match a regular expression.

Rules:
- Patterns are Python `re` syntax on bytes; `fixed: true` takes the pattern literally and
  `ignore_case` folds ASCII case, as GNU grep does in the C locale.
- A line is the bytes up to and including the delimiter (newline by default); a match never
  spans two lines, as in grep: a candidate match that crosses a delimiter is re-checked within
  its own line.
- The chunk is scanned in place with one C-level search per matching line, so the cost grows
  with the number of matches, not the number of lines. The output is a list of slices of the
  input (runs of kept lines), copied once into the output slot; a chunk with nothing to drop
  is passed through untouched.
- Each chunk's summary counts lines kept and lines dropped; the stage's result sums them.
- Lines and JSON lines stay records for the stages after it; CSV becomes plain bytes (a row
  may span lines).
"""
from __future__ import annotations

import re
from typing import Any

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
        self._delim_re = re.compile(re.escape(self.delimiter))

    def bind(self, fmt: Any) -> Any:
        """Lines stay lines and JSON lines stay JSON lines (grep keeps or drops whole lines);
        a CSV row may span lines, so after grep a CSV is plain bytes (its header is put back
        before grep, which filters it like any line)."""
        if fmt.kind in ("lines", "jsonl") and fmt.delimiter == self.delimiter or \
                fmt.kind == "jsonl" and self.delimiter == b"\n":
            return fmt
        from dataflow.records import RecordFormat
        return RecordFormat(kind="bytes")

    def compile(self) -> re.Pattern[bytes]:
        raw = self.pattern.encode("utf-8", "surrogateescape")
        if self.fixed:
            raw = re.escape(raw)
        flags = re.MULTILINE | (re.IGNORECASE if self.ignore_case else 0)
        return re.compile(raw, flags)

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        search = self._re.search
        find_delim = self._delim_re.search
        d = self.delimiter
        dl = len(d)
        end = len(data)
        ranges: list[tuple[int, int]] = []   # output ranges of `data`, in order
        run_start = 0        # invert: start of the current run of lines that do not match
        pos = 0
        matched = 0
        while pos < end:
            m = search(data, pos)
            if m is None:
                break
            ms = m.start()
            if ms >= end:
                break
            ls = self._line_start(data, pos, ms)
            nl = find_delim(data, ms)
            le = end if nl is None else nl.start()
            hit = m.end() <= le or search(data, ls, le) is not None
            nxt = le + dl if le < end else end
            if hit:
                matched += 1
                if self.invert:
                    if ls > run_start:
                        ranges.append((run_start, ls))
                    run_start = nxt
                elif ranges and ranges[-1][1] == ls:
                    ranges[-1] = (ranges[-1][0], nxt)   # adjacent matching lines: one range
                else:
                    ranges.append((ls, nxt))
            pos = nxt
        chunk.summary = matched
        if self.invert:
            if not matched:
                return data          # nothing dropped: the input is the output, no copy
            if run_start < end:
                ranges.append((run_start, end))
        return [data[a:b] for a, b in ranges]

    def _line_start(self, data: memoryview, lo: int, at: int) -> int:
        """Start of the line holding `at` (not before `lo`): a short backwards look."""
        d = self.delimiter
        window = 512
        while True:
            start = max(lo, at - window)
            i = bytes(data[start:at]).rfind(d)
            if i >= 0:
                return start + i + len(d)
            if start == lo:
                return lo
            window *= 4

    def initial(self) -> int:
        return 0

    def fold(self, acc: int, summary: int) -> int:
        return acc + (summary or 0)

    def result(self, acc: int) -> dict[str, int]:
        return {"matching_lines": acc}
