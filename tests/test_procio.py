"""Child processes as Readable and Writable: producers (`seq`, `yes`) compared with the same
shell pipeline, a producer that fails, a consumer that exits early (`head -n 5`), a sink
round trip checked with cmp, a sink command that fails, and process hygiene (no command
outlives its job, its early teardown, or a SIGKILLed parent)."""
from __future__ import annotations

import os
import random
import re
import subprocess
import time

import psutil
import pytest

from dataflow import FileSink, FileSource, pipeline, stream
from dataflow.errors import SinkError, SourceError
from dataflow.procio import (CommandSink, CommandSinkError, CommandSource, CommandSourceError,
                             SinkClosedEarly)
from dataflow.sinks import BrokenPipe
from workers.grep import Grep
from workers.head import Head

from conftest import SMALL, assert_command_dies_with_its_parent, commands, require_tool, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shell(command: str) -> bytes:
    return subprocess.run(["sh", "-c", command], capture_output=True, check=True).stdout


# ------------------------------------------------------------------ CommandSource
def test_seq_through_grep_equals_seq_piped_to_grep(tmp_path):
    require_tool("seq"), require_tool("cmp")
    (tmp_path / "expect").write_bytes(shell("seq 1 200000 | grep 7"))
    stats = pipeline(CommandSource(["seq", "1", "200000"]), Grep("7"),
                     FileSink(str(tmp_path / "out")), **SMALL)
    subprocess.run(["cmp", str(tmp_path / "expect"), str(tmp_path / "out")], check=True)
    assert stats.chunks > 10


def test_an_endless_producer_cut_by_head_is_killed_and_reaped(tmp_path):
    """`yes | head -n 100000`: the job stops reading, close() kills `yes` (conftest checks
    that no child is left)."""
    out = b"".join(stream(CommandSource(["yes", "a line of yes"]), Head(n=100000), **SMALL))
    assert out == shell("yes 'a line of yes' | head -n 100000")


def test_leaving_a_stream_early_kills_the_producer():
    it = stream(CommandSource(["yes"]), **SMALL)
    assert next(it).startswith(b"y\n")
    it.close()


def test_csv_framing_and_shell_env_cwd(tmp_path):
    source = CommandSource(['printf "a,b\\n%s,%s\\n" "$X" "$(pwd)"'], shell=True,
                           env={"X": "1"}, cwd=str(tmp_path), split="csv")
    assert b"".join(stream(source, **SMALL)) == f"a,b\n1,{tmp_path}\n".encode()


def test_a_failing_producer_fails_the_job_naming_command_code_and_stderr(tmp_path):
    source = CommandSource(["sh", "-c", "seq 1 5; echo 'no more numbers' >&2; exit 3"])
    with pytest.raises(SourceError) as e:
        pipeline(source, FileSink(str(tmp_path / "out")), **SMALL)
    err = e.value
    assert isinstance(err, CommandSourceError)
    assert str(err) == ("source command `sh -c 'seq 1 5; echo '\"'\"'no more numbers'\"'\"' >&2; "
                        "exit 3'` exited with code 3 after writing 10 bytes; its stderr:\n"
                        "  | no more numbers")
    assert err.returncode == 3 and err.stderr == b"no more numbers\n" and err.offset == 10
    assert not (tmp_path / "out").exists()


def test_ok_exit_codes_and_a_signal(tmp_path):
    ok = CommandSource(["sh", "-c", "echo found; exit 1"], ok_exit_codes=[0, 1])
    assert b"".join(stream(ok, **SMALL)) == b"found\n"
    killed = CommandSource(["sh", "-c", "echo x; kill -TERM $$"])
    with pytest.raises(CommandSourceError, match=r"was killed by SIGTERM after writing 2 bytes; "
                                                 r"it wrote nothing to stderr"):
        b"".join(stream(killed, **SMALL))


@pytest.mark.timeout(60)
def test_megabytes_of_stderr_never_block_the_producer(tmp_path):
    noisy = "yes 'noise noise' | head -c 11000000 >&2; seq 1 100000"
    out = b"".join(stream(CommandSource([noisy], shell=True), **SMALL))
    assert out == shell("seq 1 100000")
    failing = noisy + "; echo >&2; echo last words >&2; exit 2"
    with pytest.raises(CommandSourceError) as e:
        b"".join(stream(CommandSource([failing], shell=True), **SMALL))
    msg = str(e.value)
    assert "its stderr (last 20 lines of 10.5 MiB):\n" in msg and msg.endswith("| last words")


def test_a_producer_that_leaves_a_background_child_ends_when_it_exits():
    t0 = time.monotonic()
    # the background sleep holds stdout open: without the group kill this takes 30 s
    source = CommandSource(["seq 3; sleep 30.0533 &"], shell=True)
    assert b"".join(stream(source, **SMALL)) == b"1\n2\n3\n"
    assert time.monotonic() - t0 < 10
    assert wait_for(lambda: not commands("30.0533"), 3, "the background sleep to die")


