"""passthrough: the output is the input. Costs no copy: the input slot becomes the output."""
from __future__ import annotations

import msgspec

from dataflow.streams import ChunkInfo, Transform


class Passthrough(Transform):
    name = "passthrough"
    needs_records = False
    keeps_format = True

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        pass

    def transform(self, data: memoryview, chunk: ChunkInfo) -> memoryview:
        return data
