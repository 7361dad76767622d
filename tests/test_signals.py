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

from dataflow.shm import PREFIX, SHM_DIR


def session_processes(sid: int) -> list[int]:
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (ProcessLookupError, psutil.Error, PermissionError):
            pass
    return out


def segments_of(pid: int) -> list[str]:
    return [n for n in os.listdir(SHM_DIR) if n.startswith(f"{PREFIX}{pid}-")]


@pytest.mark.parametrize("when", ["running", "starting"])
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_to_the_group_cleans_up_and_exits_by_the_signal(tmp_path, sig, code, when):
    (tmp_path / "out.log").write_bytes(b"previous output\n")
    job = tmp_path / "job.yaml"
    job.write_text("source: {generate: {size: 50GiB}}\nstages: [passthrough]\n"
                   "sink: {file: out.log}\nworkers: 2\nmemory_limit: 128MiB\n")
    proc = subprocess.Popen([sys.executable, "-m", "dataflow.cli", "run", str(job)],
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
