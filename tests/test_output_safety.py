"""Output safety: a full disk, a file-size limit, an unwritable or missing directory, an output
that is the input or a directory, planted symlinks, stale temp files.

Every failure must be a clean error naming the output (exit 1, or 2 for usage), checked before
any worker starts where it can be, with the old output byte-identical, no temp file, no
/dev/shm segment and no process of the run left.

The tests run as root (in CI too), and root passes permission bits: an "unwritable directory"
is made with `chattr +i` (or a read-only bind mount), which stop root as well. A full disk on a
1 MiB tmpfs, a file-size limit (`ulimit -f`) and a SIGKILLed run whose leftovers `dataflow
cleanup` removes are rows of the fault table (tests/test_fault_table.py); here the sink's
writes are made to fail with ENOSPC in-process, which needs no mount.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import dataflow
from conftest import kill_group_if_alive, run_cli, segments_of, session_processes
from dataflow import FileSink, FileSource, pipeline
from dataflow.errors import SinkError
from dataflow.generate import write_sample
from dataflow.sinks import TEMP_SUFFIX, OutputExistsError, remove_stale_temps

MiB = 1 << 20
OLD = b"precious old output\n" * 1000        # 20 kB: small enough for a nearly full disk
SMALL = dict(memory_limit="128MiB", chunk_size="64KiB")


def job_text(source: str, sink: str, *, stages: str = "[passthrough]") -> str:
    return (f"source: {{file: '{source}'}}\nstages: {stages}\nsink: {{file: '{sink}'}}\n"
            "workers: 2\nmemory_limit: 128MiB\nchunk_size: 64KiB\n")


def temps(directory: Path) -> list[str]:
    return sorted(p for p in os.listdir(directory) if p.endswith(TEMP_SUFFIX))


def run_job(tmp_path: Path, *args: str, timeout: float = 60):
    """The real CLI in its own session; returns (returncode, stderr text, pid)."""
    proc = subprocess.Popen([sys.executable, "-m", "dataflow", "run", "job.yaml", *args],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_group_if_alive(proc)
    return proc.returncode, err.decode(errors="replace"), proc.pid


def assert_nothing_left(pid: int) -> None:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and (session_processes(pid) or segments_of(pid)):
        time.sleep(0.05)
    assert session_processes(pid) == [], "a process of the run is left"
    assert segments_of(pid) == [], "a shared-memory segment of the run is left"


def assert_clean(err: str) -> None:
    assert "Traceback" not in err and "internal error" not in err, err


@pytest.fixture(scope="module")
def big_input(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("safety") / "in.log"
    write_sample(str(path), 6 * MiB, seed=5)
    return path


# ============================================================================ disk full
# A file-size limit (ulimit -f, SIGXFSZ ignored or default) and a full disk (a 1 MiB tmpfs)
# through the real CLI are rows of the fault table, tests/test_fault_table.py. The disk-full
# variants here need no mount: the sink's writes (or its fsync) fail with ENOSPC in-process.
class _FullDiskOs:
    """`os` for dataflow.sinks alone, whose write() fails with ENOSPC after `room` bytes."""

    def __init__(self, room: int):
        self.room = room

    def __getattr__(self, name):
        return getattr(os, name)

    def write(self, fd, data):
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.write(fd, data[:self.room])
        self.room -= n
        return n


def test_disk_full_in_process(tmp_path, big_input, monkeypatch):
    import dataflow.sinks as sinks

    out = tmp_path / "out.log"
    out.write_bytes(OLD)
    monkeypatch.setattr(sinks, "os", _FullDiskOs(room=MiB + 123))
    with pytest.raises(SinkError) as e:
        pipeline(FileSource(str(big_input)), dataflow.Passthrough(), FileSink(out),
                 workers=2, **SMALL)
    monkeypatch.undo()
    assert str(e.value) == f"cannot write {out}: No space left on device (disk full)"
    assert out.read_bytes() == OLD
    assert temps(tmp_path) == []


def test_disk_full_at_the_final_fsync(tmp_path, monkeypatch):
    """Some filesystems (NFS, ext4 delayed allocation) report ENOSPC only at fsync."""
    import dataflow.sinks as sinks

    out = tmp_path / "out.log"
    out.write_bytes(OLD)
    sink = FileSink(out)
    sink.open()
    sink.write(memoryview(b"new\n"))

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sinks.os, "fsync", fsync)
    with pytest.raises(SinkError, match=r"cannot finish .*out.log: No space left on device "
                                        r"\(disk full\)"):
        sink.close()
    monkeypatch.undo()
    assert out.read_bytes() == OLD
    assert temps(tmp_path) == []


# ============================================================================ unwritable directory
@pytest.fixture
def read_only_dir(tmp_path):
    """A directory that root cannot create files in: immutable (chattr +i), else a read-only
    bind mount, else (not root) mode 0555. Mode bits alone do not stop root."""
    d = tmp_path / "ro"
    d.mkdir()
    (d / "out.log").write_bytes(OLD)
    undo = None
    if os.geteuid() != 0:
        d.chmod(0o555)
        undo = ["chmod", "0755", str(d)]
    elif shutil.which("chattr") and subprocess.run(["chattr", "+i", str(d)],
                                                    capture_output=True).returncode == 0:
        undo = ["chattr", "-i", str(d)]
    elif (subprocess.run(["mount", "--bind", str(d), str(d)], capture_output=True).returncode
          == 0):
        undo = ["umount", "-l", str(d)]
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(d)],
                          capture_output=True).returncode != 0:
            subprocess.run(undo, check=True)
            undo = None
    if undo is None:
        # a capability the machine lacks (CAP_LINUX_IMMUTABLE, CAP_SYS_ADMIN), not a tool
        # .ci/run could install: skipping is the honest outcome, in CI too
        pytest.skip("cannot make a directory unwritable for root here "
                    "(chattr +i and read-only bind mounts both failed)")
    try:
        yield d
    finally:
        subprocess.run(undo, check=True)


def test_unwritable_directory_is_refused_before_the_job_starts(tmp_path, big_input,
                                                                read_only_dir):
    (tmp_path / "job.yaml").write_text(job_text(str(big_input), "ro/out.log"))
    code, err, pid = run_job(tmp_path, "--force")
    assert code == 1, err
    assert err == (f"dataflow: error: cannot write ro/out.log: directory {read_only_dir} is "
                   f"not writable\n")
    assert (read_only_dir / "out.log").read_bytes() == OLD
    assert sorted(os.listdir(read_only_dir)) == ["out.log"]
    assert_nothing_left(pid)


def test_unwritable_directory_that_access_misjudges_fails_at_open(tmp_path, big_input,
                                                                   read_only_dir, monkeypatch):
    """os.access can say yes where creating fails (NFS root squash, some FUSE filesystems):
    creating the temp file is then the check, still before any worker starts."""
    import dataflow.sinks as sinks

    monkeypatch.setattr(sinks.os, "access", lambda path, mode: True)
    out = read_only_dir / "out.log"
    with pytest.raises(SinkError) as e:
        pipeline(FileSource(str(big_input)), dataflow.Passthrough(), FileSink(out),
                 workers=2, **SMALL)
    assert str(e.value).startswith(f"cannot write {out}: cannot create a temp file in "
                                   f"{read_only_dir}: ")
    assert out.read_bytes() == OLD
    assert sorted(os.listdir(read_only_dir)) == ["out.log"]


# ============================================================================ bad output paths
def test_output_that_is_the_input_is_refused_by_the_cli(tmp_path):
    src = tmp_path / "in.log"
    src.write_bytes(OLD)
    (tmp_path / "job.yaml").write_text(job_text("in.log", "in.log"))
    for force in ([], ["--force"]):
        code, err, pid = run_job(tmp_path, *force)
        assert code == 1, err
        assert err == "dataflow: error: the output in.log is also an input; write elsewhere\n"
        assert src.read_bytes() == OLD
        assert_nothing_left(pid)
    # a hard link is the same file under another name
    os.link(src, tmp_path / "alias.log")
    (tmp_path / "job.yaml").write_text(job_text("in.log", "alias.log"))
    code, err, pid = run_job(tmp_path, "--force")
    assert code == 1 and "also an input" in err, err
    assert src.read_bytes() == OLD
    assert sorted(os.listdir(tmp_path)) == ["alias.log", "in.log", "job.yaml"]


def test_output_that_is_a_directory_is_refused(tmp_path, big_input):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_bytes(b"x")
    (tmp_path / "job.yaml").write_text(job_text(str(big_input), "out"))
    for force in ([], ["--force"]):
        code, err, pid = run_job(tmp_path, *force)
        assert code == 1, err
        assert err == "dataflow: error: cannot write out: it is a directory\n"
        assert os.listdir(tmp_path / "out") == ["keep"]
        assert temps(tmp_path) == []
        assert_nothing_left(pid)


def test_output_that_is_a_fifo_is_refused_not_replaced(tmp_path, big_input):
    """A device or FIFO at sink.file would be renamed over and become a plain file."""
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "job.yaml").write_text(job_text(str(big_input), "pipe"))
    code, err, pid = run_job(tmp_path, "--force")
    assert code == 1, err
    assert err.startswith("dataflow: error: cannot write pipe: it is not a regular file"), err
    assert "stdout: true" in err
    assert (tmp_path / "pipe").is_fifo()
    assert temps(tmp_path) == []
    assert_nothing_left(pid)


def test_output_in_a_missing_directory_is_refused(tmp_path, big_input):
    (tmp_path / "job.yaml").write_text(job_text(str(big_input), "nowhere/out.log"))
    code, err, pid = run_job(tmp_path)
    assert code == 1, err
    assert err == (f"dataflow: error: cannot write nowhere/out.log: directory "
                   f"{tmp_path / 'nowhere'} does not exist\n")
    assert sorted(os.listdir(tmp_path)) == ["job.yaml"]
    assert_nothing_left(pid)


# ============================================================================ symlinks
def test_a_symlink_at_the_output_is_replaced_never_followed(tmp_path):
    src = tmp_path / "in.log"
    src.write_bytes(b"new line\n" * 1000)
    victim = tmp_path / "victim"
    victim.write_bytes(OLD)
    out = tmp_path / "out.log"
    out.symlink_to(victim)
    (tmp_path / "job.yaml").write_text(job_text("in.log", "out.log"))
    code, err, _ = run_job(tmp_path)                 # a symlink is an existing output
    assert code == 2 and "out.log already exists; use --force" in err, err
    assert out.is_symlink() and victim.read_bytes() == OLD
    code, err, _ = run_job(tmp_path, "--force", "-q")
    assert code == 0, err
    assert not out.is_symlink() and out.read_bytes() == src.read_bytes()
    assert victim.read_bytes() == OLD
    assert temps(tmp_path) == []


def test_a_dangling_symlink_at_the_output_is_replaced_not_created_through(tmp_path):
    src = tmp_path / "in.log"
    src.write_bytes(b"line\n" * 100)
    out = tmp_path / "out.log"
    out.symlink_to(tmp_path / "would-be-created")
    (tmp_path / "job.yaml").write_text(job_text("in.log", "out.log"))
    code, err, _ = run_job(tmp_path)
    assert code == 2, err
    code, err, _ = run_job(tmp_path, "--force", "-q")
    assert code == 0, err
    assert not out.is_symlink() and out.read_bytes() == src.read_bytes()
    assert not (tmp_path / "would-be-created").exists()


def test_a_symlink_at_the_output_pointing_to_the_input_replaces_the_link(tmp_path):
    src = tmp_path / "in.log"
    src.write_bytes(b"line\n" * 100)
    (tmp_path / "out.log").symlink_to(src)
    (tmp_path / "job.yaml").write_text(job_text("in.log", "out.log",
                                                stages="[{grep: {pattern: nothing}}]"))
    code, err, _ = run_job(tmp_path, "--force", "-q")
    assert code == 0, err
    assert src.read_bytes() == b"line\n" * 100       # the input, through the link, untouched
    assert not (tmp_path / "out.log").is_symlink()
    assert (tmp_path / "out.log").read_bytes() == b""


def test_a_symlink_planted_at_the_temp_name_is_not_followed(tmp_path, monkeypatch):
    """Make the temp names predictable, plant symlinks at the first ones: the sink must skip
    them (O_EXCL | O_NOFOLLOW), leave their targets alone and still write the output."""
    import dataflow.sinks as sinks

    names = iter(["%016x" % i for i in range(10)])
    monkeypatch.setattr(sinks, "_random_tag", lambda: next(names))
    victim = tmp_path / "victim"
    victim.write_bytes(OLD)
    planted = [tmp_path / f".out.log.{os.getpid()}.{'%016x' % i}{TEMP_SUFFIX}" for i in (0, 1)]
    for p in planted:
        p.symlink_to(victim)
    dangling = tmp_path / f".out.log.{os.getpid()}.{'%016x' % 2}{TEMP_SUFFIX}"
    dangling.symlink_to(tmp_path / "created-through-link")
    out = tmp_path / "out.log"
    sink = FileSink(out)
    sink.open()
    assert sink.tmp == str(tmp_path / f".out.log.{os.getpid()}.{'%016x' % 3}{TEMP_SUFFIX}")
    sink.write(memoryview(b"new\n"))
    sink.close()
    assert out.read_bytes() == b"new\n" and not out.is_symlink()
    assert victim.read_bytes() == OLD
    assert not (tmp_path / "created-through-link").exists()
    assert all(p.is_symlink() for p in [*planted, dangling])


# ============================================================================ stale temp files
def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_open_removes_the_targets_stale_temp_files_only(tmp_path):
    me = os.getpid()
    stale = tmp_path / f".out.log.{dead_pid()}.00ff{TEMP_SUFFIX}"
    mine = tmp_path / f".out.log.{me}.00ff{TEMP_SUFFIX}"          # a live owner: kept
    reused = tmp_path / f".out.log.{me}.11ee{TEMP_SUFFIX}"        # written before we started
    other_target = tmp_path / f".other.log.{dead_pid()}.00ff{TEMP_SUFFIX}"
    victim = tmp_path / "victim"
    victim.write_bytes(OLD)
    link = tmp_path / f".out.log.{dead_pid()}.22dd{TEMP_SUFFIX}"  # not a regular file: kept
    link.symlink_to(victim)
    for p in (stale, mine, reused, other_target):
        p.write_bytes(b"partial")
    started = psutil.Process(me).create_time()
    os.utime(reused, (started - 3600, started - 3600))   # so pid `me` was reused since
    sink = FileSink(tmp_path / "out.log")
    sink.open()
    sink.write(memoryview(b"x\n"))
    sink.close()
    assert not stale.exists() and not reused.exists()
    assert mine.exists() and other_target.exists() and link.is_symlink()
    assert victim.read_bytes() == OLD
    assert remove_stale_temps(str(tmp_path)) == [str(other_target)]
    assert mine.exists() and link.is_symlink()


def test_a_run_removes_a_killed_runs_temp_file(tmp_path):
    (tmp_path / "in.log").write_bytes(b"line\n" * 100)
    stale = tmp_path / f".out.log.{dead_pid()}.abcdef0123456789{TEMP_SUFFIX}"
    stale.write_bytes(b"partial output of a killed run")
    (tmp_path / "job.yaml").write_text(job_text("in.log", "out.log"))
    code, err, _ = run_job(tmp_path, "-q")
    assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == ["in.log", "job.yaml", "out.log"]


def test_a_long_output_name_still_gets_a_temp_file(tmp_path):
    out = tmp_path / ("x" * 250)
    sink = FileSink(out)
    sink.open()
    assert len(os.path.basename(sink.tmp)) <= 255
    sink.write(memoryview(b"y\n"))
    sink.close()
    assert out.read_bytes() == b"y\n"
    assert temps(tmp_path) == []


# ============================================================================ overwrite=False
@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "link-fallback"])
def test_overwrite_false_refuses_before_and_at_the_rename(tmp_path, monkeypatch, renameat2):
    import dataflow.sinks as sinks

    if not renameat2:
        monkeypatch.setattr(sinks, "_renameat2", None)
    out = tmp_path / "out.log"
    out.write_bytes(OLD)
    with pytest.raises(OutputExistsError) as e:
        FileSink(out, overwrite=False).check([])
    assert e.value.exit_code == 2
    out.unlink()
    sink = FileSink(out, overwrite=False)
    sink.check([])
    sink.open()
    sink.write(memoryview(b"new\n"))
    out.write_bytes(OLD)                             # someone else writes it meanwhile
    with pytest.raises(SinkError, match="appeared while the job ran"):
        sink.close()
    assert out.read_bytes() == OLD
    assert temps(tmp_path) == []
    out.unlink()
    sink = FileSink(out, overwrite=False)
    sink.open()
    sink.write(memoryview(b"new\n"))
    sink.close()
    assert out.read_bytes() == b"new\n"
    assert temps(tmp_path) == []


def test_cli_compress_still_refuses_and_forces(tmp_path):
    """`dataflow compress` keeps its own --force (cli_compress.py) on the same sink."""
    src = tmp_path / "a.log"
    src.write_bytes(b"line\n" * 1000)
    (tmp_path / "a.log.gz").write_bytes(OLD)
    r = run_cli("compress", "-k", "--workers", "1", str(src), cwd=str(tmp_path))
    assert r.returncode == 2 and b"already exists" in r.stderr, r.stderr
    assert (tmp_path / "a.log.gz").read_bytes() == OLD
    r = run_cli("compress", "-k", "--force", "--workers", "1", str(src), cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a.log.gz").read_bytes() != OLD
    assert temps(tmp_path) == []
