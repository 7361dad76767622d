"""A signal to the coordinator alone (`kill PID`) while it is still starting its workers.

The moment a worker process exists, `Process.start()` has not yet handed it its preparation
data, nor has the coordinator recorded it. A signal handled right then used to leave the child
reading a closed pipe (an `EOFError` traceback from multiprocessing's bootstrap), or attaching
to an arena already removed (a `FileNotFoundError` traceback): about one run in two failed so
before the fix. Each run here signals the coordinator the instant its second worker appears.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from conftest import segments_of, session_processes, worker_processes

RUNS = 4


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_while_workers_start(tmp_path, sig):
    (tmp_path / "job.yaml").write_text(
        "source: {generate: {size: 50GiB}}\n"
        "stages: [{grep: {pattern: kube-probe, invert: true}}]\n"
        "sink: {file: out.log}\nworkers: 2\n")
    for run in range(RUNS):
        with open(tmp_path / "err", "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "dataflow", "run", "job.yaml",
                                     "--force"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                    stderr=err, start_new_session=True)
        try:
            end = time.monotonic() + 30
            while len(worker_processes(proc.pid)) < 2 and proc.poll() is None:
                assert time.monotonic() < end, "the workers never started"
                time.sleep(0.001)
            proc.send_signal(sig)
            assert proc.wait(timeout=30) == -sig
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stderr = (tmp_path / "err").read_text()
        where = f"run {run}: {stderr}"
        assert "Traceback" not in stderr, where
        assert stderr.strip() == f"dataflow: interrupted by {sig.name}; cleaned up", where
        end = time.monotonic() + 5   # workers stopped: the session empties, no segment left
        while session_processes(proc.pid) and time.monotonic() < end:
            time.sleep(0.02)
        assert session_processes(proc.pid) == [], where
        assert segments_of(proc.pid) == [], where
        assert not (tmp_path / "out.log").exists(), where
