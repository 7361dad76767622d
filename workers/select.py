"""select: keep some fields of each record, in a given order; cut: unix `cut -d D -f LIST`.

    - select: {fields: [ts, user.id, status], rename: {user.id: user}}
    - select: {fields: [1, 9]}              # split: lines, like awk '{print $1, $9}'
    - cut: {fields: "1,3-5,7-", delimiter: ","}

Rules (select, a record stage):
- `fields` are names (`status`, `user.id` for nested JSON) or numbers from 1 (CSV columns,
  whitespace fields of a line; `$9` works too). Every field must exist in the format: a name
  on split: lines, or a column the CSV header lacks, is an error before any data flows (at
  validate for what the config shows, at run start for a CSV header).
- CSV/TSV: the rows keep those columns in that order; the output header follows (renamed by
  `rename: {old: new}`). A row too short for a column gets an empty field.
- JSONL: each record becomes an object with those keys, named as written (`user.id` is the
  key "user.id") or renamed. A field the record lacks is left out (`missing: omit`, the
  default) or written as null (`missing: null`); a record that is not an object has every
  field missing. With only numbers for fields, JSON arrays become arrays of those items.
  JSON lines straight from the source have just those keys decoded, into msgspec Structs
  (the rest of each object is skipped, not built): several times faster than whole objects.
- lines: the fields joined by one space, missing ones empty, as `awk '{print $1, $9}'` does.

Rules (cut, a byte stage, byte for byte GNU `cut -d D -f LIST [--complement] [-s]`):
- LIST is cut's: `1,3-5,7-`, `-3`; fields come out in file order, each once, whatever the
  order of LIST. `delimiter` is one byte (a tab by default, as in cut); `output_delimiter`
  replaces it between the fields written.
- A line without the delimiter is written whole, or dropped with `only_delimited` (cut -s).
  Every output line ends with a newline, the last one too (as cut does).
- Fast paths, all in C (bytes.split, itemgetter, join, one regex over the chunk): a prefix of
  the fields (`1`, `1-3`) is one `findall`; any other LIST splits each line at most as far
  as its last field. Only a chunk holding lines that are too short for LIST takes a per-line
  path for those lines.
- It keeps lines as lines (record stages after it still see `split: lines` records); after
  CSV or JSONL its output is plain bytes, and the CSV header goes through it like any line.
"""
from __future__ import annotations

import operator
import re
from itertools import compress, starmap
from typing import Any, Literal

import msgspec

from dataflow.predicates import OptionError, field_key
from dataflow.records import RecordFormat
from dataflow.streams import ChunkInfo, RecordTransform, Transform

_MISSING = object()
_json_encoder = msgspec.json.Encoder()


