"""The registry: stage names used in YAML jobs -> the classes that implement them.

The engine reaches every transform through this table (or a user's `module:Class`), never by
importing a transform module directly. Each transform class may declare `Options`, a strict
msgspec Struct that validates its YAML arguments.
"""
from __future__ import annotations

import importlib
from typing import Any

STAGES: dict[str, str] = {
    "passthrough": "workers.passthrough:Passthrough",
    "grep": "workers.grep:Grep",
    "python": "workers.python:PythonFunction",
    "gzip": "workers.compress:Gzip",
    "bgzf": "workers.compress:Bgzf",
    "zstd": "workers.compress:Zstd",
    "bz2": "workers.compress:Bz2",
    "xz": "workers.compress:Xz",
    "lz4": "workers.compress:Lz4",
    "decompress": "workers.decompress:Decompress",
    "exec": "workers.exec:Exec",
    "tcp": "workers.tcp:TcpService",
    "head": "workers.head:Head",
    # text and record transforms
    "replace": "workers.replace:Replace",
    "cut": "workers.select:Cut",
    "select": "workers.select:Select",
    "where": "workers.where:Where",
    "csv_to_jsonl": "workers.convert:CsvToJsonl",
    "jsonl_to_csv": "workers.convert:JsonlToCsv",
    "sample": "workers.sample:Sample",
    # ordered folds
    "count": "workers.folds:Count",
    "sum": "workers.folds:Sum",
    "min": "workers.folds:Min",
    "max": "workers.folds:Max",
    "mean": "workers.folds:Mean",
    "top": "workers.folds:Top",
    "histogram": "workers.folds:Histogram",
}


def resolve(ref: str, *, main_alias: bool = False) -> Any:
    """Import `module:attr.path` and return the attribute. Raises ImportError/AttributeError."""
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected 'module:name', got {ref!r}")
    if module == "__main__" and main_alias:
        import sys

        mod = sys.modules.get("__mp_main__") or sys.modules["__main__"]
    else:
        mod = importlib.import_module(module)
    obj: Any = mod
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def stage_class(name: str) -> type:
    return resolve(STAGES[name])


def build(spec: dict[str, Any]) -> Any:
    """Rebuild a transform from its spec (see Transform.spec) inside a worker."""
    cls = resolve(spec["class"], main_alias=True)
    return cls(*spec.get("args", []), **spec.get("kwargs", {}))
