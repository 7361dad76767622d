"""Sources and sinks through the real CLI: stdin, stdout, byte framing, the progress bar."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import run_cli


def test_stdin_to_stdout_with_grep(tmp_path):
    data = b"".join(b"%d %s\n" % (i, b"ERROR" if i % 7 == 0 else b"ok") for i in range(50000))
    job = tmp_path / "job.yaml"
    job.write_text("source: {stdin: true}\nstages:\n  - grep: {pattern: ERROR}\n"
                   "sink: {stdout: true}\nworkers: 2\nchunk_size: 64KiB\n")
    r = run_cli("run", str(job), "-q", input=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"".join(ln for ln in data.splitlines(keepends=True) if b"ERROR" in ln)


def test_stdin_from_a_pipe_arrives_in_small_reads(tmp_path):
    # a writer that trickles: the reader must keep reading until a chunk is full or EOF
    job = tmp_path / "job.yaml"
    job.write_text("source: {stdin: true}\nstages: [passthrough]\nsink: {file: out}\n"
                   "workers: 2\nchunk_size: 4KiB\n")
    writer = ("import sys,time\nfor i in range(300):\n"
              "    sys.stdout.write('line %d\\n' % i); sys.stdout.flush()\n"
              "    time.sleep(0.001) if i % 50 == 0 else None\n")
    p1 = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE)
    r = subprocess.run([sys.executable, "-m", "dataflow", "run", str(job), "-q"],
                       stdin=p1.stdout, cwd=tmp_path, capture_output=True, timeout=60)
    p1.stdout.close()
    p1.wait()
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out").read_bytes() == b"".join(b"line %d\n" % i for i in range(300))


def test_byte_split_passes_any_bytes(tmp_path):
    data = bytes(range(256)) * 1000
    (tmp_path / "in.bin").write_bytes(data)
    job = tmp_path / "job.yaml"
    job.write_text("source: {file: in.bin, split: bytes}\nstages: [passthrough]\n"
                   "sink: {file: out.bin}\nworkers: 3\nchunk_size: 1000\n")
    r = run_cli("run", str(job), "-q", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.bin").read_bytes() == data


def test_progress_bar_when_forced_and_summary_line(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("source: {generate: {size: 64MiB}}\nstages:\n  - grep: {pattern: "
                   "'(a|b|c|d)+x'}\nsink: {null: true}\nworkers: 2\nchunk_size: 1MiB\n")
    r = run_cli("run", str(job), "--progress", "on", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    err = r.stderr.decode()
    # every field of a frame: done %, source bytes done / total, ETA, MB/s, output bytes,
    # busy / all workers
    frames = re.findall(_FRAME, err)
    assert frames, err
    for done, total, rate, busy in frames:
        assert 0 <= float(done) <= 100 and total == "64.0 MiB"
        assert float(rate) >= 0 and int(busy) <= 2
    assert "64.0 MiB in" in err.splitlines()[-2] or "64.0 MiB in" in err
    r = run_cli("run", str(job), cwd=str(tmp_path))
    err = r.stderr.decode()
    assert "\r" not in err, "no bar when stderr is not a terminal"
    assert err.startswith("dataflow: 64.0 MiB in")


_FRAME = (r"\r *([\d.]+)% [\d.]+ (?:[KMG]i)?B/([\d.]+ (?:[KMG]i)?B) ETA \d+:\d\d:\d\d +"
          r"([\d.]+) MB/s  out [\d.]+ (?:[KMG]i)?B  workers ([0-9])/2\x1b\[K")


def test_progress_bar_is_on_by_itself_on_a_terminal(tmp_path):
    """No --progress: stderr a terminal (a pty here) gets the bar, then the summary line."""
    import pty
    import threading

    job = tmp_path / "job.yaml"
    job.write_text("source: {generate: {size: 64MiB}}\nstages:\n  - grep: {pattern: "
                   "'(a|b|c|d)+x'}\nsink: {null: true}\nworkers: 2\nchunk_size: 1MiB\n")
    master, slave = pty.openpty()
    seen = bytearray()

    def drain() -> None:    # the pty's buffer is small: read while the job writes
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:     # EIO once the last writer has closed the slave
                return
            if not data:
                return
            seen.extend(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        p = subprocess.run([sys.executable, "-m", "dataflow", "run", str(job)], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=slave, timeout=60,
                           start_new_session=True)
    finally:
        os.close(slave)
    reader.join(10)
    os.close(master)
    assert p.returncode == 0
    err = seen.decode(errors="replace")
    assert re.search(_FRAME, err), err
    assert "dataflow: 64.0 MiB in" in err


@pytest.mark.parametrize("sync", [True, False])
def test_file_sink_fsyncs_only_when_asked(tmp_path, monkeypatch, sync):
    import dataflow.sinks as sinks

    calls = []
    real = os.fsync
    monkeypatch.setattr(sinks.os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    sink = sinks.FileSink(tmp_path / "out", sync=sync)
    sink.open()
    sink.write(memoryview(b"hello\n"))
    sink.close()
    assert (tmp_path / "out").read_bytes() == b"hello\n"
    assert len(calls) == (2 if sync else 0)  # the file, then its directory
    assert os.listdir(tmp_path) == ["out"]


def cached_bytes(path) -> int:
    """How much of `path` is in the page cache (util-linux fincore)."""
    from conftest import require_tool

    out = subprocess.run([require_tool("fincore"), "--bytes", "--noheadings", "--output", "RES",
                          str(path)], capture_output=True, text=True, check=True).stdout
    return int(out)


@pytest.mark.parametrize("sync, keep_cache", [(True, False), (False, False), (True, True),
                                              (False, True)])
def test_the_file_sink_drops_what_is_on_disk_from_the_page_cache(tmp_path, sync, keep_cache):
    """Drop-behind (sinks.py): the output keeps about DROP_LAG of page cache however large it
    grows, unless keep_cache; the bytes are all there either way."""
    import dataflow.sinks as sinks

    kind = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True,
                          text=True).stdout.strip()
    if kind == "tmpfs":
        pytest.skip("tmpfs files are the page cache itself: nothing to drop")

    piece = bytes(range(256)) * (4096 * 4)          # 4 MiB
    count = 48                                      # 192 MiB, three times the lag
    size = count * len(piece)
    out = tmp_path / "out"
    sink = sinks.FileSink(out, sync=sync, keep_cache=keep_cache)
    sink.open()
    for _ in range(count):
        sink.write(memoryview(piece))
    sink.close()
    cached = cached_bytes(out)
    if keep_cache:
        assert cached == size
    else:
        assert cached <= sinks.DROP_LAG + sinks.WRITEBACK_EVERY + len(piece)
    assert out.stat().st_size == size
    with open(out, "rb") as f:
        assert all(f.read(len(piece)) == piece for _ in range(count))


@pytest.mark.parametrize("sync", [True, False])
def test_a_write_error_found_while_dropping_behind_fails_the_job(tmp_path, monkeypatch, sync):
    """With sync, waiting for a range to be on disk takes the file's write error (the final
    fsync would no longer see it): that error is the sink's, and the temp file goes. Without
    sync nothing waits, so nothing is taken."""
    import ctypes
    import errno

    import dataflow.sinks as sinks
    from dataflow.errors import SinkError

    real = sinks._sync_range
    waits = []

    def failing(fd, start, length, flags):
        if flags == sinks._SYNC_FILE_RANGE_WAIT:
            waits.append(start)
            ctypes.set_errno(errno.EIO)
            return -1
        return real(fd, start, length, flags)

    monkeypatch.setattr(sinks, "_sync_range", failing)
    out = tmp_path / "out"
    sink = sinks.FileSink(out, sync=sync)
    sink.open()
    piece = memoryview(bytes(4 << 20))
    if sync:
        with pytest.raises(SinkError, match=r"cannot write .*out: Input/output error"):
            for _ in range(40):
                sink.write(piece)
        sink.abort()
        assert waits and os.listdir(tmp_path) == []
    else:
        for _ in range(40):
            sink.write(piece)
        sink.close()
        assert waits == [] and out.stat().st_size == 40 * len(piece)
