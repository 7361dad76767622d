"""Progress on stderr: a live bar when stderr is a terminal, and a one-line summary at the end.

The bar shows source bytes done / total, MB/s, ETA, output bytes and busy workers; it is
redrawn at most `REFRESH` times a second and never when stderr is not a terminal.
"""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from .sizes import format_size

REFRESH = 0.2  # seconds between redraws: smooth enough, cheap enough


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(self, total: int | None, stream: TextIO | None = None, live: bool | None = None):
        self.total = total
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.started = time.monotonic()
        self.last = 0.0
        self.drawn = False

    def update(self, run: Any, sched: Any) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if now - self.last < REFRESH:
            return
        self.last = now
        st = run.stats
        elapsed = max(now - self.started, 1e-6)
        rate = st.bytes_in / elapsed
        busy = sched.statistics().busy_workers
        if self.total:
            pct = min(100.0, 100.0 * st.bytes_in / self.total)
            eta = (self.total - st.bytes_in) / rate if rate > 0 else 0
            head = (f"{pct:5.1f}% {format_size(st.bytes_in)}/{format_size(self.total)} "
                    f"ETA {_clock(eta)}")
        else:
            head = f"{format_size(st.bytes_in)}"
        line = (f"\r{head}  {rate / 1e6:7.1f} MB/s  out {format_size(st.bytes_out)}  "
                f"workers {busy}/{st.workers}")
        self.stream.write(line + "\x1b[K")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False


def summary(stats: Any) -> str:
    secs = max(stats.wall_seconds, 1e-6)
    line = (f"dataflow: {format_size(stats.bytes_in)} in, {format_size(stats.bytes_out)} out, "
            f"{stats.chunks} chunks, {stats.workers} workers, {secs:.2f}s "
            f"({stats.bytes_in / secs / 1e6:.1f} MB/s), peak memory "
            f"{format_size(stats.peak_memory)} of {format_size(stats.memory_limit)}")
    if stats.retries:
        line += f", {stats.retries} retries"
    if stats.resumed_at is not None:
        line += f", resumed at input byte {stats.resumed_at}"
    return line
