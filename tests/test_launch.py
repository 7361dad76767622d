"""Workers start as multiprocessing's spawn starts them, without its resource tracker
(dataflow/launch.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import dataflow

from helper_transforms import SharedMemoryUser, SlowSetupChild

TESTS = os.path.dirname(os.path.abspath(__file__))

# A fresh interpreter, so no other test has started a tracker in it.
JOB = """
import sys
sys.path.insert(0, {tests!r})
import dataflow
from multiprocessing import resource_tracker
from helper_transforms import WorkerPids
stats = dataflow.pipeline(dataflow.GenerateSource(size=1 << 20), WorkerPids(),
                          dataflow.NullSink(), workers=2, chunk_size="64KiB")
print(stats.chunks, resource_tracker._resource_tracker._pid)
"""


def test_a_job_starts_its_workers_and_no_resource_tracker():
    r = subprocess.run([sys.executable, "-c", JOB.format(tests=TESTS)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    chunks, tracker = r.stdout.split()
    assert int(chunks) > 1 and tracker == "None"


def test_user_code_in_a_worker_can_still_use_shared_memory(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"line\n" * 1000)
    out = tmp_path / "out.txt"
    def blocks() -> set[str]:     # multiprocessing.shared_memory's names
        return {n for n in os.listdir("/dev/shm") if n.startswith("psm_")}

    before = blocks()
    dataflow.pipeline(dataflow.FileSource(str(src)), SharedMemoryUser(),
                      dataflow.FileSink(str(out)), workers=2, chunk_size="1KiB")
    assert out.read_bytes() == src.read_bytes()
    assert blocks() <= before


def test_a_worker_still_in_setup_at_the_end_keeps_its_child_until_it_stops(tmp_path):
    """The job ends (one worker did every chunk) while the other worker's setup waits for a
    child process: the child is not killed under it (it once was: a resource tracker, and the
    shared-memory block being set up was left behind); it is ended only if it outlives its
    worker."""
    record = tmp_path / "status"
    src = tmp_path / "in.txt"
    src.write_bytes(b"line\n" * 100)
    dataflow.pipeline(dataflow.FileSource(str(src)), SlowSetupChild(str(record)),
                      dataflow.FileSink(str(tmp_path / "out")), workers=2, chunk_size="1KiB")
    assert record.read_text() == "0\n"


def dead(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("proc_children", [True, False])
def test_descendants_are_found_through_proc_or_psutil(monkeypatch, proc_children):
    """coordinator.descendants: a child and its own child (in a session of its own, as an exec
    command is), by the /proc children lists, or by psutil where the kernel has none."""
    from dataflow import coordinator

    monkeypatch.setattr(coordinator, "_PROC_CHILDREN",
                        coordinator._PROC_CHILDREN and proc_children)
    code = ("import subprocess, sys; p = subprocess.Popen(['sleep', '30'], "
            "start_new_session=True); print(p.pid, flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(child.stdout.readline())
        assert set(coordinator.descendants(child.pid)) == {grandchild}
        assert child.pid in coordinator.descendants(os.getpid())
        coordinator._kill_descendants(child.pid)
        deadline = time.monotonic() + 5       # killed: a zombie until its parent reaps it
        while not dead(grandchild) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert dead(grandchild)
        assert coordinator.descendants(999_999_999) == []     # no such process
    finally:
        child.stdin.close()
        child.wait()
        child.stdout.close()


def test_workers_start_by_forkserver_too(tmp_path):
    """start_method='forkserver': the workers' parent is the fork server, not the coordinator
    (they used to take that for their coordinator's death and exit 1 at once). Run in its own
    interpreter, which the fork server then ends with."""
    script = tmp_path / "job.py"
    script.write_text(
        "import sys, dataflow\n"
        "if __name__ == '__main__':\n"
        "    outs = []\n"
        "    for method in ('forkserver', 'spawn'):\n"
        "        out = sys.argv[1] + '.' + method\n"
        "        dataflow.pipeline(dataflow.GenerateSource(size=1 << 20, seed=3),\n"
        "                          dataflow.Grep(' 404 '), dataflow.FileSink(out), workers=2,\n"
        "                          chunk_size='64KiB', start_method=method)\n"
        "        outs.append(open(out, 'rb').read())\n"
        "    assert outs[0] == outs[1] and outs[0].count(b'\\n') > 10, len(outs[0])\n"
        "    print('ok')\n")
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
