"""Byte sizes as people write them: 4MiB, 256 MiB, 1GiB, 1.5GB, 4096; durations: 30, 30s, 2m, 1h.

Binary suffixes (KiB, MiB, GiB, TiB) are powers of 1024, decimal ones (kB/KB, MB, GB, TB) powers
of 1000; K, M, G, T alone are binary, as in GNU tools. A bare number is bytes.
"""
from __future__ import annotations

import re

_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "kb": 1000,
    "m": 1 << 20, "mib": 1 << 20, "mb": 1000**2,
    "g": 1 << 30, "gib": 1 << 30, "gb": 1000**3,
    "t": 1 << 40, "tib": 1 << 40, "tb": 1000**4,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(value: int | str) -> int:
    """Return the number of bytes `value` names; raise ValueError with the reason."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 4MiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    m = _SIZE.fullmatch(value)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise ValueError(f"expected a size such as 4096, 4MiB or 1.5GB, got {value!r}")
    return int(float(m.group(1)) * _UNITS[unit])


_SECONDS = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_duration(value: float | int | str) -> float:
    """Seconds that `value` names (a bare number is seconds); raise ValueError with the reason."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s or 5m, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION.fullmatch(value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _SECONDS:
            raise ValueError(f"expected a duration such as 30, 30s, 500ms, 5m or 1h, "
                             f"got {value!r}")
        seconds = float(m.group(1)) * _SECONDS[unit]
    if not seconds > 0:
        raise ValueError(f"a duration must be more than 0, got {value!r}")
    return seconds


def format_size(n: float) -> str:
    """Short human form: 4.0 MiB, 812 B."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
