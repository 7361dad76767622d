"""compose(): a reusable chain of transforms, used wherever one transform goes.

Rules:
- `compose(a, b, c)` returns a `Chain`; a Chain inside a chain is flattened, so
  `pipeline(src, compose(clean, compose(gzip)), sink)` runs clean's stages then gzip. The job
  sees the flat list: placement rules (a compressor last, head last...) apply to it.
- From YAML, `- compose: "pkg.module:name"` puts the chain (or list of transforms) found at
  that import path in place; errors name the YAML stage that brought it in.
- A chain holds transform objects, so reusing it reuses them: fine for jobs one after
  another (each run re-binds its stages), not for two jobs at once in threads.
"""
from __future__ import annotations

from typing import Any, Iterator

from .streams import Transform


class Chain:
    """Transforms run one after another: `compose(*stages)` (like Node's `stream.compose`)."""

    def __init__(self, stages: list[Transform], name: str | None = None):
        self.stages = stages
        self.name = name or " -> ".join(s.name for s in stages)

    def __iter__(self) -> Iterator[Transform]:
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    def __repr__(self) -> str:
        return f"compose({', '.join(repr(s) for s in self.stages)})"


def compose(*stages: Any, name: str | None = None) -> Chain:
    """Join transforms (and chains) into one reusable Chain."""
    for i, s in enumerate(stages):
        if not isinstance(s, (Chain, Transform)):
            raise TypeError(f"compose() argument {i} ({s!r}) is not a dataflow.Transform or "
                            f"a Chain")
    if not stages:
        raise TypeError("compose() needs at least one transform")
    return Chain(flatten(stages), name)


def flatten(stages: Any) -> list[Any]:
    """The stages with every Chain expanded in place."""
    out: list[Any] = []
    for s in stages:
        if isinstance(s, Chain):
            out.extend(s.stages)
        else:
            out.append(s)
    return out
