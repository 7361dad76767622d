"""The fault table, in the spirit of loky's `crash_cases`: one row per fault, naming the stage of
a chunk's life it hits and the outcome expected, and one test that runs them all.

Every row starts the real CLI (`python -m dataflow run job.yaml --force`) in its own session
(`Popen(start_new_session=True)`), on a 6 MiB access log cut into 256 KiB chunks (25 of them),
through `grep -v '" 5[0-9][0-9] '` and then, for the worker faults, `helper_transforms.Fault`
(`- compose: faultjob:stages`, a module the row writes); the rows that signal the coordinator
read an endless generated stream instead (or a stdin nobody writes to). After each row:

- the exit code (a negative one is death by that signal: the shell shows 128 + N), and a
  regular expression over stderr that names what failed and where (stage, chunk index, byte
  range, signal); no traceback of the coordinator, no "internal error";
- the fault really happened (the marker file `Fault` creates);
- no process of the run's session is alive, no shared-memory segment of its coordinator is
  left, and the output directory holds the output alone: no temp file (a row killed by SIGKILL
  leaves its temp file and segment, and `dataflow cleanup` must remove them);
- the output: byte-identical to GNU grep's output (or to an undisturbed run of the same job),
  the old output untouched byte for byte, or absent;
- the `--stats` of a run that recovered (retries, timeouts, recycled workers) agree with it.

To add a row, append a `Row` to ROWS (see its fields); new faults go in helper_transforms.Fault.
"""
from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import psutil
import pytest

from conftest import (kill_group_if_alive, require_tool, segments_of, session_processes,
                      worker_processes)
from dataflow.generate import write_sample
from dataflow.sinks import TEMP_SUFFIX

TESTS = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20
OLD = b"precious old output\n" * 1000          # 20 kB: small enough for a nearly full disk
PATTERN = '" 5[0-9][0-9] '                       # grep -v: drop the 5xx lines
JOB = {"workers": "2", "memory_limit": "128MiB", "chunk_size": "256KiB"}

# the stage of the chunk's life a fault hits
SETUP = "worker setup (before it is ready)"
TRANSFORM = "mid-transform"
OUTPUT = "after the transform (output copied, part of it written), before it is reported done"
FLUSH = "end-of-stream flush"
SINK = "while the sink writes"
STARTING = "coordinator starting its workers"
RUNNING = "coordinator reading and writing"
READING = "coordinator blocked reading its input"
TEARDOWN = "coordinator tearing down"

# what becomes of the output
REFERENCE = "reference"    # byte-identical to the row's reference (GNU grep, or undisturbed)
OLD_KEPT = "old"           # the old output, byte for byte
ABSENT = "absent"          # there was none and there is none

RECOVERED = r"^dataflow: 6\.0 MiB in, .* 25 chunks, 2 workers, .*"   # the summary line


@dataclass(frozen=True)
class Poke:
    """What the test does to the running job from outside."""
    when: str                        # "fault" (the marker exists), "running", "starting"
    signals: tuple[int, ...]         # sent one after the other, 50 ms apart
    to: str = "group"                # "group" (as a terminal does) or "coordinator" alone
    hold: float = 0.0                # first check the job is still running this long


@dataclass(frozen=True)
class Row:
    id: str
    stage: str                       # one of the stages above
    inject: str = ""                 # the Fault stage(s) after the grep, as Python (MARKER)
    job: tuple[tuple[str, str], ...] = ()   # job options over JOB
    source: str = "file"             # "file": the 6 MiB log; "endless": generate 50GiB;
                                     # "silent": stdin, a pipe nobody writes to
    poke: Poke | None = None
    limit: str = ""                  # "fsize" / "fsize-sigxfsz-default" (ulimit -f 2 MiB),
                                     # "tmpfs" (the output on a 1 MiB tmpfs)
    code: int = 0                    # expected Popen return code
    message: str = RECOVERED         # regex over stderr (multiline); <IN> and <OUT>: the paths
    output: str = REFERENCE
    reference: str = "grep"          # or the Fault of an undisturbed run (how="none")
    stats: tuple[str, ...] = ()      # expressions over the --stats JSON, all must hold
    leaves: bool = False             # SIGKILL: temp file and segment stay until cleanup

    def __str__(self) -> str:
        return self.id


