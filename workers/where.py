"""where: keep the records for which a predicate holds (see dataflow/predicates.py).

    - where: {status: {gte: 500}, method: GET}
    - where: {any: [{level: error}, {duration: {gt: 2.5}}]}
    - where: {not: {path: {startswith: /health}}}       # drop instead of keep
    - where: {'$9': {gte: 500}}                           # split: lines, awk's $9

Rules:
- The stage's options *are* the predicate: a mapping field -> condition, all of which must
  hold, with `any`/`all`/`not` to combine (so there is no `invert` option: wrap the
  predicate in `not:`). Fields are names (`user.id` for nested JSON), or numbers (`9`, `$9`:
  CSV columns, whitespace fields of a line; `$0` is the whole line).
- The predicate is checked when the stage is built (bad operators, `in` without a list, bad
  regexes: `dataflow validate` reports them with their path, e.g. `stages[1].where.status.gte`)
  and compiled into closures once per format in `bind` (fields the format cannot have fail
  there: a name on split: lines, a column the CSV header lacks).
- Works on every record format: JSON values, CSV rows (numbers compare numerically even
  though CSV fields are text), lines (fields split on whitespace, as awk does).
- Records are kept as they are, in order; the summary counts records kept and dropped.
- JSON lines straight from the source are decoded only as far as the predicate reads them
  (a msgspec Struct of those keys: several times faster than whole objects) and the kept
  lines are written as they were read; after another record stage its records are tested
  as they are (and re-encoded by msgspec, as every record stage's output is).
"""
from __future__ import annotations

from typing import Any

import msgspec

from dataflow.predicates import PredicateError, build, field_key, fields, parse
from dataflow.streams import ChunkInfo, RecordTransform
from workers.select import filter_json_lines, json_struct


class KeptDropped:
    """The fold of a filtering stage whose chunk summary is (kept, dropped) records."""

    def initial(self) -> list[int]:
        return [0, 0]

    def fold(self, acc: list[int], summary: Any) -> list[int]:
        if summary:
            acc[0] += summary[0]
            acc[1] += summary[1]
        return acc

    def result(self, acc: list[int]) -> dict[str, int]:
        return {"kept": acc[0], "dropped": acc[1]}


class Where(KeptDropped, RecordTransform):
    name = "where"
    # the options are the predicate itself: any field names (see the config.py notes)
    Options = dict[str, Any]

    def __init__(self, predicate: dict[str, Any] | None = None, /, **fields: Any):
        spec = dict(predicate or {})
        spec.update(fields)
        self.predicate = spec
        self.tree = parse(spec)
        self.test: Any = None

    def bind(self, fmt: Any) -> Any:
        fmt = super().bind(fmt)
        kind = fmt.kind
        columns = fmt.columns

        def getter(name: str) -> Any:
            key = field_key(name, kind, columns)
            if key == 0:
                if kind != "lines":
                    raise ValueError("$0 (the whole record) is for split: lines")
                return _identity
            get = fmt.getter(key)          # checks the field (and says why it is wrong)
            if kind == "lines" and isinstance(key, int):
                return _line_field(key - 1)   # the same, splitting no further than needed
            return get

        self.test = build(self.tree, getter, kind)
        self.fast = None
        if kind == "jsonl":
            # JSON lines straight from the source: decode only the fields the predicate reads
            # into a msgspec Struct, and keep the lines as they were read (see transform)
            names = fields(self.tree)
            keys = [field_key(n, kind) for n in names]
            if all(isinstance(k, str) for k in keys):
                made = json_struct([k.split(".") for k in keys], None)
                if made is not None:
                    by_name = dict(zip(names, made[1]))
                    self.fast = (msgspec.json.Decoder(made[0]),
                                 build(self.tree, by_name.__getitem__, kind))
        self.record_mode = self.fast is None
        return fmt

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        if self.fast is None:
            return super().transform(data, chunk)
        decoder, test = self.fast
        out = filter_json_lines(data, decoder, lambda records: map(test, records), chunk)
        return super().transform(data, chunk) if out is None else out

    def process(self, records: list[Any], chunk: ChunkInfo) -> list[Any]:
        kept = list(filter(self.test, records))
        chunk.summary = (len(kept), len(records) - len(kept))
        return kept



def _identity(record: Any) -> Any:
    return record


def _line_field(i: int) -> Any:
    def get(line: bytes) -> Any:
        f = line.split(None, i + 1)
        return f[i] if i < len(f) else None
    return get


__all__ = ["Where", "PredicateError"]
