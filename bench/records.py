#!/usr/bin/env python3
"""Benchmark dataflow's record jobs against the tools and scripts people write, side by side.

    python bench/records.py [--size 128MiB] [--workers 2] [--repeat 3] [--data-dir bench/data]
                            [--memory-limit 256MiB] [--only grep,python,jsonl,csv]
                            [--pool-chunksize 1000] [--idle-wait 0] [--timeout 1800]
                            [--json results.json]

Four families, each on its own generated input of --size bytes (read from the page cache), every
command writing a file in the data dir (deleted after each run):

  grep     grep -v '" 5[0-9][0-9] ' on the access log:
             LC_ALL=C grep -v; LC_ALL=C parallel --pipepart --block 4M -k -jN grep -v;
             dataflow run <job: grep {pattern, invert: true}>
  python   a per-line Python function (status, ip, method and path of a log line, tab-separated):
             a single-process loop (4 MiB blocks, split, map, write);
             multiprocessing.Pool(N).imap(fn, lines, chunksize=1000) written in order;
             dataflow run <job: python {callable, mode: line}>
  jsonl    the 5xx records' ip, path and status from JSON lines:
             jq -c 'select(.status >= 500) | {ip, path, status}'; the same under parallel;
             dataflow run <job: split jsonl, where {status: {gte: 500}}, select [ip, path, status]>
  csv      the ip and status columns of the CSV:
             a single-process csv.reader/csv.writer loop; LC_ALL=C cut -d, -f1,6;
             dataflow run <job: split csv, select [ip, status]>; dataflow run <job: cut 1,6>

First every command runs once, untimed, and its output is checked against its family's
reference (byte for byte; jq's output as JSON values too if the bytes differ); the dataflow runs
of that pass are sampled from outside every 50 ms with psutil (PSS of the process tree). Then
come --repeat timed rounds: in round r each family runs its contenders one after the other
starting at contender r (rotation), and the median wall time of the whole command (interpreter
start-up, spawning workers and dataflow's fsync of its output included) is reported, with the
ratio of every reference's median to dataflow's and PASS/FAIL against the issue's targets.

The log is dataflow.generate.write_sample(path, size, seed=1) (the file bench/run.py uses); the
JSON lines and the CSV are dataflow.sample_records' conversion of the same log (what `dataflow
sample --format jsonl|csv --seed 1` writes), cut after --size bytes at a line end. Each is made
once, in parallel, streamed (nothing is held whole), and reused by later runs.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import functools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# the helpers of the engine benchmark: same input files, same sampler, same noise measurement
from compress import wait_idle  # noqa: E402
from run import (  # noqa: E402
    SEED, TreeSampler, _children_cpu, _cpu_model, _machine_cpu, c_env, cmp_files,
    empty_input_overhead, ensure_input, mark, precompile, settle, tool_version, unlink)

from dataflow.generate import generate_blocks  # noqa: E402
from dataflow.sample_records import FIELDS, convert  # noqa: E402
from dataflow.sizes import format_size, parse_size  # noqa: E402

PATTERN = '" 5[0-9][0-9] '
JQ_FILTER = "select(.status >= 500) | {ip, path, status}"
BLOCK = 4 << 20
OUT_PREFIX = "out-rec-"      # every output of this benchmark in the data dir starts with this
CONTENDED = 0.25             # a run is "contended" when other processes used > 1/4 core on average
FAMILIES = ("grep", "python", "jsonl", "csv")
FAMILY_INPUT = {"grep": "log", "python": "log", "jsonl": "jsonl", "csv": "csv"}
FAMILY_TITLE = {
    "grep": "grep -v '\" 5[0-9][0-9] ' to a file (access log)",
    "python": "per-line Python function: status, ip, method, path as TSV (access log)",
    "jsonl": "JSON lines: status >= 500, keep ip, path, status",
    "csv": "CSV: keep the ip and status columns",
}

# Targets from the issue: (dataflow contender, reference contender, minimum ratio or None).
# ratio = reference's median s / dataflow's median s (> 1: dataflow faster)
TARGETS: list[tuple[str, str, float | None]] = [
    ("df-grep", "grep", 1.0),
    ("df-grep", "parallel-grep", 2.0),
    ("df-python", "py-loop", 1.8),
    ("df-python", "pool-imap", 3.0),
    ("df-jsonl", "jq", None),
    ("df-jsonl", "parallel-jq", None),
    ("df-csv-select", "cut", None),
    ("df-csv-select", "py-csv", None),
    ("df-csv-cut", "cut", None),
    ("df-csv-cut", "py-csv", None),
]

# ----------------------------------------------------------------------------- the scripts
USERFN = r'''
"""The per-line function of bench/records.py: a combined-format access-log line -> its status,
client address, method and path, tab-separated (e.g. to sort or join by status)."""


def status_tsv(line):
    f = line.split(b" ")
    return b"\t".join((f[8], f[0], f[5][1:], f[6]))
'''

LOOP_SCRIPT = r'''
import sys

from bench_records_fn import status_tsv as fn

BLOCK = 4 << 20


def main():
    src, dst = sys.argv[1], sys.argv[2]
    rest = b""
    with open(src, "rb", buffering=0) as f, open(dst, "wb", buffering=0) as out:
        while True:
            block = f.read(BLOCK)
            if not block:
                break
            lines = (rest + block if rest else block).split(b"\n")
            rest = lines.pop()            # the part after the last newline
            if lines:
                res = [fn(line) for line in lines]
                res.append(b"")
                out.write(b"\n".join(res))
        if rest:                          # a last line without a newline stays without one
            out.write(fn(rest))


if __name__ == "__main__":
    main()
'''

POOL_SCRIPT = r'''
import sys
from multiprocessing import Pool

from bench_records_fn import status_tsv as fn


def main():
    src, dst, workers, chunksize = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    with open(src, "rb") as f, open(dst, "wb") as out, Pool(workers) as pool:
        lines = (line.rstrip(b"\n") for line in f)
        for r in pool.imap(fn, lines, chunksize=chunksize):
            out.write(r + b"\n")


if __name__ == "__main__":
    main()
'''

CSV_SCRIPT = r'''
import csv
import sys


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, newline="", encoding="utf-8") as f, \
            open(dst, "w", newline="", encoding="utf-8") as out:
        rows = csv.reader(f)
        header = next(rows)
        i, j = header.index("ip"), header.index("status")
        w = csv.writer(out, lineterminator="\n")
        w.writerow((header[i], header[j]))
        w.writerows((row[i], row[j]) for row in rows)


if __name__ == "__main__":
    main()
'''


# ----------------------------------------------------------------------------- inputs
def ensure_records(data: Path, size: int, fmt: str) -> tuple[Path, int]:
    """JSON lines or CSV of the sample log, `size` bytes at most (whole lines); made once."""
    path = data / f"access-{size}-seed{SEED}.{fmt}"
    meta = data / f"access-{size}-seed{SEED}.{fmt}.json"
    if path.exists():
        n = path.stat().st_size
        try:
            note = json.loads(meta.read_text())
        except (OSError, ValueError):
            note = {}
        if note.get("bytes") == n and note.get("size") == size and note.get("seed") == SEED:
            print(f"input: reusing {path} ({n:,} bytes)", file=sys.stderr)
            return path, n
        print(f"input: {path} does not match its note; regenerating", file=sys.stderr)
    print(f"input: converting the sample log to {format_size(size)} of {fmt} into {path} ...",
          file=sys.stderr, flush=True)
    t = time.perf_counter()
    part = path.with_name(path.name + ".part")
    n = 0
    try:
        # convert() is per line, so converting the log's blocks in any grouping gives the same
        # bytes as `dataflow sample --format FMT`; the log asked for is larger than needed
        # (JSON lines are ~1.3x the log, CSV ~0.9x) and the generator stops being read early
        # (a window of apply_async calls, not imap: imap's feeder thread would run ahead
        # through the whole generator, and terminating a pool while it does can hang)
        cpus = os.cpu_count() or 1
        fn = functools.partial(convert, fmt=fmt)
        with open(part, "wb") as out, Pool(cpus) as pool:
            if fmt == "csv":
                head = (",".join(FIELDS) + "\n").encode()
                out.write(head)
                n = len(head)
            blocks = generate_blocks(2 * size + (1 << 20), SEED)
            window: deque = deque()
            while n < size:
                while len(window) < 2 * cpus:
                    block = next(blocks, None)
                    if block is None:
                        break
                    window.append(pool.apply_async(fn, (block,)))
                if not window:
                    break
                res = window.popleft().get()
                if n + len(res) > size:
                    cut = res.rfind(b"\n", 0, size - n) + 1   # whole lines only
                    out.write(res[:cut])
                    n += cut
                    break
                out.write(res)
                n += len(res)
            pool.close()
            for r in window:   # let the pool drain normally (cheap: a few blocks)
                r.wait()
            pool.join()
        os.replace(part, path)
    finally:
        unlink(part)
    meta.write_text(json.dumps({"size": size, "seed": SEED, "bytes": n, "format": fmt}) + "\n")
    print(f"input: {n:,} bytes in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return path, n


def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb", buffering=0) as f:
        while b := f.read(BLOCK):
            n += b.count(b"\n")
    return n


# ----------------------------------------------------------------------------- contenders
@dataclass
class Contender:
    key: str
    family: str
    label: str
    argv: list[str]           # {out} is replaced by the output path
    shell: str                # the equivalent shell command, for the report
    stdout_out: bool = True   # the command writes its result to stdout (> OUT)
    env: dict[str, str] | None = None
    job: dict[str, Any] | None = None   # dataflow: the job (sink.file is the output)
    stats_file: Path | None = None
    verify: tuple[str, str] | None = None   # (how, reference key); None: it is a reference
    missing: str = ""
    error: str = ""
    verified: str = ""
    expected_difference: bool = False       # a known-wrong tool (cut on quoted commas)
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    foreign: list[float] = field(default_factory=list)
    steal: list[float] = field(default_factory=list)
    engine: list[dict[str, Any]] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)

    @property
    def dataflow(self) -> bool:
        return self.key.startswith("df-")

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def runnable(self) -> bool:
        return not self.missing and not self.error


def make_contenders(a: argparse.Namespace, inputs: dict[str, Path], data: Path,
                    tmp: Path) -> list[Contender]:
    py = sys.executable
    n = a.workers
    (tmp / "bench_records_fn.py").write_text(USERFN)
    for name, text in (("loop.py", LOOP_SCRIPT), ("pool_imap.py", POOL_SCRIPT),
                       ("csv_loop.py", CSV_SCRIPT)):
        (tmp / name).write_text(text)
    have_parallel = shutil.which("parallel") is not None
    have_jq = shutil.which("jq") is not None
    no_par = "" if have_parallel else "GNU parallel not installed"
    no_jq = "" if have_jq else "jq not installed"
    log, jsonl, csvf = inputs.get("log"), inputs.get("jsonl"), inputs.get("csv")
    df_env = dict(os.environ)   # the workers import the line function from the temp dir
    df_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp), df_env.get("PYTHONPATH")]))

    def df(key: str, family: str, label: str, src: dict[str, Any], stages: list[Any],
           verify: tuple[str, str], shown: str) -> Contender:
        job = {"source": src, "stages": stages, "sink": {"file": str(data / (OUT_PREFIX + key))},
               "workers": n, "memory_limit": a.memory_limit, "chunk_size": "4MiB"}
        path = tmp / f"{key}.yaml"
        path.write_text(json.dumps(job, indent=2) + "\n")   # JSON is YAML
        stats = tmp / f"stats-{key}.json"
        return Contender(key, family, label,
                         [py, "-m", "dataflow", "run", str(path), "--quiet", "--stats",
                          str(stats)],
                         f"dataflow run {key}.yaml --quiet --stats FILE   # {shown}",
                         stdout_out=False, env=df_env, job=job, stats_file=stats, verify=verify)

    q = "'" + PATTERN + "'"
    par = ["parallel", "--will-cite", "--pipepart", "-a", "{in}", "--block", "4M", "-k", f"-j{n}",
           "-q"]
    par_shell = f"parallel --will-cite --pipepart -a IN --block 4M -k -j{n} -q"
    out: list[Contender] = []
    if "grep" in a.families:
        s = str(log)
        out += [
            Contender("grep", "grep", "GNU grep -v", ["grep", "-v", PATTERN, s],
                      f"LC_ALL=C grep -v {q} IN > OUT", env=c_env()),
            Contender("parallel-grep", "grep", f"parallel -j{n} grep -v",
                      [x.replace("{in}", s) for x in par] + ["grep", "-v", PATTERN],
                      f"LC_ALL=C {par_shell} grep -v {q} > OUT", env=c_env(),
                      verify=("cmp", "grep"), missing=no_par),
            df("df-grep", "grep", "dataflow grep (job)", {"file": s, "split": "lines"},
               [{"grep": {"pattern": PATTERN, "invert": True}}], ("cmp", "grep"),
               f"grep: {{pattern: {q}, invert: true}}"),
        ]
    if "python" in a.families:
        s = str(log)
        out += [
            Contender("py-loop", "python", "Python loop (1 process)",
                      [py, str(tmp / "loop.py"), s, "{out}"],
                      "python loop.py IN OUT   # 4 MiB reads, split, [fn(l) for l in lines], write",
                      stdout_out=False),
            Contender("pool-imap", "python", f"Pool({n}).imap chunksize={a.pool_chunksize}",
                      [py, str(tmp / "pool_imap.py"), s, "{out}", str(n), str(a.pool_chunksize)],
                      f"python pool_imap.py IN OUT {n} {a.pool_chunksize}",
                      stdout_out=False, verify=("cmp", "py-loop")),
            df("df-python", "python", "dataflow python mode: line",
               {"file": s, "split": "lines"},
               [{"python": {"callable": "bench_records_fn:status_tsv", "mode": "line"}}],
               ("cmp", "py-loop"), "python: {callable: bench_records_fn:status_tsv, mode: line}"),
        ]
    if "jsonl" in a.families:
        s = str(jsonl)
        jq_argv = ["jq", "-c", JQ_FILTER]
        out += [
            Contender("jq", "jsonl", "jq -c", jq_argv + [s], f"jq -c '{JQ_FILTER}' IN > OUT",
                      env=c_env(), missing=no_jq),
            Contender("parallel-jq", "jsonl", f"parallel -j{n} jq -c",
                      [x.replace("{in}", s) for x in par] + jq_argv,
                      f"LC_ALL=C {par_shell} jq -c '{JQ_FILTER}' > OUT", env=c_env(),
                      verify=("cmp", "jq"), missing=no_par or no_jq),
            df("df-jsonl", "jsonl", "dataflow where + select",
               {"file": s, "split": "jsonl"},
               [{"where": {"status": {"gte": 500}}},
                {"select": {"fields": ["ip", "path", "status"]}}],
               ("json", "jq"), "split: jsonl; where: {status: {gte: 500}}; "
               "select: {fields: [ip, path, status]}"),
        ]
    if "csv" in a.families:
        s = str(csvf)
        out += [
            Contender("py-csv", "csv", "Python csv loop (1 process)",
                      [py, str(tmp / "csv_loop.py"), s, "{out}"],
                      "python csv_loop.py IN OUT   # csv.reader -> csv.writer, columns by name",
                      stdout_out=False),
            Contender("cut", "csv", "cut -d, -f1,6", ["cut", "-d,", "-f1,6", s],
                      "LC_ALL=C cut -d, -f1,6 IN > OUT", env=c_env(),
                      verify=("lines", "py-csv"), expected_difference=True),
            df("df-csv-select", "csv", "dataflow select (csv)", {"file": s, "split": "csv"},
               [{"select": {"fields": ["ip", "status"]}}], ("cmp", "py-csv"),
               "split: csv; select: {fields: [ip, status]}"),
            df("df-csv-cut", "csv", "dataflow cut (lines)", {"file": s, "split": "lines"},
               [{"cut": {"fields": "1,6", "delimiter": ","}}], ("cmp", "cut"),
               "split: lines; cut: {fields: '1,6', delimiter: ','}"),
        ]
    return out


# ----------------------------------------------------------------------------- running
def kill_group(p: subprocess.Popen) -> None:
    """End the command we started and everything in its session (parallel's children)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def run_once(c: Contender, data: Path, timeout: float, sample: bool = False
             ) -> Path | None:
    """Run `c` once; append its time, CPU and noise; return the output path (None: failed)."""
    dst = data / (OUT_PREFIX + c.key)
    argv = [x.replace("{out}", str(dst)) for x in c.argv]
    f = open(dst, "wb") if c.stdout_out else None
    sampler = None
    try:
        cpu0 = _children_cpu()
        busy0, steal0 = _machine_cpu()
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=f if f is not None else subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=c.env, start_new_session=True)
        if sample:
            sampler = TreeSampler(p.pid).__enter__()
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(p)
            err = f"timed out after {timeout:g} s".encode()
        finally:
            if sampler is not None:
                sampler.__exit__(None, None, None)
        seconds = time.perf_counter() - t0
        cpu = _children_cpu() - cpu0
        busy1, steal1 = _machine_cpu()
    finally:
        if f is not None:
            f.close()
    if p.returncode != 0:
        msg = err.decode(errors="replace").strip().splitlines()
        c.error = f"exit {p.returncode}: " + (" | ".join(msg[-3:]) if msg else "(no stderr)")
        unlink(dst)
        return None
    foreign = max(0.0, busy1 - busy0 - cpu)
    if sample:
        assert sampler is not None
        coord = sampler.cpu.get(p.pid, 0.0)
        c.memory = {"seconds": seconds, "psutil_peak": sampler.peak,
                    "psutil_peak_processes": sampler.peak_procs,
                    "psutil_samples": sampler.samples, "cpu_coordinator": coord,
                    "cpu_children": sum(v for k, v in sampler.cpu.items() if k != p.pid),
                    "cpu_tree": cpu, "other_cpu": foreign}
        if c.stats_file is not None:
            st = json.loads(c.stats_file.read_text())
            c.memory.update(engine_peak=st["peak_memory"], stage_seconds=st["stage_seconds"],
                            wall_seconds=st["wall_seconds"], results=st.get("results"))
        return dst
    c.times.append(seconds)
    c.cpu.append(cpu)
    c.foreign.append(foreign)
    c.steal.append(steal1 - steal0)
    if c.stats_file is not None:
        c.engine.append(json.loads(c.stats_file.read_text()))
    return dst