def fault(at: str, how: str, seq: int = 5, *, once: bool = False, expand: int = 1,
          cls: str = "Fault") -> str:
    extra = (", once=True" if once else "") + (f", expand={expand}" if expand != 1 else "")
    return f"{cls}({at!r}, {how!r}, seq={seq}, marker=MARKER{extra})"


def chunk(seq: int, n: int, signal_name: str) -> str:
    """The message of a chunk that failed `n` times: its index, byte range and last signal."""
    return (rf"^dataflow: error: chunk {seq} \(<IN>: byte (\d+), bytes \1-\d+\) failed {n} "
            rf"times, each time its worker died; the last by {signal_name}; giving up$")


def interrupted(sig: signal.Signals) -> str:
    return rf"^dataflow: interrupted by {sig.name}; cleaned up$"


RETRIED = ("retries >= 1",)

ROWS = [
    # ------------------------------------------------------------ worker dies, chunk re-run
    Row("sigkill-worker-at-chunk-5", TRANSFORM, fault("transform", "sigkill", once=True),
        stats=RETRIED),
    Row("os-exit-0-without-a-result", TRANSFORM, fault("transform", "exit0", once=True),
        stats=RETRIED),
    Row("segfault-at-chunk-5", TRANSFORM, fault("transform", "segv", once=True),
        stats=RETRIED),
    # chunk 5 three times is ~3 slots: two pieces are written (acknowledged) before the death,
    # and the re-run must skip them (exactly once)
    Row("sigkill-after-output-before-done", OUTPUT,
        fault("output", "sigkill", once=True, expand=3),
        reference="Fault('output', 'none', seq=5, expand=3)",
        stats=("retries >= 1", "slot_size == 256 << 10")),
    Row("os-exit-0-after-output-before-done", OUTPUT,
        fault("output", "exit0", once=True, expand=3),
        reference="Fault('output', 'none', seq=5, expand=3)",
        stats=("retries >= 1", "slot_size == 256 << 10")),
    Row("sigkill-worker-in-setup-once", SETUP, fault("setup", "sigkill", once=True)),
    Row("hang-with-chunk-timeout", TRANSFORM, fault("transform", "sleep", once=True),
        job=(("chunk_timeout", "1.5s"),), stats=("timed_out == 1", "retries >= 1")),
    Row("sigstopped-worker-with-chunk-timeout", TRANSFORM,
        fault("transform", "sigstop", once=True),
        job=(("chunk_timeout", "1.5s"),), stats=("timed_out == 1", "retries >= 1")),
    # unchecked, 25 chunks x 4 MiB would leave 100 MiB in the workers on top of the job's
    # ~65 MiB. (Leak(6 MiB, 0.1 s) grows in 12 MiB steps faster than the watchdog samples
    # below 90% of the limit, 0.25 s: its peak reached 1.28x, too close to call.)
    Row("leaking-transform-recycled", TRANSFORM, "Leak(mib=4, delay=0.1)",
        stats=("recycled + memory_kills >= 1", "peak_memory <= 1.25 * (128 << 20)")),
    # ------------------------------------------------------------ the job fails, cleanly
    Row("poison-chunk-always-sigkilled", TRANSFORM, fault("transform", "sigkill", seq=3),
        code=1, message=chunk(3, 4, r"SIGKILL\(-9\)"), output=OLD_KEPT),
    Row("raise-at-chunk-4", TRANSFORM, fault("transform", "raise", seq=4), code=1,
        message=(r"^dataflow: error: stages\[1\] \(fault\) failed on chunk 4 \(<IN>: byte "
                 r"\d+, \d+ bytes\): ValueError: injected fault in transform of chunk 4$"
                 r"(.|\n)*^worker traceback:\n(.|\n)*helper_transforms\.py"),
        output=ABSENT),
    Row("hang-always-past-chunk-timeout", TRANSFORM, fault("transform", "sleep"),
        job=(("chunk_timeout", "1s"), ("max_attempts", "2")), code=1,
        message=chunk(5, 2, r"running past chunk_timeout \(1 s; ended by SIGTERM\(-15\)\)"),
        output=OLD_KEPT),
    Row("chunk-needs-more-than-memory-limit", TRANSFORM,
        "Balloon(seq=2, mib=400, seconds=30)", job=(("max_attempts", "2"),), code=1,
        message=(r"^dataflow: error: chunk 2 \(<IN>: byte (\d+), bytes \1-\d+\) failed 2 times"
                 r", each time its worker died; the last by growing the job past memory_limit "
                 r"\(128\.0 MiB; SIGKILL\(-9\)\): the chunk needs more memory than the limit "
                 r"leaves a worker; giving up$"),
        output=OLD_KEPT),
    Row("sigkill-every-worker-in-setup", SETUP, fault("setup", "sigkill"), code=1,
        message=(r"^dataflow: error: workers died while starting 4 times in a row, the last "
                 r"\(worker \d\) by SIGKILL\(-9\); check the stages' setup$"),
        output=OLD_KEPT),
    Row("raise-in-setup", SETUP, fault("setup", "raise"), code=1,
        message=(r"^dataflow: error: stages\[1\] \(fault\) failed to start in a worker: "
                 r"ValueError: injected fault in setup$"),
        output=OLD_KEPT),
    Row("raise-in-flush", FLUSH, fault("flush", "raise", cls="FaultInFlush"), code=1,
        message=(r"^dataflow: error: stages\[1\] \(fault-in-flush\) failed in its "
                 r"end-of-stream flush: ValueError: injected fault in flush$"),
        output=OLD_KEPT),
    Row("sigkill-in-flush", FLUSH, fault("flush", "sigkill", once=True, cls="FaultInFlush"),
        code=1, message=(r"^dataflow: error: worker \d died during its end-of-stream flush "
                         r"\(SIGKILL\(-9\)\)$"),
        output=OLD_KEPT),
    Row("hang-without-timeout-then-sigterm", TRANSFORM, fault("transform", "sleep", seq=2),
        poke=Poke("fault", (signal.SIGTERM,), hold=1.5), code=-signal.SIGTERM,
        message=interrupted(signal.SIGTERM), output=OLD_KEPT),
    # ------------------------------------------------------------ the sink cannot write
    Row("rlimit-fsize", SINK, limit="fsize", job=(("chunk_size", "64KiB"),), code=1,
        message=(r"^dataflow: error: cannot write <OUT>: File too large .*ulimit -f"),
        output=OLD_KEPT),
    # CPython ignores SIGXFSZ at start-up; were the CLI killed by it, it would leave its temp
    Row("rlimit-fsize-sigxfsz-default", SINK, limit="fsize-sigxfsz-default",
        job=(("chunk_size", "64KiB"),), code=1,
        message=(r"^dataflow: error: cannot write <OUT>: File too large .*ulimit -f"),
        output=OLD_KEPT),
    Row("disk-full-tiny-tmpfs", SINK, limit="tmpfs", code=1,
        message=r"^dataflow: error: cannot write <OUT>: No space left on device \(disk full\)",
        output=OLD_KEPT),
    # ------------------------------------------------------------ the coordinator is signalled
    Row("sigint-group-while-running", RUNNING, source="endless",
        poke=Poke("running", (signal.SIGINT,)), code=-signal.SIGINT,
        message=interrupted(signal.SIGINT), output=OLD_KEPT),
    Row("sigterm-group-while-running", RUNNING, source="endless",
        poke=Poke("running", (signal.SIGTERM,)), code=-signal.SIGTERM,
        message=interrupted(signal.SIGTERM), output=OLD_KEPT),
    Row("sigint-group-while-starting", STARTING, source="endless",
        poke=Poke("starting", (signal.SIGINT,)), code=-signal.SIGINT,
        message=interrupted(signal.SIGINT), output=OLD_KEPT),
    Row("sigterm-group-while-starting", STARTING, source="endless",
        poke=Poke("starting", (signal.SIGTERM,)), code=-signal.SIGTERM,
        message=interrupted(signal.SIGTERM), output=OLD_KEPT),
    # `kill PID` (a service manager, a script): the coordinator alone; it stops its workers
    Row("sigterm-coordinator-alone", RUNNING, source="endless",
        poke=Poke("running", (signal.SIGTERM,), to="coordinator"), code=-signal.SIGTERM,
        message=interrupted(signal.SIGTERM), output=OLD_KEPT),
    Row("sigint-coordinator-alone", RUNNING, source="endless",
        poke=Poke("running", (signal.SIGINT,), to="coordinator"), code=-signal.SIGINT,
        message=interrupted(signal.SIGINT), output=OLD_KEPT),
    Row("sigint-group-while-blocked-reading-stdin", READING, source="silent",
        poke=Poke("running", (signal.SIGINT,)), code=-signal.SIGINT,
        message=interrupted(signal.SIGINT), output=OLD_KEPT),
    Row("second-sigint-during-teardown", TEARDOWN, source="endless",
        poke=Poke("running", (signal.SIGINT, signal.SIGINT)), code=-signal.SIGINT,
        message=interrupted(signal.SIGINT), output=ABSENT),
    Row("sigkill-coordinator-alone", RUNNING, source="endless",
        poke=Poke("running", (signal.SIGKILL,), to="coordinator"), code=-signal.SIGKILL,
        message=r"\A\Z", output=OLD_KEPT, leaves=True),
    Row("sigkill-group", RUNNING, source="endless",
        poke=Poke("running", (signal.SIGKILL,)), code=-signal.SIGKILL,
        message=r"\A\Z", output=ABSENT, leaves=True),
]