def test_a_missing_program_is_a_source_error_naming_it():
    with pytest.raises(SourceError, match=r"cannot run source command `no-such-command-xyz "
                                          r"-v`: program 'no-such-command-xyz' not found"):
        b"".join(stream(CommandSource(["no-such-command-xyz", "-v"]), **SMALL))
    with pytest.raises(ValueError, match="argv is empty") as e:
        CommandSource([]).check()
    assert e.value.field == "argv"


def test_close_kills_a_running_producer_and_is_idempotent():
    source = CommandSource(["sleep", "31.0533"])
    source.open()
    [proc] = wait_for(lambda: commands("31.0533"), 5, "the command")
    source.close()
    source.close()
    assert not psutil.pid_exists(proc.pid) or proc.status() == psutil.STATUS_ZOMBIE
    assert source.where(7) == "command `sleep 31.0533`: byte 7" and source.size() is None


def test_a_sigkilled_parent_takes_its_source_command_with_it():
    marker = "32.0533"
    script = ("from dataflow.procio import CommandSource\n"
              f"s = CommandSource(['sleep', '{marker}'])\ns.open()\n"
              "s.readinto(memoryview(bytearray(10)))\n")
    assert_command_dies_with_its_parent(script, marker, REPO)


# ------------------------------------------------------------------ CommandSink
def test_a_sink_command_round_trip_is_byte_identical(tmp_path):
    cmp = require_tool("cmp")
    src = tmp_path / "in.bin"
    src.write_bytes(random.Random(8).randbytes(3 << 20))
    sink = CommandSink(["sh", "-c", f"cat > '{tmp_path / 'copy'}'"])
    stats = pipeline(FileSource(str(src), split="bytes"), sink, **SMALL)
    subprocess.run([cmp, str(src), str(tmp_path / "copy")], check=True)
    assert sink.bytes == stats.bytes_out == 3 << 20 and sink.returncode == 0


def test_a_consumer_that_exits_early_ends_the_job_without_a_stray_process(tmp_path):
    """`seq 1 1000000 | head -n 5`: head exits 0 after five lines; our write gets EPIPE.
    SinkClosedEarly (a BrokenPipe) carries the code, for pipeline() to end quietly."""
    out = tmp_path / "five"
    sink = CommandSink(["sh", "-c", f"head -n 5 > '{out}'"])
    try:
        pipeline(CommandSource(["seq", "1", "1000000"]), sink, **SMALL)
    except SinkClosedEarly as e:
        assert isinstance(e, BrokenPipe) and e.returncode == 0
        assert re.fullmatch(r"sink command `sh -c .*` stopped reading after \d+ bytes and "
                            r"exited with code 0", str(e)), str(e)
    assert out.read_bytes() == b"1\n2\n3\n4\n5\n"
    assert sink.returncode == 0


def test_a_consumer_that_stops_reading_and_fails_is_an_error():
    sink = CommandSink(["sh", "-c", "head -c 10 >/dev/null; echo 'cannot go on' >&2; exit 4"],
                       stderr="capture")
    with pytest.raises(CommandSinkError) as e:
        pipeline(CommandSource(["yes"]), sink, **SMALL)
    assert not isinstance(e.value, BrokenPipe)
    assert re.fullmatch(r"sink command `sh -c .*` stopped reading after \d+ bytes and exited "
                        r"with code 4; its stderr:\n  \| cannot go on", str(e.value)), str(e.value)


def test_a_failing_sink_command_fails_the_job_with_its_stderr(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"x\n" * 100000)
    sink = CommandSink(["sh", "-c", "cat >/dev/null; echo 'disk on fire' >&2; exit 5"],
                       stderr="capture")
    with pytest.raises(SinkError) as e:
        pipeline(FileSource(str(src)), sink, **SMALL)
    assert str(e.value) == ("sink command `sh -c 'cat >/dev/null; echo '\"'\"'disk on fire'\"'\"' "
                            ">&2; exit 5'` exited with code 5 after 200000 bytes were written "
                            "to it; its stderr:\n  | disk on fire")
    assert e.value.returncode == 5


@pytest.mark.timeout(60)
def test_a_sink_command_writing_megabytes_of_stderr_never_deadlocks(tmp_path):
    src = tmp_path / "in.txt"
    data = b"".join(b"%d\n" % i for i in range(300000))
    src.write_bytes(data)
    # it writes 8 bytes of stderr per byte read: it blocks on stderr unless we read it
    sink = CommandSink(["sh", "-c", f"tee '{tmp_path / 'copy'}' | sed 's/.*/noise noise/' >&2"],
                       stderr="capture", stdout="null")
    pipeline(FileSource(str(src)), sink, **SMALL)
    assert (tmp_path / "copy").read_bytes() == data


def test_abort_kills_the_sink_command_and_check_refuses_a_missing_program():
    sink = CommandSink(["sleep", "33.0533"])
    sink.check([])
    sink.open()
    [proc] = wait_for(lambda: commands("33.0533"), 5, "the command")
    sink.abort()
    sink.abort()
    assert not psutil.pid_exists(proc.pid) or proc.status() == psutil.STATUS_ZOMBIE
    with pytest.raises(SinkError, match=r"cannot run sink command `no-such-command-xyz`: "
                                        r"program 'no-such-command-xyz' not found") as e:
        CommandSink(["no-such-command-xyz"]).check([])
    assert e.value.field == "argv"
