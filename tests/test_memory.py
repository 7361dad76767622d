"""The memory cap: a 1 GiB job under `memory_limit: 128MiB` keeps the summed PSS of its whole
process tree (coordinator + workers; PSS counts the shared arena once) under 1.1x the limit.
Sampled from outside, independently of the engine's own accounting."""
from __future__ import annotations

import subprocess
import sys
import time

import psutil

LIMIT = 128 << 20


def tree_pss(root: psutil.Process) -> int:
    total = 0
    for p in [root] + root.children(recursive=True):
        try:
            if any("resource_tracker" in a for a in p.cmdline()):
                continue
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def test_1gib_job_stays_under_the_memory_limit(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(
        "source: {generate: {size: 1GiB, seed: 3}}\n"
        "stages:\n  - grep: {pattern: 'Mozilla', invert: true}\n  - passthrough\n"
        "sink: {file: out.log}\n"
        "workers: 2\nmemory_limit: 128MiB\nchunk_size: 4MiB\n")
    proc = subprocess.Popen([sys.executable, "-m", "dataflow.cli", "run", str(job), "--quiet",
                             "--stats", str(tmp_path / "stats.json")], cwd=tmp_path,
                            stderr=subprocess.PIPE, start_new_session=True)
    root = psutil.Process(proc.pid)
    peak = 0
    samples = 0
    while proc.poll() is None:
        peak = max(peak, tree_pss(root))
        samples += 1
        time.sleep(0.05)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.returncode == 0, err
    assert samples > 20, "the job ended too fast to measure"
    assert peak < 1.1 * LIMIT, f"peak tree PSS {peak / 2**20:.1f} MiB over 1.1 x 128 MiB"
    import msgspec
    stats = msgspec.json.decode((tmp_path / "stats.json").read_bytes())
    assert stats["bytes_in"] > (1 << 30) - 1000
    assert 0 < stats["peak_memory"] < 1.1 * LIMIT
    out = (tmp_path / "out.log").stat().st_size
    assert 0 < out < stats["bytes_in"]
