"""Shared fixtures. Every test fails if it leaves a child process or a /dev/shm segment of ours.
That includes processes that are no longer our descendants (their parent died and init took
them): every process this session starts carries its mark in its environment.

Tools the tests compare against (GNU grep, cmp) must exist; when CI is set a missing tool is a
failure, not a skip.
"""
from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from dataflow.shm import PREFIX, SHM_DIR


def _segments() -> set[str]:
    """Our segments: made by this process, a descendant, or a process now dead (a killed
    CLI run). Those of unrelated live processes (another test run) are not ours to judge."""
    mine = {os.getpid()} | {c.pid for c in psutil.Process().children(recursive=True)}
    out = set()
    for n in os.listdir(SHM_DIR):
        if not n.startswith(PREFIX):
            continue
        try:
            pid = int(n[len(PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if pid in mine or not psutil.pid_exists(pid):
            out.add(n)
    return out


def _live(processes: list[psutil.Process]) -> list[psutil.Process]:
    """`processes` that are alive, except multiprocessing's resource tracker: spawn starts one
    per interpreter on first use and it lives until the interpreter exits (we register nothing
    with it: see dataflow/shm.py)."""
    out = []
    for c in processes:
        try:
            if c.status() == psutil.STATUS_ZOMBIE:
                continue
            if any("multiprocessing.resource_tracker" in a for a in c.cmdline()):
                continue
        except psutil.Error:
            continue
        out.append(c)
    return out


# inherited by every process the session starts, unless a test gives one an environment of its
# own; /proc/PID/environ keeps it even when the process changes its environment later
os.environ["DATAFLOW_TEST_SESSION"] = f"{os.getpid()}.{os.urandom(4).hex()}"
_MARK = f"DATAFLOW_TEST_SESSION={os.environ['DATAFLOW_TEST_SESSION']}"


def _orphans() -> list[psutil.Process]:
    """Live processes this session started that are not our descendants any more: left
    behind by a process that died (a killed coordinator's workers, a command's child)."""
    ours = {os.getpid()} | {c.pid for c in psutil.Process().children(recursive=True)}
    mark = _MARK.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in ours:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if mark not in f.read().split(b"\0"):
                    continue
            found.append(psutil.Process(int(entry)))
        except (OSError, psutil.Error):
            continue
    return _live(found)


def _children() -> list[psutil.Process]:
    """Live descendants of this process, but the resource tracker."""
    return _live(psutil.Process().children(recursive=True))


@pytest.fixture(autouse=True)
def no_leaks():
    before = _segments()
    yield
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and (_children() or _segments() - before):
        time.sleep(0.05)
    while time.monotonic() < deadline and _orphans():   # (one /proc walk when there are none)
        time.sleep(0.05)
    kids = _children()
    orphans = _orphans()
    leaked = _segments() - before
    for k in kids + orphans:
        with contextlib.suppress(psutil.Error):
            k.kill()
    for name in leaked:
        os.unlink(os.path.join(SHM_DIR, name))
    assert not kids, f"test left child processes: {[(k.pid, k.cmdline()) for k in kids]}"
    assert not orphans, (f"test left processes that outlived their parent: "
                         f"{[(k.pid, k.cmdline()) for k in orphans]}")
    assert not leaked, f"test left shared-memory segments: {sorted(leaked)}"


def session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`: a CLI run started in its own session."""
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (ProcessLookupError, psutil.Error, PermissionError):
            pass
    return out


def kill_group_if_alive(proc: subprocess.Popen) -> None:
    """SIGKILL the session `proc` leads (started with start_new_session=True) unless it has
    exited, and reap it: the end of a test's `finally`, so a failing test leaves nothing."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def worker_processes(pid: int) -> list[psutil.Process]:
    """The live worker processes of coordinator `pid`: its children, but the resource tracker
    (a child too)."""
    try:
        return _live(psutil.Process(pid).children())
    except psutil.Error:
        return []


def segments_of(pid: int) -> list[str]:
    """The shared-memory segments coordinator `pid` made."""
    return [n for n in os.listdir(SHM_DIR) if n.startswith(f"{PREFIX}{pid}-")]


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (.ci/run installs it)")
        pytest.skip(f"{name} is not installed")
    return path


def run_cli(*args: str, input: bytes | None = None, cwd: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the real `dataflow` command line in a new session (its own process group)."""
    return subprocess.run([sys.executable, "-m", "dataflow", *args], input=input,
                          capture_output=True, cwd=cwd, timeout=timeout,
                          start_new_session=True)


@pytest.fixture(scope="session")
def sample_log(tmp_path_factory) -> str:
    """A 24 MiB generated access log shared by the end-to-end tests."""
    from dataflow.generate import write_sample

    path = tmp_path_factory.mktemp("data") / "access.log"
    write_sample(str(path), 24 << 20, seed=7)
    return str(path)


# ---------------------------------------------------------------- small jobs over word lines
SMALL = dict(workers=2, chunk_size="64KiB", memory_limit="128MiB")   # many chunks, little memory
WORDS = [b"alpha", b"Beta", b"gamma", b"delta", b"needle?", b"x" * 40, b"\xff\xfe", b"z"]


def write_words(path, size: int, seed: int = 1, vocab: list[bytes] = WORDS) -> bytes:
    """Lines of 0-12 random words from `vocab`, about `size` bytes, written to `path`."""
    rnd = random.Random(seed)
    lines, n = [], 0
    while n < size:
        line = b" ".join(rnd.choice(vocab) for _ in range(rnd.randint(0, 12))) + b"\n"
        lines.append(line)
        n += len(line)
    data = b"".join(lines)
    path.write_bytes(data)
    return data


def run_job(tmp_path, src, *stages, name="out", **kw) -> bytes:
    """FileSource(src) -> stages -> FileSink(tmp_path/name) with SMALL options (overridable;
    `source={...}` goes to the FileSource); returns the output."""
    from dataflow import FileSink, FileSource, pipeline

    out = tmp_path / name
    pipeline(FileSource(str(src), **kw.pop("source", {})), *stages, FileSink(str(out)),
             **{**SMALL, **kw})
    return out.read_bytes()


# ---------------------------------------------------------------- commands a test started
def commands(marker: str) -> list[psutil.Process]:
    """Live processes with an argument equal to `marker` (a test's sleeps carry a unique
    duration), whoever their parent. Equal, not containing: a `python -c` script that starts
    `sleep MARKER` holds the marker in its own text."""
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if marker in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def kill_leftovers(marker: str) -> None:
    """After a failure: end the commands a test started (found by their unique argument),
    so one broken test does not leave sleeps behind."""
    for p in commands(marker):
        p.kill()


def wait_for(predicate, timeout: float, what: str):
    """Poll `predicate` until it returns something true (returned), or fail the test."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def assert_command_dies_with_its_parent(script: str, marker: str, cwd: str) -> None:
    """Run `python -c script`, which starts `sleep MARKER` and waits; SIGKILL the script and
    check the sleep ends too (PDEATHSIG: nobody else is left to end it)."""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=cwd, start_new_session=True)
    try:
        [sleep] = wait_for(lambda: commands(marker), 10, "the command")
        assert sleep.ppid() == proc.pid
        proc.kill()
        proc.wait()
        wait_for(lambda: not psutil.pid_exists(sleep.pid)
                 or sleep.status() == psutil.STATUS_ZOMBIE, 3, "the orphaned command to die")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_leftovers(marker)