# ============================================================================ fixtures
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fault-table") / "in.log"
    write_sample(str(path), 6 * MiB, seed=7)
    return path


@pytest.fixture(scope="module")
def references(data, tmp_path_factory) -> dict[str, bytes]:
    """Reference outputs, made once: GNU grep's, and undisturbed runs (filled on demand)."""
    grep = require_tool("grep")
    r = subprocess.run([grep, "-a", "-v", PATTERN, str(data)], capture_output=True, check=True)
    assert 0 < len(r.stdout) < data.stat().st_size
    return {"grep": r.stdout}


def undisturbed(references: dict[str, bytes], data: Path, inject: str, tmp_path_factory
                ) -> bytes:
    """The output of the job with `inject` (a Fault whose `how` is "none"), made once."""
    if inject not in references:
        d = tmp_path_factory.mktemp("undisturbed")
        out = d / "out.log"
        proc, err = start(d, job_yaml(data, out, inject, {}), d / "faultjob.py", inject)
        proc.wait(timeout=60)
        assert proc.returncode == 0, err.read_text()
        references[inject] = out.read_bytes()
    return references[inject]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs, or None where this machine cannot mount one (needs CAP_SYS_ADMIN)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)],
                       capture_output=True) if shutil.which("mount") else None
    if r is None or r.returncode != 0:
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


