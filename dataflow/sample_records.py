"""The synthetic access log as JSON lines or CSV, for examples and benchmarks of record jobs.

Each log line becomes one record with the fields ip, time, method, path, protocol, status,
bytes, referer, agent and duration_ms (a made-up response time, fixed by the line's CRC so the
output stays deterministic); a log size of `-` (no body) becomes 0. Every log line becomes a
record. Status, bytes and duration_ms are numbers in JSON; the CSV has a
header row, and its agent fields are quoted where they hold commas.
"""
from __future__ import annotations

import csv
import io
import re
import zlib
from typing import Iterator

import msgspec

from .generate import generate_blocks

FIELDS = ["ip", "time", "method", "path", "protocol", "status", "bytes", "referer", "agent",
          "duration_ms"]
_LINE = re.compile(rb'(\S+) \S+ \S+ \[([^\]]*)\] "(\S+) (\S+) (\S+)" (\d+) (\d+|-) "([^"]*)" '
                   rb'"([^"]*)"')
_encode = msgspec.json.Encoder().encode


def _rows(block: bytes) -> Iterator[list]:
    for m in _LINE.finditer(block):
        ip, time, method, path, proto, status, size, ref, agent = (
            g.decode("ascii", "replace") for g in m.groups())
        duration = zlib.crc32(m.group(0)) % 3000
        # a size of "-" (no body: 204, 304) is 0 bytes
        yield [ip, time, method, path, proto, int(status), int(size) if size != "-" else 0,
               ref, agent, duration]


def convert(block: bytes, fmt: str, *, header: bool = False) -> bytes:
    """Access-log lines -> JSON lines or CSV rows (with the header row first if asked)."""
    if fmt == "jsonl":
        return b"".join(_encode(dict(zip(FIELDS, row))) + b"\n" for row in _rows(block))
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    if header:
        w.writerow(FIELDS)
    w.writerows(_rows(block))
    return out.getvalue().encode()


def sample_blocks(size: int, seed: int, fmt: str) -> Iterator[bytes]:
    """Blocks of the sample in `fmt` (log, jsonl, csv) from `size` bytes of generated log."""
    first = True
    for block in generate_blocks(size, seed):
        yield block if fmt == "log" else convert(block, fmt, header=first)
        first = False
