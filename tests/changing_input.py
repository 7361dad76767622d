"""A transform that changes its own job's input file when it sees chunk 0, then works slowly
so the reader is still behind (test_input_changes.py). Workers import it by name."""
from __future__ import annotations

import os
import time

from dataflow.streams import ChunkInfo, Transform


class ChangeInput(Transform):
    name = "change-input"

    def __init__(self, path: str, how: str, delay: float = 0.02):
        self.path = path
        self.how = how
        self.delay = delay

    def transform(self, data: memoryview, chunk: ChunkInfo) -> memoryview:
        if chunk.seq == 0:
            if self.how == "append":
                with open(self.path, "ab") as f:
                    f.write(b"appended while the job ran\n")
            elif self.how == "truncate":
                os.truncate(self.path, os.path.getsize(self.path) // 2)
            elif self.how == "touch":
                st = os.stat(self.path)
                os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        time.sleep(self.delay)
        return data
