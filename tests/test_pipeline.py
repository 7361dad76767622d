"""End to end through real worker processes: byte-identical output for any worker count,
GNU grep as the reference, pieces, folds, flush, stream() backpressure, faults."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import dataflow
from dataflow import FileSink, FileSource, NullSink, pipeline, stream
from dataflow.errors import SinkError, StageError, WorkerCrashedError

from conftest import require_tool
from helper_transforms import (AlwaysKill, CountLines, Expand, ExpandFilled, FailSetup, KillOnce,
                               RaiseOn, Slow, Upper)

SMALL = dict(memory_limit="256MiB", chunk_size="256KiB")


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def run_to_file(tmp_path, src, *stages, workers=2, name="out", **kw) -> bytes:
    out = tmp_path / name
    opts = {**SMALL, **kw}
    pipeline(src, *stages, FileSink(out), workers=workers, **opts)
    return out.read_bytes()


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_passthrough_equals_the_input_for_any_worker_count(tmp_path, sample_log, workers):
    out = run_to_file(tmp_path, FileSource(sample_log), dataflow.Passthrough(), workers=workers)
    require_tool("cmp")
    subprocess.run(["cmp", sample_log, str(tmp_path / "out")], check=True)
    assert len(out) == os.path.getsize(sample_log)


def test_grep_equals_gnu_grep_and_is_identical_for_1_to_4_workers(tmp_path, sample_log):
    grep = require_tool("grep")
    pattern = r'" 5[0-9][0-9] '
    expect = subprocess.run([grep, "-E", pattern, sample_log], capture_output=True,
                            env={"LC_ALL": "C"}).stdout
    assert expect.count(b"\n") > 100
    outs = {w: run_to_file(tmp_path, FileSource(sample_log), dataflow.Grep(pattern),
                           workers=w, name=f"out{w}") for w in (1, 2, 3, 4)}
    for w, out in outs.items():
        assert out == expect, f"workers={w}"


@pytest.mark.parametrize("args,flags", [
    (dict(pattern="GET /api", invert=True), ["-v", "-F"]),
    (dict(pattern="firefox", ignore_case=True), ["-i", "-F"]),
    (dict(pattern="mozilla", ignore_case=True, invert=True), ["-v", "-i", "-F"]),
    (dict(pattern=r"^1\d\d\.", ), ["-P"]),
    (dict(pattern=r"\.png HTTP/2\.0\" 30[12] ", ), ["-E"]),
    (dict(pattern=r'[0-9]"$', ), ["-E"]),         # anchored at line ends
    # \s could match the newline after a line ending in .36": grep never lets it
    (dict(pattern=r'(\.36"|HTTP/1\.1")\s', ), ["-P"]),
])
def test_grep_options_match_gnu_grep(tmp_path, sample_log, args, flags):
    grep = require_tool("grep")
    pat = args["pattern"]
    expect = subprocess.run([grep, *flags, pat, sample_log], capture_output=True,
                            env={"LC_ALL": "C"}).stdout
    # each case keeps some lines and drops others: an empty or whole output proves nothing
    assert 0 < len(expect) < os.path.getsize(sample_log), (args, len(expect))
    got = run_to_file(tmp_path, FileSource(sample_log), dataflow.Grep(**args), workers=2,
                      chunk_size="64KiB")
    assert got == expect


def test_grep_edge_cases_match_gnu_grep(tmp_path):
    grep = require_tool("grep")
    data = b"err\r\nok\n\nerr no newline at end\x00\xff err"
    src = tmp_path / "in"
    src.write_bytes(data)
    ours = {False: b"err\r\nerr no newline at end\x00\xff err", True: b"ok\n\n"}
    for flags, invert in (([], False), (["-v"], True)):
        expect = subprocess.run([grep, "-a", *flags, "err", str(src)], capture_output=True,
                                env={"LC_ALL": "C"}).stdout
        got = run_to_file(tmp_path, FileSource(str(src)), dataflow.Grep("err", invert=invert),
                          chunk_size="16", max_record_size="1KiB")
        assert got == ours[invert]
        # GNU grep adds a newline to a last line that lacks one; we keep the bytes as they are
        assert expect == (got + b"\n" if not invert else got)


def test_several_files_and_a_glob_read_in_order(tmp_path):
    for i in range(5):
        (tmp_path / f"part{i}.log").write_bytes(b"".join(b"file%d line%d\n" % (i, j)
                                                         for j in range(1000)))
    want = b"".join((tmp_path / f"part{i}.log").read_bytes() for i in range(5))
    got = run_to_file(tmp_path, FileSource(str(tmp_path / "part*.log")),
                      dataflow.Passthrough(), chunk_size="4KiB")
    assert got == want
    got = run_to_file(tmp_path, FileSource([str(tmp_path / "part4.log"),
                                            str(tmp_path / "part0.log")]), Upper(),
                      chunk_size="4KiB", name="out2")
    assert got == ((tmp_path / "part4.log").read_bytes() + (tmp_path / "part0.log").read_bytes()
                   ).upper()


def test_byte_range_on_lines_takes_the_records_that_start_inside_it(tmp_path, sample_log):
    size = os.path.getsize(sample_log)
    cuts = [0, 12345, size // 2, size - 7, size]
    parts = [run_to_file(tmp_path, FileSource(sample_log, start=a, end=b),
                         dataflow.Passthrough(), name=f"r{a}") for a, b in zip(cuts, cuts[1:])]
    assert b"".join(parts) == read(sample_log)
    assert all(p.endswith(b"\n") for p in parts if p)


def test_output_bigger_than_a_slot_travels_in_pieces(tmp_path):
    src = tmp_path / "in"
    src.write_bytes(b"".join(b"line %d\n" % i for i in range(20000)))
    got = run_to_file(tmp_path, FileSource(str(src)), Expand(20), chunk_size="16KiB", workers=3)
    # each chunk repeated 20 times, chunks in order: compare with workers=1
    one = run_to_file(tmp_path, FileSource(str(src)), Expand(20), chunk_size="16KiB",
                      workers=1, name="one")
    assert got == one
    assert len(got) == 20 * src.stat().st_size


def test_output_written_into_the_slot_by_the_stage_travels_in_pieces(tmp_path):
    """A stage whose output is a SlotFiller (BGZF blocks inflated in place) writes into the
    output slot itself: whole pieces, the slot going out when the next does not fit; the
    bytes are those of the same output returned as bytes, last stage or not."""
    src = tmp_path / "in"
    src.write_bytes(b"".join(b"line %d\n" % i for i in range(20000)))
    want = run_to_file(tmp_path, FileSource(str(src)), Expand(20), chunk_size="16KiB",
                       workers=1, name="want")
    for piece in (1, 5000, 16 << 10):
        got = run_to_file(tmp_path, FileSource(str(src)), ExpandFilled(20, piece),
                          chunk_size="16KiB", workers=3, name=f"p{piece}")
        assert got == want, piece
    got = run_to_file(tmp_path, FileSource(str(src)), ExpandFilled(20, 5000), Upper(),
                      chunk_size="16KiB", workers=2, name="then-upper")
    assert got == want.upper()
    # a piece larger than the slots (a BGZF block's 64 KiB, chunk_size 16KiB): iterated
    got = run_to_file(tmp_path, FileSource(str(src)), ExpandFilled(20, 100_000),
                      chunk_size="16KiB", workers=2, name="larger")
    assert got == want


def test_a_slot_filler_that_fails_or_cannot_fit_fails_its_stage(tmp_path):
    src = tmp_path / "in"
    src.write_bytes(b"".join(b"line %d\n" % i for i in range(20000)))
    with pytest.raises(StageError, match=r"stages\[0\] \(expand-filled\) failed on chunk 0 .*"
                                         r"failing at output byte 50000"):
        run_to_file(tmp_path, FileSource(str(src)), ExpandFilled(20, 5000, fail_at=50000),
                    chunk_size="16KiB", workers=2, name="fails")
    with pytest.raises(StageError, match=r"needs more than a slot"):   # and said it did not
        run_to_file(tmp_path, FileSource(str(src)), ExpandFilled(20, 1 << 20, declared=0),
                    chunk_size="16KiB", workers=2, name="too-big")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_fused_stages_and_ordered_fold_and_flush(tmp_path, sample_log):
    out = tmp_path / "out"
    stats = pipeline(FileSource(sample_log), dataflow.Grep("GET"), CountLines(flush_marker=True),
                     Upper(), FileSink(out), workers=2, **SMALL)
    expect = b"".join(ln.upper() for ln in read(sample_log).splitlines(keepends=True) if b"GET" in ln)
    got = out.read_bytes()
    # each worker's flush output passes through the later stages and comes after the data
    assert got == expect + b"#FLUSHED\n" * 2
    folded = stats.results["1:count-lines"]
    assert folded["lines"] == expect.count(b"\n")
    assert folded["order"] == sorted(folded["order"]), "the fold saw chunks out of order"
    assert stats.results["0:grep"]["matching_lines"] == expect.count(b"\n")
    assert stats.bytes_in == os.path.getsize(sample_log)
    assert stats.bytes_out == len(got)


def test_unordered_output_has_the_same_chunks(tmp_path, sample_log):
    out = tmp_path / "out"
    pipeline(FileSource(sample_log), Slow(0.001), FileSink(out), workers=3, ordered=False,
             **SMALL)
    assert sorted(out.read_bytes().splitlines()) == sorted(read(sample_log)
                                                           .splitlines())


def test_python_stage_per_line_and_per_chunk(tmp_path):
    src = tmp_path / "in"
    src.write_bytes(b"a\nbb\nccc\ndddd\nlast-no-newline")
    got = run_to_file(tmp_path, FileSource(str(src)),
                      dataflow.PythonFunction("helper_transforms:drop_odd", mode="line"),
                      chunk_size="8", max_record_size="64")
    assert got == b"bb\ndddd\n"
    got = run_to_file(tmp_path, FileSource(str(src)),
                      dataflow.PythonFunction("helper_transforms:shout", mode="line"),
                      chunk_size="8", max_record_size="64", name="o2")
    assert got == b"A!\nBB!\nCCC!\nDDDD!\nLAST-NO-NEWLINE!"
    got = run_to_file(tmp_path, FileSource(str(src)),
                      dataflow.PythonFunction("helper_transforms:drop_odd", mode="line",
                                              args={"modulo": 3}), chunk_size="8",
                      max_record_size="64", name="o3")
    assert got == b"ccc\nlast-no-newline"  # 15 bytes: kept, still without a newline
    # chunk mode: the function gets each chunk's bytes (whole lines) and returns bytes
    got = run_to_file(tmp_path, FileSource(str(src)),
                      dataflow.PythonFunction("helper_transforms:reverse_lines"),
                      chunk_size="8", max_record_size="64", name="o4")
    # chunks of at most 8 bytes, cut after a line: a, bb | ccc | dddd | last-no-newline
    assert got == b"bb\na\nccc\ndddd\nlast-no-newline\n"


def test_stream_yields_ordered_output_and_a_slow_consumer_stalls_reading(sample_log):
    src = FileSource(sample_log)
    it = stream(src, dataflow.Passthrough(), workers=2, memory_limit="128MiB",
                chunk_size="64KiB")
    first = next(it)
    time.sleep(0.5)  # a slow consumer: the pipeline must not read ahead beyond its slots
    # the file position shows how far the coordinator read
    read_so_far = src._file.tell() if src._file else os.path.getsize(sample_log)
    assert read_so_far <= 64 * 1024 * 40, f"read {read_so_far} bytes while stalled"
    rest = b"".join(it)
    assert first + rest == read(sample_log)


def test_leaving_a_stream_early_tears_everything_down(sample_log):
    it = stream(FileSource(sample_log), dataflow.Passthrough(), workers=2, chunk_size="64KiB")
    next(it)
    it.close()  # the autouse fixture checks no process and no segment is left


def test_a_killed_worker_is_replaced_and_the_output_is_identical(tmp_path, sample_log):
    for how in ("sigkill", "exit0"):
        marker = tmp_path / f"killed-{how}"
        out = tmp_path / f"out-{how}"
        stats = pipeline(FileSource(sample_log), KillOnce(5, str(marker), how), Upper(),
                         FileSink(out), workers=2, **SMALL)
        assert marker.exists(), "the fault did not happen"
        assert stats.retries >= 1
        assert out.read_bytes() == read(sample_log).upper()


def test_a_poison_chunk_fails_after_four_attempts_naming_it(tmp_path, sample_log):
    out = tmp_path / "out"
    out.write_bytes(b"old output")
    with pytest.raises(WorkerCrashedError) as e:
        pipeline(FileSource(sample_log), AlwaysKill(3), FileSink(out), workers=2, **SMALL)
    msg = str(e.value)
    assert "chunk 3" in msg and "4 times" in msg and "SIGKILL(-9)" in msg
    assert sample_log in msg
    assert out.read_bytes() == b"old output"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".dataflow-tmp")]


def test_an_exception_in_a_stage_names_stage_chunk_and_offset(tmp_path, sample_log):
    out = tmp_path / "out"
    with pytest.raises(StageError) as e:
        pipeline(FileSource(sample_log), dataflow.Passthrough(), RaiseOn(4), FileSink(out),
                 workers=2, **SMALL)
    err = e.value
    assert err.stage == "raise-on" and err.stage_index == 1 and err.seq == 4
    assert err.offset > 0 and f"byte {err.offset}" in str(err)
    assert "ValueError: bad chunk 4" in str(err)
    assert "helper_transforms.py" in err.worker_traceback
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".dataflow-tmp")]


class _SinkWhoseAbortFails(FileSink):
    def abort(self) -> None:
        super().abort()
        raise OSError("abort failed as well")


def test_an_error_while_cleaning_up_does_not_hide_the_first(tmp_path, sample_log):
    out = tmp_path / "out"
    with pytest.raises(StageError) as e:
        pipeline(FileSource(sample_log), RaiseOn(4), _SinkWhoseAbortFails(out), workers=2,
                 **SMALL)
    assert "ValueError: bad chunk 4" in str(e.value)
    assert e.value.__notes__ == ["while cleaning up after it: OSError: abort failed as well"]
    assert not out.exists()


def test_fork_is_refused_before_anything_starts(tmp_path, sample_log):
    with pytest.raises(dataflow.UsageError, match=r"start_method must be one of spawn, "
                                                  r"forkserver, got 'fork'"):
        pipeline(FileSource(sample_log), dataflow.Passthrough(), FileSink(tmp_path / "out"),
                 start_method="fork", **SMALL)
    assert os.listdir(tmp_path) == []


def test_a_failing_setup_is_reported_before_any_chunk(tmp_path, sample_log):
    with pytest.raises(StageError) as e:
        pipeline(FileSource(sample_log), FailSetup(), NullSink(), workers=2, **SMALL)
    assert "failed to start" in str(e.value) and "cannot load the model" in str(e.value)


def test_output_that_is_the_input_is_refused(tmp_path):
    src = tmp_path / "in"
    src.write_bytes(b"x\n")
    with pytest.raises(SinkError, match="also an input"):
        pipeline(FileSource(str(src)), dataflow.Passthrough(), FileSink(src), workers=1)
    assert src.read_bytes() == b"x\n"


class _PlainReadable:
    """A user's Readable: open/readinto/close and nothing else (no split, no where())."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def open(self) -> None:
        pass

    def readinto(self, buffer: memoryview) -> int:
        n = min(len(buffer), len(self.data) - self.pos)
        buffer[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n

    def close(self) -> None:
        pass


def test_a_users_own_readable_is_read_as_lines(tmp_path):
    data = b"".join(b"line %d\n" % i for i in range(20_000))
    src = _PlainReadable(data)
    assert isinstance(src, dataflow.Readable)
    got = run_to_file(tmp_path, src, dataflow.Grep("7"), chunk_size="4KiB")
    assert got == b"".join(line for line in data.splitlines(True) if b"7" in line)
    # its errors name the stream offset, with no file to name
    with pytest.raises(dataflow.RecordTooLongError, match=r"longer than max_record_size "
                                                          r"\(4\.0 KiB\) at byte 6\b"):
        run_to_file(tmp_path, _PlainReadable(b"short\n" + b"x" * 10_000 + b"\n"),
                    dataflow.Grep("x"), chunk_size="4KiB", max_record_size="4KiB", name="o2")


def test_empty_input_gives_empty_output(tmp_path):
    src = tmp_path / "in"
    src.write_bytes(b"")
    assert run_to_file(tmp_path, FileSource(str(src)), dataflow.Grep("x")) == b""
    assert (tmp_path / "out").exists()


def test_workers_still_run_exit_handlers_threads_and_flush_after_a_clean_stop(tmp_path):
    """Workers skip the interpreter's teardown after a clean stop, but not what user code may
    rely on: its atexit handlers, its non-daemon threads, its unflushed prints."""
    src = tmp_path / "in.txt"
    src.write_bytes(b"line\n" * 200_000)
    script = (
        "import sys, dataflow\n"
        "from helper_transforms import AtExit\n"
        f"dataflow.pipeline(dataflow.FileSource({str(src)!r}), AtExit({str(tmp_path)!r}),"
        " dataflow.NullSink(), workers=2, chunk_size='64KiB')\n")
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": tests + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    pids = [int(p) for p in r.stdout.decode().split("unflushed-")[1:]]
    assert len(pids) == 2, r.stdout
    for pid in pids:
        assert (tmp_path / f"atexit-{pid}").exists()
        assert (tmp_path / f"thread-{pid}").exists()
