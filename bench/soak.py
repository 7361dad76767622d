#!/usr/bin/env python3
"""Soak test: a long grep -> gzip job under a memory cap, undisturbed and with workers killed.

    python bench/soak.py [--size 1GiB] [--memory-limit 256MiB] [--workers 2] [--chaos]
                         [--kill-every 3] [--min-age 0] [--seed 1] [--max-attempts 20]
                         [--data-dir bench/data] [--json FILE]

The job reads `source: {generate: {size, seed}}` (synthetic access log, a pure function of the
seed: no input file, any size), drops the HTTP 5xx lines and gzips the rest at level 1 into a
file. It runs once undisturbed and, with --chaos, once more while a thread SIGKILLs a random
live worker of the coordinator at random intervals (exponential, mean --kill-every s). During
both runs the summed PSS of the process tree (coordinator and all descendants except
multiprocessing's resource_tracker) is sampled every 50 ms. Checks: exit status 0, the same
sha256 for both outputs, peak PSS <= 1.1x memory_limit, `gzip -t` (if gzip is installed), and
no process or /dev/shm segment of the run left behind. Exit status 1 if any check fails.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from dataflow.sizes import format_size, parse_size

HERE = Path(__file__).resolve().parent
PATTERN = '" 5[0-9][0-9] '
SAMPLE_SECONDS = 0.05
MEMORY_SLACK = 1.1  # peak tree PSS may exceed memory_limit by this factor


def kind(p: psutil.Process) -> str | None:
    """'tracker', 'worker', or None while unknown: just after fork, before exec, a child still
    shows its parent's command line."""
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return None
    return "tracker" if "resource_tracker" in cmd else "worker" if "spawn_main" in cmd else None


class Watch:
    """Sample the tree's PSS every 50 ms; with `chaos`, SIGKILL a random live worker (a direct
    child of the coordinator, not the resource tracker) at random intervals."""

    def __init__(self, pid: int, chaos: bool, kill_every: float, min_age: float,
                 rng: random.Random):
        self.root = psutil.Process(pid)
        self.t0 = time.perf_counter()
        self.peak = self.samples = 0
        self.kills: list[dict[str, Any]] = []
        self.seen: dict[int, psutil.Process] = {}   # every process of the tree, for the stray check
        self.born: dict[int, float] = {}            # when each was first seen (perf_counter)
        self.kind: dict[int, str] = {}               # pid -> 'tracker' | 'worker', once known
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sample_loop, daemon=True)]
        if chaos:
            self._threads.append(threading.Thread(target=self._chaos_loop, daemon=True,
                                                  args=(kill_every, min_age, rng)))

    def __enter__(self) -> "Watch":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _procs(self, recursive: bool) -> list[psutil.Process]:
        """The tree (or the direct children) but the resource tracker, Process objects reused."""
        try:
            found = self.root.children(recursive=recursive)
        except psutil.Error:
            return []
        procs = []
        for p in found:
            if p.pid not in self.seen:
                self.seen[p.pid], self.born[p.pid] = p, time.perf_counter()
            p = self.seen[p.pid]
            if p.pid not in self.kind and (k := kind(p)) is not None:
                self.kind[p.pid] = k
            if self.kind.get(p.pid) != "tracker":
                procs.append(p)
        return procs

    def _sample_loop(self) -> None:
        while not self._stop.is_set():
            total = 0
            for p in [self.root, *self._procs(recursive=True)]:
                try:
                    total += p.memory_full_info().pss
                except psutil.Error:
                    pass
            self.samples += 1
            self.peak = max(self.peak, total)
            self._stop.wait(SAMPLE_SECONDS)

    def _chaos_loop(self, mean: float, min_age: float, rng: random.Random) -> None:
        while not self._stop.wait(rng.expovariate(1 / mean)):
            live, now = [], time.perf_counter()
            for p in self._procs(recursive=False):
                try:
                    if (self.kind.get(p.pid) == "worker" and p.status() != psutil.STATUS_ZOMBIE
                            and now - self.born[p.pid] >= min_age):
                        live.append(p)
                except psutil.Error:
                    pass
            if not live:
                continue
            victim = rng.choice(sorted(live, key=lambda p: p.pid))
            try:
                victim.send_signal(signal.SIGKILL)  # psutil refuses a reused pid
            except psutil.Error:
                continue
            t, age = now - self.t0, now - self.born[victim.pid]
            self.kills.append({"t": round(t, 3), "pid": victim.pid, "age": round(age, 3)})
            print(f"  chaos: t={t:6.2f} s  SIGKILL worker {victim.pid} (seen {age:.2f} s)",
                  file=sys.stderr, flush=True)

    def strays(self, grace: float = 5.0) -> list[str]:
        """Processes of the tree still alive `grace` s after the coordinator exited (the
        resource tracker exits a moment after it)."""
        _, alive = psutil.wait_procs(list(self.seen.values()), timeout=grace)
        left = []
        for p in alive:
            try:
                left.append(f"{p.pid} {' '.join(p.cmdline())[:80]}")
            except psutil.Error:
                pass
        return left