class Select(RecordTransform):
    name = "select"

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        fields: list[str | int]
        rename: dict[str, str] = {}
        missing: Literal["omit", "null"] = "omit"

    def __init__(self, fields: list[str | int], rename: dict[str, str] | None = None,
                 missing: str = "omit"):
        if isinstance(fields, (str, int)):
            fields = [fields]
        self.fields = list(fields)
        self.rename = dict(rename or {})
        self.missing = missing
        if not self.fields:
            raise OptionError("name at least one field", ['fields'])
        for i, f in enumerate(self.fields):
            if isinstance(f, bool) or not isinstance(f, (str, int)) or f == "":
                raise OptionError(f"a field is a name or a number from 1, got {f!r}",
                                  ["fields", i])
            if isinstance(f, int) and f < 1:
                raise OptionError(f"fields are numbered from 1 (as in cut and awk), got {f}",
                                  ["fields", i])
        if missing not in ("omit", "null"):
            raise OptionError(f"omit or null, got {missing!r}", ["missing"])
        written = [str(f) for f in self.fields]
        for old in self.rename:
            if old not in written:
                import difflib
                close = difflib.get_close_matches(old, written, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else \
                    f" (fields: {', '.join(written)})"
                raise OptionError(f"{old!r} is not one of the selected fields{hint}", ['rename'])
        self.names = [self.rename.get(w, w) for w in written]   # output names

    def bind(self, fmt: Any) -> Any:
        fmt = super().bind(fmt)
        kind = fmt.kind
        keys = [f if isinstance(f, int) else field_key(f, kind, fmt.columns)
                for f in self.fields]
        for i, key in enumerate(keys):
            if key == 0:
                raise OptionError("fields are numbered from 1 (as in cut and awk), got $0",
                                  ["fields", i])
            try:
                fmt.getter(key)      # raises ValueError for a field this format cannot have
            except ValueError as e:
                raise OptionError(str(e), ["fields", i]) from None
        self.keys = keys
        if kind == "lines":
            if self.rename:
                raise OptionError("lines have no field names; it goes with split: "
                                 "csv or jsonl", ['rename'])
            self.index = [k - 1 for k in keys]
            self.width = max(self.index) + 1
        elif kind in ("csv", "tsv"):
            if fmt.columns is None:
                self.index = [k - 1 if isinstance(k, int) else -1 for k in keys]
                out = fmt.with_columns(None) if fmt.header else fmt
            else:
                cols = fmt.columns
                self.index = [k - 1 if isinstance(k, int) else cols.index(k) for k in keys]
                names = [cols[i] if isinstance(k, int) and i < len(cols) else str(k)
                         for k, i in zip(keys, self.index)]
                names = [self.rename.get(str(f), self.rename.get(n, n))
                         for f, n in zip(self.fields, names)]
                out = fmt.with_columns(names)
            self.width = max(self.index) + 1
            self.output_format = out
            return out
        else:   # jsonl
            self.array = all(isinstance(k, int) for k in keys)
            self.paths = [k.split(".") if isinstance(k, str) else k for k in keys]
            self.fast = None
            if not self.array and all(isinstance(p, list) for p in self.paths) and \
                    len(set(self.names)) == len(self.names):
                made = json_struct(self.paths, None if self.missing == "null" else
                                   msgspec.UNSET)
                if made is not None:
                    cls, getters = made
                    out = None
                    if self.names != [p[0] for p in self.paths] or \
                            any(len(p) > 1 for p in self.paths):   # renamed or nested
                        out = msgspec.defstruct(
                            "Selected", [(f"f{i}", Any, msgspec.UNSET)
                                         for i in range(len(self.names))],
                            rename={f"f{i}": n for i, n in enumerate(self.names)}, gc=False)
                    self.fast = (msgspec.json.Decoder(cls), out, getters)
            # JSON lines straight from the source: decode only the selected keys (see
            # transform); after another record stage, its records are used as they are
            self.record_mode = self.fast is None
        return fmt

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        if self.fast is None:
            return super().transform(data, chunk)
        decoder, out, getters = self.fast
        records = fast_records(decoder, data)
        if records is None:
            return super().transform(data, chunk)
        if out is not None:
            records = list(starmap(out, zip(*[map(get, records) for get in getters])))
        return _json_encoder.encode_lines(records)

    def process(self, records: list[Any], chunk: ChunkInfo) -> list[Any]:
        kind = self.input_format.kind
        if kind == "jsonl":
            return self._json(records)
        if kind == "lines":
            return self._lines(records)
        return self._rows(records)

    def _rows(self, rows: list[list[str]]) -> list[Any]:
        index = self.index
        if len(index) == 1:
            i = index[0]
            try:
                return [[r[i]] for r in rows]
            except IndexError:
                return [[r[i] if i < len(r) else ""] for r in rows]
        get = operator.itemgetter(*index)
        try:
            return list(map(get, rows))          # tuples: the CSV writer takes them
        except IndexError:
            width = self.width
            return [get(r) if len(r) >= width else
                    [r[i] if i < len(r) else "" for i in index] for r in rows]

    def _lines(self, lines: list[bytes]) -> list[bytes]:
        index = self.index
        width = self.width           # split no further than the last field wanted
        if len(index) == 1:
            i = index[0]
            out = []
            for line in lines:
                f = line.split(None, width)
                out.append(f[i] if i < len(f) else b"")
            return out
        get = operator.itemgetter(*index)
        split = operator.methodcaller("split", None, width)
        try:
            return list(map(b" ".join, map(get, map(split, lines))))
        except IndexError:
            out = []
            for line in lines:
                f = line.split(None, width)
                out.append(b" ".join([f[i] if i < len(f) else b"" for i in index]))
            return out

    def _json(self, records: list[Any]) -> list[Any]:
        names = self.names
        paths = self.paths
        null = self.missing == "null"
        if self.array:
            index = [k - 1 for k in self.keys]
            out_a: list[Any] = []
            for r in records:
                if isinstance(r, list):
                    n = len(r)
                    out_a.append([r[i] for i in index if i < n] if not null else
                                 [r[i] if i < n else None for i in index])
                else:
                    out_a.append([None] * len(index) if null else [])
            return out_a
        simple = all(isinstance(p, list) and len(p) == 1 for p in paths)
        if simple:
            keys = [p[0] for p in paths]
            pairs = list(zip(keys, names))
            if null:
                return [{n: r.get(k) for k, n in pairs} if isinstance(r, dict) else
                        dict.fromkeys(names) for r in records]
            return [{n: r[k] for k, n in pairs if k in r} if isinstance(r, dict) else {}
                    for r in records]
        out = []
        for r in records:
            obj = {}
            for p, n in zip(paths, names):
                v = _dig(r, p)
                if v is _MISSING:
                    if null:
                        obj[n] = None
                else:
                    obj[n] = v
            out.append(obj)
        return out


def _dig(value: Any, path: Any) -> Any:
    if isinstance(path, int):
        return value[path - 1] if isinstance(value, list) and path <= len(value) else _MISSING
    for part in path:
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
            if value is _MISSING:
                return value
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


# ----------------------------------------------------------------------------- JSON fast path
_NESTED = (bool, int, float, str, list)


def json_struct(paths: list[list[str]], default: Any) -> tuple[Any, list[Any]] | None:
    """A msgspec Struct type that decodes just `paths` (key paths into a JSON object) and one
    getter per path (struct -> value, `default` when missing), or None when the paths do not
    fit a Struct (list indices, a key both a value and a parent). msgspec skips the other
    keys without building them: several times faster than decoding whole objects to dicts.
    A record that is not an object fails to decode (msgspec.ValidationError): callers then
    take the general path."""
    tree: dict[str, Any] = {}
    for path in paths:
        if not path or any(not part or part.isdigit() for part in path):
            return None
        node = tree
        for i, part in enumerate(path):
            leaf = i == len(path) - 1
            if part in node:
                if leaf != (node[part] is None):
                    return None
            else:
                node[part] = None if leaf else {}
            if not leaf:
                node = node[part]
    counter = [0]

    def make(node: dict[str, Any]) -> tuple[Any, dict[str, tuple[str, Any]]]:
        fields = []
        rename = {}
        inner = {}
        for i, (key, child) in enumerate(node.items()):
            name = f"f{i}"
            rename[name] = key
            if child is None:
                fields.append((name, Any, default))
                inner[key] = (name, None)
            else:
                sub, sub_inner = make(child)
                fields.append((name, sub | None | _NESTED[0] | _NESTED[1] | _NESTED[2]
                               | _NESTED[3] | _NESTED[4], default))
                inner[key] = (name, (sub, sub_inner))
        counter[0] += 1
        cls = msgspec.defstruct(f"Fields{counter[0]}", fields, rename=rename, gc=False)
        return cls, inner

    root, layout = make(tree)
    getters = []
    for path in paths:
        steps = []
        node_layout, cls = layout, root
        for part in path:
            name, sub = node_layout[part]
            steps.append((cls, name))
            if sub is not None:
                cls, node_layout = sub
        if len(steps) == 1:
            getters.append(operator.attrgetter(steps[0][1]))
        else:
            getters.append(_path_getter(steps, default))
    return root, getters


def _path_getter(steps: list[tuple[Any, str]], default: Any) -> Any:
    def get(value: Any) -> Any:
        for cls, name in steps:
            if value.__class__ is not cls:
                return default
            value = getattr(value, name)
        return value
    return get


def fast_records(decoder: Any, data: Any) -> list[Any] | None:
    """The chunk's JSON lines decoded by `decoder` (a Struct of only the keys a stage reads),
    or None when one does not fit it (not an object of that shape, invalid JSON, not UTF-8):
    the stage then takes its general path, which decodes everything and says where."""
    try:
        return decoder.decode_lines(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def filter_json_lines(data: Any, decoder: Any, mask: Any, chunk: ChunkInfo) -> bytes | None:
    """The JSON lines of `data` that `mask(records)` keeps, copied as they are, with the
    (kept, dropped) summary; None when the fast path cannot take the chunk (fast_records)."""
    records = fast_records(decoder, data)
    lines = json_lines_of(data, len(records)) if records is not None else None
    if lines is None:
        return None
    kept = list(compress(lines, mask(records)))
    chunk.summary = (len(kept), len(lines) - len(kept))
    if not kept:
        return b""
    kept.append(b"")
    return b"\n".join(kept)


def json_lines_of(data: Any, count: int) -> list[bytes] | None:
    """The non-blank lines of a JSONL chunk (what msgspec's decode_lines decodes, one each),
    or None if there are not `count` of them."""
    lines = list(filter(bytes.strip, bytes(data).split(b"\n")))
    return lines if len(lines) == count else None


# ----------------------------------------------------------------------------- cut
def parse_list(spec: str | int) -> tuple[list[int], int]:
    """cut's LIST (`1,3-5,7-`, `-3`) -> (sorted field numbers below the open range, start of
    the open range or 0 for none). Raises ValueError with cut's wording."""
    if isinstance(spec, bool) or not isinstance(spec, (str, int)):
        raise OptionError(f"a list such as \"1,3-5,7-\", got {spec!r}", ["fields"])
    text = str(spec).strip()
    if not text:
        raise OptionError("an empty list; give fields such as \"1,3-5,7-\"", ['fields'])
    chosen: set[int] = set()
    open_from = 0
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d*)(-?)(\d*)", part)
        if not part or not m or (m.group(2) == "-" and not m.group(1) and not m.group(3)):
            raise OptionError(f"invalid field range {part!r} in {text!r} (a list is "
                             f"N, N-M, N- or -M, separated by commas)", ['fields'])
        lo_s, dash, hi_s = m.groups()
        lo = int(lo_s) if lo_s else 1
        if lo < 1 or (hi_s and int(hi_s) < 1):
            raise OptionError(f"fields are numbered from 1, got {part!r}", ['fields'])
        if not dash:
            chosen.add(lo)
        elif not hi_s:
            open_from = lo if not open_from else min(open_from, lo)
        else:
            hi = int(hi_s)
            if hi < lo:
                raise OptionError(f"invalid decreasing range {part!r}", ['fields'])
            if hi - lo > 1_000_000:
                raise OptionError(f"the range {part!r} is too wide: write {lo}- for "
                                 f"all fields from {lo} on", ['fields'])
            chosen.update(range(lo, hi + 1))
    if open_from:
        chosen = {f for f in chosen if f < open_from}
        # a run of single fields that reaches the open range joins it
        while open_from - 1 in chosen:
            chosen.remove(open_from - 1)
            open_from -= 1
    return sorted(chosen), open_from


def complement_fields(fields: list[int], open_from: int) -> tuple[list[int], int]:
    """The fields not in (fields, open_from), in the same form."""
    if open_from:
        return [f for f in range(1, open_from) if f not in set(fields)], 0
    top = max(fields) if fields else 0
    out = [f for f in range(1, top + 1) if f not in set(fields)]
    nxt = top + 1
    while out and out[-1] == nxt - 1:
        nxt = out.pop()
    return out, nxt


class Cut(Transform):
    name = "cut"

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        fields: str | int
        delimiter: str = "\t"
        complement: bool = False
        only_delimited: bool = False
        output_delimiter: str | None = None

    def __init__(self, fields: str | int, delimiter: str = "\t", complement: bool = False,
                 only_delimited: bool = False, output_delimiter: str | None = None):
        self.fields = fields
        d = delimiter.encode("utf-8", "surrogateescape") if isinstance(delimiter, str) \
            else bytes(delimiter)
        if len(d) != 1:
            raise OptionError(f"the delimiter must be a single byte, as in cut, got "
                             f"{delimiter!r}", ['delimiter'])
        if d == b"\n":
            raise OptionError("a newline ends the lines; it cannot separate fields", ['delimiter'])
        self.delimiter = d
        self.complement = complement
        self.only_delimited = only_delimited
        od = output_delimiter
        self.output_delimiter = None if od is None else (
            od.encode("utf-8", "surrogateescape") if isinstance(od, str) else bytes(od))
        sel, open_from = parse_list(fields)
        if complement:
            sel, open_from = complement_fields(sel, open_from)
        self.sel, self.open_from = sel, open_from
        self._plan()

    def _plan(self) -> None:
        d = self.delimiter
        sel, k = self.sel, self.open_from
        D = re.escape(d)
        F = b"[^" + D + b"\\n]*"
        # "1-": every field, the line as it is
        self.everything = not sel and k == 1
        # fields 1..n: the output is a prefix of the line, one findall over the chunk
        self.prefix_re = None
        if not k and sel and sel == list(range(1, len(sel) + 1)):
            self.prefix_re = re.compile(b"(?m)^((?:" + F + D + b"){0,%d}" % (len(sel) - 1) + F
                                        + b")[^\\n]*")
        self.drop_undelimited = re.compile(b"(?m)^" + F + b"\\n")
        index = [f - 1 for f in sel] + ([k - 1] if k else [])
        self.index = index
        self.maxsplit = (k - 1) if k else (max(sel) if sel else 0)
        self.need = (k - 1) if k else (max(sel) - 1 if sel else 0)   # delimiters a line needs
        self.split = operator.methodcaller("split", d, self.maxsplit)
        self.get = operator.itemgetter(*index) if index else None

    def bind(self, fmt: Any) -> Any:
        """Lines stay lines (record stages after cut still see them); anything else becomes
        plain bytes (cut's output is not CSV or JSON)."""
        if fmt.kind == "lines" and fmt.delimiter == b"\n":
            return fmt
        return RecordFormat(kind="bytes")

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        if not len(data):
            return b""
        od = self.output_delimiter
        if self.everything and not self.only_delimited and (od is None or od == self.delimiter):
            if data[-1] == 10:
                return data                       # every field: the input, untouched
            return [data, b"\n"]
        buf = bytes(data)
        if buf[-1] != 10:
            buf += b"\n"                          # the last line: cut ends it with a newline
        d = self.delimiter
        if self.only_delimited:
            buf = self.drop_undelimited.sub(b"", buf)
            if not buf:
                return b""
        if self.everything:
            out = buf
        elif self.prefix_re is not None:
            out = b"\n".join(self.prefix_re.findall(buf, 0, len(buf) - 1)) + b"\n"
        else:
            lines = buf[:-1].split(b"\n")
            out = b"\n".join(self._select(lines)) + b"\n"
        if od is not None and od != d:
            out = out.replace(d, od)     # selected fields hold no delimiter: every one is ours
        return out

    def _select(self, lines: list[bytes]) -> Any:
        get = self.get
        if get is None:                 # nothing selected (--complement of everything)
            d = self.delimiter
            return [b"" if d in line else line for line in lines]
        split = self.split
        single = len(self.index) == 1
        join = self.delimiter.join
        try:
            if single:
                return list(map(get, map(split, lines)))
            return list(map(join, map(get, map(split, lines))))
        except IndexError:
            pass
        # some lines are too short for the list (or have no delimiter): those go one by one
        need = self.need
        counts = map(operator.methodcaller("count", self.delimiter), lines)
        short = list(compress(range(len(lines)), map(need.__gt__, counts)))
        filler = self.delimiter * need
        originals = [lines[i] for i in short]
        for i in short:
            lines[i] = filler
        out = list(map(get, map(split, lines))) if single else \
            list(map(join, map(get, map(split, lines))))
        for i, line in zip(short, originals):
            out[i] = self._line(line)
        return out

    def _line(self, line: bytes) -> bytes:
        d = self.delimiter
        if d not in line:
            return line                 # -s dropped these before; cut writes them whole
        f = line.split(d)
        n = len(f)
        parts = [f[i] for i in self.index[:len(self.sel)] if i < n]
        k = self.open_from
        if k and n >= k:
            parts.extend(f[k - 1:])
        return d.join(parts)

