"""exec: an external command per chunk (like `parallel --pipe`), compared with the same tool run
on the whole input; failures, huge stderr, early-closed stdin, validation, and process hygiene
(no command outlives an interrupted job, a timed-out or a SIGKILLed worker)."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from dataflow.errors import StageError
from dataflow.streams import ChunkInfo
import workers.exec as exec_module
from workers.exec import CommandError, Exec

from conftest import (assert_command_dies_with_its_parent, commands, kill_group_if_alive,
                      kill_leftovers, require_tool, run_cli, run_job, segments_of,
                      session_processes, wait_for, write_words)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_job(tmp_path, body: str) -> str:
    job = tmp_path / "job.yaml"
    job.write_text(body)
    return str(job)


# ------------------------------------------------------------------ output = the real tool's
def test_tr_over_many_chunks_equals_tr_on_the_whole_file(tmp_path):
    tr, cmp = require_tool("tr"), require_tool("cmp")
    src = tmp_path / "in.txt"
    write_words(src, 3 << 20)
    with open(src, "rb") as f:
        (tmp_path / "expect").write_bytes(subprocess.run([tr, "a-z", "A-Z"], stdin=f,
                                                         capture_output=True, check=True).stdout)
    out = run_job(tmp_path, src, Exec(["tr", "a-z", "A-Z"]))
    assert len(out) == src.stat().st_size > 40 * (64 << 10)   # dozens of chunks, 2 workers
    subprocess.run([cmp, str(tmp_path / "expect"), str(tmp_path / "out")], check=True)


def test_jq_from_a_yaml_job_equals_jq_on_the_whole_file(tmp_path):
    jq = require_tool("jq")
    rnd = random.Random(5)
    src = tmp_path / "events.jsonl"
    with open(src, "w") as f:
        for i in range(12000):
            f.write(json.dumps({"i": i, "status": rnd.choice([200, 200, 301, 404, 500, 503]),
                                "path": "/a/" + "b" * rnd.randint(0, 60)}) + "\n")
    with open(src, "rb") as f:
        expect = subprocess.run([jq, "-c", "select(.status >= 500)"], stdin=f,
                                capture_output=True, check=True).stdout
    job = write_job(tmp_path, f"""
source: {{file: {src}, split: lines}}
stages:
  - exec: {{argv: ["jq", "-c", "select(.status >= 500)"]}}
