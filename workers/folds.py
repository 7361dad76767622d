"""Ordered folds (aggregations): count, sum, min, max, mean, top, histogram.

Each worker summarises its chunk into plain msgpack data (`chunk.summary`); the coordinator
merges the summaries in chunk order (`fold`), and `result(acc)` is the stage's JSON result
(in `stats.results`).

Rules:
- Output. By default a fold consumes its records: its chunks produce nothing, and the result
  is the whole output, one line of JSON written by the sink after the last chunk
  (`trailer`); so the fold must be the last stage (`frames_output()`, an instance's answer).
  With `report: PATH` the records pass through untouched (bytes in, the same bytes out, no
  copy; after a record stage its records are encoded once, as without the fold), the fold may
  sit anywhere in the chain, and the engine writes the result to PATH at the successful end
  of the job (`write_report`, or `prepare_report` then `commit_report` once the output is
  committed): a temp file in PATH's directory renamed into place, so it appears complete or
  not at all.
- Results do not depend on the number of workers or on the chunk size: every merge is exact.
  Counts are integers; sums of integers stay Python integers; floats are summed exactly (a
  chunk's sum is kept as non-overlapping float components, the exact total rounded once at the
  end, as `math.fsum` over all values would); min/max ties (1 and 1.0, 0.0 and -0.0) are
  resolved by a fixed rule, not by position. The only exception is `top` past its
  `capacity` (see below), which says so with `"approximate": true`.
- Fields are read with the format's getter (`fmt.getter`, checked when the job is validated):
  a name, a dotted JSON path, or a field number from 1 (a whitespace-separated field of a
  line, like awk's $10; a CSV column). Numbers go through `records.number`, more strictly:
  text with `_`, non-ASCII digits, or a value that is not finite (nan, inf, 1e999) is not a
  number. A missing or non-numeric value is skipped and counted in `skipped`.
- Values as keys (`top`, `by`): the value's JSON text (dict keys sorted), so the string "200"
  and the number 200 of a JSON field stay apart; text fields (lines, CSV) are strings, bytes
  that are not UTF-8 become `\\xNN` escapes. Keys are ordered numbers first (and text that
  reads as a number, numerically), then text (code-point order), then other JSON values.
- `top` is exact while the distinct values fit `capacity`: a chunk summary never holds more
  than `capacity` entries, and neither does the merged counter. When either would, it is
  pruned the Misra-Gries way (the (capacity+1)-th largest count is subtracted from all and
  what drops to zero or below is dropped): kept counts are then lower bounds, every value's
  true count is at most its kept count + `max_error`, every value more frequent than
  `max_error` is kept, and `max_error` <= records / (capacity + 1). An approximate result may
  differ with the chunk size (pruning happens per chunk); an exact one never does.
- Group limits are errors, never silent truncation: more than `max_groups` groups (`by`).
"""
from __future__ import annotations

import heapq
import math
import os
import secrets
from bisect import bisect_right
from collections import Counter
from fractions import Fraction
from itertools import chain
from typing import Annotated, Any, Callable

import msgspec

from dataflow.errors import DataflowError, SinkError
from dataflow.records import RecordFormat, number
from dataflow.streams import ChunkInfo, RecordTransform