def compare_json_lines(ref: Path, out: Path) -> tuple[bool, str]:
    """Line by line, as JSON values (when the bytes differ)."""
    n = 0
    with open(ref, "rb") as a, open(out, "rb") as b:
        for n, (x, y) in enumerate(zip(a, b), 1):
            if x != y and json.loads(x) != json.loads(y):
                return False, f"line {n}: {x[:120]!r} vs {y[:120]!r}"
        if a.readline() or b.readline():
            return False, f"different number of lines (the same up to line {n})"
    return True, f"{n:,} lines"


def compare_lines(ref: Path, out: Path) -> tuple[int, int, str]:
    """(differing lines, lines, the first difference) of two files of the same line count."""
    diff = lines = 0
    first = ""
    with open(ref, "rb") as a, open(out, "rb") as b:
        for lines, (x, y) in enumerate(zip(a, b), 1):
            if x != y:
                diff += 1
                if not first:
                    first = f"line {lines}: {y.rstrip()[:80]!r}, should be {x.rstrip()[:80]!r}"
        if a.readline() or b.readline():
            diff += 1
            first = first or "different number of lines"
    return diff, lines, first


def check(c: Contender, dst: Path, refs: dict[str, Path]) -> None:
    if c.verify is None:
        lines = count_lines(dst)
        c.verified = f"reference ({lines:,} lines, {dst.stat().st_size:,} bytes)"
        if lines == 0:
            c.verified = "reference, but EMPTY"
        return
    how, ref_key = c.verify
    ref = refs.get(ref_key)
    if ref is None:
        c.verified = f"not checked ({ref_key} did not run)"
        return
    ok, msg = cmp_files(ref, dst)
    if ok:
        c.verified = f"output == {ref_key}'s (cmp)"
        return
    if how == "json":
        same, what = compare_json_lines(ref, dst)
        c.verified = (f"WARNING: bytes differ from {ref_key}'s ({msg}) but equal as JSON values "
                      f"({what})" if same else f"DIFFERS from {ref_key}'s: {what}")
        return
    if how == "lines":
        diff, lines, first = compare_lines(ref, dst)
        c.verified = (f"{'expected: ' if c.expected_difference else ''}DIFFERS from {ref_key}'s "
                      f"on {diff:,} of {lines:,} lines ({diff / max(lines, 1):.1%}; {first})")
        return
    c.verified = f"DIFFERS from {ref_key}'s: {msg}"


