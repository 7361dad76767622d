"""Thousands of tiny input files (issue 5.8): read in order as one stream, like `cat`, one
descriptor open at a time, memory as for one file of the same bytes."""
from __future__ import annotations

import os
import random
import subprocess
import threading

import dataflow
from dataflow import FileSink, FileSource, pipeline

from conftest import require_tool

N = 3000


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def _tiny_files(root) -> list[str]:
    rng = random.Random(5)
    paths = []
    for i in range(N):
        d = root / f"d{i // 500}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"f{i:05d}.log"
        lines = [f"{i} {rng.choice(['GET', 'PUT', 'POST'])} /x/{rng.randrange(99)}"
                 for _ in range(rng.randrange(0, 12))]
        body = "\n".join(lines) + ("\n" if lines else "")
        p.write_text(body)
        paths.append(str(p))
    return paths


def test_thousands_of_tiny_files_no_descriptor_or_memory_growth(tmp_path):
    grep = require_tool("grep")
    paths = _tiny_files(tmp_path / "in")
    joined = tmp_path / "joined.log"
    with open(joined, "wb") as f:
        for p in paths:
            with open(p, "rb") as g:
                f.write(g.read())
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], len(_open_fds() - before))
            done.wait(0.002)

    # first the same bytes as one file (this also starts multiprocessing's resource tracker,
    # whose pipe stays open for the life of the process)
    one = pipeline(FileSource(str(joined)), dataflow.Grep(" PUT "),
                   FileSink(str(tmp_path / "one.out")), workers=2, memory_limit="256MiB",
                   chunk_size="64KiB")
    before = _open_fds()
    t = threading.Thread(target=sample)
    t.start()
    try:
        many = pipeline(FileSource(str(tmp_path / "in" / "**" / "*.log")),
                        dataflow.Grep(" PUT "), FileSink(str(tmp_path / "many.out")),
                        workers=2, memory_limit="256MiB", chunk_size="64KiB")
    finally:
        done.set()
        t.join()
    expected = subprocess.run([grep, " PUT ", str(joined)], capture_output=True).stdout
    assert expected and (tmp_path / "many.out").read_bytes() == expected
    assert (tmp_path / "one.out").read_bytes() == expected
    assert many.bytes_in == os.path.getsize(joined) and many.chunks > 1
    # the job's own descriptors (pipes, sentinels, arena, output) and one input at a time:
    # not one per file; none left after (others may have closed: earlier tests' leftovers)
    assert peak[0] < 40, peak[0]
    assert not _open_fds() - before
    assert many.peak_memory < one.peak_memory + (16 << 20), (many.peak_memory, one.peak_memory)
