"""User functions for tests/test_records.py (imported by name in spawned workers)."""
from __future__ import annotations

import csv
import io
import json
import re


def same(record):
    return record


def rows_of_chunk(chunk: bytes) -> bytes:
    """Parse the chunk alone as CSV (strict) and return its rows as JSON lines: a chunk cut
    inside a quoted field would parse differently, or fail."""
    text = chunk.decode("utf-8", "surrogateescape")
    rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    return "".join(json.dumps(r) + "\n" for r in rows).encode()   # ASCII: surrogates escaped


def starts_with_record(chunk: bytes, pattern: str) -> bytes:
    if chunk and not re.match(pattern.encode(), chunk):
        raise ValueError(f"chunk starts inside a record: {chunk[:40]!r}")
    return chunk


def whole_records(chunk: bytes, size: int) -> bytes:
    if len(chunk) % size:
        raise ValueError(f"chunk of {len(chunk)} bytes is not whole {size}-byte records")
    return chunk


def fail_on(record, value):
    if record == value or (isinstance(record, dict) and value in record.values()):
        raise ValueError(f"refusing {value!r}")
    return record


def add_total(record):
    record["total"] = int(record["a"]) + int(record["b"])
    return record


def with_state(line: bytes, state, suffix: str) -> bytes:
    return line + state + suffix.encode()


def make_state(suffix: str) -> bytes:
    return b"|state:"


def keep_even_as_text(line: bytes):
    """None drops a line; str results are encoded (line mode)."""
    n = int(line.split()[-1])
    return None if n % 2 else f"even {n}"


def number_on(line: bytes, value: bytes):
    return 42 if line == value else line
