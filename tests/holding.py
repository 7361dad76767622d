"""A transform that holds `mib` MiB per worker from setup on (a model, say), and may declare
it (test_stage_memory.py). Workers import it by name."""
from __future__ import annotations

from dataflow.streams import ChunkInfo, Transform


class Hold(Transform):
    name = "hold"

    def __init__(self, mib: int, declare: bool = True):
        self.mib = mib
        self.declare = declare
        self.held = b""

    def worker_memory(self, chunk_size: int) -> int:
        return self.mib << 20 if self.declare else 0

    def setup(self) -> None:
        self.held = bytearray(self.mib << 20)
        for i in range(0, len(self.held), 4096):   # touch every page
            self.held[i] = 1

    def transform(self, data: memoryview, chunk: ChunkInfo) -> memoryview:
        return data
