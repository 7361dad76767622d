"""dataflow: stream large files through parallel worker processes over shared memory, in
order, under a memory cap. Readable -> Transform(s) -> Writable, as in Node.js streams.

The names below load on first use, so that a worker process, which needs only the worker
loop and its stages, does not import the coordinator, psutil and the config loader, and the
`dataflow` command can start its workers before it imports any of them (__main__.py).
"""
from __future__ import annotations

import importlib

from .errors import (Cancelled, ConfigError, DataflowError, Interrupted, JobTimeout,
                     RecordTooLongError, ResourceError, SinkError, SourceError, StageError,
                     UsageError, WorkerCrashedError)

_LAZY = {
    "ChunkInfo": "streams", "Readable": "streams", "RecordTransform": "streams",
    "Transform": "streams", "Writable": "streams",
    "pipeline": "api", "stream": "api", "Stats": "coordinator",
    "FileSink": "sinks", "NullSink": "sinks", "StdoutSink": "sinks",
    "FileSource": "sources", "GenerateSource": "sources", "StdinSource": "sources",
    "astream": "aio", "apipeline": "aio", "CancelToken": "cancel", "compose": "chain",
    "Chain": "chain", "Tee": "tee", "Branch": "branch", "DirectorySink": "directory",
    "IterableSource": "iterables", "CallableSink": "iterables",
    "HttpSource": "http", "TcpSource": "tcp", "TcpSink": "tcp", "CommandSource": "procio",
    "CommandSink": "procio", "SinkClosedEarly": "procio", "FsspecSource": "remote",
    "FsspecSink": "remote", "Duplex": "duplex", "Peer": "duplex", "SocketPeer": "duplex",
}
_BUILTIN_TRANSFORMS = {"Passthrough": "passthrough", "Grep": "grep", "PythonFunction": "python",
                       "Gzip": "gzip", "Bgzf": "bgzf", "Zstd": "zstd", "Bz2": "bz2", "Xz": "xz",
                       "Lz4": "lz4", "Decompress": "decompress", "Exec": "exec", "Head": "head",
                       "Replace": "replace", "Cut": "cut", "Select": "select", "Where": "where",
                       "CsvToJsonl": "csv_to_jsonl", "JsonlToCsv": "jsonl_to_csv",
                       "Sample": "sample", "Count": "count", "Sum": "sum", "Min": "min",
                       "Max": "max", "Mean": "mean", "Top": "top", "Histogram": "histogram",
                       "TcpService": "tcp"}


def __getattr__(name: str) -> object:
    """The API (dataflow.pipeline, dataflow.FileSource, ...) and the built-in transforms
    (dataflow.Grep, dataflow.Gzip, ...), reached through the registry."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _BUILTIN_TRANSFORMS:
        from .registry import stage_class

        return stage_class(_BUILTIN_TRANSFORMS[name])
    raise AttributeError(f"module 'dataflow' has no attribute {name!r}")


__all__ = [
    "pipeline", "stream", "Stats", "Readable", "Transform", "RecordTransform", "Writable",
    "ChunkInfo",
    "FileSource", "StdinSource", "GenerateSource", "FileSink", "StdoutSink", "NullSink",
    "astream", "apipeline", "CancelToken", "compose", "Chain", "Tee", "Branch", "DirectorySink",
    "IterableSource", "CallableSink", "Cancelled", "JobTimeout", "HttpSource", "TcpSource",
    "TcpSink", "CommandSource", "CommandSink", "SinkClosedEarly", "FsspecSource", "FsspecSink",
    "Duplex", "Peer", "SocketPeer",
    "DataflowError", "ConfigError", "UsageError", "SourceError", "RecordTooLongError",
    "SinkError", "ResourceError", "StageError", "WorkerCrashedError", "Interrupted",
    *_BUILTIN_TRANSFORMS,
]
