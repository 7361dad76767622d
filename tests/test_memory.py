"""The memory cap: a 1 GiB job keeps the summed PSS of its whole process tree (coordinator +
workers; PSS counts the shared arena once) under 1.1x its `memory_limit`, undisturbed and while
a worker is SIGKILLed every 2 s. Sampled from outside, independently of the engine's own
accounting."""
from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from typing import Callable

import msgspec
import psutil

from conftest import kill_group_if_alive, require_tool, worker_processes
from dataflow.generate import write_sample

TESTS = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20


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


def sample_until_exit(proc: subprocess.Popen, every: float = 0.05,
                      on_sample: Callable[[psutil.Process], None] | None = None
                      ) -> tuple[int, int]:
    """Sample the PSS of `proc`'s process tree every `every` s until it exits, calling
    `on_sample(root)` after each sample; return (peak, number of samples)."""
    root = psutil.Process(proc.pid)
    peak = samples = 0
    while proc.poll() is None:
        peak = max(peak, tree_pss(root))
        samples += 1
        if on_sample is not None:
            on_sample(root)
        time.sleep(every)
    return peak, samples


def run_sampled(args: list[str], cwd, env: dict[str, str] | None = None,
                on_sample: Callable[[psutil.Process], None] | None = None
                ) -> tuple[int, int, int, str]:
    """Run the CLI with `args` in its own session, sampling its tree's PSS until it exits
    (killed if the test fails meanwhile); return (exit code, peak, samples, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "dataflow", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        peak, samples = sample_until_exit(proc, on_sample=on_sample)
    finally:
        kill_group_if_alive(proc)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    return proc.returncode, peak, samples, err


def test_1gib_job_stays_under_the_memory_limit(tmp_path):
    limit = 128 * MiB
    job = tmp_path / "job.yaml"
    job.write_text(
        "source: {generate: {size: 1GiB, seed: 3}}\n"
        "stages:\n  - grep: {pattern: 'Mozilla', invert: true}\n  - passthrough\n"
        "sink: {file: out.log}\n"
        "workers: 2\nmemory_limit: 128MiB\nchunk_size: 4MiB\n")
    code, peak, samples, err = run_sampled(
        ["run", str(job), "--quiet", "--stats", str(tmp_path / "stats.json")], tmp_path)
    assert code == 0, err
    assert samples > 20, "the job ended too fast to measure"
    assert peak < 1.1 * limit, f"peak tree PSS {peak / MiB:.1f} MiB over 1.1 x 128 MiB"
    stats = msgspec.json.decode((tmp_path / "stats.json").read_bytes())
    assert stats["bytes_in"] > (1 << 30) - 1000
    assert 0 < stats["peak_memory"] < 1.1 * limit
    out = (tmp_path / "out.log").stat().st_size
    assert 0 < out < stats["bytes_in"]
    (tmp_path / "out.log").unlink()


class WorkerKiller:
    """SIGKILLs one worker of the coordinator every `every` s: the one that has lived longest,
    if it has lived a second (so it is ready and running chunks, not starting)."""

    def __init__(self, every: float):
        self.every = every
        self.last = time.monotonic()
        self.kills: list[tuple[float, int]] = []   # (seconds into the job, pid)
        self.started = self.last

    def __call__(self, root: psutil.Process) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        workers = []
        for w in worker_processes(root.pid):
            try:
                if time.time() - w.create_time() >= 1.0:
                    workers.append((w.create_time(), w))
            except psutil.Error:
                pass
        if not workers:
            return
        _, victim = min(workers, key=lambda cw: cw[0])
        try:
            victim.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            return
        self.last = now
        self.kills.append((now - self.started, victim.pid))


def test_1gib_job_with_a_worker_sigkilled_every_2s_stays_under_the_limit_and_exact(tmp_path):
    """1 GiB through `grep -v` under memory_limit 256MiB while the test SIGKILLs a worker
    every 2 s: the tree stays under 1.1x the limit, every killed chunk is re-run, and the
    output is byte-identical to GNU grep's on the same file."""
    grep = require_tool("grep")
    limit = 256 * MiB
    pattern = '" 5[0-9][0-9] '
    src, out = tmp_path / "in.log", tmp_path / "out.log"
    try:
        # 16 copies of a generated 64 MiB log (generating 1 GiB line by line takes ~10 s)
        block = io.BytesIO()
        write_sample(block, 64 * MiB, seed=3)
        with open(src, "wb") as f:
            for _ in range(16):
                f.write(block.getbuffer())
        del block
        want, want_size = _sha256_of_command([grep, "-a", "-v", pattern, str(src)])
        assert 0 < want_size < src.stat().st_size
        # Slow(0.06), a sleep per 4 MiB chunk (output = input), makes the job last ~10 s
        # (257 chunks x 0.06 s / 2 workers; ~4-6 s without it), so that kills every 2 s land
        # at least 3 times (4 or 5)
        (tmp_path / "slowjob.py").write_text("from helper_transforms import Slow\n"
                                             "stages = [Slow(0.06)]\n")
        (tmp_path / "job.yaml").write_text(
            f"source: {{file: '{src}'}}\n"
            f"stages:\n  - grep: {{pattern: '{pattern}', invert: true}}\n"
            f"  - compose: slowjob:stages\n"
            f"sink: {{file: '{out}'}}\nworkers: 2\nmemory_limit: 256MiB\nchunk_size: 4MiB\n")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [TESTS, os.environ.get("PYTHONPATH")]))}
        killer = WorkerKiller(every=2.0)
        code, peak, samples, err = run_sampled(["run", "job.yaml", "--stats", "stats.json"],
                                               tmp_path, env, on_sample=killer)
        assert code == 0, err
        assert len(killer.kills) >= 3, f"only {killer.kills} kills: the job ended too fast"
        assert samples > 50, "the job ended too fast to measure"
        assert peak < 1.1 * limit, f"peak tree PSS {peak / MiB:.1f} MiB over 1.1 x 256 MiB"
        stats = msgspec.json.decode((tmp_path / "stats.json").read_bytes())
        assert stats["bytes_in"] == src.stat().st_size
        assert stats["retries"] >= 3, (stats["retries"], killer.kills)
        assert f", {stats['retries']} retries" in err, err
        assert 0 < stats["peak_memory"] < 1.1 * limit
        assert out.stat().st_size == want_size
        assert _sha256_of_file(out) == want, "the output differs from GNU grep's"
    finally:
        for p in (src, out):
            p.unlink(missing_ok=True)


def _sha256_of_command(argv: list[str]) -> tuple[str, int]:
    """SHA-256 and length of what `argv` writes to stdout, hashed as it streams."""
    h, n = hashlib.sha256(), 0
    with subprocess.Popen(argv, stdout=subprocess.PIPE) as p:
        while chunk := p.stdout.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    assert p.returncode == 0, argv
    return h.hexdigest(), n


def _sha256_of_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()