def write_job(path: Path, a: argparse.Namespace, size: int, dst: Path, chaos: bool) -> None:
    # JSON is YAML: json.dumps quotes the pattern (" and spaces) and the paths correctly
    lines = [f"source: {{generate: {{size: {size}, seed: {a.seed}}}}}",
             "stages:",
             f"  - grep: {{pattern: {json.dumps(PATTERN)}, invert: true}}",
             "  - gzip: {level: 1}",
             f"sink: {{file: {json.dumps(str(dst))}}}",
             f"workers: {a.workers}",
             f"memory_limit: {json.dumps(a.memory_limit)}",
             "chunk_size: 4MiB"]
    if chaos:  # default 4: random kills may hit one chunk 4 times on an unlucky run
        lines.append(f"max_attempts: {a.max_attempts}")
    path.write_text("\n".join(lines) + "\n")


def busy_cpu() -> tuple[float, float]:
    """(CPU s busy on the whole machine, CPU s of our waited-for children and descendants)."""
    t, r = psutil.cpu_times(), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0),
            r.ru_utime + r.ru_stime)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def run_once(name: str, a: argparse.Namespace, size: int, limit: int, data: Path, tmp: Path,
             chaos: bool, rng: random.Random) -> dict[str, Any]:
    dst, job, stats = data / f"out-soak-{name}.gz", tmp / f"{name}.yaml", tmp / f"{name}.json"
    write_job(job, a, size, dst, chaos)
    dst.unlink(missing_ok=True)  # ours, from an earlier run killed hard (dataflow won't overwrite)
    argv = [sys.executable, "-m", "dataflow", "run", str(job), "--quiet", "--stats", str(stats)]
    print(f"run {name}: {' '.join(argv)}", file=sys.stderr, flush=True)
    t0, cpu0 = time.perf_counter(), busy_cpu()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with Watch(proc.pid, chaos, a.kill_every, a.min_age, rng) as w:
            _, err = proc.communicate()
    finally:  # Ctrl-C or SIGTERM here: stop dataflow the way a user would, let it clean up
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    seconds, cpu1 = time.perf_counter() - t0, busy_cpu()
    tree_cpu = cpu1[1] - cpu0[1]
    if proc.returncode in (-signal.SIGINT, -signal.SIGTERM):  # Ctrl-C reached dataflow first
        raise KeyboardInterrupt
    st = json.loads(stats.read_text()) if proc.returncode == 0 and stats.exists() else {}
    r: dict[str, Any] = {
        "run": name, "exit": proc.returncode, "error": err.strip()[-4000:] or None,
        "seconds": seconds, "bytes_in": st.get("bytes_in", size), "kills": len(w.kills),
        "kill_log": w.kills, "retries": st.get("retries"), "chunks": st.get("chunks"),
        "engine_seconds": st.get("wall_seconds"), "engine_peak": st.get("peak_memory"),
        "peak": w.peak, "samples": w.samples, "peak_ratio": w.peak / limit,
        "tree_cpu": tree_cpu, "other_cpu": max(0.0, cpu1[0] - cpu0[0] - tree_cpu),
        "strays": w.strays(),
        "shm_left": sorted(p.name for p in Path("/dev/shm").glob(f"dataflow-{proc.pid}-*")),
        "sha256": None, "gzip_t": None, "output_bytes": None, "stats": st}
    if r["error"]:
        print(f"  !! {name}: exit {proc.returncode}:\n{r['error']}", file=sys.stderr)
    if dst.exists() and proc.returncode == 0:
        r["output_bytes"], r["sha256"] = dst.stat().st_size, sha256(dst)
        if shutil.which("gzip"):
            t = subprocess.run(["gzip", "-t", str(dst)], capture_output=True, text=True)
            r["gzip_t"] = "ok" if t.returncode == 0 else (t.stderr.strip() or "failed")
    dst.unlink(missing_ok=True)  # hashed and tested: no need to keep GiBs around
    return r