Field = Annotated[str, msgspec.Meta(min_length=1)] | Annotated[int, msgspec.Meta(ge=1)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
Real = int | float

_isfinite = math.isfinite
_key_encoder = msgspec.json.Encoder(order="sorted")
_encode_key = _key_encoder.encode
_decode_key = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder().encode
_INT64 = (-(1 << 63), (1 << 64) - 1)   # what msgpack carries as an integer


class OptionError(ValueError):
    """A bad option: `option` names it (the config path ends with it)."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option = option
        self.field = option      # what config.py appends to the stage's path
        self.reason = message


def _post_init_error(e: OptionError) -> ValueError:
    # msgspec reports a ValueError from a root Struct's __post_init__ as is; the config layer
    # reads " - at `$.x`" as the path within the stage's options (stages[0].histogram.bins)
    return ValueError(f"{e.reason} - at `$.{e.option}`")


class _ReportOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Options every fold has: `report`, checked when the job is validated. A fold's Options
    adds its own fields and may extend `check()`."""

    report: str | None = None

    def __post_init__(self) -> None:
        try:
            _check_report(self.report)
            _check_report_place(self.report)
            self.check()
        except OptionError as e:
            raise _post_init_error(e) from None

    def check(self) -> None:
        pass


def _check_report(report: str | None) -> None:
    if report is None:
        return
    if not report:
        raise OptionError("report", "an empty path; give a file to write the result to")


def _check_report_place(report: str | None) -> None:
    """At validate time: the report's directory exists and it is not a directory itself."""
    if report is None:
        return
    if os.path.isdir(report):
        raise OptionError("report", f"{report} is a directory; give a file path")
    parent = os.path.dirname(os.path.abspath(report))
    if not os.path.isdir(parent):
        raise OptionError("report", f"the directory {parent} does not exist")


# ---------------------------------------------------------------------------- values
def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("utf-8", "backslashreplace")


def _clean(value: str) -> str:
    """A str msgspec can encode: CSV fields keep invalid UTF-8 as surrogate escapes."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def value_key(value: Any) -> str:
    """The key of a value: its JSON text (text fields are strings)."""
    t = type(value)
    if t is bytes:
        value = _text(value)
    elif t is str:
        value = _clean(value)
    try:
        return _encode_key(value).decode()
    except (TypeError, UnicodeEncodeError, msgspec.EncodeError):
        return _encode_key(repr(value)).decode()


def key_value(key: str) -> Any:
    return _decode_key(key)


def key_order(key: str) -> tuple[Any, ...]:
    """Numbers numerically (text that reads as a number among them, just after an equal
    number), then text in code-point order, then other JSON values; the JSON text breaks
    ties. A total order on values: results never depend on the input's order."""
    value = key_value(key)
    if isinstance(value, str):
        n = number(value)
        return (0, n, 1, key) if n is not None else (1, value, 0, key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, 0, key)
    return (2, "", 0, key)


# ---------------------------------------------------------------------------- exact sums
def exact_components(values: list[float]) -> list[float]:
    """Floats whose exact sum is the exact sum of `values` (finite floats), largest first.

    Each step takes the correctly rounded sum (math.fsum) of what is left, so two or three
    passes at C speed usually suffice; the exact sum of finite floats is a multiple of 2**-1074,
    so the residual reaches exactly 0.
    """
    comps: list[float] = []
    if not values:
        return comps
    try:
        while True:
            s = math.fsum(chain(values, [-c for c in comps])) if comps else math.fsum(values)
            if s == 0.0:
                return comps
            comps.append(s)
    except OverflowError:
        raise ValueError("the floating-point values sum past the largest float "
                         "(about 1.8e308)") from None


def _pack_int(n: int) -> int | str:
    return n if _INT64[0] <= n <= _INT64[1] else str(n)


def _unpack_int(n: int | str) -> int:
    return n if type(n) is int else int(n)


def exact_total(isum: int, comps: list[float]) -> Fraction:
    return Fraction(isum) + sum(map(Fraction, comps), Fraction(0))


def _to_float(x: Fraction | int) -> float:
    try:
        return float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf


# ---------------------------------------------------------------------------- base
class _Fold(RecordTransform):
    """A fold over records; subclasses define `summarise(records)`, `merge`, `finish`."""

    name = "fold"
    record_mode = True      # per instance: see bind()

    def __init__(self, report: str | None = None):
        _check_report(report)
        self.report = report
        self.report_path = os.path.abspath(report) if report is not None else None

    # --- the chain
    def bind(self, fmt: RecordFormat) -> RecordFormat:
        fmt = super().bind(fmt)
        self.bind_fields(fmt)
        # consuming: decoded records are all we need (shared with the record stages before
        # us); passing through: take the bytes and give them back untouched
        self.record_mode = self.report is None
        if self.report is not None:
            return fmt
        # the output is the result's JSON line: no CSV header goes back in front of it
        self.output_format = RecordFormat(kind="jsonl")
        return self.output_format

    def bind_fields(self, fmt: RecordFormat) -> None:
        pass

    def getter(self, fmt: RecordFormat, field: Any, option: str) -> Callable[[Any], Any]:
        try:
            return fmt.getter(field)
        except ValueError as e:
            raise OptionError(option, str(e)) from None

    def process(self, records: list[Any], chunk: ChunkInfo) -> list[Any]:
        chunk.summary = self.summarise(records)
        return records if self.report is not None else []

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        chunk.summary = self.summarise(self.input_format.decode(data))
        return data if self.report is not None else None

    def summarise(self, records: list[Any]) -> Any:
        raise NotImplementedError

    # --- output
    def frames_output(self) -> bool:  # type: ignore[override]  # an instance's choice
        """Consuming, the result is the output (a trailer): last stage. With a report, no."""
        return self.report is None

    def header(self) -> bytes | None:
        return None

    def trailer(self, result: Any) -> bytes | None:
        if self.report is not None:
            return None
        return _json_encode(result) + b"\n"

    def write_report(self, result: Any) -> None:
        """Write `result` as one line of JSON to the report path, atomically: a temp file in
        the same directory, fsynced, given mode 0o666 & ~umask, renamed over the path (the
        directory fsynced). On an error the temp file is removed and SinkError raised."""
        self.prepare_report(result)
        self.commit_report()

    # the same in two steps, for an engine that renames the report only once its output is
    # committed: prepare (temp file, fsynced) -> commit (rename) or discard (remove)
    def prepare_report(self, result: Any) -> None:
        if self.report_path is None:
            return
        from dataflow.sinks import TEMP_SUFFIX, _temp_stem

        self.discard_report()
        directory, base = os.path.split(self.report_path)
        tmp = os.path.join(directory, f".{_temp_stem(base)}.{os.getpid()}."
                                      f"{secrets.token_hex(4)}{TEMP_SUFFIX}")
        data = _json_encode(result) + b"\n"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise self._report_error(e) from None
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
                umask = os.umask(0)
                os.umask(umask)
                os.fchmod(fd, 0o666 & ~umask)
            finally:
                os.close(fd)
        except OSError as e:
            _unlink(tmp)
            raise self._report_error(e) from None
        self._report_tmp = tmp

    def commit_report(self) -> None:
        tmp = getattr(self, "_report_tmp", None)
        if tmp is None or self.report_path is None:
            return
        self._report_tmp = None
        try:
            os.replace(tmp, self.report_path)
        except OSError as e:
            _unlink(tmp)
            raise self._report_error(e) from None
        try:
            dfd = os.open(os.path.dirname(self.report_path), os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)

    def discard_report(self) -> None:
        tmp = getattr(self, "_report_tmp", None)
        self._report_tmp = None
        if tmp is not None:
            _unlink(tmp)

    def _report_error(self, e: OSError) -> SinkError:
        return SinkError(f"cannot write the report {self.report_path} ({self.name}): "
                         f"{e.strerror or e}")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# ---------------------------------------------------------------------------- count
class Count(_Fold):
    """Records, bytes, and with `pattern` the records that match.

    lines and JSONL without a pattern are counted at C speed without decoding: delimiters
    (a last record without one counts), and for JSONL blank lines are not records (as jq
    and the JSONL decoder skip them); JSON is not validated then. CSV/TSV rows are counted by
    decoding unless the chunk has no quote and no bare CR, where rows are lines. A pattern is
    matched like grep against each line's bytes (lines, JSONL) or against a row's fields
    joined by the separator (CSV/TSV). After a byte stage (a compressor) there are no
    records: only bytes are counted. `bytes` are the bytes the stage reads (a CSV header,
    which is not a record, excluded).
    """

    name = "count"
    record_mode = False

    class Options(_ReportOptions, forbid_unknown_fields=True):
        pattern: str | None = None
        ignore_case: bool = False
        fixed: bool = False

    def __init__(self, pattern: str | None = None, ignore_case: bool = False,
                 fixed: bool = False, report: str | None = None):
        super().__init__(report)
        self.pattern = pattern
        self.ignore_case = ignore_case
        self.fixed = fixed
        self._bytes_re = self._str_re = None
        if pattern is not None:
            import re

            flags = re.IGNORECASE if ignore_case else 0
            raw = pattern.encode("utf-8", "surrogateescape")
            self._bytes_re = re.compile(re.escape(raw) if fixed else raw, flags)
            self._str_re = re.compile(re.escape(pattern) if fixed else pattern, flags)
        self._grep: Any = None
        self.kind = "bytes"

    def bind(self, fmt: RecordFormat) -> RecordFormat:
        self.input_format = self.output_format = fmt
        self.kind = fmt.kind
        if not fmt.records and self.pattern is not None:
            raise OptionError("pattern", "its input has no records here (a stage before it, a "
                                         "compressor or a chunk function, made plain bytes): "
                                         "put count earlier in the chain or drop the pattern")
        if fmt.kind == "lines" and self.pattern is not None:
            from workers.grep import Grep

            self._grep = Grep(self.pattern, ignore_case=self.ignore_case, fixed=self.fixed,
                              delimiter=fmt.delimiter.decode("utf-8", "surrogateescape"))
        self.record_mode = False   # always the bytes: it counts them, and passes them on
        if self.report is not None:
            return fmt
        self.output_format = RecordFormat(kind="jsonl")
        return self.output_format

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        fmt = self.input_format
        kind = fmt.kind if fmt is not None else "bytes"
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        summary: dict[str, int] = {"b": size}
        if kind == "lines":
            d = fmt.delimiter
            raw = bytes(data)
            summary["r"] = raw.count(d) + (1 if raw and not raw.endswith(d) else 0)
            if self._grep is not None:
                self._grep.transform(data, chunk)   # its summary: the matching lines
                summary["m"] = chunk.summary or 0
        elif kind == "jsonl":
            summary.update(_count_jsonl(bytes(data), self._bytes_re))
        elif kind in ("csv", "tsv"):
            summary.update(self._count_csv(data, fmt))
        chunk.summary = summary
        return data if self.report is not None else None

    def process(self, records: list[Any], chunk: ChunkInfo) -> list[Any]:
        """Records decoded by the stage before: counted as the bytes they encode to."""
        self.transform(memoryview(self.input_format.encode(records)), chunk)
        return records if self.report is not None else []

    def _count_csv(self, data: Any, fmt: RecordFormat) -> dict[str, int]:
        raw = bytes(data)
        if self._str_re is None and b'"' not in raw and raw.count(b"\r") == raw.count(b"\r\n"):
            return {"r": raw.count(b"\n") + (1 if raw and not raw.endswith(b"\n") else 0)}
        rows = fmt.decode(raw)
        out = {"r": len(rows)}
        if self._str_re is not None:
            search = self._str_re.search
            sep = fmt.separator
            out["m"] = sum(1 for row in rows if search(sep.join(row)) is not None)
        return out

    def initial(self) -> dict[str, int]:
        acc = {"b": 0}
        if self.kind != "bytes":
            acc["r"] = 0
        if self.pattern is not None:
            acc["m"] = 0
        return acc

    def fold(self, acc: dict[str, int], summary: dict[str, int]) -> dict[str, int]:
        for k, v in summary.items():
            acc[k] = acc.get(k, 0) + v
        return acc

    def result(self, acc: dict[str, int]) -> dict[str, int]:
        out: dict[str, int] = {}
        if "r" in acc or self.kind != "bytes":
            out["records"] = acc.get("r", 0)
        out["bytes"] = acc.get("b", 0)
        if self.pattern is not None:
            out["matches"] = acc.get("m", 0)
        return out


def _count_jsonl(raw: bytes, search_re: Any) -> dict[str, int]:
    if not raw:
        return {"r": 0, **({"m": 0} if search_re is not None else {})}
    blank = (raw[:1] in b" \t\r\n" or b"\n\n" in raw or b"\n " in raw or b"\n\t" in raw
             or b"\n\r" in raw)
    if search_re is None and not blank:
        return {"r": raw.count(b"\n") + (0 if raw.endswith(b"\n") else 1)}
    lines = raw.split(b"\n")
    if blank:
        lines = [line for line in lines if line.strip(b" \t\r")]
    elif not lines[-1]:
        lines.pop()
    out = {"r": len(lines)}
    if search_re is not None:
        search = search_re.search
        out["m"] = sum(1 for line in lines if search(line) is not None)
    return out


# ---------------------------------------------------------------------------- numeric
class _Numeric(_Fold):
    """sum / min / max / mean of a numeric field, optionally by the value of another."""

    class Options(_ReportOptions, forbid_unknown_fields=True):
        field: Field
        by: Field | None = None
        max_groups: Positive = 100_000

    def __init__(self, field: str | int, by: str | int | None = None,
                 max_groups: int = 100_000, report: str | None = None):
        super().__init__(report)
        for option, value in (("field", field), ("by", by)):
            if value is None and option == "by":
                continue
            if isinstance(value, bool) or not isinstance(value, (str, int)) or \
                    (isinstance(value, int) and value < 1) or value == "":
                raise OptionError(option, f"a field is a name or a number from 1, got {value!r}")
        if isinstance(max_groups, bool) or not isinstance(max_groups, int) or max_groups < 1:
            raise OptionError("max_groups", f"must be at least 1, got {max_groups!r}")
        self.field = field
        self.by = by
        self.max_groups = max_groups
        self._get: Callable[[Any], Any] = lambda r: None
        self._get_by: Callable[[Any], Any] | None = None

    def bind_fields(self, fmt: RecordFormat) -> None:
        self._get = self.getter(fmt, self.field, "field")
        if self.by is not None:
            self._get_by = self.getter(fmt, self.by, "by")

    # --- per kind: what one group's numbers become, how two merge, what is shown
    def stat(self, ints: list[int], floats: list[float], skipped: int) -> dict[str, Any]:
        raise NotImplementedError

    def merge(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def show(self, s: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def empty(self) -> dict[str, Any]:
        return self.stat([], [], 0)

    # --- the fold
    def summarise(self, records: list[Any]) -> Any:
        get = self._get
        if self._get_by is None:
            ints: list[int] = []
            floats: list[float] = []
            skipped = 0
            for r in records:
                n = number(get(r))
                if n is None:
                    skipped += 1
                elif type(n) is int:
                    ints.append(n)
                else:
                    floats.append(n)
            return {"t": self.stat(ints, floats, skipped)}
        get_by = self._get_by
        groups: dict[str, list[Any]] = {}
        for r in records:
            key = value_key(get_by(r))
            g = groups.get(key)
            if g is None:
                if len(groups) >= self.max_groups:
                    raise ValueError(self._too_many())
                g = groups[key] = [[], [], 0]
            n = number(get(r))
            if n is None:
                g[2] += 1
            elif type(n) is int:
                g[0].append(n)
            else:
                g[1].append(n)
        return {"g": {k: self.stat(*g) for k, g in groups.items()}}

    def _too_many(self) -> str:
        return (f"more than {self.max_groups} groups: {self.by!r} has more distinct values "
                f"than max_groups allows; raise max_groups, or group by a field with fewer "
                f"values")

    def initial(self) -> Any:
        return {"g": {}} if self.by is not None else {"t": self.empty()}

    def fold(self, acc: Any, summary: Any) -> Any:
        if "t" in summary:
            acc["t"] = self.merge(acc["t"], summary["t"])
            return acc
        groups = acc["g"]
        for key, s in summary["g"].items():
            old = groups.get(key)
            if old is None:
                if len(groups) >= self.max_groups:
                    raise DataflowError(f"stage {self.name}: {self._too_many()}")
                groups[key] = s
            else:
                groups[key] = self.merge(old, s)
        return acc

    def result(self, acc: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field}
        if self.by is None:
            out.update(self.show(acc["t"]))
            return out
        out["by"] = self.by
        groups = acc["g"]
        out["groups"] = [{"key": key_value(k), **self.show(groups[k])}
                         for k in sorted(groups, key=key_order)]
        out["count"] = sum(s["n"] for s in groups.values())
        out["skipped"] = sum(s["s"] for s in groups.values())
        return out


class Sum(_Numeric):
    """The sum of a numeric field: exact; integers stay integers while every value is one."""

    name = "sum"

    def stat(self, ints: list[int], floats: list[float], skipped: int) -> dict[str, Any]:
        return {"n": len(ints) + len(floats), "s": skipped, "i": _pack_int(sum(ints)),
                "nf": len(floats), "f": exact_components(floats)}

    def merge(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        f = a["f"] + b["f"]
        return {"n": a["n"] + b["n"], "s": a["s"] + b["s"],
                "i": _pack_int(_unpack_int(a["i"]) + _unpack_int(b["i"])),
                "nf": a["nf"] + b["nf"], "f": exact_components(f) if len(f) > 1 else f}

    def total(self, s: dict[str, Any]) -> int | float:
        isum = _unpack_int(s["i"])
        if not s["nf"]:
            return isum
        if isum == 0 and len(s["f"]) == 1:
            return s["f"][0]
        return _to_float(exact_total(isum, s["f"]))

    def show(self, s: dict[str, Any]) -> dict[str, Any]:
        return {"sum": self.total(s), "count": s["n"], "skipped": s["s"]}


class Mean(Sum):
    """The mean of a numeric field: the exact sum divided by the count, rounded once."""

    name = "mean"

    def show(self, s: dict[str, Any]) -> dict[str, Any]:
        n = s["n"]
        if not n:
            mean = None
        elif not s["nf"]:
            mean = _unpack_int(s["i"]) / n       # int / int: correctly rounded
        else:
            mean = _to_float(exact_total(_unpack_int(s["i"]), s["f"]) / n)
        return {"mean": mean, "sum": self.total(s), "count": n, "skipped": s["s"]}


def _pick(a: Any, b: Any, lowest: bool) -> Any:
    """The smaller (larger) of two numbers; equal ones by a fixed rule, so that the answer
    does not depend on which came first: an int over an equal float, -0.0 for min and 0.0
    for max."""
    if a is None:
        return b
    if b is None:
        return a
    if a != b:
        return (a if a < b else b) if lowest else (a if a > b else b)
    if type(a) is int:
        return a
    if type(b) is int:
        return b
    if a == 0:  # 0.0 and -0.0
        neg = math.copysign(1.0, a) < 0
        return (a if neg else b) if lowest else (b if neg else a)
    return a


class Min(_Numeric):
    """The smallest value of a numeric field."""

    name = "min"
    lowest = True

    def stat(self, ints: list[int], floats: list[float], skipped: int) -> dict[str, Any]:
        pick = min if self.lowest else max
        v = None
        if ints:
            v = pick(ints)
        if floats:
            f = pick(floats)
            if f == 0:      # 0.0 and -0.0 compare equal: take the one the rule prefers
                zeros = {math.copysign(1.0, x) for x in floats if x == 0}
                f = (-0.0 if -1.0 in zeros else 0.0) if self.lowest else \
                    (0.0 if 1.0 in zeros else -0.0)
            v = _pick(v, f, self.lowest)
        if isinstance(v, int) and not _INT64[0] <= v <= _INT64[1]:
            v = str(v)  # msgpack: carried as text, read back below
        return {"n": len(ints) + len(floats), "s": skipped, "v": v}

    def merge(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        v = _pick(_value(a["v"]), _value(b["v"]), self.lowest)
        if isinstance(v, int) and not _INT64[0] <= v <= _INT64[1]:
            v = str(v)
        return {"n": a["n"] + b["n"], "s": a["s"] + b["s"], "v": v}

    def show(self, s: dict[str, Any]) -> dict[str, Any]:
        return {self.name: _value(s["v"]), "count": s["n"], "skipped": s["s"]}


def _value(v: Any) -> Any:
    return int(v) if type(v) is str else v


class Max(Min):
    """The largest value of a numeric field."""

    name = "max"
    lowest = False


# ---------------------------------------------------------------------------- top
def _prune(counts: dict[str, int], capacity: int) -> tuple[dict[str, int], int]:
    """Misra-Gries: at most `capacity` entries; returns (counts, what was subtracted)."""
    if len(counts) <= capacity:
        return counts, 0
    m = heapq.nlargest(capacity + 1, counts.values())[-1]
    return {k: c - m for k, c in counts.items() if c > m}, m


class Top(_Fold):
    """The k most frequent values of a field: exact while the distinct values fit
    `capacity`, else Misra-Gries with a stated error bound (see the module's rules)."""

    name = "top"

    class Options(_ReportOptions, forbid_unknown_fields=True):
        field: Field
        k: Positive = 10
        capacity: Positive = 100_000

        def check(self) -> None:
            if self.capacity < self.k:
                raise OptionError("capacity", f"must be at least k ({self.k}), got "
                                              f"{self.capacity}")

    def __init__(self, field: str | int, k: int = 10, capacity: int = 100_000,
                 report: str | None = None):
        super().__init__(report)
        if isinstance(field, bool) or not isinstance(field, (str, int)) or field == "" or \
                (isinstance(field, int) and field < 1):
            raise OptionError("field", f"a field is a name or a number from 1, got {field!r}")
        for option, value in (("k", k), ("capacity", capacity)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptionError(option, f"must be at least 1, got {value!r}")
        if capacity < k:
            raise OptionError("capacity", f"must be at least k ({k}), got {capacity}")
        self.field = field
        self.k = k
        self.capacity = capacity
        self._get: Callable[[Any], Any] = lambda r: None

    def bind_fields(self, fmt: RecordFormat) -> None:
        self._get = self.getter(fmt, self.field, "field")

    def summarise(self, records: list[Any]) -> Any:
        get = self._get
        values = [v for v in map(get, records) if v is not None]
        counts, err = _prune(dict(Counter(map(value_key, values))), self.capacity)
        return {"c": counts, "e": err, "n": len(values), "s": len(records) - len(values)}

    def initial(self) -> Any:
        return {"c": {}, "e": 0, "n": 0, "s": 0}

    def fold(self, acc: Any, summary: Any) -> Any:
        counts = acc["c"]
        get = counts.get
        for key, c in summary["c"].items():
            counts[key] = get(key, 0) + c
        counts, err = _prune(counts, self.capacity)
        acc["c"] = counts
        acc["e"] += summary["e"] + err
        acc["n"] += summary["n"]
        acc["s"] += summary["s"]
        return acc

    def result(self, acc: Any) -> dict[str, Any]:
        counts = acc["c"]
        best: list[tuple[str, int]] = []
        if counts:
            kth = heapq.nlargest(self.k, counts.values())[-1]
            candidates = [(k, c) for k, c in counts.items() if c >= kth]
            best = sorted(candidates, key=lambda kc: (-kc[1], key_order(kc[0])))[:self.k]
        err = acc["e"]
        out: dict[str, Any] = {
            "field": self.field, "k": self.k,
            "top": [{"value": key_value(k), "count": c} for k, c in best],
            "count": acc["n"], "skipped": acc["s"],
            "distinct": None if err else len(counts),
            "approximate": bool(err), "max_error": err}
        return out


# ---------------------------------------------------------------------------- histogram
class Histogram(_Fold):
    """Counts of a numeric field in bins: explicit `bins` edges, or `width` from `start`
    (to `end`, or over at most `max_bins` bins). Bins hold low <= v < high, the last one of
    `bins` (and of `end`) also its upper edge, as numpy.histogram."""

    name = "histogram"

    class Options(_ReportOptions, forbid_unknown_fields=True):
        field: Field
        bins: list[Real] | None = None
        width: Real | None = None
        start: Real = 0
        end: Real | None = None
        max_bins: Positive = 10_000

        def check(self) -> None:
            _check_bins(self.bins, self.width, self.start, self.end, self.max_bins)

    def __init__(self, field: str | int, bins: list[Real] | None = None,
                 width: Real | None = None, start: Real = 0, end: Real | None = None,
                 max_bins: int = 10_000, report: str | None = None):
        super().__init__(report)
        if isinstance(field, bool) or not isinstance(field, (str, int)) or field == "" or \
                (isinstance(field, int) and field < 1):
            raise OptionError("field", f"a field is a name or a number from 1, got {field!r}")
        if isinstance(max_bins, bool) or not isinstance(max_bins, int) or max_bins < 1:
            raise OptionError("max_bins", f"must be at least 1, got {max_bins!r}")
        _check_bins(bins, width, start, end, max_bins)
        self.field = field
        self.bins = list(bins) if bins is not None else None
        self.width = width
        self.start = start
        self.end = end
        self.max_bins = max_bins
        if bins is None:
            # with `end`: all of [start, end]; without: at most max_bins bins from start
            self.nbins = (math.ceil((end - start) / width) if end is not None else max_bins)
            self.top_edge = end if end is not None else self.low(self.nbins)
        self._get: Callable[[Any], Any] = lambda r: None

    def bind_fields(self, fmt: RecordFormat) -> None:
        self._get = self.getter(fmt, self.field, "field")

    def low(self, i: int) -> Real:
        """The lower edge of fixed-width bin i (the same expression everywhere)."""
        return self.start + i * self.width  # type: ignore[operator]

    def index(self, v: Real) -> int:
        """The fixed-width bin of v, start <= v < top_edge (or == end)."""
        if self.end is not None and v == self.end:
            return self.nbins - 1
        if type(v) is int and type(self.start) is int and type(self.width) is int:
            return (v - self.start) // self.width
        i = math.floor((v - self.start) / self.width)
        i = min(max(i, 0), self.nbins - 1)
        while i > 0 and v < self.low(i):
            i -= 1
        while i + 1 < self.nbins and v >= self.low(i + 1):
            i += 1
        return i

    def summarise(self, records: list[Any]) -> Any:
        get = self._get
        below = above = skipped = 0
        if self.bins is not None:
            edges = self.bins
            counts = [0] * (len(edges) - 1)
            lo, hi, last = edges[0], edges[-1], len(edges) - 2
            for r in records:
                v = number(get(r))
                if v is None:
                    skipped += 1
                elif v < lo:
                    below += 1
                elif v > hi:
                    above += 1
                else:
                    counts[min(bisect_right(edges, v) - 1, last)] += 1
            return {"b": counts, "lo": below, "hi": above, "s": skipped}
        found: dict[int, int] = {}
        start, top = self.start, self.top_edge
        closed = self.end is not None
        index = self.index
        for r in records:
            v = number(get(r))
            if v is None:
                skipped += 1
            elif v < start:
                below += 1
            elif v > top or (v == top and not closed):
                above += 1
            else:
                i = index(v)
                found[i] = found.get(i, 0) + 1
        return {"b": found, "lo": below, "hi": above, "s": skipped}

    def initial(self) -> Any:
        b: Any = [0] * (len(self.bins) - 1) if self.bins is not None else {}
        return {"b": b, "lo": 0, "hi": 0, "s": 0}

    def fold(self, acc: Any, summary: Any) -> Any:
        if self.bins is not None:
            acc["b"] = [x + y for x, y in zip(acc["b"], summary["b"])]
        else:
            b = acc["b"]
            for i, c in summary["b"].items():
                b[i] = b.get(i, 0) + c
        for k in ("lo", "hi", "s"):
            acc[k] += summary[k]
        return acc

    def result(self, acc: Any) -> dict[str, Any]:
        if self.bins is not None:
            e = self.bins
            bins = [{"low": e[i], "high": e[i + 1], "count": c} for i, c in enumerate(acc["b"])]
        else:
            found = {int(i): c for i, c in acc["b"].items()}
            if self.end is not None:
                first, last = 0, self.nbins - 1
            elif found:
                first, last = min(found), max(found)
            else:
                first, last = 0, -1
            bins = [{"low": self.low(i),
                     "high": self.end if (self.end is not None and i == self.nbins - 1)
                     else self.low(i + 1),
                     "count": found.get(i, 0)} for i in range(first, last + 1)]
        inside = sum(b["count"] for b in bins)
        return {"field": self.field, "bins": bins, "below": acc["lo"], "above": acc["hi"],
                "count": inside + acc["lo"] + acc["hi"], "skipped": acc["s"]}


def _check_bins(bins: list[Real] | None, width: Real | None, start: Real, end: Real | None,
                max_bins: int) -> None:
    if (bins is None) == (width is None):
        raise OptionError("bins" if bins is not None else "width",
                          "give either bins (a list of edges) or width (fixed-width bins), "
                          "not both" if bins is not None else
                          "give either bins (a list of edges) or width (fixed-width bins)")
    if bins is not None:
        if end is not None or start != 0:
            raise OptionError("end" if end is not None else "start",
                              "start and end go with width; with bins the edges say it all")
        if len(bins) < 2:
            raise OptionError("bins", f"needs at least 2 edges (one bin), got {len(bins)}")
        for a in bins:
            if isinstance(a, bool) or not isinstance(a, (int, float)) or not _isfinite(a):
                raise OptionError("bins", f"edges are finite numbers, got {a!r}")
        for a, b in zip(bins, bins[1:]):
            if not a < b:
                raise OptionError("bins", f"edges must increase, got {a!r} then {b!r}")
        if len(bins) - 1 > max_bins:
            raise OptionError("bins", f"{len(bins) - 1} bins, more than max_bins ({max_bins})")
        return
    for option, v in (("width", width), ("start", start), ("end", end)):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not _isfinite(v):
            raise OptionError(option, f"must be a finite number, got {v!r}")
    if not width > 0:  # type: ignore[operator]
        raise OptionError("width", f"must be more than 0, got {width!r}")
    if end is not None:
        if not end > start:
            raise OptionError("end", f"must be more than start ({start!r}), got {end!r}")
        n = math.ceil((end - start) / width)  # type: ignore[operator]
        if n > max_bins:
            raise OptionError("end", f"{n} bins of width {width!r} from {start!r} to {end!r}, "
                                     f"more than max_bins ({max_bins}): widen the bins or "
                                     f"raise max_bins")
