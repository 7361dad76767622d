"""Ctrl-C and SIGTERM: the real CLI in its own session, the signal sent to the whole process
group (as a terminal does). It must exit by that signal within 5 s and leave nothing: no
process of the session, no shared-memory segment, no temp output, the old output untouched.

The signals to a running or starting job, a second Ctrl-C during teardown, SIGKILL to the
coordinator alone (its workers must follow it) or to the whole group (`dataflow cleanup`
removes what is left) are rows of the fault table, tests/test_fault_table.py. Here: a job whose
source is an endless gzip stream on stdin, decoded by a thread of the coordinator."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import kill_group_if_alive, segments_of, session_processes


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_sequential_decompression_of_an_endless_stream(tmp_path, sig):
    """The decoding thread (reading stdin, inflating) must not keep the process alive."""
    import threading
    import zlib

    job = tmp_path / "job.yaml"
    job.write_text("source: {stdin: true}\nstages: [decompress, {grep: {pattern: x}}]\n"
                   "sink: {file: out.log}\nworkers: 2\nmemory_limit: 128MiB\n")
    proc = subprocess.Popen([sys.executable, "-m", "dataflow", "run", str(job)],
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
        kill_group_if_alive(proc)
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