# ============================================================================ running a row
def job_yaml(data: Path, out: Path, inject: str, options: dict[str, str],
             source: str = "file") -> str:
    src = {"file": f"{{file: '{data}'}}", "endless": "{generate: {size: 50GiB}}",
           "silent": "{stdin: true}"}[source]
    stages = f"\n  - grep: {{pattern: '{PATTERN}', invert: true}}"
    if inject:
        stages += "\n  - compose: faultjob:stages"
    lines = [f"source: {src}", f"stages:{stages}", f"sink: {{file: '{out}'}}"]
    lines += [f"{k}: {v}" for k, v in {**JOB, **options}.items()]
    return "\n".join(lines) + "\n"


def start(work: Path, yaml: str, module: Path, inject: str, preexec_fn=None,
          stdin=subprocess.DEVNULL):
    """Write the job (and its fault module) in `work` and start the CLI there, in a session
    of its own; stderr goes to a file (a pipe nobody reads could fill up and block it)."""
    if inject:
        module.write_text(f"from helper_transforms import *\n"
                          f"MARKER = {str(work / 'marker')!r}\n"
                          f"stages = [{inject}]\n")
    (work / "job.yaml").write_text(yaml)
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [TESTS, os.environ.get("PYTHONPATH")]))}
    err = work / "stderr"
    with open(err, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "dataflow", "run", "job.yaml",
                                 "--force", "--stats", str(work / "stats.json")],
                                cwd=work, stdin=stdin, stdout=subprocess.DEVNULL,
                                stderr=f, env=env, start_new_session=True,
                                preexec_fn=preexec_fn)
    return proc, err


