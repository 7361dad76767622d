"""Ctrl-C and SIGTERM: the real CLI in its own session, the signal sent to the whole process
group (as a terminal does). It must exit by that signal within 5 s and leave nothing: no
process of the session, no shared-memory segment, no temp output, the old output untouched."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import segments_of, session_processes


@pytest.mark.parametrize("when", ["running", "starting"])
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_to_the_group_cleans_up_and_exits_by_the_signal(tmp_path, sig, code, when):
    (tmp_path / "out.log").write_bytes(b"previous output\n")
    job = tmp_path / "job.yaml"
    job.write_text("source: {generate: {size: 50GiB}}\nstages: [passthrough]\n"
                   "sink: {file: out.log}\nworkers: 2\nmemory_limit: 128MiB\n")
    proc = subprocess.Popen([sys.executable, "-m", "dataflow.cli", "run", str(job), "--force"],
                            cwd=tmp_path, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        # wait until the workers run and the temp output exists: the job is really under way
        while time.monotonic() < deadline:
            temps = [p for p in os.listdir(tmp_path) if p.endswith(".dataflow-tmp")]
            procs = len(session_processes(proc.pid))
            if when == "starting" and procs >= 2:
                break  # the first helper or worker exists: workers are being started
            if temps and procs >= 3:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the job did not start")
        if when == "running":
            assert segments_of(proc.pid), "no arena while running?"
        t0 = time.monotonic()
        os.killpg(proc.pid, sig)
        proc.wait(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.returncode == -sig, (proc.returncode, err)   # the shell shows 128 + sig = code
    assert 128 + sig == code
    assert elapsed < 5, f"took {elapsed:.1f}s to stop"
    assert "Traceback" not in err, err
    assert "interrupted" in err
    time.sleep(0.2)
    assert session_processes(proc.pid) == []
    assert segments_of(proc.pid) == []
    assert sorted(os.listdir(tmp_path)) == ["job.yaml", "out.log"]
    assert (tmp_path / "out.log").read_bytes() == b"previous output\n"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_sequential_decompression_of_an_endless_stream(tmp_path, sig):
    """The decoding thread (reading stdin, inflating) must not keep the process alive."""
    import threading
    import zlib

    job = tmp_path / "job.yaml"
    job.write_text("source: {stdin: true}\nstages: [decompress, {grep: {pattern: x}}]\n"
                   "sink: {file: out.log}\nworkers: 2\nmemory_limit: 128MiB\n")
    proc = subprocess.Popen([sys.executable, "-m", "dataflow.cli", "run", str(job)],
                            cwd=tmp_path, stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    stop = threading.Event()

    def feed() -> None:  # an endless gzip stream of "y\n" lines
        z = zlib.compressobj(1, zlib.DEFLATED, 31)
        block = b"y\nx\n" * (1 << 18)
        try:
            while not stop.is_set():
                proc.stdin.write(z.compress(block))
        except (BrokenPipeError, ValueError, OSError):
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            temps = [p for p in os.listdir(tmp_path) if p.endswith(".dataflow-tmp")]
            if temps and len(session_processes(proc.pid)) >= 3:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the job did not start")
        time.sleep(0.3)
        t0 = time.monotonic()
        os.killpg(proc.pid, sig)
        proc.wait(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        feeder.join(5)
        try:
            proc.stdin.close()  # flushes what the feeder buffered: the reader may be gone
        except BrokenPipeError:
            pass
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.returncode == -sig, (proc.returncode, err)
    assert elapsed < 5, f"took {elapsed:.1f}s to stop"
    assert "Traceback" not in err, err
    time.sleep(0.2)
    assert session_processes(proc.pid) == []
    assert segments_of(proc.pid) == []
    assert sorted(os.listdir(tmp_path)) == ["job.yaml"]


def start_long_job(tmp_path) -> subprocess.Popen:
    job = tmp_path / "job.yaml"
    job.write_text("source: {generate: {size: 50GiB}}\nstages: [passthrough]\n"
                   "sink: {file: out.log}\nworkers: 2\nmemory_limit: 128MiB\n")
    proc = subprocess.Popen([sys.executable, "-m", "dataflow.cli", "run", str(job)],
                            cwd=tmp_path, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        temps = [p for p in os.listdir(tmp_path) if p.endswith(".dataflow-tmp")]
        if temps and len(session_processes(proc.pid)) >= 3:
            return proc
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    pytest.fail("the job did not start")


def test_a_second_ctrl_c_during_teardown_still_cleans_up(tmp_path):
    proc = start_long_job(tmp_path)
    try:
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # impatient: again, while it tears down
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGINT, err
    assert "Traceback" not in err, err
    time.sleep(0.2)
    assert session_processes(proc.pid) == []
    assert segments_of(proc.pid) == []
    assert sorted(os.listdir(tmp_path)) == ["job.yaml"]


def test_workers_exit_when_the_coordinator_is_killed(tmp_path):
    proc = start_long_job(tmp_path)
    deadline = time.monotonic() + 10
    while True:  # both workers up (the resource tracker is a child too)
        workers = []
        for p in psutil.Process(proc.pid).children():
            try:
                if not any("resource_tracker" in a for a in p.cmdline()):
                    workers.append(p)
            except psutil.Error:
                pass
        if len(workers) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(workers) == 2
    os.kill(proc.pid, signal.SIGKILL)  # the coordinator alone: no signal reaches the workers
    proc.wait()
    proc.stderr.close()
    deadline = time.monotonic() + 2
    while True:  # dead means gone or a zombie (its new parent, pid 1, may reap it late)
        alive = []
        for p in workers:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for p in alive:
        p.kill()
    assert not alive, f"workers outlived their coordinator by 2 s: {alive}"
    # what the dead run left is swept by `dataflow cleanup` (or already was, by any other
    # dataflow run on this machine: each one removes dead owners' segments when it starts)
    r = subprocess.run([sys.executable, "-m", "dataflow.cli", "cleanup", str(tmp_path)],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert segments_of(proc.pid) == []
    assert sorted(os.listdir(tmp_path)) == ["job.yaml"]
    deadline = time.monotonic() + 5
    while session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # the resource tracker notices its pipe closed and exits
    assert session_processes(proc.pid) == []
