"""dataflow: stream large files through parallel worker processes over shared memory, in
order, under a memory cap. Readable -> Transform(s) -> Writable, as in Node.js streams."""
from __future__ import annotations

from typing import Any

from .api import pipeline, stream
from .coordinator import Stats
from .errors import (ConfigError, DataflowError, Interrupted, RecordTooLongError, ResourceError,
                     SinkError, SourceError, StageError, UsageError, WorkerCrashedError)
from .sinks import FileSink, NullSink, StdoutSink
from .sources import FileSource, GenerateSource, StdinSource
from .streams import ChunkInfo, Readable, Transform, Writable

_BUILTIN_TRANSFORMS = {"Passthrough": "passthrough", "Grep": "grep", "PythonFunction": "python",
                       "Gzip": "gzip", "Bgzf": "bgzf", "Zstd": "zstd", "Bz2": "bz2", "Xz": "xz",
                       "Lz4": "lz4", "Decompress": "decompress"}


def __getattr__(name: str) -> Any:
    """Built-in transforms, reached through the registry (dataflow.Grep, dataflow.Passthrough)."""
    if name in _BUILTIN_TRANSFORMS:
        from .registry import stage_class

        return stage_class(_BUILTIN_TRANSFORMS[name])
    raise AttributeError(f"module 'dataflow' has no attribute {name!r}")


__all__ = [
    "pipeline", "stream", "Stats", "Readable", "Transform", "Writable", "ChunkInfo",
    "FileSource", "StdinSource", "GenerateSource", "FileSink", "StdoutSink", "NullSink",
    "DataflowError", "ConfigError", "UsageError", "SourceError", "RecordTooLongError",
    "SinkError", "ResourceError", "StageError", "WorkerCrashedError", "Interrupted",
    *_BUILTIN_TRANSFORMS,
]