def temps(directory: Path) -> list[str]:
    return sorted(p for p in os.listdir(directory) if p.endswith(TEMP_SUFFIX))


def wait_for(what: str, ready, deadline: float = 20) -> None:
    end = time.monotonic() + deadline
    while not ready():
        if time.monotonic() > end:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def poke(row: Row, proc: subprocess.Popen, work: Path, out_dir: Path) -> list[psutil.Process]:
    """Wait for the row's moment, check it still runs if asked, send its signals; return the
    workers the coordinator had when it alone was signalled."""
    p = row.poke
    assert p is not None
    alive = lambda: proc.poll() is None  # noqa: E731
    if p.when == "fault":
        wait_for("the fault", lambda: (work / "marker").exists() or not alive())
    elif p.when == "starting":  # the first helper or worker exists: workers are being started
        wait_for("the start", lambda: len(session_processes(proc.pid)) >= 2 or not alive())
    else:                       # both workers run and the temp output exists: under way
        wait_for("the job to run", lambda: (temps(out_dir) and segments_of(proc.pid)
                                            and len(worker_processes(proc.pid)) == 2)
                 or not alive())
    assert alive(), f"the job ended before the fault ({row.poke.when})"
    if p.hold:
        time.sleep(p.hold)
        assert alive(), f"the job finished by itself, within {p.hold} s of the fault"
    workers = worker_processes(proc.pid) if p.to == "coordinator" else []
    if p.to == "coordinator":
        assert len(workers) == 2, workers
    for i, sig in enumerate(p.signals):
        if i:
            time.sleep(0.05)
        (os.killpg if p.to == "group" else os.kill)(proc.pid, sig)
    return workers