sink: {{file: {tmp_path / "out.jsonl"}}}
workers: 2
chunk_size: 128KiB
memory_limit: 128MiB
""")
    r = run_cli("run", job, "-q")
    assert r.returncode == 0, r.stderr.decode()
    assert (tmp_path / "out.jsonl").read_bytes() == expect
    assert expect.count(b"\n") > 2000


def test_grep_with_ok_exit_codes_0_1_equals_grep_and_fails_without(tmp_path):
    grep = require_tool("grep")
    src = tmp_path / "in.txt"
    with open(src, "wb") as f:   # a match every 10000 lines: most 64 KiB chunks have none
        f.write(b"".join(b"line %d%s\n" % (i, b" needle" if i % 10000 == 7 else b"")
                         for i in range(60000)))
    expect = subprocess.run([grep, "-F", "needle", str(src)], capture_output=True,
                            check=True).stdout
    assert expect.count(b"\n") == 6
    out = run_job(tmp_path, src, Exec(["grep", "-F", "needle"], ok_exit_codes=[0, 1]))
    assert out == expect
    with pytest.raises(StageError, match=r"`grep -F needle` exited with code 1"):
        run_job(tmp_path, src, Exec(["grep", "-F", "needle"]), name="out2")


def test_output_is_exactly_what_the_command_writes_binary_and_larger_than_the_input(tmp_path):
    src = tmp_path / "in.bin"
    data = random.Random(3).randbytes(300_000)
    src.write_bytes(data)
    out = run_job(tmp_path, src, Exec(["cat"]), source=dict(split="bytes"))
    assert out == data
    # each chunk comes out 3 times: output 3x the chunk, streamed to the slot in pieces
    expanded = run_job(tmp_path, src, Exec(["sh", "-c", 'f=$(mktemp); cat > "$f"; cat "$f" "$f" '
                                        '"$f"; rm -f "$f"']),
                   name="out4", source=dict(split="bytes"))
    chunks = [data[i:i + (64 << 10)] for i in range(0, len(data), 64 << 10)]
    assert expanded == b"".join(c * 3 for c in chunks)


# ------------------------------------------------------------------ failures
@pytest.mark.parametrize("stage,status,stderr", [
    ("{argv: ['echo boom on stderr >&2; exit 3'], shell: true}", "exited with code 3",
     "boom on stderr"),
    ("{argv: ['false']}", "exited with code 1", "it wrote nothing to stderr"),
])
def test_a_failing_command_fails_the_job_naming_stage_chunk_status_and_stderr(
        tmp_path, stage, status, stderr):
    src = tmp_path / "in.txt"
    write_words(src, 200 << 10)
    job = write_job(tmp_path, f"source: {{file: {src}}}\nstages:\n  - passthrough\n"
                              f"  - exec: {stage}\nsink: {{file: {tmp_path / 'out'}}}\n"
                              f"workers: 2\nchunk_size: 64KiB\nmemory_limit: 128MiB\n")
    r = run_cli("run", job, "-q")
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert re.search(r"stages\[1\] \(exec\) failed on chunk \d+ \(", err), err
    assert "CommandError: command `" in err and status in err and stderr in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_command_killed_by_a_signal_is_named_by_the_signal(tmp_path):
    src = tmp_path / "in.txt"
    write_words(src, 10 << 10)
    with pytest.raises(StageError, match=r"was killed by SIGSEGV"):
        run_job(tmp_path, src, Exec(["kill -SEGV $$"], shell=True))


@pytest.mark.timeout(60)
def test_megabytes_of_stderr_never_deadlock_and_only_the_tail_is_shown(tmp_path):
    src = tmp_path / "in.txt"
    data = write_words(src, 300 << 10)
    # success: a command writing 11 MB of stderr and all of its input to stdout, per chunk
    noisy = "cat; yes 'noise noise' | head -c 11000000 >&2"
    assert run_job(tmp_path, src, Exec([noisy], shell=True), chunk_size="256KiB") == data
    # stderr first, then stdout: still no deadlock
    noisy = "yes 'noise noise' | head -c 11000000 >&2; cat"
    assert run_job(tmp_path, src, Exec([noisy], shell=True), name="o2", chunk_size="256KiB") == data
    # failure: the error has the last lines only
    failing = "yes 'noise noise' | head -c 11000000 >&2; echo >&2; echo the last words >&2; exit 4"
    with pytest.raises(StageError) as e:
        run_job(tmp_path, src, Exec([failing], shell=True), name="o3", chunk_size="256KiB")
    msg = str(e.value)
    assert "exited with code 4" in msg and msg.rstrip().endswith("| the last words"), msg
    assert "its stderr (last 20 lines of 10.5 MiB):\n  | " in msg, msg
    assert msg.count("noise") <= 40 and len(msg) < 4000, msg


def test_a_command_that_stops_reading_is_not_an_error_its_output_is_kept(tmp_path):
    src = tmp_path / "in.bin"
    data = os.urandom((3 << 20) + 5)   # chunks far bigger than the pipe: writes hit EPIPE
    src.write_bytes(data)
    chunk = 1 << 20
    out = run_job(tmp_path, src, Exec(["head", "-c", "10"]), chunk_size=chunk,
              source=dict(split="bytes"))
    assert out == b"".join(data[i:i + 10] for i in range(0, len(data), chunk))
    # a command that exits at once without reading: only its exit code counts
    assert run_job(tmp_path, src, Exec(["true"]), name="o2", chunk_size=chunk,
               source=dict(split="bytes")) == b""


# ------------------------------------------------------------------ validation
def test_a_missing_command_is_refused_by_validate_naming_the_config_path(tmp_path):
    job = write_job(tmp_path, "source: {generate: {size: 1MiB}}\nstages:\n"
                              "  - exec: {argv: [no-such-command-xyz, -c]}\n")
    r = run_cli("validate", job)
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "job.yaml:3: stages[0].exec.argv: " in err, err
    assert "'no-such-command-xyz' not found on the PATH" in err, err


@pytest.mark.parametrize("options,field,message", [
    (dict(argv=[]), "argv", "argv is empty"),
    (dict(argv=["echo", "a"], shell=True), "argv", "with shell: true, argv is exactly one"),
    (dict(argv=["no-such-command-xyz"]), "argv", "not found on the PATH"),
    (dict(argv=["tr a-z A-Z"]), "argv", 'did you mean ["tr", "a-z", "A-Z"], or shell: true'),
    (dict(argv=["./no/such/program"]), "argv", "does not exist"),
    (dict(argv=["{tmp}/data.txt"]), "argv", "is not executable"),
    (dict(argv=["/"]), "argv", "is a directory"),
    (dict(argv=["true"], env={"PATH": "/nonexistent"}), "argv", "not found on the PATH"),
    (dict(argv=["true"], cwd="/no/such/dir"), "cwd", "does not exist"),
    (dict(argv=["true"], cwd="{tmp}/data.txt"), "cwd", "is not a directory"),
    (dict(argv=["true"], ok_exit_codes=[]), "ok_exit_codes", "is empty"),
    (dict(argv=["true"], ok_exit_codes=[0, 256]), "ok_exit_codes", "0-255"),
    (dict(argv=["true"], env={"A=B": "x"}), "env", "invalid environment variable"),
])
def test_check_refuses_bad_options_naming_the_field(tmp_path, options, field, message):
    (tmp_path / "data.txt").write_text("not a program\n")
    os.chmod(tmp_path / "data.txt", 0o644)
    options = {k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else
               [x.replace("{tmp}", str(tmp_path)) for x in v] if k == "argv" else v
               for k, v in options.items()}
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        Exec(**options).check()
    assert e.value.field == field


def test_options_are_strict_and_a_good_stage_validates(tmp_path):
    job = write_job(tmp_path, "source: {generate: {size: 1MiB}}\nstages:\n"
                              "  - exec: {argv: [tr, a-z, A-Z], shel: true}\n")
    r = run_cli("validate", job)
    assert r.returncode == 2 and "did you mean 'shell'" in r.stderr.decode()
    job = write_job(tmp_path, "source: {generate: {size: 1MiB}}\nstages:\n  - exec: {argv: "
                              "['grep -c x'], shell: true, ok_exit_codes: [0, 1], "
                              "env: {LC_ALL: C}, cwd: /tmp, stderr: inherit}\n")
    r = run_cli("validate", job)
    assert r.returncode == 0, r.stderr.decode()


# ------------------------------------------------------------------ in-process details
def pulled(stage: Exec, data: bytes) -> bytes:
    return b"".join(stage.transform(memoryview(data), ChunkInfo()))


def test_env_cwd_and_an_empty_chunk(tmp_path):
    stage = Exec(['printf "%s|%s|" "$GREETING" "$PWD"; wc -c'], shell=True,
                 env={"GREETING": "hi there"}, cwd=str(tmp_path))
    assert pulled(stage, b"12345") == f"hi there|{tmp_path}|5\n".encode()
    assert pulled(stage, b"") == f"hi there|{tmp_path}|0\n".encode()


def test_what_a_command_leaves_in_its_group_is_killed_when_it_exits():
    t0 = time.monotonic()
    # the background sleep holds stdout open: without the group kill this would take 30 s
    assert pulled(Exec(["sleep 30.0421 & echo started"], shell=True), b"x") == b"started\n"
    assert time.monotonic() - t0 < 5
    time.sleep(0.2)
    leftovers = commands("30.0421")
    kill_leftovers("30.0421")
    assert leftovers == []


def test_abandoning_the_output_kills_and_reaps_the_command():
    it = Exec(["yes"]).transform(memoryview(b"x"), ChunkInfo())
    assert next(it).startswith(b"y\n")
    [pid] = [c.pid for c in psutil.Process().children() if c.name() == "yes"]
    it.close()   # the engine dropping the chunk (an error elsewhere, a stop)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_the_error_shortens_a_long_command_and_has_the_exit_code():
    long_arg = "x" * 1000
    with pytest.raises(CommandError) as e:
        pulled(Exec([f"exit 9 # {long_arg}"], shell=True), b"")
    assert e.value.returncode == 9
    first = str(e.value).splitlines()[0]
    assert "exited with code 9" in first and len(first) < 300 and "..." in first


# ------------------------------------------------------------------ process hygiene
def start_sleeping_job(tmp_path, marker: str, extra: str = "") -> subprocess.Popen:
    job = write_job(tmp_path, f"source: {{generate: {{size: 50MiB}}}}\nstages:\n"
                              f"  - exec: {{argv: [sleep, '{marker}']}}\n"
                              f"sink: {{file: {tmp_path / 'out'}}}\nworkers: 2\n"
                              f"chunk_size: 64KiB\nmemory_limit: 128MiB\n{extra}")
    return subprocess.Popen([sys.executable, "-m", "dataflow", "run", job],
                            stderr=subprocess.PIPE, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        kill_group_if_alive(proc)
        err = proc.stderr.read().decode()
        proc.stderr.close()
    return err


def test_ctrl_c_while_commands_run_leaves_no_command_and_no_segment(tmp_path):
    marker = "29.0417"
    proc = start_sleeping_job(tmp_path, marker)
    try:
        sleeps = wait_for(lambda: len(commands(marker)) == 2 and commands(marker), 20,
                          "both workers' commands")
        # a worker SIGKILLed (OOM killer, say): PDEATHSIG takes its command with it
        victim = sleeps[0]
        worker = victim.parent()
        assert worker is not None and worker.ppid() == proc.pid
        worker.kill()
        wait_for(lambda: not psutil.pid_exists(victim.pid)
                 or victim.status() == psutil.STATUS_ZOMBIE, 3, "the orphaned command to die")
        # the replacement worker runs the chunk again; then Ctrl-C to the whole group
        wait_for(lambda: len(commands(marker)) == 2, 20, "the chunk to run again")
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        err = finish(proc, 15)
    finally:
        if proc.poll() is None:
            finish(proc, 0)
        kill_leftovers(marker)
    assert proc.returncode == -signal.SIGINT, err
    assert time.monotonic() - t0 < 8, "took too long to stop"
    assert "Traceback" not in err, err
    wait_for(lambda: commands(marker) == [], 3, "no command left")
    assert session_processes(proc.pid) == []
    assert segments_of(proc.pid) == []
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("setpriv", [True, False], ids=["setpriv", "preexec_fn"])
def test_a_sigkilled_parent_takes_its_command_with_it(setpriv):
    """PDEATHSIG both ways: through util-linux setpriv (vfork), or a preexec_fn (fork)."""
    if setpriv and exec_module._setpriv() is None:
        pytest.skip("util-linux setpriv with --pdeathsig is not installed")
    marker = "27.0417" + str(int(setpriv))
    script = ("import workers.exec as e\n"
              + ("" if setpriv else "e._setpriv = lambda: None\n")
              + "from dataflow.streams import ChunkInfo\n"
              f"it = e.Exec(['sleep', '{marker}']).transform(memoryview(b'x'), ChunkInfo())\n"
              "next(it, None)\n")
    assert_command_dies_with_its_parent(script, marker, REPO)


def test_chunk_timeout_sigterm_kills_the_command_group_too(tmp_path):
    marker = "28.0417"
    # a shell with a child: the group kill (not PDEATHSIG, which reaches only the shell) ends it
    job = write_job(tmp_path, f"source: {{generate: {{size: 1MiB}}}}\nstages:\n"
                              f"  - exec: {{argv: ['sleep {marker}; echo done'], shell: true}}\n"
                              f"sink: {{null: true}}\nworkers: 1\nchunk_size: 1MiB\n"
                              f"memory_limit: 128MiB\nchunk_timeout: 1s\nmax_attempts: 1\n")
    try:
        r = run_cli("run", job, "-q", timeout=30)
        err = r.stderr.decode()
        assert r.returncode == 1, err
        assert "chunk_timeout" in err and "SIGTERM" in err, err
        time.sleep(0.2)
        assert commands(marker) == []
        assert commands(f"sleep {marker}; echo done") == []
    finally:
        kill_leftovers(marker)
        kill_leftovers(f"sleep {marker}; echo done")
