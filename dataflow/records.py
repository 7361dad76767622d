"""Record formats and record mode: a chunk's bytes decoded once into records, handed from one
record stage to the next inside a worker, encoded once at the end. Pure: no processes, no I/O.

Formats (`RecordFormat.kind`), chosen by the source's `split`:
- `lines`: a record is the bytes of a line without its delimiter.
- `jsonl`: a record is a decoded JSON value (msgspec); blank lines are skipped, as jq does.
- `csv` / `tsv`: a record is a row, a list of str. Quoted fields may hold newlines. With a header, `columns` names the
  fields; the header is not a record: it is written once, at the start of the output.
- `bytes`: no records (after a compressor, a chunk-mode function, an external command).

Rules:
- A record stage (`RecordTransform`) declares what it does to the format in `bind(fmt)`, which
  runs in the coordinator (so a bad field name fails before any worker starts) and again in
  each worker. A byte stage that keeps records intact (grep, sample, head) says so with
  `keeps_format = True`; any other byte stage makes the format `bytes`.
- Consecutive record stages share one decoded list per chunk (`run_stage`); a byte stage after
  them, or the end of the chain, gets it encoded once.
- Fields are named (`status`, `user.id` for nested JSON) or numbered from 1, as in cut and awk
  (CSV columns; whitespace-separated fields of a line).
- Encoding always ends every record with its delimiter (as cut, awk and jq do).
- Text is UTF-8. Bytes that are not follow the source's `errors` (`RecordFormat.errors`):
  `strict` (default) fails naming the line and byte, `surrogateescape` carries each bad byte
  through as a lone surrogate and writes it back unchanged (CSV, lines; JSON text cannot carry
  it: writing it as JSON fails), `replace` reads it as U+FFFD.
- A record that cannot be decoded raises `RecordError` naming the record's line within the
  chunk and its byte offset within the chunk; the worker adds the chunk's place.
"""
from __future__ import annotations

import csv
import io
import math
import re
from typing import Any, Callable

import msgspec

KINDS = ("bytes", "lines", "jsonl", "csv", "tsv")
ERRORS = ("strict", "surrogateescape", "replace")   # what to do with bytes that are not UTF-8
# Bytes of Python objects one byte of each format decodes into (a list of lines; dicts, str
# and int of JSON values; lists of str of CSV rows), rounded up from tracemalloc's peak while
# a 4 MiB chunk of the generated access log is decoded: lines 1.2, JSONL 2.7, CSV 5.0.
# RecordTransform.object_memory uses them; MOST_OBJECTS stands in for a format not known yet.
OBJECTS = {"bytes": 0, "lines": 2, "jsonl": 3, "csv": 5, "tsv": 5}
MOST_OBJECTS = max(OBJECTS.values())
# a CSV field may be as long as a record (max_record_size); the csv module refuses fields over
# 128 KiB by default. The limit is process-wide: it is only ever raised.
csv.field_size_limit(max(csv.field_size_limit(), (1 << 31) - 1))
_json_decoder = msgspec.json.Decoder()
_json_encoder = msgspec.json.Encoder()


class RecordError(ValueError):
    """A record that cannot be decoded (or processed): where it is within its chunk, as a line
    and byte offset when known, else as the record's number. A user function's exception is
    its __cause__ (the worker reports that one's type and traceback)."""

    def __init__(self, message: str, line: int | None = None, offset: int | None = None,
                 record: int | None = None):
        where = (f"line {line} of the chunk (chunk byte {offset})" if line is not None
                 else f"record {record} of the chunk")
        super().__init__(f"{where}: {message}")
        self.reason = message
        self.line = line        # 1-based line within the chunk
        self.offset = offset    # byte offset within the chunk
        self.record = record    # 1-based record number within the chunk


