#!/usr/bin/env python3
"""Benchmark dataflow against the obvious alternatives, side by side, in one run.

    python bench/run.py [--size 512MiB] [--workers 2] [--repeat 3] [--data-dir bench/data]
                        [--memory-limit 256MiB] [--json results.json] [--no-sync]

Contenders (each reads the same generated access log from the page cache and writes a file in
the data dir, deleted after each run):

  passthrough   cat IN > OUT
                Pool.imap: multiprocessing.Pool(N).imap(identity, 4 MiB blocks), written in order
                dataflow run <job: stages [passthrough]>
  grep -v       LC_ALL=C grep -v PATTERN IN > OUT
                LC_ALL=C parallel --pipepart -a IN --block 4M -k -jN -q grep -v PATTERN > OUT
                dataflow run <job: stages [grep: {pattern: PATTERN, invert: true}]>

For every repeat every contender runs once, in rotation (repeat r starts at contender r), and
the median wall time (time.perf_counter around the whole command, interpreter start-up
included) is reported. After the timed rounds, each dataflow job runs once more while this
script samples the PSS of its process tree every 50 ms with psutil, independently of the
engine's own `--stats` peak_memory.

dataflow's file sink fsyncs its output by default; the other contenders never do. `--no-sync`
runs dataflow's jobs with `sink: {sync: false}` for a like-for-like comparison (the default
runs add an informational `cat + fsync` row instead).

The input is generated once with dataflow.generate.write_sample(path, size, seed=1) and reused.
Nothing is ever loaded into memory whole, so the size can be tens of GiB.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from dataflow.generate import write_sample
from dataflow.sizes import format_size, parse_size

HERE = Path(__file__).resolve().parent
PATTERN = '" 5[0-9][0-9] '
SEED = 1
BLOCK = 4 << 20
MAX_LINE = 600  # generate.write_sample stops within one line (< 600 bytes) of the size asked
SAMPLE_SECONDS = 0.05

# Targets from the issue: (ratio name, minimum).
TARGET_PASS_VS_CAT = 0.7
TARGET_PASS_VS_POOL = 6.0
TARGET_GREP_VS_PARALLEL = 1.5
TARGET_GREP_VS_GREP = 1.0  # a later issue's target; reported, marked "(later)"

POOL_SCRIPT = r'''
import sys
from multiprocessing import Pool

BLOCK = 4 << 20


def identity(b):
    return b


def blocks(path):
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(BLOCK)
            if not b:
                return
            yield b


def main():
    src, dst, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with Pool(workers) as pool, open(dst, "wb", buffering=0) as out:
        for b in pool.imap(identity, blocks(src)):
            out.write(b)


if __name__ == "__main__":
    main()
'''


# ----------------------------------------------------------------------------- helpers
def c_env() -> dict[str, str]:
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    return env


def unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def cmp_files(a: Path, b: Path) -> tuple[bool, str]:
    r = subprocess.run(["cmp", str(a), str(b)], capture_output=True, text=True)
    return r.returncode == 0, (r.stdout + r.stderr).strip()


def tool_version(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr) else "?"


def precompile() -> None:
    """Byte-compile dataflow and workers, as `pip install` does for an installed package: an
    editable checkout run with PYTHONDONTWRITEBYTECODE=1 (this VM's default) would otherwise
    compile every module again in the coordinator and in each worker of every timed run
    (about 60 ms of CPU per process), which no installed copy pays."""
    import compileall

    for package in ("dataflow", "workers"):
        compileall.compile_dir(str(HERE.parent / package), quiet=2)


def ensure_input(data_dir: Path, size: int) -> tuple[Path, int]:
    """Generate the sample once; reuse it when it exists with the right size."""
    path = data_dir / f"access-{size}-seed{SEED}.log"
    meta = path.with_suffix(".json")
    if path.exists():
        n = path.stat().st_size
        try:
            recorded = json.loads(meta.read_text())
        except (OSError, ValueError):
            recorded = {}
        ok_meta = recorded.get("bytes") == n and recorded.get("size") == size \
            and recorded.get("seed") == SEED
        if ok_meta or (not recorded and size - MAX_LINE < n <= size):
            print(f"input: reusing {path} ({n:,} bytes)", file=sys.stderr)
            return path, n
        print(f"input: {path} has the wrong size ({n:,} bytes); regenerating", file=sys.stderr)
    print(f"input: generating {format_size(size)} of access log into {path} ...",
          file=sys.stderr, flush=True)
    t = time.perf_counter()
    n = write_sample(path, size, seed=SEED)
    meta.write_text(json.dumps({"size": size, "seed": SEED, "bytes": n}) + "\n")
    print(f"input: {n:,} bytes in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return path, n


def write_job(path: Path, src: Path, dst: Path, stage: str, workers: int,
              memory_limit: str, sync: bool = True) -> None:
    # JSON is YAML: json.dumps quotes every string correctly (the pattern has " and spaces)
    text = "\n".join([
        f"source: {{file: {json.dumps(str(src))}, split: lines}}",
        "stages:",
        f"  - {stage}",
        f"sink: {{file: {json.dumps(str(dst))}{'' if sync else ', sync: false'}}}",
        f"workers: {workers}",
        f"memory_limit: {json.dumps(memory_limit)}",
        "chunk_size: 4MiB",
        "",
    ])
    path.write_text(text)


class TreeSampler:
    """Poll a process and all its descendants every `interval` s; keep the max summed PSS."""

    def __init__(self, pid: int, interval: float = SAMPLE_SECONDS):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.peak_procs = 0
        self.samples = 0
        self._stop = threading.Event()
        self._cache: dict[int, psutil.Process] = {}
        self.cpu: dict[int, float] = {}       # last seen user+sys of each process, by pid
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "TreeSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        try:
            procs = [self.root] + self.root.children(recursive=True)
        except psutil.Error:
            return
        total = 0
        counted = 0
        for p in procs:
            p = self._cache.setdefault(p.pid, p)  # reuse Process objects (cheaper)
            try:
                total += p.memory_full_info().pss
                counted += 1
                t = p.cpu_times()
                self.cpu[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        self.samples += 1
        if total > self.peak:
            self.peak, self.peak_procs = total, counted


# ----------------------------------------------------------------------------- contenders
@dataclass
class Contender:
    key: str
    family: str           # "passthrough" | "grep"
    label: str
    argv: list[str] | None
    shell: str            # the equivalent shell command, for the report
    env: dict[str, str] | None = None
    stats_file: Path | None = None
    missing: str = ""     # why it cannot run (tool not installed)
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)   # user+sys of the whole process tree
    foreign: list[float] = field(default_factory=list)  # other busy CPU s on the machine
    steal: list[float] = field(default_factory=list)    # CPU s stolen by the hypervisor
    verified: str = ""
    engine: list[dict[str, Any]] = field(default_factory=list)  # dataflow --stats per run

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu) if self.cpu else None


def make_contenders(a: argparse.Namespace, inp: Path, data: Path, tmp: Path,
                    workers: int) -> list[Contender]:
    py = sys.executable
    pool_script = tmp / "pool_imap.py"
    pool_script.write_text(POOL_SCRIPT)
    jobs = {}
    for name, stage in (("passthrough", "passthrough"),
                        ("grep", "grep: " + json.dumps({"pattern": PATTERN, "invert": True}))):
        job = tmp / f"{name}.yaml"
        write_job(job, inp, data / f"out-dataflow-{name}", stage, workers, a.memory_limit,
                  sync=a.sync)
        jobs[name] = job
    have_parallel = shutil.which("parallel") is not None

    def df(name: str) -> Contender:
        stats = tmp / f"stats-{name}.json"
        return Contender(
            f"dataflow-{name}", name, f"dataflow {name}",
            [py, "-m", "dataflow", "run", str(jobs[name]), "--quiet", "--stats", str(stats)],
            f"dataflow run {name}.yaml --quiet --stats FILE", stats_file=stats)

    q = "'" + PATTERN + "'"
    out = [
        Contender("cat", "passthrough", "cat", ["cat", str(inp)], "cat IN > OUT"),
        Contender("pool-imap", "passthrough", f"Pool({workers}).imap",
                  [py, str(pool_script), str(inp), "{out}", str(workers)],
                  f"python pool_imap.py IN OUT {workers}"),
        df("passthrough"),
        Contender("grep", "grep", "GNU grep -v", ["grep", "-v", PATTERN, str(inp)],
                  f"LC_ALL=C grep -v {q} IN > OUT", env=c_env()),
        Contender("parallel", "grep", f"GNU parallel -j{workers} grep -v",
                  ["parallel", "--will-cite", "--pipepart", "-a", str(inp), "--block", "4M",
                   "-k", f"-j{workers}", "-q", "grep", "-v", PATTERN],
                  f"LC_ALL=C parallel --will-cite --pipepart -a IN --block 4M -k -j{workers} "
                  f"-q grep -v {q} > OUT", env=c_env(),
                  missing="" if have_parallel else "GNU parallel not installed"),
        df("grep"),
    ]
    if a.fsync_reference and a.sync:
        # Not a target: dataflow's file sink fsyncs before renaming into place; cat does not.
        out.insert(1, Contender("cat-fsync", "passthrough", "cat + fsync (info)",
                                ["cat", str(inp)], "cat IN > OUT && sync OUT"))
    return out


def _machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    busy = v[0] + v[1] + v[2] + v[5] + v[6]      # user nice system irq softirq
    return busy / hz, (v[7] if len(v) > 7 else 0) / hz


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_once(c: Contender, data: Path) -> tuple[float, float, Path]:
    """Run `c` once; return (seconds, CPU seconds of the tree, output path).

    CPU is user+sys from getrusage(RUSAGE_CHILDREN): it includes grandchildren (workers, grep
    under parallel) once they have been waited for, which they all are by the time we return.
    """
    dst = data / f"out-{c.key}"  # for dataflow, the sink.file of its job
    if c.key.startswith("dataflow-"):
        argv = list(c.argv or [])
        stdout = subprocess.DEVNULL
        f = None
    else:
        argv = [x.replace("{out}", str(dst)) for x in c.argv or []]
        uses_stdout = "{out}" not in (c.argv or [])
        f = open(dst, "wb") if uses_stdout else None
        stdout = f if f is not None else subprocess.DEVNULL
    try:
        cpu0 = _children_cpu()
        busy0, steal0 = _machine_cpu()
        t0 = time.perf_counter()
        r = subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, env=c.env)
        if c.key == "cat-fsync" and r.returncode == 0:
            assert f is not None
            f.flush()
            os.fsync(f.fileno())
        seconds = time.perf_counter() - t0
        cpu = _children_cpu() - cpu0
        busy1, steal1 = _machine_cpu()
        c.foreign.append(max(0.0, busy1 - busy0 - cpu))
        c.steal.append(steal1 - steal0)
    finally:
        if f is not None:
            f.close()
    if r.returncode != 0:
        raise SystemExit(f"{c.label} failed (exit {r.returncode}):\n"
                         f"{' '.join(argv)}\n{r.stderr.decode(errors='replace')}")
    if c.stats_file is not None:
        c.engine.append(json.loads(c.stats_file.read_text()))
    return seconds, cpu, dst


def settle() -> None:
    """Untimed: flush whatever the last contender left dirty so it does not slow the next."""
    os.sync()


def timed_rounds(contenders: list[Contender], data: Path, inp: Path, repeat: int) -> list[list[str]]:
    runnable = [c for c in contenders if not c.missing]
    orders = []
    ref = data / "ref-grep"  # GNU grep's output from the first round, for verification
    for r in range(repeat):
        k = r % len(runnable)
        order = runnable[k:] + runnable[:k]
        orders.append([c.key for c in order])
        if r == 0:  # round 0: the reference (GNU grep) must run before the other grep -v
            order = sorted(order, key=lambda c: c.family == "grep" and c.key != "grep")
        for c in order:
            sec, cpu, dst = run_once(c, data)
            c.times.append(sec)
            c.cpu.append(cpu)
            print(f"  round {r + 1}/{repeat}  {c.label:<28} {sec:8.3f} s  (cpu {cpu:6.3f} s, "
                  f"other {c.foreign[-1]:5.2f} s, steal {c.steal[-1]:4.2f} s)",
                  file=sys.stderr, flush=True)
            if r == 0:
                if c.family == "passthrough":
                    ok, msg = cmp_files(inp, dst)
                    c.verified = "output == input" if ok else f"DIFFERS from input: {msg}"
                elif c.key == "grep":
                    os.replace(dst, ref)
                    c.verified = "reference"
                else:
                    ok, msg = cmp_files(ref, dst)
                    c.verified = "output == GNU grep's" if ok else f"DIFFERS from GNU grep: {msg}"
                if not c.verified.startswith(("output ==", "reference")):
                    print(f"  !! {c.label}: {c.verified}", file=sys.stderr)
            unlink(dst)
            settle()
        if r == 0:
            unlink(ref)
    return orders


def memory_runs(contenders: list[Contender], data: Path) -> list[dict[str, Any]]:
    """One more run of each dataflow job, sampled every 50 ms from outside with psutil."""
    results = []
    for c in contenders:
        if not c.key.startswith("dataflow-"):
            continue
        dst = data / f"out-{c.key}"
        t0 = time.perf_counter()
        p = subprocess.Popen(c.argv or [], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with TreeSampler(p.pid) as s:
            _, err = p.communicate()
        seconds = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"{c.label} failed (exit {p.returncode}):\n{err.decode()}")
        assert c.stats_file is not None
        st = json.loads(c.stats_file.read_text())
        coord = s.cpu.get(p.pid, 0.0)
        others = sum(v for k, v in s.cpu.items() if k != p.pid)
        results.append({"contender": c.key, "seconds": seconds, "psutil_peak": s.peak,
                        "cpu_coordinator": coord, "cpu_children": others,
                        "psutil_peak_processes": s.peak_procs, "psutil_samples": s.samples,
                        "engine_peak": st["peak_memory"], "memory_limit": st["memory_limit"],
                        "plan": {"workers": st["workers"], "slots": st["slots"],
                                 "slot_size": st["slot_size"]}})
        print(f"  memory   {c.label:<28} psutil peak {format_size(s.peak)} "
              f"({s.samples} samples), engine peak {format_size(st['peak_memory'])}",
              file=sys.stderr, flush=True)
        unlink(dst)
        settle()
    return results


def empty_input_overhead(data: Path, tmp: Path, workers: int, memory_limit: str) -> float:
    """Fixed cost of `dataflow run` (interpreter, imports, spawning workers) on an empty file."""
    empty = tmp / "empty.log"
    empty.write_bytes(b"")
    job = tmp / "empty.yaml"
    dst = data / "out-dataflow-empty"
    write_job(job, empty, dst, "passthrough", workers, memory_limit)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dataflow", "run", str(job), "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
        unlink(dst)
    return statistics.median(times)


# ----------------------------------------------------------------------------- report
def mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def build_report(a: argparse.Namespace, contenders: list[Contender], nbytes: int,
                 memory: list[dict[str, Any]], limit: int, overhead: float) -> tuple[str, dict]:
    by = {c.key: c for c in contenders}
    rows: list[tuple[str, str, str, str, str]] = []
    targets: list[dict[str, Any]] = []

    def speed(c: Contender) -> tuple[str, str, str]:
        if c.missing:
            return c.missing, "-", "-"
        m = c.median
        return f"{m:.3f}", f"{nbytes / m / 1e6:,.0f}", f"{c.cpu_median:.2f}"

    def ratio(df_key: str, other_key: str, target: float, later: bool = False) -> str:
        df, other = by.get(df_key), by.get(other_key)
        if df is None or other is None or other.missing or df.median is None:
            why = other.missing if other is not None and other.missing else "not run"
            targets.append({"dataflow": df_key, "vs": other_key, "target": target,
                            "ratio": None, "pass": None, "note": why, "later_issue": later})
            return f"vs {other.label if other else other_key}: n/a ({why})"
        x = other.median / df.median  # >1: dataflow is faster
        ok = x >= target
        targets.append({"dataflow": df_key, "vs": other_key, "target": target, "ratio": x,
                        "pass": ok, "later_issue": later})
        tag = f"{mark(ok)}{' (later issue)' if later else ''}"
        return f"{x:.2f}x vs {other.label} (target >= {target:g}x: {tag})"

    for c in contenders:
        sec, mbs, cpu = speed(c)
        notes = []
        if c.key == "dataflow-passthrough":
            notes = [ratio(c.key, "cat", TARGET_PASS_VS_CAT),
                     ratio(c.key, "pool-imap", TARGET_PASS_VS_POOL)]
        elif c.key == "dataflow-grep":
            notes = [ratio(c.key, "parallel", TARGET_GREP_VS_PARALLEL),
                     ratio(c.key, "grep", TARGET_GREP_VS_GREP, later=True)]
        elif c.key == "cat-fsync":
            notes = ["not a target: like the dataflow file sink, fsyncs the output"]
        rows.append((c.label, sec, mbs, cpu, notes[0] if notes else ""))
        rows.extend(("", "", "", "", n) for n in notes[1:])

    engine_peaks = [e["peak_memory"] for c in contenders for e in c.engine]
    engine_peak = max([*engine_peaks, *(m["engine_peak"] for m in memory)], default=0)
    psutil_peak = max((m["psutil_peak"] for m in memory), default=0)
    mem_ok = max(engine_peak, psutil_peak) <= limit
    targets.append({"dataflow": "tree", "vs": "memory_limit", "target": limit,
                    "engine_peak": engine_peak, "psutil_peak": psutil_peak, "pass": mem_ok})

    head = ("contender", "median s", "MB/s", "CPU s")
    w = [max(len(r[i]) for r in rows + [head + ("",)]) for i in range(4)]
    lines = [f"input {nbytes:,} bytes ({format_size(nbytes)}), workers {a.workers}, "
             f"memory_limit {a.memory_limit}, median of {a.repeat} interleaved rounds; "
             f"dataflow's output {'fsynced' if a.sync else 'not fsynced (--no-sync)'}, "
             f"the others' never; "
             f"MB/s = input bytes / median s / 1e6; CPU s = user+sys of the process tree; "
             f"ratio = other's median s / dataflow's (>1: dataflow faster)",
             f"{head[0]:<{w[0]}}  {head[1]:>{w[1]}}  {head[2]:>{w[2]}}  {head[3]:>{w[3]}}  "
             f"ratio / target",
             "-" * (sum(w) + 70)]
    fam = None
    for (label, sec, mbs, cpu, note), c in zip(rows, _row_owners(contenders)):
        if c is not None and c.family != fam:
            fam = c.family
            lines.append(f"[{'passthrough file->file' if fam == 'passthrough' else 'grep -v'}]")
        lines.append(f"{label:<{w[0]}}  {sec:>{w[1]}}  {mbs:>{w[2]}}  {cpu:>{w[3]}}  "
                     f"{note}".rstrip())
    lines.append("[peak memory of the dataflow process tree, PSS]")
    lines.append(f"engine --stats peak_memory (0.25 s samples, max over all runs): "
                 f"{format_size(engine_peak)}")
    per = ", ".join(f"{m['contender']} {format_size(m['psutil_peak'])} "
                    f"({m['psutil_peak_processes']} procs)" for m in memory)
    lines.append(f"psutil 50 ms samples from outside: {format_size(psutil_peak)}  [{per}]")
    lines.append(f"peak tree memory {format_size(max(engine_peak, psutil_peak))} vs "
                 f"memory_limit {format_size(limit)} "
                 f"({max(engine_peak, psutil_peak) / limit:.0%}): {mark(mem_ok)}")
    lines.append("[dataflow details]")
    lines.append(f"fixed cost of `dataflow run` on an empty file (start-up, spawn, teardown): "
                 f"{overhead:.3f} s")
    for m in memory:
        lines.append(f"{by[m['contender']].label} (psutil run, {m['seconds']:.3f} s): CPU "
                     f"coordinator {m['cpu_coordinator']:.2f} s, workers and other children "
                     f"{m['cpu_children']:.2f} s (as of the last 50 ms sample)")
    for c in contenders:
        if c.engine:
            st = c.engine
            wall = statistics.median(e["wall_seconds"] for e in st)
            stage = {k: round(statistics.median(e["stage_seconds"][k] for e in st), 3)
                     for k in st[0]["stage_seconds"]}
            lines.append(f"{c.label}: engine wall_seconds {wall:.3f} (median) of "
                         f"{c.median:.3f} s measured; stage_seconds (summed over workers) "
                         f"{stage}; plan {st[0]['workers']} workers, {st[0]['slots']} slots x "
                         f"{format_size(st[0]['slot_size'])}")
    foreign = [x for c in contenders for x in c.foreign]
    steal = [x for c in contenders for x in c.steal]
    wall = sum(x for c in contenders for x in c.times)
    if foreign:
        lines.append(f"noise: over all timed runs ({wall:.1f} s), other busy CPU on the machine "
                     f"{sum(foreign):.1f} s (kernel writeback threads included; max in one run "
                     f"{max(foreign):.2f} s), hypervisor steal {sum(steal):.2f} s")
    lines.append("[verification, round 1]")
    for c in contenders:
        lines.append(f"{c.label}: {c.missing or c.verified}")
    text = "\n".join(lines)

    result = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                    "cpu_model": _cpu_model(), "memory": psutil.virtual_memory().total,
                    "python": platform.python_version(), "platform": platform.platform(),
                    "grep": tool_version(["grep", "--version"]),
                    "parallel": tool_version(["parallel", "--version"])},
        "input_bytes": nbytes, "workers": a.workers, "memory_limit": limit,
        "dataflow_fsync": a.sync,
        "repeat": a.repeat,
        "contenders": {c.key: {"label": c.label, "command": c.shell, "times": c.times,
                               "median": c.median, "cpu": c.cpu,
                               "cpu_median": c.cpu_median,
                               "other_cpu": c.foreign, "steal": c.steal, "missing": c.missing or None,
                               "mb_per_s": nbytes / c.median / 1e6 if c.median else None,
                               "verified": c.verified or None, "engine_stats": c.engine}
                       for c in contenders},
        "targets": targets, "memory_runs": memory, "dataflow_empty_input_seconds": overhead,
        "table": text,
    }
    return text, result


def _row_owners(contenders: list[Contender]) -> list[Contender | None]:
    owners: list[Contender | None] = []
    for c in contenders:
        owners.append(c)
        if c.key in ("dataflow-passthrough", "dataflow-grep"):
            owners.append(None)
    return owners


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ----------------------------------------------------------------------------- main
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="512MiB", help="input size (default 512MiB)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--data-dir", default=str(HERE / "data"),
                   help="where the input and outputs go (default bench/data)")
    p.add_argument("--memory-limit", default="256MiB", help="dataflow memory_limit (256MiB)")
    p.add_argument("--json", metavar="FILE", help="also save the results as JSON")
    p.add_argument("--no-sync", dest="sync", action="store_false",
                   help="dataflow's jobs write with `sink: {sync: false}`: no fsync, as cat, "
                        "grep and the Pool script writing to a file (default: the file sink's "
                        "default, fsync)")
    p.add_argument("--no-fsync-reference", dest="fsync_reference", action="store_false",
                   help="skip the informational `cat + fsync` row")
    a = p.parse_args()
    if a.repeat < 1 or a.workers < 1:
        p.error("--repeat and --workers must be at least 1")
    try:
        size = parse_size(a.size)
        limit = parse_size(a.memory_limit)
    except ValueError as e:
        p.error(str(e))
    data = Path(a.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    precompile()
    inp, nbytes = ensure_input(data, size)

    with tempfile.TemporaryDirectory(prefix="dataflow-bench-") as t:
        tmp = Path(t)
        contenders = make_contenders(a, inp, data, tmp, a.workers)
        for c in contenders:
            if c.missing:
                print(f"note: {c.label}: {c.missing}; reported as such", file=sys.stderr)
        # cannot drop the page cache without root: warm it instead, so everyone reads from RAM
        print("warm-up: cat IN > /dev/null (untimed)", file=sys.stderr, flush=True)
        with open(os.devnull, "wb") as null:
            subprocess.run(["cat", str(inp)], stdout=null, check=True)
        # and write one output's worth once, untimed: in a VM whose free memory goes back to
        # the host (virtio-balloon free page reporting), the first big allocation after a
        # pause pays for faulting guest memory in again, and would land on round 1's first
        # contender alone
        try:
            warm = data / "out-warmup"
            with open(warm, "wb") as f:
                subprocess.run(["cat", str(inp)], stdout=f, check=True)
            unlink(warm)
            settle()
            orders = timed_rounds(contenders, data, inp, a.repeat)
            memory = memory_runs(contenders, data)
            overhead = empty_input_overhead(data, tmp, a.workers, a.memory_limit)
        finally:  # a failure or Ctrl-C leaves no multi-GiB output behind
            for leftover in [*data.glob("out-*"), data / "ref-grep"]:
                unlink(leftover)
        text, result = build_report(a, contenders, nbytes, memory, limit, overhead)
        result["orders"] = orders
    print()
    print(text)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nresults saved to {a.json}", file=sys.stderr)
    bad = [c.label for c in contenders if c.verified.startswith("DIFFERS")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
