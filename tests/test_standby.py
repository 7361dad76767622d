"""Standby workers: the `dataflow` command starts its workers before it imports the engine
(dataflow/__main__.py, launch.prestart); a job takes them in place of starting new ones and
ends those it does not want."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import dataflow
from dataflow import launch
from dataflow.__main__ import standby_count

from helper_transforms import WorkerPids


@pytest.fixture(autouse=True)
def no_standby_left():
    """A failing test must not leave standby workers for the next job in this process."""
    yield
    launch.discard()


@pytest.mark.parametrize("argv, want", [
    (["decompress", "-p", "1", "f.gz"], 1),
    (["compress", "-p1", "f"], 1),
    (["grep", "--workers=1", "x", "f"], 1),
    (["grep", "--workers", "1", "x", "f"], 1),
    (["decompress", "-p", "1000", "f.gz"], "cores"),     # never more than the cores
    (["run", "job.yaml", "--set", "workers=1"], 1),
    (["run", "job.yaml"], "cores"),                      # no such file: the default
    (["run", "--force", "one.yaml"], 1),                 # the job file's `workers:`
    (["run", "--set", "chunk_size=1MiB", "one.yaml"], 1),
    (["run", "one.yaml", "--set", "workers=auto"], "cores"),
    (["map", "m:f", "in", "-p", "auto"], "cores"),
    (["run", "job.yaml", "--explain"], 0),
    (["decompress", "--help"], 0),
    (["validate", "job.yaml"], 0),
    (["sample", "-o", "x"], 0),
    (["cleanup"], 0),
    ([], 0),
    (["decompress", "-p", "many", "f.gz"], 0),     # the command itself reports that
    (["decompress", "-p", "0", "f.gz"], 0),
])
def test_how_many_workers_the_command_starts_before_the_engine(argv, want, tmp_path,
                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "one.yaml").write_text("source: {file: a}\nworkers: 1   # one\n")
    cores = len(os.sched_getaffinity(0))
    assert standby_count(argv) == (cores if want == "cores" else want)


def test_a_job_takes_the_standby_workers_and_ends_the_ones_it_does_not_want(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"line\n" * 20000)
    launch.prestart(3)
    standby = [p for p, _ in launch._standby]
    pids = [p.pid for p in standby]
    assert len(standby) == 3
    stats = dataflow.pipeline(dataflow.FileSource(str(src)), WorkerPids(),
                              dataflow.FileSink(str(tmp_path / "out")), workers=2,
                              chunk_size="4KiB")
    assert (tmp_path / "out").read_bytes() == src.read_bytes()
    ran = set(stats.results["0:worker-pids"])
    assert ran and ran <= set(pids[:2])                  # the first two did the work
    assert launch._standby == []
    assert standby[2].exitcode is not None               # the third was ended and reaped


def test_discard_ends_standby_workers_no_job_took():
    launch.prestart(2)
    standby = [p for p, _ in launch._standby]
    launch.discard()
    assert launch._standby == [] and all(p.exitcode is not None for p in standby)


def test_a_standby_worker_that_died_is_passed_over(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"line\n" * 1000)
    launch.prestart(1)
    (dead, _), = launch._standby
    dead.kill()
    dead.join()
    stats = dataflow.pipeline(dataflow.FileSource(str(src)), WorkerPids(), dataflow.NullSink(),
                              workers=1, chunk_size="1KiB")
    assert stats.chunks > 1 and dead.pid not in set(stats.results["0:worker-pids"])
    assert launch._standby == []


def session(sid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (OSError, psutil.Error):
            pass
    return out


@pytest.mark.parametrize("delay", [0.0, 0.03, 0.06, 0.12])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_command_starts_ends_it_cleanly(tmp_path, delay, signum):
    """Ctrl-C or SIGTERM (to the command alone) once its first standby worker exists, while
    the others start and the engine is imported: the command ends its workers and dies by
    the signal with the usual message, and nothing of its session is left."""
    (tmp_path / "job.yaml").write_text("source: {generate: {size: 10GiB}}\n"
                                       "stages: [passthrough]\nsink: {null: true}\n")
    proc = subprocess.Popen([sys.executable, "-m", "dataflow", "run", "job.yaml", "-q"],
                            cwd=tmp_path, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 20
    while not psutil.Process(proc.pid).children() and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(delay)
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signum, err.decode()
    name = signal.Signals(signum).name
    assert err.decode().endswith(f"dataflow: interrupted by {name}; cleaned up\n"), err.decode()
    gone, alive = psutil.wait_procs(session(proc.pid), timeout=5)
    assert alive == []