class RecordFormat(msgspec.Struct, frozen=True, kw_only=True):
    kind: str = "bytes"
    delimiter: bytes = b"\n"             # lines: what ends a record
    header: bool = False                 # csv/tsv: the first row names the columns
    columns: tuple[str, ...] | None = None   # known once the header has been read
    header_bytes: bytes | None = None    # the header as read, while the columns are unchanged
    newline: bytes = b"\n"               # csv/tsv: what ends a record on output
    errors: str = "strict"               # bytes that are not UTF-8: see ERRORS and text()

    @property
    def records(self) -> bool:
        return self.kind != "bytes"

    @property
    def separator(self) -> str:
        return "\t" if self.kind == "tsv" else ","

    def with_columns(self, columns: list[str] | tuple[str, ...] | None) -> "RecordFormat":
        """The same format with other columns (a select, a conversion): a header made anew."""
        cols = None if columns is None else tuple(columns)
        return msgspec.structs.replace(self, columns=cols, header_bytes=None)

    def header_out(self) -> bytes:
        """The header line to write for this format (b"" for none)."""
        if not self.header or self.kind not in ("csv", "tsv") or self.columns is None:
            return b""
        if self.header_bytes is not None:
            return self.header_bytes
        return self.encode([list(self.columns)])

    # ------------------------------------------------------------------ codec
    def decode(self, data: Any) -> list[Any]:
        kind = self.kind
        if kind == "lines":
            recs = bytes(data).split(self.delimiter)
            if recs and not recs[-1]:
                recs.pop()      # the chunk ended with a delimiter (always, but the last chunk)
            return recs
        if kind == "jsonl":
            try:
                return _json_decoder.decode_lines(data)
            except UnicodeDecodeError:
                if self.errors != "replace":
                    _raise_json_error(bytes(data))
                try:
                    return _json_decoder.decode_lines(
                        bytes(data).decode("utf-8", "replace").encode())
                except msgspec.DecodeError:
                    _raise_json_error(bytes(data), replace=True)
            except msgspec.DecodeError:
                _raise_json_error(bytes(data))
        if kind in ("csv", "tsv"):
            return _decode_csv(bytes(data), self.separator, self.errors)
        raise TypeError(f"a {kind!r} chunk has no records")

    def text(self, data: bytes) -> str:
        """`data` (a record, or a chunk) as text, by the source's `errors`: strict (a
        RecordError naming the line and the byte), surrogateescape (each bad byte becomes a
        lone surrogate, and is written back as the same byte) or replace (U+FFFD)."""
        try:
            return data.decode("utf-8", self.errors)
        except UnicodeDecodeError:
            raise utf8_error(data) from None

    def encode(self, records: list[Any]) -> bytes:
        kind = self.kind
        if kind == "lines":
            if not records:
                return b""
            d = self.delimiter
            return d.join(r.encode("utf-8", "surrogateescape") if isinstance(r, str) else r
                          for r in records) + d
        if kind == "jsonl":
            try:
                return _json_encoder.encode_lines(records)
            except UnicodeEncodeError:
                _raise_unencodable(records)
        if kind in ("csv", "tsv"):
            out = io.StringIO()
            w = csv.writer(out, delimiter=self.separator, lineterminator=self.newline.decode())
            cols = self.columns
            if cols is not None and any(isinstance(r, dict) for r in records):
                records = [[_text(r.get(c)) for c in cols] if isinstance(r, dict) else r
                           for r in records]
            w.writerows(records)
            return out.getvalue().encode("utf-8", "surrogateescape")
        raise TypeError(f"cannot encode records as {kind!r}")

    # ------------------------------------------------------------------ fields
    def getter(self, field: str | int) -> Callable[[Any], Any]:
        """A function record -> the value of `field` (None when the record lacks it).
        Raises ValueError for a field this format cannot have (the message says why)."""
        kind = self.kind
        if kind == "bytes":
            raise ValueError("its input has no records here: a stage before it (a compressor, "
                             "a chunk function, exec) turned them into plain bytes")
        if isinstance(field, bool) or not isinstance(field, (str, int)):
            raise ValueError(f"a field is a name or a number from 1, got {field!r}")
        if isinstance(field, int):
            if field < 1:
                raise ValueError(f"fields are numbered from 1 (as in cut and awk), got {field}")
            i = field - 1
            if kind == "lines":
                return lambda r: _nth(r.split(None, i + 1), i)   # no further than needed
            if kind == "jsonl":
                return lambda r: _nth(r, i) if isinstance(r, list) else None
            return lambda r: _nth(r, i)
        if kind == "jsonl":
            path = field.split(".")
            if len(path) == 1:
                return lambda r: r.get(field) if isinstance(r, dict) else None
            return lambda r: dig(r, path)
        if kind == "lines":
            raise ValueError(f"lines have no named fields ({field!r}): use a field number "
                             f"(whitespace-separated, from 1) or split: jsonl / csv")
        if self.columns is None:
            if self.header:
                return lambda r: None   # columns not read yet (validate): checked at run time
            raise ValueError(f"the CSV has no header (header: false), so {field!r} is not a "
                             f"column: use a column number from 1")
        try:
            i = self.columns.index(field)
        except ValueError:
            shown = ", ".join(self.columns[:20]) + (", ..." if len(self.columns) > 20 else "")
            raise ValueError(f"no column {field!r} in the header (columns: {shown})") from None
        return lambda r: _nth(r, i)


