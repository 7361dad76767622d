"""head: the first `n` records of the output, then the job stops reading.

Rules:
- A worker does not know how many records came before its chunk, so the cut is made where the
  output is reassembled in order: the coordinator counts the records going out (lines, JSON
  lines, or CSV rows, quoted newlines included; a CSV header is not a record) and ends the job
  after the n-th: no more input is read, the workers are stopped, the sink is closed with
  exactly n records (fewer if the input runs out first).
- It must be the last stage. In the workers it passes its input through untouched (no copy).
"""
from __future__ import annotations

import msgspec

from dataflow.streams import ChunkInfo, Transform


class Head(Transform):
    name = "head"
    keeps_format = True

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        n: int = 10

    def __init__(self, n: int = 10):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a whole number of records (0 or more), got {n!r}")
        self.n = n
        self.limit = n   # read by the coordinator: stop after this many output records

    def transform(self, data: memoryview, chunk: ChunkInfo) -> memoryview:
        return data
