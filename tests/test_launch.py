"""Workers start as multiprocessing's spawn starts them, without its resource tracker
(dataflow/launch.py)."""
from __future__ import annotations

import os
import subprocess
import sys

import dataflow

from helper_transforms import SharedMemoryUser, WorkerPids

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