def report(a: argparse.Namespace, runs: list[dict[str, Any]], limit: int) -> tuple[str, bool]:
    head = ("run", "wall s", "MB/s", "kills", "retries", "peak PSS MiB", "peak/limit", "sha256")
    rows = [(r["run"], f"{r['seconds']:.2f}",
             f"{r['bytes_in'] / r['seconds'] / 1e6:,.0f}" if r["exit"] == 0 else "-",
             str(r["kills"]), "-" if r["retries"] is None else str(r["retries"]),
             f"{r['peak'] / 2**20:.1f}", f"{r['peak_ratio']:.2f}x",
             (r["sha256"] or f"- (exit {r['exit']})")[:16]) for r in runs]
    w = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    fmt = lambda t: "  ".join(f"{s:<{w[i]}}" if i in (0, 7) else f"{s:>{w[i]}}"  # noqa: E731
                              for i, s in enumerate(t)).rstrip()
    out = [f"input: generate size {format_size(runs[0]['bytes_in'])} "
           f"({runs[0]['bytes_in']:,} bytes), seed {a.seed}; grep -v {PATTERN!r} -> gzip -1; "
           f"workers {a.workers}; memory_limit {a.memory_limit}"
           + (f"; chaos: SIGKILL every {a.kill_every:g} s on average, max_attempts "
              f"{a.max_attempts}" + (f", workers seen >= {a.min_age:g} s" if a.min_age else "")
              if a.chaos else ""),
           fmt(head), "-" * max(len(fmt(x)) for x in [head, *rows]), *map(fmt, rows)]
    for r in runs:
        out.append(f"{r['run']}: {r['chunks'] or '-'} chunks, output "
                   f"{r['output_bytes'] or 0:,} bytes, gzip -t {r['gzip_t'] or 'not run'}, "
                   f"engine peak_memory {format_size(r['engine_peak'] or 0)}, CPU "
                   f"{r['tree_cpu']:.1f} s (other processes on the machine meanwhile "
                   f"{r['other_cpu']:.1f} s), "
                   f"{r['samples']} PSS samples, sha256 {r['sha256'] or '-'}")
        extra = {k: v for k in ("recycled", "timed_out", "memory_kills")
                 if (v := (r["stats"] or {}).get(k))}
        if extra:  # newer engines: workers the engine itself replaced or killed
            out.append(f"  engine supervision: {extra}")
        if r["kill_log"]:
            out.append("  kills at t s (worker seen for s): " + ", ".join(
                f"{k['t']:.2f} ({k['age']:.2f})" for k in r["kill_log"]))
    checks = {"exit status 0": all(r["exit"] == 0 for r in runs),
              f"peak <= {MEMORY_SLACK:g}x limit": all(r["peak"] <= MEMORY_SLACK * limit
                                                      for r in runs),
              "no stray processes or /dev/shm": not any(r["strays"] or r["shm_left"]
                                                        for r in runs)}
    if len(runs) > 1:
        checks["output identical"] = bool(runs[0]["sha256"]) and \
            all(r["sha256"] == runs[0]["sha256"] for r in runs)
    if shutil.which("gzip"):
        checks["gzip -t"] = all(r["gzip_t"] == "ok" for r in runs)
    ok = all(checks.values())
    out.append("verdict: " + ("PASS" if ok else "FAIL") + " (" + ", ".join(
        f"{k}: {'yes' if v else 'NO'}" for k, v in checks.items()) + ")")
    if a.chaos and runs[-1]["kills"] == 0:
        out.append("note: the chaos run ended before the first kill; use a larger --size")
    for r in runs:
        if r["retries"] and not r["kills"]:
            out.append(f"note: {r['run']} had {r['retries']} retries without a kill of ours: "
                       f"something else killed its workers")
        if r["error"]:
            out.append(f"{r['run']} {'stderr' if r['exit'] == 0 else 'failed'} "
                       f"(exit {r['exit']}):\n{r['error']}")
        if r["strays"] or r["shm_left"]:
            out.append(f"{r['run']} left behind: pids {r['strays']}, shm {r['shm_left']}")
    return "\n".join(out), ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="1GiB", help="bytes to generate (default 1GiB)")
    p.add_argument("--memory-limit", default="256MiB", help="memory_limit (default 256MiB)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--chaos", action="store_true",
                   help="also run the job while killing workers, and compare the outputs")
    p.add_argument("--kill-every", type=float, default=3.0,
                   help="mean seconds between kills (random, exponential; default 3)")
    p.add_argument("--min-age", type=float, default=0.0, metavar="SECONDS",
                   help="kill only workers seen for at least this long (default 0: any; a "
                        "worker killed while starting fails the job, see bench/README.md)")
    p.add_argument("--seed", type=int, default=1, help="data and kill schedule (default 1)")
    p.add_argument("--max-attempts", type=int, default=20,
                   help="max_attempts of the chaos job (default 20; the engine's is 4)")
    p.add_argument("--data-dir", default=str(HERE / "data"), help="outputs (bench/data)")
    p.add_argument("--json", metavar="FILE", help="also save the results as JSON")
    a = p.parse_args()
    try:
        size, limit = parse_size(a.size), parse_size(a.memory_limit)
    except ValueError as e:
        p.error(str(e))
    if a.workers < 1 or a.kill_every <= 0 or a.max_attempts < 1 or a.min_age < 0:
        p.error("--workers, --max-attempts >= 1, --kill-every > 0, --min-age >= 0")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # like Ctrl-C: clean up, exit
    data = Path(a.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    rng = random.Random(a.seed)
    runs = []
    try:
        with tempfile.TemporaryDirectory(prefix="dataflow-soak-") as t:
            runs.append(run_once("undisturbed", a, size, limit, data, Path(t), False, rng))
            if a.chaos:
                runs.append(run_once("chaos", a, size, limit, data, Path(t), True, rng))
    except KeyboardInterrupt:
        print("soak: interrupted; outputs removed", file=sys.stderr)
        return 130
    finally:  # Ctrl-C or a failure: no GiB-sized output left behind
        for leftover in [*data.glob("out-soak-*"), *data.glob(".out-soak-*.dataflow-tmp")]:
            leftover.unlink(missing_ok=True)
    text, ok = report(a, runs, limit)
    print()
    print(text)
    if a.json:
        Path(a.json).write_text(json.dumps({
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "cpus": os.cpu_count(), "size": size, "memory_limit": limit, "workers": a.workers,
            "seed": a.seed, "kill_every": a.kill_every, "max_attempts": a.max_attempts,
            "min_age": a.min_age,
            "runs": runs, "pass": ok, "table": text}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
