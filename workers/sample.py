"""sample: keep a fixed fraction of the records, chosen by a hash, the same on every run.

    - sample: {fraction: 0.01}                    # about 1% of the records
    - sample: {fraction: 0.1, by: user.id, seed: 7}   # 10% of the users, all their records

Rules:
- A record is kept when a hash of it, seeded by `seed`, falls in the first `fraction` of the
  hash range (0 < fraction <= 1). The choice depends on the record alone: the same input
  gives the same sample whatever the chunk size and the number of workers, and the same
  record is kept or dropped wherever it appears.
- The hash is CRC-32 (zlib, C speed, stable across Python versions and machines; not
  Python's salted hash()) over the seed's 8 bytes followed by the record's bytes: a line
  without its delimiter; a JSON line as it was read (after other record stages: as msgspec
  re-encodes the value); a CSV row's fields joined by the unit separator \\x1f, UTF-8.
- `by: field` hashes that field's value instead (text as UTF-8, anything else as its JSON
  text; a missing field as `null`), so all records with the same value go together: a
  sample of users rather than of requests. Fields are named as in `select` and `where`.
- Kept records are untouched, in order. The summary counts records kept and dropped.
"""
from __future__ import annotations

import zlib
from itertools import compress, repeat
from typing import Any

import msgspec

from dataflow.predicates import OptionError, field_key
from dataflow.streams import ChunkInfo, RecordTransform
from workers.select import filter_json_lines, json_struct
from workers.where import KeptDropped

_encode = msgspec.json.encode


class Sample(KeptDropped, RecordTransform):
    name = "sample"

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        fraction: float
        seed: int = 0
        by: str | int | None = None

    def __init__(self, fraction: float, seed: int = 0, by: str | int | None = None):
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or \
                not 0 < fraction <= 1:
            raise OptionError(f"a number above 0 and at most 1 (0.01 keeps about 1% "
                             f"of the records), got {fraction!r}", ['fraction'])
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise OptionError(f"a whole number, got {seed!r}", ['seed'])
        if by is not None and (isinstance(by, bool) or by == ""):
            raise OptionError(f"a field name or number, got {by!r}", ['by'])
        self.fraction = fraction
        self.seed = seed
        self.by = by
        # keep a record when crc32(seed bytes + record) < limit (the crc is 32 bits)
        self.limit = min(1 << 32, int(round(fraction * (1 << 32))))
        self.start = zlib.crc32((seed & ((1 << 64) - 1)).to_bytes(8, "little"))
        self.get: Any = None
        self.record_mode = True

    def bind(self, fmt: Any) -> Any:
        fmt = super().bind(fmt)
        key: Any = None
        if self.by is not None:
            key = self.by if isinstance(self.by, int) else field_key(self.by, fmt.kind,
                                                                     fmt.columns)
            if key == 0:
                raise OptionError("fields are numbered from 1", ['by'])
            try:
                self.get = fmt.getter(key)
            except ValueError as e:
                raise OptionError(str(e), ["by"]) from None
        self.kind = fmt.kind
        self.fast = None
        if self.by is not None and fmt.kind == "jsonl" and isinstance(key, str):
            made = json_struct([key.split(".")], None)   # decode just that key (msgspec)
            if made is not None:
                self.fast = (msgspec.json.Decoder(made[0]), made[1][0])
        # lines and JSON lines are hashed as read: no need to decode them (a byte stage then)
        self.record_mode = (self.by is not None and self.fast is None) or \
            fmt.kind not in ("lines", "jsonl")
        self.delimiter = fmt.delimiter if fmt.kind == "lines" else b"\n"
        return fmt

    def keep(self, keys: Any) -> Any:
        """Booleans, one per record key (bytes): kept or not."""
        return map(self.limit.__gt__, map(zlib.crc32, keys, repeat(self.start)))

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        if self.record_mode:
            return super().transform(data, chunk)
        if self.limit >= 1 << 32:
            return data
        if self.fast is not None:
            return self._by_field(data, chunk)
        d = self.delimiter
        lines = bytes(data).split(d)
        tail = lines.pop()     # b"" after a final delimiter, else the last line, unterminated
        if tail:
            lines.append(tail)
        if self.kind == "jsonl":
            lines = [line for line in lines if line.strip()]   # blank lines are not records
        kept = list(compress(lines, self.keep(lines)))
        chunk.summary = (len(kept), len(lines) - len(kept))
        if not kept:
            return b""
        body = d.join(kept)
        if tail and kept[-1] is tail:
            return body          # the last line had no delimiter: it still has none
        return body + d

    def _by_field(self, data: memoryview, chunk: ChunkInfo) -> Any:
        decoder, get = self.fast
        out = filter_json_lines(data, decoder,
                                lambda records: self.keep(map(_bytes, map(get, records))), chunk)
        return super().transform(data, chunk) if out is None else out

    def process(self, records: list[Any], chunk: ChunkInfo) -> list[Any]:
        if self.limit >= 1 << 32:
            kept = records
        else:
            kept = list(compress(records, self.keep(self._keys(records))))
        chunk.summary = (len(kept), len(records) - len(kept))
        return kept

    def _keys(self, records: list[Any]) -> Any:
        if self.get is not None:
            return map(_bytes, map(self.get, records))
        kind = self.kind
        if kind == "lines":
            return records
        if kind == "jsonl":
            return map(_encode, records)
        joined = map("\x1f".join, records)
        return map(str.encode, joined, repeat("utf-8"), repeat("surrogateescape"))



def _bytes(value: Any) -> bytes:
    if value.__class__ is bytes:
        return value
    if value.__class__ is str:
        return value.encode("utf-8", "surrogateescape")
    return _encode(value)