def with_header(fmt: RecordFormat, header: bytes) -> RecordFormat:
    """`fmt` once its header line has been read: the columns it names, its line end."""
    rows = _decode_csv(header, fmt.separator, fmt.errors) if header else []
    columns = tuple(rows[0]) if rows else None
    newline = b"\r\n" if header.endswith(b"\r\n") else b"\n"
    return msgspec.structs.replace(fmt, columns=columns, header_bytes=header or None,
                                   newline=newline)


def _nth(seq: Any, i: int) -> Any:
    return seq[i] if i < len(seq) else None


def dig(value: Any, path: list[str]) -> Any:
    """The value at `path` in nested JSON (`user.id` -> ['user', 'id']; list items by index), or
    None."""
    for part in path:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit():
            value = _nth(value, int(part))
        else:
            return None
    return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value if isinstance(value, str) else str(value)


_NUMBER = re.compile(r"[-+]?(?:[0-9]+(\.[0-9]*)?|(\.[0-9]+))([eE][-+]?[0-9]+)?")


def number(value: Any) -> float | int | None:
    """A field's value as a number (CSV and line fields are text: plain ASCII decimal, as awk
    reads it; no `1_000`, `nan`, `inf`, spaces or other scripts' digits), or None if it is
    not one. A value too large for a float is not a number either."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if isinstance(value, str):
        m = _NUMBER.fullmatch(value)
        if m is None:
            return None
        if m.group(1) is None and m.group(2) is None and m.group(3) is None:
            return int(value)
        f = float(value)
        return f if math.isfinite(f) else None
    return None


def _raise_json_error(data: bytes, replace: bool = False) -> None:
    """Raise the RecordError of the first line of `data` that is not JSON (with `replace`, once
    its bytes that are not UTF-8 are read as U+FFFD), at that line's place in `data`."""
    offset = 0
    for line_no, line in enumerate(data.split(b"\n"), 1):
        if line.strip():
            try:
                _json_decoder.decode(line.decode("utf-8", "replace").encode() if replace
                                     else line)
            except msgspec.DecodeError as e:
                raise RecordError(f"invalid JSON: {e}", line_no, offset) from None
            except UnicodeDecodeError:
                raise utf8_error(line, line_no, offset, jsonl=True) from None
        offset += len(line) + 1
    raise RecordError("invalid JSON", 1, 0)  # pragma: no cover - decode_lines agreed it failed


def utf8_error(data: bytes, line: int = 0, offset: int = 0,
               jsonl: bool = False) -> RecordError:
    """A RecordError for the first byte of `data` that is not UTF-8 (`data` starts on line
    `line` of the chunk, at chunk byte `offset`; 0: `data` is the chunk)."""
    try:
        data.decode("utf-8")
        at = 0          # pragma: no cover - called on data that does not decode
    except UnicodeDecodeError as e:
        at = e.start
    start = data.rfind(b"\n", 0, at) + 1
    if not line:
        line, offset = data.count(b"\n", 0, at) + 1, start
    else:
        line, offset = line + data.count(b"\n", 0, at), offset + start
    fix = "errors: replace (U+FFFD)" if jsonl else \
        "errors: surrogateescape (pass the bytes through) or errors: replace (U+FFFD)"
    return RecordError(f"not UTF-8: byte {at - start} of the line is 0x{data[at]:02x}; give the "
                       f"source {fix}", line, offset)


def _raise_unencodable(records: list[Any]) -> None:
    for i, record in enumerate(records, 1):
        try:
            _json_encoder.encode(record)
        except UnicodeEncodeError as e:
            bad = e.object[e.start]
            shown = f"0x{ord(bad) - 0xDC00:02x}" if 0xDC80 <= ord(bad) <= 0xDCFF else ascii(bad)
            raise RecordError(f"output record {i}: the byte {shown}, passed through by "
                              f"errors: surrogateescape, cannot be written as JSON (JSON text "
                              f"is UTF-8): use errors: replace", record=i) from None
    raise RecordError("cannot be written as JSON", record=1)  # pragma: no cover