def settle(pid: int, seconds: float, segments: bool = True) -> None:
    """Give the dead run's last processes (the resource tracker) time to go, and with
    `segments` its shared memory."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and (session_processes(pid) or
                                      (segments and segments_of(pid))):
        time.sleep(0.05)


def limit_file_size(how: str):
    """`ulimit -f` 2 MiB for the CLI: above its 896 KiB arena (posix_fallocate counts), below
    its output. CPython ignores SIGXFSZ at start-up; "...-default" restores the default."""
    disposition = signal.SIG_DFL if how.endswith("default") else signal.SIG_IGN

    def preexec_fn() -> None:
        signal.signal(signal.SIGXFSZ, disposition)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 * MiB, 2 * MiB))

    return preexec_fn


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_fault_table(row: Row, tmp_path, data, references, request, tmp_path_factory):
    work = tmp_path / "work"
    work.mkdir()
    if row.limit == "tmpfs":
        small_tmpfs = request.getfixturevalue("small_tmpfs")
        if small_tmpfs is None:
            pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN); "
                        "test_output_safety.py::test_disk_full_in_process covers ENOSPC")
        out_dir = small_tmpfs
    else:
        out_dir = tmp_path / "out"
        out_dir.mkdir()
    out = out_dir / "out.log"
    if row.output != ABSENT:
        out.write_bytes(OLD)
    reference = b""
    if row.output == REFERENCE:
        reference = references["grep"] if row.reference == "grep" else \
            undisturbed(references, data, row.reference, tmp_path_factory)

    preexec_fn = limit_file_size(row.limit) if row.limit.startswith("fsize") else None
    yaml = job_yaml(data, out, row.inject, dict(row.job), row.source)
    proc, err_file = start(work, yaml, work / "faultjob.py", row.inject, preexec_fn,
                           subprocess.PIPE if row.source == "silent" else subprocess.DEVNULL)
    workers: list[psutil.Process] = []
    elapsed = 0.0
    try:
        if row.poke is not None:
            workers = poke(row, proc, work, out_dir)
            t0 = time.monotonic()
            proc.wait(timeout=10)
            elapsed = time.monotonic() - t0
        else:
            proc.wait(timeout=60)
    finally:
        kill_group_if_alive(proc)
        if proc.stdin is not None:
            proc.stdin.close()
    err = err_file.read_text(errors="replace")
    where = f"[{row.id}: {row.stage}]\n{err}"

    # exit code and message
    assert proc.returncode == row.code, where
    pattern = row.message.replace("<IN>", re.escape(str(data))).replace("<OUT>",
                                                                         re.escape(str(out)))
    assert re.search(pattern, err, re.M), f"no match for {pattern!r} in {where}"
    assert "Traceback" not in err.split("worker traceback:")[0], where
    assert "internal error" not in err, where
    if row.poke is not None and row.code != -signal.SIGKILL:
        assert elapsed < 5, f"took {elapsed:.1f} s to stop after the signal"
    if "MARKER" in row.inject:
        assert (work / "marker").exists(), "the fault did not happen"

    # what the run left behind
    if workers:  # the coordinator alone was signalled: its workers must be gone at once
        end = time.monotonic() + 2
        while any(alive_not_zombie(w) for w in workers) and time.monotonic() < end:
            time.sleep(0.05)
        left = [w for w in workers if alive_not_zombie(w)]
        for w in left:
            w.kill()
        assert not left, f"workers outlived their coordinator by 2 s: {left}"
    if row.leaves:
        # nothing can clean up after SIGKILL: the temp file stays, and the segment; `dataflow
        # cleanup` removes both. (Any dataflow run that starts on this machine meanwhile, a
        # test session next to this one, sweeps dead owners' segments too: which of the two
        # removes the segment is not asserted, that it is gone is, below.)
        settle(proc.pid, 5, segments=False)
        left = temps(out_dir)
        assert len(left) == 1, os.listdir(out_dir)
        r = subprocess.run([sys.executable, "-m", "dataflow", "cleanup", str(out_dir)],
                           capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert f"removed {out_dir / left[0]}" in r.stdout.decode().splitlines(), r.stdout
    settle(proc.pid, 5)
    assert session_processes(proc.pid) == [], "a process of the run is left"
    assert segments_of(proc.pid) == [], "a shared-memory segment of the run is left"
    assert sorted(os.listdir(out_dir)) == ([] if row.output == ABSENT else ["out.log"]), \
        "a temp file (or something else) is left next to the output"

    # the output
    if row.output == ABSENT:
        assert not out.exists()
    elif row.output == OLD_KEPT:
        assert out.read_bytes() == OLD, "the old output was touched"
    else:
        got = out.read_bytes()
        assert len(got) == len(reference) and got == reference, \
            f"output differs from the {row.reference} reference"

    # statistics of a run that recovered
    if row.code == 0:
        stats = msgspec.json.decode((work / "stats.json").read_bytes())
        for expr in row.stats:
            assert eval(expr, {}, dict(stats)), f"{expr}: {stats}"
        if stats["retries"]:
            assert f", {stats['retries']} retries" in err, where


def alive_not_zombie(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_undisturbed_expand_reference_is_three_times_grep(references, data,
                                                               tmp_path_factory):
    """The undisturbed reference of the rows that fault after the output is itself checked
    against GNU grep: each chunk's grep output three times, so three times grep's length and
    the same lines, each three times as often."""
    got = undisturbed(references, data, "Fault('output', 'none', seq=5, expand=3)",
                      tmp_path_factory)
    want = references["grep"]
    assert len(got) == 3 * len(want)
    assert sorted(got.splitlines()) == sorted(want.splitlines() * 3)