def verify_pass(contenders: list[Contender], data: Path, timeout: float) -> None:
    """Untimed: every contender once, checked against its reference; dataflow sampled (PSS)."""
    for fam in FAMILIES:
        group = [c for c in contenders if c.family == fam]
        refs: dict[str, Path] = {}
        for c in group:
            if not c.runnable:
                print(f"  check    {c.label:<34} skipped: {c.missing or c.error}",
                      file=sys.stderr)
                continue
            dst = run_once(c, data, timeout, sample=c.dataflow)
            if dst is None:
                print(f"  check    {c.label:<34} FAILED: {c.error}", file=sys.stderr, flush=True)
                settle()
                continue
            check(c, dst, refs)
            extra = ""
            if c.memory:
                extra = (f"  [{c.memory['seconds']:.2f} s, psutil peak "
                         f"{format_size(c.memory['psutil_peak'])}]")
            print(f"  check    {c.label:<34} {c.verified}{extra}", file=sys.stderr, flush=True)
            if any(o.verify is not None and o.verify[1] == c.key for o in group):
                refs[c.key] = dst      # kept until the family is done
            else:
                unlink(dst)
            settle()
        for p in refs.values():
            unlink(p)


def timed_rounds(contenders: list[Contender], data: Path, repeat: int, timeout: float,
                 idle_wait: float) -> tuple[list[list[str]], float]:
    orders: list[list[str]] = []
    waited = 0.0
    for r in range(repeat):
        order_r: list[str] = []
        for fam in FAMILIES:
            group = [c for c in contenders if c.family == fam and c.runnable]
            if not group:
                continue
            k = r % len(group)
            for c in group[k:] + group[:k]:
                if not c.runnable:      # failed earlier in this round
                    continue
                order_r.append(c.key)
                if idle_wait > 0:
                    waited += wait_idle(idle_wait)
                dst = run_once(c, data, timeout)
                if dst is None:
                    print(f"  round {r + 1}/{repeat}  {c.label:<34} FAILED: {c.error}",
                          file=sys.stderr, flush=True)
                else:
                    print(f"  round {r + 1}/{repeat}  {c.label:<34} {c.times[-1]:8.3f} s  "
                          f"(cpu {c.cpu[-1]:6.2f} s, other {c.foreign[-1]:5.2f} s, steal "
                          f"{c.steal[-1]:4.2f} s)", file=sys.stderr, flush=True)
                    unlink(dst)
                settle()
        orders.append(order_r)
    return orders, waited


