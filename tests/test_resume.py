"""Resume: a job SIGKILLed at a random point and run again with --resume gives the same bytes
as an undisturbed run, without redoing committed chunks; a changed input or job is refused."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import msgspec
import pytest

from conftest import require_tool, run_cli

JOB = """source: {{file: 'part-*.log'}}
stages: {stages}
sink: {{file: {out}}}
workers: 2
memory_limit: 128MiB
chunk_size: 256KiB
checkpoint_interval: 50ms
"""
# stages whose output depends on every earlier chunk: a gzip member's CRC and dictionary, a
# BGZF index, a grep count folded in order
CASES = [
    ("[{grep: {pattern: 'Mozilla', invert: true}}, {gzip: {level: 6}}]", "out.gz"),
    ("[{bgzf: {level: 6, index: out.gz.gzi}}]", "out.gz"),
    ("[{zstd: {level: 3}}]", "out.zst"),
]


@pytest.fixture(scope="module")
def parts(sample_log, tmp_path_factory):
    """The 24 MiB sample log cut into three files of different sizes (read as one stream)."""
    d = tmp_path_factory.mktemp("resume")
    with open(sample_log, "rb") as f:
        data = f.read()
    cuts = [0, 5_000_001, 13_333_337, len(data)]
    for i in range(3):
        (d / f"part-{i}.log").write_bytes(data[cuts[i]:cuts[i + 1]])
    return d


def setup_job(tmp_path, parts, stages, out):
    for p in parts.iterdir():
        os.link(p, tmp_path / p.name)
    (tmp_path / "job.yaml").write_text(JOB.format(stages=stages, out=out))


def stats_of(tmp_path):
    return msgspec.json.decode((tmp_path / "stats.json").read_bytes())


def test_resume_after_sigkill_at_random_points_is_byte_identical(tmp_path, parts):
    rng = random.Random(11)
    resumed = 0
    durations: list[float] = []  # of the undisturbed runs: kills land inside a run
    for run in range(10):
        stages, out = CASES[run % len(CASES)]
        d = tmp_path / f"run{run}"
        d.mkdir()
        setup_job(d, parts, stages, out)
        if run < len(CASES):  # the undisturbed reference of each case
            t0 = time.monotonic()
            r = run_cli("run", "job.yaml", "-q", cwd=d)
            durations.append(time.monotonic() - t0)
            assert r.returncode == 0, r.stderr.decode()
            os.rename(d / out, tmp_path / f"reference{run}")
            if "index" in stages:
                os.rename(d / "out.gz.gzi", tmp_path / f"reference{run}.gzi")
        proc = subprocess.Popen([sys.executable, "-m", "dataflow", "run", "job.yaml", "-q"],
                                cwd=d, stderr=subprocess.PIPE, start_new_session=True)
        duration = durations[run % len(CASES)]
        if run % 2:
            # once a checkpoint exists, at a random point of the rest: on a loaded machine a
            # kill timed by the undisturbed run alone could land before the first checkpoint
            # (or after the end) every time
            deadline = time.monotonic() + 30
            while not (d / f".{out}.dataflow-resume").exists() and proc.poll() is None:
                assert time.monotonic() < deadline, "no checkpoint was made"
                time.sleep(0.005)
            # (soon after it: a checkpoint can first appear late in a run on a loaded machine)
            time.sleep(rng.uniform(0.0, 0.1) * duration)
        else:
            time.sleep(rng.uniform(0.55, 0.95) * duration)
        if proc.poll() is None:         # it may have ended before its first checkpoint
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        r = run_cli("run", "job.yaml", "--resume", "--force", "--stats", "stats.json",
                    cwd=d)
        assert r.returncode == 0, r.stderr.decode()
        stats = stats_of(d)
        if stats["resumed_at"] is not None:
            resumed += 1
            # committed chunks were not read again
            total = sum(p.stat().st_size for p in parts.iterdir())
            assert stats["bytes_in"] == total - stats["resumed_at"]
        else:
            assert b"nothing to resume" in r.stderr or proc.returncode == 0
        reference = tmp_path / f"reference{run % len(CASES)}"
        assert (d / out).read_bytes() == reference.read_bytes(), f"run {run}: {stages}"
        if "index" in stages:
            assert (d / "out.gz.gzi").read_bytes() == \
                (tmp_path / f"reference{run % len(CASES)}.gzi").read_bytes()
        assert not [p for p in os.listdir(d) if "dataflow-" in p], os.listdir(d)
    assert resumed >= 4, f"only {resumed} of 10 kills left something to resume"


def killed_run(tmp_path):
    """Start the job, SIGKILL it once a checkpoint exists."""
    proc = subprocess.Popen([sys.executable, "-m", "dataflow", "run", "job.yaml"],
                            cwd=tmp_path, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 20
    while not (tmp_path / ".out.gz.dataflow-resume").exists():
        assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint was made"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_resumed_gzip_is_read_by_gzip(tmp_path, parts):
    require_tool("gzip")
    setup_job(tmp_path, parts, CASES[0][0], "out.gz")
    killed_run(tmp_path)
    r = run_cli("run", "job.yaml", "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert b"resumed at input byte" in r.stderr
    t = subprocess.run(["gzip", "-dc", "out.gz"], cwd=tmp_path, capture_output=True)
    assert t.returncode == 0, t.stderr
    stream = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("part-*.log")))
    expected = b"".join(line for line in stream.splitlines(keepends=True)
                        if b"Mozilla" not in line)
    assert t.stdout == expected


def test_a_changed_input_is_refused_naming_both_identities(tmp_path, parts):
    setup_job(tmp_path, parts, CASES[0][0], "out.gz")
    killed_run(tmp_path)
    victim = tmp_path / "part-2.log"
    data = victim.read_bytes()
    os.unlink(victim)  # a hard link to the shared copy: replace, do not write through it
    victim.write_bytes(data[:-1] + b"X")
    r = run_cli("run", "job.yaml", "--resume", cwd=tmp_path)
    assert r.returncode == 2
    err = r.stderr.decode()
    assert "the input changed since the interrupted run" in err, err
    assert err.count("part-2.log:") == 2 and "then:" in err and "now:" in err
    assert not (tmp_path / "out.gz").exists()
    # without --resume the job starts over, and sweeps the dead run's leftovers
    r = run_cli("run", "job.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith(".")) == []


def test_a_changed_job_is_refused(tmp_path, parts):
    setup_job(tmp_path, parts, CASES[0][0], "out.gz")
    killed_run(tmp_path)
    job = tmp_path / "job.yaml"
    job.write_text(job.read_text().replace("level: 6", "level: 5"))
    r = run_cli("run", "job.yaml", "--resume", cwd=tmp_path)
    assert r.returncode == 2
    assert b"the job changed since the interrupted run" in r.stderr
    r = run_cli("run", "job.yaml", cwd=tmp_path)  # start over
    assert r.returncode == 0, r.stderr.decode()


def test_resume_with_nothing_to_resume_runs_from_the_beginning(tmp_path, parts):
    setup_job(tmp_path, parts, CASES[2][0], "out.zst")
    r = run_cli("run", "job.yaml", "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert b"nothing to resume" in r.stderr
    assert (tmp_path / "out.zst").stat().st_size > 0


def test_a_killed_runs_half_saved_checkpoint_is_removed(tmp_path, parts):
    """A run killed while it saved a checkpoint leaves the checkpoint's temp file (named
    after its pid); the next run of the job removes it, and `dataflow cleanup` would too."""
    from dataflow.sinks import temp_path

    setup_job(tmp_path, parts, CASES[2][0], "out.zst")
    dead = subprocess.Popen(["true"])
    dead.wait()                          # a pid nobody has now
    manifest = str(tmp_path / ".out.zst.dataflow-resume")
    name = temp_path(manifest).replace(f".{os.getpid()}.", f".{dead.pid}.")
    with open(name, "wb") as f:
        f.write(b'{"version": 1, "job": "half')
    os.utime(name, (time.time() - 60, time.time() - 60))   # written before that pid ended
    other = tmp_path / "cleanup-me"
    other.mkdir()
    copy = other / os.path.basename(name)
    copy.write_bytes(b"{}")
    os.utime(copy, (time.time() - 60, time.time() - 60))
    r = run_cli("run", "job.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert not os.path.exists(name)
    assert not [p for p in os.listdir(tmp_path) if "dataflow-" in p], os.listdir(tmp_path)
    r = run_cli("cleanup", str(other), cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert os.listdir(other) == []


@pytest.mark.parametrize("job,message", [
    ("source: {stdin: true}\nsink: {file: out}\n", "only jobs that read files"),
    ("source: {file: in}\nsink: {stdout: true}\n", "only a job that writes a file"),
    ("source: {file: in}\nsink: {file: out}\nordered: false\n", "ordered: false"),
    ("source: {file: in, split: bytes}\nstages: [decompress]\nsink: {file: out}\n",
     "decodes the source"),
])
def test_jobs_that_cannot_resume_say_why(tmp_path, job, message):
    import gzip
    (tmp_path / "in").write_bytes(gzip.compress(b"x\n" * 10))
    (tmp_path / "job.yaml").write_text(job)
    r = run_cli("run", "job.yaml", "--resume", cwd=tmp_path, input=b"")
    assert r.returncode == 2, r.stderr.decode()
    assert "cannot resume: ".encode() in r.stderr and message.encode() in r.stderr
