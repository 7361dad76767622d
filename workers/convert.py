"""csv_to_jsonl and jsonl_to_csv: change the record format mid-job.

    - csv_to_jsonl: {numbers: true}          # {"id": 7, "name": "x"} per row
    - jsonl_to_csv: {columns: [ts, user.id, status]}

Rules (csv_to_jsonl):
- Input is CSV or TSV. Each row becomes a JSON object keyed by the header's columns, in order
  (without a header, `header: false`: keys "1", "2", ... for the row's own fields).
- A row shorter than the header gets null for the missing columns; the fields of a longer row
  beyond the header are kept under their column numbers ("4", "5", ...): nothing is lost.
- Values stay text unless `numbers: true`: then a field that is exactly a JSON number
  (`-12`, `3.5`, `1e3`; not `007`, `+1`, ` 5`, `1.`, `NaN`) becomes that number.
- The output is JSON lines (the CSV header is not written).

Rules (jsonl_to_csv):
- Input is JSON lines; `columns` (required: workers see chunks, not the whole file, so the
  columns cannot be guessed from the data) are the keys, `user.id` for nested ones. They are
  the output header, written once at the start (`header: false` to leave it out), and
  `format: tsv` writes tab-separated values.
- A missing key or null is an empty field; text is written as is; true/false as `true` /
  `false`; numbers as JSON writes them; lists and objects as their compact JSON text.
  A record that is not an object has every column empty.
- Quoting is Python's csv module's (minimal: only fields with the separator, a quote or a
  line break are quoted); lines end with `\\n`.
"""
from __future__ import annotations

import re
from itertools import repeat
from typing import Any, Literal

import msgspec

from dataflow.records import RecordFormat, dig
from dataflow.predicates import OptionError
from dataflow.streams import ChunkInfo, RecordTransform

_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_encode = msgspec.json.encode


class CsvToJsonl(RecordTransform):
    name = "csv_to_jsonl"

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        numbers: bool = False

    def __init__(self, numbers: bool = False):
        self.numbers = numbers
        self.keys: tuple[str, ...] | None = None
        self.numbered: tuple[str, ...] = ()

    def bind(self, fmt: Any) -> Any:
        fmt = super().bind(fmt)
        if fmt.kind not in ("csv", "tsv"):
            raise ValueError(f"its input is {fmt.kind}, not CSV: csv_to_jsonl goes after a "
                             f"source with split: csv or tsv")
        self.keys = fmt.columns if fmt.header else None
        out = msgspec.structs.replace(fmt, kind="jsonl", columns=None, header=False,
                                      header_bytes=None)
        self.output_format = out
        return out

    def process(self, records: list[list[str]], chunk: ChunkInfo) -> list[Any]:
        if self.numbers:
            records = [list(map(_number, r)) for r in records]
        keys = self.keys
        if keys is None:             # no header: each row keyed "1", "2", ... by its own width
            width = max(map(len, records), default=0)
            if len(self.numbered) < width:
                self.numbered = tuple(str(i) for i in range(1, width + 1))
            return list(map(dict, map(zip, repeat(self.numbered), records)))
        n = len(keys)
        out = list(map(dict, map(zip, repeat(keys), records)))
        for obj, r in zip(out, records):
            if len(r) != n:
                if len(r) < n:
                    for k in keys[len(r):]:
                        obj[k] = None
                else:
                    for i in range(n, len(r)):
                        obj[str(i + 1)] = r[i]
        return out


def _number(text: str) -> Any:
    m = _NUMBER.fullmatch(text)
    if m is None:
        return text
    if m.group(1) is None and m.group(2) is None:
        value = int(text)
        return value if -(1 << 63) <= value < (1 << 64) else text
    value = float(text)
    return value if value not in (float("inf"), float("-inf")) else text


class JsonlToCsv(RecordTransform):
    name = "jsonl_to_csv"

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        columns: list[str]
        header: bool = True
        format: Literal["csv", "tsv"] = "csv"

    def __init__(self, columns: list[str], header: bool = True, format: str = "csv"):
        if isinstance(columns, str):
            columns = [columns]
        self.columns = list(columns)
        self.header = header
        self.format = format
        if not self.columns:
            raise OptionError("name at least one column (the JSON keys to write)", ['columns'])
        for c in self.columns:
            if not isinstance(c, str) or not c:
                raise OptionError(f"a column is a JSON key (text), got {c!r}", ['columns'])
        if format not in ("csv", "tsv"):
            raise OptionError(f"csv or tsv, got {format!r}", ['format'])
        self.paths = [c.split(".") for c in self.columns]

    def bind(self, fmt: Any) -> Any:
        fmt = super().bind(fmt)
        if fmt.kind != "jsonl":
            raise ValueError(f"its input is {fmt.kind}, not JSON lines: jsonl_to_csv goes after "
                             f"a source with split: jsonl (or after csv_to_jsonl)")
        out = RecordFormat(kind=self.format, header=self.header, columns=tuple(self.columns),
                           newline=b"\n")
        self.output_format = out
        return out

    def process(self, records: list[Any], chunk: ChunkInfo) -> list[list[str]]:
        paths = self.paths
        if all(len(p) == 1 for p in paths):
            keys = [p[0] for p in paths]
            return [[_cell(r.get(k)) for k in keys] if isinstance(r, dict) else [""] * len(keys)
                    for r in records]
        return [[_cell(dig(r, p)) for p in paths] for r in records]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if value.__class__ is str:
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    return _encode(value).decode("utf-8", "surrogateescape")