# ----------------------------------------------------------------------------- report
def contended(c: Contender) -> int:
    return sum(1 for t, x in zip(c.times, c.foreign) if x > max(CONTENDED * t, 0.1))


def build_report(a: argparse.Namespace, contenders: list[Contender], sizes: dict[str, int],
                 overhead: float | None, waited: float, load: dict[str, Any],
                 elapsed: float) -> tuple[str, dict[str, Any]]:
    by = {c.key: c for c in contenders}
    targets: list[dict[str, Any]] = []

    def ratio_note(dfk: str, refk: str, target: float | None) -> str | None:
        d, ref = by.get(dfk), by.get(refk)
        if d is None or ref is None:
            return None
        entry: dict[str, Any] = {"dataflow": dfk, "vs": refk, "target": target,
                                 "ratio": None, "pass": None}
        tgt = f"target >= {target:g}x" if target is not None else "no target"
        if d.median is None or ref.median is None:
            why = (d.error or d.missing or "not run") if d.median is None else \
                (ref.missing or ref.error or "not run")
            entry["note"] = why
            if target is not None and d.median is None:
                entry["pass"] = False
            targets.append(entry)
            res = f" ({tgt}: FAIL)" if entry["pass"] is False else ""
            return f"vs {ref.label}: n/a ({why[:60]}){res}"
        x = ref.median / d.median
        entry["ratio"] = x
        if target is not None:
            entry["pass"] = x >= target
        targets.append(entry)
        res = mark(x >= target) if target is not None else "report"
        return f"{x:.2f}x vs {ref.label} ({tgt}: {res})"

    head = ("contender", "median s", "range s", "MB/s", "CPU s")
    rows: list[tuple[Contender, list[str], list[str]]] = []   # contender, cells, notes
    for c in contenders:
        if c.median is None:
            cells = [c.label, "-", "-", "-", "-"]
            notes = [(c.missing or f"FAILED: {c.error}")[:110]]
        else:
            nbytes = sizes[FAMILY_INPUT[c.family]]
            cells = [c.label, f"{c.median:.3f}", f"{min(c.times):.2f}-{max(c.times):.2f}",
                     f"{nbytes / c.median / 1e6:,.0f}", f"{statistics.median(c.cpu):.2f}"]
            notes = []
        for dfk, refk, target in TARGETS:
            if dfk == c.key:
                note = ratio_note(dfk, refk, target)
                if note:
                    notes.append(note)
        if c.expected_difference and c.verified.startswith("expected"):
            notes.append("wrong on rows whose quoted path holds commas (see verification)")
        elif c.verified.startswith("DIFFERS"):
            notes.insert(0, "WRONG OUTPUT (see verification)")
        rows.append((c, cells, notes))

    w = [max([len(head[i])] + [len(r[1][i]) for r in rows]) for i in range(5)]

    def line(cells: list[str] | tuple[str, ...], note: str) -> str:
        return (f"{cells[0]:<{w[0]}}  {cells[1]:>{w[1]}}  {cells[2]:>{w[2]}}  "
                f"{cells[3]:>{w[3]}}  {cells[4]:>{w[4]}}  {note}").rstrip()

    lines = [f"workers {a.workers}, memory_limit {a.memory_limit}, median of {a.repeat} "
             f"interleaved rounds; MB/s = input bytes / median s / 1e6; CPU s = user+sys of the "
             f"process tree (median); ratio = reference's median s / dataflow's (>1: dataflow "
             f"faster)",
             line(head, "ratio / target"),
             "-" * (sum(w) + 80)]
    fam = None
    for c, cells, notes in rows:
        if c.family != fam:
            fam = c.family
            src = FAMILY_INPUT[fam]
            lines.append(f"[{FAMILY_TITLE[fam]}; {src} input {sizes[src]:,} bytes]")
        lines.append(line(cells, notes[0] if notes else ""))
        lines.extend(line(("",) * 5, n) for n in notes[1:])

    lines.append("[targets]")
    for t in targets:
        if t["target"] is None:
            continue
        r_txt = f"{t['ratio']:.2f}x" if t["ratio"] is not None else "n/a"
        res = mark(bool(t["pass"])) if t["pass"] is not None else "n/a"
        lines.append(f"{by[t['dataflow']].label} vs {by[t['vs']].label}: {r_txt} "
                     f"(>= {t['target']:g}x): {res}")

    lines.append("[peak memory of the dataflow process trees, PSS; untimed checking run]")
    limit = parse_size(a.memory_limit)
    peaks = []
    for c in contenders:
        if c.dataflow and c.memory:
            m = c.memory
            eng = max([m.get("engine_peak", 0)] + [e["peak_memory"] for e in c.engine])
            peaks.append(max(m["psutil_peak"], eng))
            lines.append(f"{c.label}: psutil 50 ms {format_size(m['psutil_peak'])} "
                         f"({m['psutil_peak_processes']} procs, {m['psutil_samples']} samples), "
                         f"engine --stats peak_memory {format_size(eng)} (max over all runs)")
    if peaks:
        lines.append(f"max {format_size(max(peaks))} vs memory_limit {format_size(limit)} "
                     f"({max(peaks) / limit:.0%}): {mark(max(peaks) <= limit)}")

    lines.append("[dataflow details]")
    if overhead is not None:
        lines.append(f"fixed cost of `dataflow run` on an empty file (start-up, spawn, teardown): "
                     f"{overhead:.3f} s")
    for c in contenders:
        if not c.dataflow or not c.engine:
            continue
        st = c.engine
        wall = statistics.median(e["wall_seconds"] for e in st)
        stage = {k: round(statistics.median(e["stage_seconds"].get(k, 0.0) for e in st), 3)
                 for k in st[0]["stage_seconds"]}
        m = c.memory
        cpu = (f"; checking run: coordinator CPU {m['cpu_coordinator']:.2f} s, workers "
               f"{m['cpu_children']:.2f} s" if m else "")
        lines.append(f"{c.label}: engine wall_seconds {wall:.3f} of {c.median:.3f} s measured; "
                     f"stage_seconds (summed over workers) {stage}; {st[0]['workers']} workers, "
                     f"{st[0]['slots']} slots x {format_size(st[0]['slot_size'])}, "
                     f"{st[0]['chunks']} chunks, {st[0]['bytes_out']:,} bytes out{cpu}")
    foreign = [x for c in contenders for x in c.foreign]
    steal = [x for c in contenders for x in c.steal]
    wall = sum(x for c in contenders for x in c.times)
    if foreign:
        busy = [f"{c.label} {contended(c)}/{len(c.times)}" for c in contenders if contended(c)]
        lines.append(f"noise: over all timed runs ({wall:.1f} s), other busy CPU on the machine "
                     f"{sum(foreign):.1f} s (max in one run {max(foreign):.2f} s), hypervisor "
                     f"steal {sum(steal):.2f} s; contended runs (others > 1/4 core): "
                     f"{', '.join(busy) if busy else 'none'}; idle-wait {waited:.1f} s; "
                     f"load average at start {load['start']}, at end {load['end']}; "
                     f"{elapsed:.0f} s in all")
    lines.append("[verification, untimed run of each command]")
    for c in contenders:
        what = c.missing or c.verified or (f"FAILED: {c.error}" if c.error else "not run")
        if c.error and c.verified:
            what += f"; later FAILED: {c.error}"
        lines.append(f"{c.label}: {what}")
    lines.append("[commands]")
    for c in contenders:
        lines.append(f"{c.label}: {c.shell}")
    text = "\n".join(lines)

    result = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                    "cpu_model": _cpu_model(), "memory": psutil.virtual_memory().total,
                    "python": platform.python_version(), "platform": platform.platform(),
                    "grep": tool_version(["grep", "--version"]),
                    "parallel": tool_version(["parallel", "--version"]),
                    "jq": tool_version(["jq", "--version"]),
                    "cut": tool_version(["cut", "--version"])},
        "input_bytes": sizes, "workers": a.workers, "memory_limit": limit, "repeat": a.repeat,
        "pool_chunksize": a.pool_chunksize, "load": load, "idle_waited_seconds": waited,
        "contenders": {c.key: {"label": c.label, "family": c.family, "command": c.shell,
                               "job": c.job, "times": c.times, "median": c.median, "cpu": c.cpu,
                               "other_cpu": c.foreign, "steal": c.steal,
                               "missing": c.missing or None, "error": c.error or None,
                               "verified": c.verified or None, "memory_run": c.memory or None,
                               "engine_stats": c.engine}
                       for c in contenders},
        "targets": targets, "dataflow_empty_input_seconds": overhead, "table": text,
    }
    return text, result