def _decode_csv(data: bytes, separator: str, errors: str = "strict") -> list[list[str]]:
    """The rows of a chunk. The reader gets the chunk's lines as `open(newline="")` would give
    them (bytes.splitlines breaks at the same \n, \r and \r\n), each decoded alone: a UTF-8
    sequence never spans a line end. Not io.StringIO over the decoded chunk: it copies the
    text into a buffer of 4 bytes per character, 16 MiB for a 4 MiB chunk, mapped and faulted
    in anew for every chunk."""
    try:
        lines = [line.decode("utf-8", errors) for line in data.splitlines(True)]
    except UnicodeDecodeError:
        raise utf8_error(data) from None
    reader = csv.reader(lines, delimiter=separator, strict=True)
    try:
        return list(reader)
    except csv.Error as e:
        line = reader.line_num
        offset = _line_offset(data, line)
        hint = ("" if "end of data" not in str(e) else
                ": a quoted field runs to the end of the chunk; either a quote is not closed, or "
                "a quote inside an unquoted field (5\" disk) hid a record end from the "
                "framing, which follows RFC 4180")
        raise RecordError(f"invalid CSV: {e}{hint}", line, offset) from None


def _line_offset(data: bytes, line: int) -> int:
    pos = 0
    for _ in range(max(0, line - 1)):
        nxt = data.find(b"\n", pos)
        if nxt < 0:
            break
        pos = nxt + 1
    return pos


# ---------------------------------------------------------------------------- the chain
class Batch:
    """Decoded records on their way from one record stage to the next, in one worker."""

    __slots__ = ("records", "format")

    def __init__(self, records: list[Any], fmt: RecordFormat):
        self.records = records
        self.format = fmt

    def encode(self) -> bytes:
        return self.format.encode(self.records)


def bind_chain(stages: list[Any], fmt: RecordFormat) -> list[RecordFormat]:
    """The format between stages: `formats[i]` goes into stage i, `formats[-1]` comes out.
    Calls each record stage's `bind`; raises ValueError (with `.stage_index`) on a mismatch."""
    formats = [fmt]
    for i, stage in enumerate(stages):
        try:
            if hasattr(stage, "bind"):
                fmt = stage.bind(fmt)
            elif not getattr(stage, "keeps_format", False):
                fmt = RecordFormat(kind="bytes")
        except ValueError as e:
            e.stage_index = i  # type: ignore[attr-defined]
            raise
        formats.append(fmt)
    return formats


def placement(stages: Any, i: int) -> str | None:
    """Why stage i cannot be where it is in the chain (None when it can)."""
    s = stages[i]
    last = i + 1 == len(stages)
    if not last and getattr(s, "limit", None) is not None:
        return "cuts the output after its last record, so it must be the last stage"
    if getattr(s, "limit", None) is not None:
        for j, earlier in enumerate(stages[:i]):
            if getattr(earlier, "report", None):
                return (f"cuts the output, but stages[{j}] ({earlier.name}) reports on whole "
                        f"chunks: its report would depend on the chunk size; put {s.name} "
                        f"first or drop the report")
    if not last and s.frames_output():
        if hasattr(s, "report"):
            return ("writes its result as the output, so it must be the last stage; give it "
                    "`report: PATH` to write the result there and pass the records on")
        return "writes a container header and trailer, so it must be the last stage"
    return None


def header_position(formats: list[RecordFormat], stages: list[Any]) -> int | None:
    """Before which stage the output header goes into chunk 0: the first byte stage that turns
    records into plain bytes (a compressor must compress the header too), else the end. None
    when a record stage makes the bytes itself (a fold's JSON result): no header then."""
    for i in range(len(formats) - 1):
        if formats[i].records and not formats[i + 1].records:
            return None if getattr(stages[i], "record_mode", False) else i
    return len(formats) - 1


def run_stage(stage: Any, data: Any, chunk: Any) -> Any:
    """Run one stage on bytes or on a Batch; record stages get (and give) a Batch. A record
    stage with a fast path over raw bytes (`record_mode` False: JSON lines decoded only as
    far as it reads them) takes that path only when it is given bytes: records already
    decoded by the stage before are never encoded to be decoded again."""
    if isinstance(data, Batch) and getattr(stage, "input_format", None) is not None and \
            hasattr(stage, "process"):
        return Batch(stage.process(data.records, chunk), stage.output_format)
    if getattr(stage, "record_mode", False):
        records = data.records if isinstance(data, Batch) else stage.input_format.decode(data)
        return Batch(stage.process(records, chunk), stage.output_format)
    if isinstance(data, Batch):
        data = data.encode()
    return stage.transform(data, chunk)