# ----------------------------------------------------------------------------- main
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="128MiB",
                   help="bytes of each input: log, JSON lines, CSV (default 128MiB)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--data-dir", default=str(HERE / "data"),
                   help="where the inputs and outputs go (default bench/data)")
    p.add_argument("--memory-limit", default="256MiB", help="dataflow memory_limit (256MiB)")
    p.add_argument("--only", metavar="LIST",
                   help=f"comma-separated families to run: {', '.join(FAMILIES)} (default all)")
    p.add_argument("--pool-chunksize", type=int, default=1000,
                   help="chunksize of the Pool.imap script (default 1000)")
    p.add_argument("--idle-wait", type=float, default=0, metavar="SECONDS",
                   help="before each timed run wait up to this long for other processes' CPU "
                        "load to pass (untimed; default 0)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per command (1800)")
    p.add_argument("--json", metavar="FILE", help="also save the results as JSON")
    a = p.parse_args()
    if a.repeat < 1 or a.workers < 1 or a.pool_chunksize < 1:
        p.error("--repeat, --workers and --pool-chunksize must be at least 1")
    precompile()   # as an installed copy (run.precompile)
    a.families = FAMILIES
    if a.only:
        a.families = tuple(x.strip() for x in a.only.split(",") if x.strip())
        bad = [x for x in a.families if x not in FAMILIES]
        if bad or not a.families:
            p.error(f"--only: unknown {', '.join(bad) or 'empty list'}; "
                    f"choose from {', '.join(FAMILIES)}")
    try:
        size = parse_size(a.size)
        parse_size(a.memory_limit)
    except ValueError as e:
        p.error(str(e))
    data = Path(a.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    load = {"start": " ".join(f"{x:.2f}" for x in os.getloadavg())}

    inputs: dict[str, Path] = {}
    sizes: dict[str, int] = {}
    for kind in sorted({FAMILY_INPUT[f] for f in a.families}):
        if kind == "log":
            inputs[kind], sizes[kind] = ensure_input(data, size)
        else:
            inputs[kind], sizes[kind] = ensure_records(data, size, kind)

    with tempfile.TemporaryDirectory(prefix="dataflow-bench-records-") as t:
        tmp = Path(t)
        contenders = make_contenders(a, inputs, data, tmp)
        for c in contenders:
            if c.missing:
                print(f"note: {c.label}: {c.missing}; skipped", file=sys.stderr)
        try:
            # page cache: read every input once; write one output's worth once (see run.py)
            print("warm-up: cat inputs > /dev/null, one untimed write (untimed)", file=sys.stderr,
                  flush=True)
            with open(os.devnull, "wb") as null:
                for path in inputs.values():
                    subprocess.run(["cat", str(path)], stdout=null, check=True)
            warm = data / (OUT_PREFIX + "warmup")
            with open(warm, "wb") as f:
                subprocess.run(["cat", str(next(iter(inputs.values())))], stdout=f, check=True)
            unlink(warm)
            settle()
            verify_pass(contenders, data, a.timeout)
            orders, waited = timed_rounds(contenders, data, a.repeat, a.timeout, a.idle_wait)
            overhead = None
            if any(c.dataflow for c in contenders):
                overhead = empty_input_overhead(data, tmp, a.workers, a.memory_limit)
        finally:  # a failure or Ctrl-C leaves no multi-GiB output behind
            for leftover in data.glob(OUT_PREFIX + "*"):
                unlink(leftover)
        load["end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        text, result = build_report(a, contenders, sizes, overhead, waited, load,
                                    time.perf_counter() - t_start)
        result["orders"] = orders
    print()
    print(text)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nresults saved to {a.json}", file=sys.stderr)
    bad = [c.label for c in contenders if c.dataflow and
           (c.error or c.verified.startswith("DIFFERS"))]
    if bad:
        print(f"\ndataflow failed or wrong: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
