"""The `dataflow` command line, end to end: real processes, small inputs.

Outputs are checked against GNU grep run on the same bytes (LC_ALL=C). Every run starts
worker processes, so inputs stay small (2 MiB; 20 MiB only where a pipe must fill up).
"""
from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import require_tool, run_cli
from dataflow.config import load_job
from dataflow.generate import write_sample
from dataflow.plan import make_plan
from dataflow.shm import PREFIX, SHM_DIR

ROOT = Path(__file__).resolve().parents[1]
# the access-log examples; the record examples (split: jsonl, csv) are run by test_examples.py
CONFIGS = sorted(c for c in (ROOT / "configs").glob("*.yaml")
                 if load_job(str(c)).spec.source.split in ("lines", "bytes"))
KiB, MiB = 1 << 10, 1 << 20
CHUNK = "128KiB"          # several chunks even on the 2 MiB input, so order matters


def sample_bytes(size: int, seed: int) -> bytes:
    buf = io.BytesIO()
    write_sample(buf, size, seed)
    return buf.getvalue()


@pytest.fixture(scope="module")
def small_log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli-data") / "access.log"
    write_sample(str(path), 2 * MiB, seed=11)
    return path


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".dataflow-tmp"))


def gnu_grep(data: bytes, pattern: str, *, invert=False, ignore_case=False, fixed=False,
             delimiter="\n") -> bytes:
    """The reference: GNU grep in the C locale over the same bytes."""
    assert delimiter == "\n", "GNU grep reference only for newline-delimited lines"
    args = [require_tool("grep"), "-a", "-F" if fixed else "-E"]
    args += ["-v"] * invert + ["-i"] * ignore_case + ["-e", pattern]
    r = subprocess.run(args, input=data, capture_output=True,
                       env={**os.environ, "LC_ALL": "C"})
    assert r.returncode in (0, 1), r.stderr
    return r.stdout


DECODERS = {"gzip": ["gzip", "-dc"], "bgzf": ["bgzip", "-dc"], "zstd": ["zstd", "-qdc"],
            "bz2": ["bzip2", "-dc"], "xz": ["xz", "-dc"], "lz4": ["lz4", "-qdc"]}


def first_stage(stages: list) -> str | None:
    if not stages:
        return None
    entry = stages[0]
    return entry if isinstance(entry, str) else next(iter(entry))


def reference(stages: list, data: bytes) -> bytes:
    for entry in stages:
        name, opts = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
        if name in ("passthrough", "decompress") or name in DECODERS:
            continue  # the input is the decompressed text; compressed output is decoded
        if name == "grep":
            data = gnu_grep(data, **(opts or {}))
            continue
        pytest.fail(f"no reference implementation for stage {name!r}: extend test_cli.py")
    return data


def assert_clean_stderr(stderr: bytes) -> None:
    assert b"Traceback" not in stderr, stderr.decode(errors="replace")
    assert b"internal error" not in stderr, stderr.decode(errors="replace")


# ============================================================================ validate
def test_validate_ok(tmp_path):
    shutil.copy(ROOT / "configs" / "errors.yaml", tmp_path / "job.yaml")
    r = run_cli("validate", "job.yaml", "--set", "workers=2", "--set", "memory_limit=256MiB",
                "--set", "chunk_size=4MiB", cwd=str(tmp_path))
    assert (r.returncode, r.stderr) == (0, b"")
    assert r.stdout == b"job.yaml: ok (grep; 2 workers, 14 slots of 4194304 bytes)\n"


@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_config_exits_2_with_file_line_path(tmp_path, command):
    (tmp_path / "job.yaml").write_text(textwrap.dedent("""\
        source: {file: access.log}
        stages:
          - grpe: {pattern: x}
        sink: {file: out.log}
    """))
    r = run_cli(command, "job.yaml", cwd=str(tmp_path))
    assert r.returncode == 2
    assert r.stderr == (b"dataflow: error: job.yaml:3: stages[0]: unknown stage 'grpe'; "
                        b"did you mean 'grep'?\n")
    assert r.stdout == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]   # nothing started


def test_bad_set_exits_2(tmp_path):
    shutil.copy(ROOT / "configs" / "errors.yaml", tmp_path / "job.yaml")
    r = run_cli("validate", "job.yaml", "--set", "stages[5].grep.x=1", cwd=str(tmp_path))
    assert r.returncode == 2
    assert r.stderr == b"dataflow: error: --set stages[5].grep.x: there is no stages[5]\n"


# ============================================================================ run the examples
@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_run_example_config_matches_gnu_grep(config, tmp_path, small_log):
    require_tool("grep")
    job = tmp_path / config.name
    shutil.copy(config, job)
    spec = load_job(str(job)).spec
    overrides = ["workers=2", f"chunk_size={CHUNK}"]

    src = spec.source
    if src.generate is not None:
        size = 1 * MiB
        overrides.append(f"source.generate.size={size}")
        data = sample_bytes(size, src.generate.seed)
    elif src.file is not None and first_stage(spec.stages) == "decompress":
        compressed = tmp_path / "input.gz"
        compressed.write_bytes(subprocess.run([require_tool("gzip"), "-c", str(small_log)],
                                              capture_output=True, check=True).stdout)
        overrides.append(f"source.file={compressed}")
        data = small_log.read_bytes()
    elif src.file is not None:
        overrides.append(f"source.file={small_log}")
        data = small_log.read_bytes()
    else:
        pytest.fail(f"{config.name}: no test input for this source kind")

    out = tmp_path / "out.log"
    if spec.sink.file is not None:
        overrides.append(f"sink.file={out}")
    elif not spec.sink.stdout and spec.sink.null:
        pytest.fail(f"{config.name}: a null sink leaves nothing to compare")

    args = ["run", job.name, "-q"]
    for o in overrides:
        args += ["--set", o]
    r = run_cli(*args, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert_clean_stderr(r.stderr)
    got = out.read_bytes() if spec.sink.file is not None else r.stdout
    last = spec.stages[-1] if spec.stages else None
    decoder = DECODERS.get(first_stage([last]) if last else None)
    if decoder:  # compressed output: the real tool decodes it
        got = subprocess.run([require_tool(decoder[0]), *decoder[1:]], input=got,
                             capture_output=True, check=True).stdout

    expected = reference(spec.stages, data)
    assert 0 < len(expected) < len(data)          # the filter keeps some lines, drops others
    assert got == expected
    assert temp_files(tmp_path) == []


# ============================================================================ run options
def test_explain_prints_the_plan_and_does_not_start(tmp_path):
    shutil.copy(ROOT / "configs" / "errors.yaml", tmp_path / "job.yaml")
    r = run_cli("run", "job.yaml", "--explain", "--set", "source.file=does-not-exist.log",
                "--set", "sink.file=out.log", "--set", "workers=2",
                "--set", "memory_limit=256MiB", "--set", "chunk_size=4MiB", cwd=str(tmp_path))
    assert (r.returncode, r.stderr) == (0, b"")
    plan = make_plan(workers=2, chunk_size=4 * MiB, memory_limit=256 * MiB)
    assert r.stdout.decode() == plan.explain() + "\n"
    text = r.stdout.decode()
    assert "shared arena" in text and "14 slots x 4.0 MiB" in text
    assert "workers 2, prefetch 2 tasks per worker" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]


def test_stats_file(tmp_path, small_log):
    shutil.copy(ROOT / "configs" / "errors.yaml", tmp_path / "job.yaml")
    r = run_cli("run", "job.yaml", "--stats", "stats.json", "--set", f"source.file={small_log}",
                "--set", "sink.file=out.log", "--set", "workers=2",
                "--set", f"chunk_size={CHUNK}", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    stats = json.loads((tmp_path / "stats.json").read_text())
    out = (tmp_path / "out.log").read_bytes()
    assert stats["bytes_in"] == small_log.stat().st_size
    assert stats["bytes_out"] == len(out) > 0
    assert stats["peak_memory"] > 0
    assert stats["peak_memory"] <= stats["memory_limit"] == 256 * MiB
    assert stats["workers"] == 2
    assert stats["chunks"] >= small_log.stat().st_size // (128 * KiB)
    assert stats["results"] == {"0:grep": {"matching_lines": out.count(b"\n")}}
    assert list(stats["stage_seconds"]) == ["0:grep"] and stats["stage_seconds"]["0:grep"] > 0
    assert 0 < stats["wall_seconds"] < 60
    # the summary line on stderr agrees
    assert r.stderr.startswith(b"dataflow: 2.0 MiB in, ")


def test_unwritable_stats_path_is_a_usage_error_before_the_job_starts(tmp_path, small_log):
    shutil.copy(ROOT / "configs" / "errors.yaml", tmp_path / "job.yaml")
    r = run_cli("run", "job.yaml", "-q", "--stats", "no-such-dir/stats.json",
                "--set", f"source.file={small_log}", "--set", "sink.file=out.log",
                "--set", "workers=1", cwd=str(tmp_path))
    assert_clean_stderr(r.stderr)
    assert r.returncode == 2
    assert r.stderr == (f"dataflow: error: --stats no-such-dir/stats.json: directory "
                        f"{tmp_path / 'no-such-dir'} does not exist\n").encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]   # nothing ran


# ============================================================================ an existing output
def test_existing_output_is_refused_without_force_before_anything_starts(tmp_path):
    old = b"precious old output\n"
    (tmp_path / "out.log").write_bytes(old)
    # 50 GiB: were the job started, it would not end within the timeout
    (tmp_path / "job.yaml").write_text("source: {generate: {size: 50GiB}}\n"
                                       "stages: [passthrough]\nsink: {file: out.log}\n"
                                       "workers: 2\nmemory_limit: 128MiB\n")
    r = run_cli("run", "job.yaml", cwd=str(tmp_path), timeout=30)
    assert r.returncode == 2
    assert r.stderr == (b"dataflow: error: out.log already exists; use --force to replace it, "
                        b"or choose another sink.file\n")
    assert r.stdout == b""
    assert (tmp_path / "out.log").read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml", "out.log"]


def test_force_replaces_an_existing_output_and_a_second_run_needs_it(tmp_path, small_log):
    shutil.copy(ROOT / "configs" / "errors.yaml", tmp_path / "job.yaml")
    sets = ["--set", f"source.file={small_log}", "--set", "sink.file=out.log",
            "--set", "workers=2", "--set", f"chunk_size={CHUNK}"]
    (tmp_path / "out.log").write_bytes(b"old\n")
    os.chmod(tmp_path / "out.log", 0o600)
    r = run_cli("run", "job.yaml", "-q", "--force", *sets, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    expected = gnu_grep(small_log.read_bytes(), '" 5[0-9][0-9] ')
    assert (tmp_path / "out.log").read_bytes() == expected
    assert (tmp_path / "out.log").stat().st_mode & 0o777 == 0o666 & ~current_umask()
    r = run_cli("run", "job.yaml", "-q", *sets, cwd=str(tmp_path))   # the same job again
    assert r.returncode == 2 and b"--force" in r.stderr
    assert (tmp_path / "out.log").read_bytes() == expected
    r = run_cli("run", "job.yaml", "-q", "--force", *sets, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert (tmp_path / "out.log").read_bytes() == expected
    assert temp_files(tmp_path) == []


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ============================================================================ failures
def test_missing_input_exits_1_naming_the_file(tmp_path):
    shutil.copy(ROOT / "configs" / "errors.yaml", tmp_path / "job.yaml")
    r = run_cli("run", "job.yaml", "--set", "source.file=missing.log",
                "--set", "sink.file=out.log", "--set", "workers=1", cwd=str(tmp_path))
    assert r.returncode == 1
    assert r.stderr == b"dataflow: error: cannot read missing.log: No such file or directory\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]


LINE = 64                # fixed-length lines: 64 KiB chunks hold exactly 1024 of them
MARKED = {100: 1, 1500: 2, 5000: 3}


def marked_input() -> bytes:
    out = []
    for i in range(8192):
        tag = f" MARKER #{MARKED[i]}" if i in MARKED else ""
        out.append(f"line {i:06d}{tag}".ljust(LINE - 1).encode() + b"\n")
    data = b"".join(out)
    assert len(data) == 8192 * LINE
    return data


@pytest.mark.parametrize("preexisting", [False, True], ids=["no-output-yet", "old-output"])
def test_stage_error_exits_1_with_where_and_worker_traceback(tmp_path, preexisting):
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "marker_udf.py").write_text(textwrap.dedent("""\
        def check(line):
            if b"MARKER #3" in line:
                raise ValueError("third marker: " + line[:11].decode())
            return line
    """))
    (tmp_path / "in.log").write_bytes(marked_input())
    (tmp_path / "job.yaml").write_text(textwrap.dedent("""\
        source: {file: in.log}
        stages:
          - passthrough
          - python: {callable: "marker_udf:check", mode: line}
        sink: {file: out.log}
        workers: 2
        chunk_size: 64KiB
        memory_limit: 256MiB
    """))
    old = b"precious old output\n"
    if preexisting:
        (tmp_path / "out.log").write_bytes(old)
    before = sorted(p.name for p in tmp_path.iterdir())

    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(mods),
                                                       os.environ.get("PYTHONPATH")]))}
    force = ["--force"] if preexisting else []        # replacing it is allowed, then fails
    r = subprocess.run([sys.executable, "-m", "dataflow", "run", "job.yaml", *force],
                       capture_output=True, cwd=str(tmp_path), timeout=60,
                       start_new_session=True, env=env)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    chunk = 5000 * LINE // (64 * KiB)                      # 4
    offset = chunk * 64 * KiB                              # 262144
    first, _, rest = err.partition("\n")
    assert first == (f"dataflow: error: stages[1] (python) failed on chunk {chunk} "
                     f"(in.log: byte {offset}, {64 * KiB} bytes): ValueError: line "
                     f"{5001 - offset // LINE} of the chunk (chunk byte "  # line 005000 is the 5001st
                     f"{(5000 - offset // LINE) * LINE}): marker_udf:check: third marker: "
                     f"line 005000")
    assert rest.startswith("worker traceback:\nTraceback (most recent call last):\n")
    assert 'marker_udf.py", line 3, in check' in rest
    assert rest.rstrip().endswith("ValueError: third marker: line 005000")
    assert "internal error" not in err

    assert sorted(p.name for p in tmp_path.iterdir()) == before      # no output, no temp file
    assert temp_files(tmp_path) == []
    if preexisting:
        assert (tmp_path / "out.log").read_bytes() == old


def test_reader_closing_early_is_quiet(tmp_path):
    big = tmp_path / "big.log"
    write_sample(str(big), 20 * MiB, seed=2)
    (tmp_path / "job.yaml").write_text(textwrap.dedent("""\
        source: {file: big.log}
        stages:
          - grep: {pattern: 'HTTP/'}
        sink: {stdout: true}
        workers: 2
        chunk_size: 1MiB
        memory_limit: 256MiB
    """))
    cli = shlex.join([sys.executable, "-m", "dataflow", "run", "job.yaml"])
    r = subprocess.run(["bash", "-c", f'{cli} | head -c 100; echo "${{PIPESTATUS[0]}}" > status'],
                       capture_output=True, cwd=str(tmp_path), timeout=60,
                       start_new_session=True)
    assert r.returncode == 0
    assert r.stdout == big.read_bytes()[:100]
    assert_clean_stderr(r.stderr)
    assert b"Broken" not in r.stderr and b"error" not in r.stderr.lower(), r.stderr
    assert (tmp_path / "status").read_text().strip() == "141"    # 128 + SIGPIPE, as documented


# ============================================================================ sample, cleanup
def test_sample_writes_the_requested_size(tmp_path):
    r = run_cli("sample", "-o", "access.log", "--size", "2MiB", cwd=str(tmp_path))
    assert r.returncode == 0
    n = (tmp_path / "access.log").stat().st_size
    assert 2 * MiB - 600 < n <= 2 * MiB
    assert r.stderr == f"dataflow: wrote {n} bytes of access log to access.log\n".encode()
    assert (tmp_path / "access.log").read_bytes() == sample_bytes(2 * MiB, 0)   # default seed
    assert [p.name for p in tmp_path.iterdir()] == ["access.log"]             # no temp left


def test_sample_is_deterministic_for_a_seed(tmp_path):
    a = run_cli("sample", "-o", "-", "--size", "100KiB", "--seed", "5", cwd=str(tmp_path))
    b = run_cli("sample", "-o", "-", "--size", "100KiB", "--seed", "5", cwd=str(tmp_path))
    c = run_cli("sample", "-o", "-", "--size", "100KiB", "--seed", "6", cwd=str(tmp_path))
    assert a.returncode == b.returncode == c.returncode == 0
    assert a.stdout == b.stdout == sample_bytes(100 * KiB, 5)
    assert 100 * KiB - 600 < len(a.stdout) <= 100 * KiB
    assert c.stdout != a.stdout


def test_sample_bad_size_exits_2(tmp_path):
    r = run_cli("sample", "-o", "x.log", "--size", "12bananas", cwd=str(tmp_path))
    assert r.returncode == 2
    assert r.stderr == (b"dataflow: error: expected a size such as 4096, 4MiB or 1.5GB, "
                        b"got '12bananas'\n")
    assert not (tmp_path / "x.log").exists()


def test_cleanup_removes_a_stale_segment(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    name = f"{PREFIX}{dead.pid}-{os.urandom(8).hex()}"
    path = Path(SHM_DIR) / name
    path.write_bytes(b"\0" * 64)
    try:
        r = run_cli("cleanup", cwd=str(tmp_path))
        assert r.returncode == 0, r.stderr
        assert r.stderr == b""
        assert f"removed /dev/shm/{name}\n".encode() in r.stdout
        assert not path.exists()
    finally:
        path.unlink(missing_ok=True)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_cleanup_removes_stale_temp_files_in_the_given_directories(tmp_path):
    a, b, other = tmp_path / "a", tmp_path / "b", tmp_path / "other"
    for d in (a, b, other):
        d.mkdir()
    stale_a = a / f".out.log.{dead_pid()}.0123abcd.dataflow-tmp"
    stale_b = b / f".x.{dead_pid()}.ff.dataflow-tmp"
    live = a / f".out.log.{os.getpid()}.0123abcd.dataflow-tmp"     # this process: alive
    untouched = other / stale_a.name                               # a directory not named
    unrelated = a / f".notes.{dead_pid()}.tmp"                     # not a dataflow temp file
    for p in (stale_a, stale_b, live, untouched, unrelated):
        p.write_bytes(b"partial")
    r = run_cli("cleanup", str(a), str(b), cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    lines = r.stdout.decode().splitlines()
    assert f"removed {stale_a}" in lines and f"removed {stale_b}" in lines
    assert all(ln.startswith(("removed /dev/shm/", f"removed {a}", f"removed {b}"))
               for ln in lines), lines
    assert not stale_a.exists() and not stale_b.exists()
    assert live.exists() and untouched.exists() and unrelated.exists()
    # no directory given: the current one
    r = run_cli("cleanup", cwd=str(other))
    assert r.returncode == 0, r.stderr
    assert f"removed {os.path.join('.', untouched.name)}" in r.stdout.decode().splitlines()
    assert not untouched.exists()


def test_cleanup_of_a_missing_directory_exits_2(tmp_path):
    r = run_cli("cleanup", "no-such-dir", cwd=str(tmp_path))
    assert r.returncode == 2
    assert r.stderr == b"dataflow: error: cleanup no-such-dir: not a directory\n"


def test_cleanup_with_nothing_stale_exits_0(tmp_path):
    r = run_cli("cleanup", cwd=str(tmp_path))
    assert r.returncode == 0
    assert r.stderr == b""
    lines = r.stdout.decode().splitlines()
    assert lines == ["nothing to clean up"] or all(
        line.startswith(f"removed /dev/shm/{PREFIX}") for line in lines)


EXIT_MODULE = '''
import atexit, os, sys, threading, time

DIR = {directory!r}
PID = os.getpid()
atexit.register(lambda: open(os.path.join(DIR, f"atexit-{{PID}}"), "w").close())


def late():
    time.sleep(0.3)
    open(os.path.join(DIR, f"thread-{{PID}}"), "w").close()


threading.Thread(target=late).start()
if __import__("multiprocessing").parent_process() is None:   # the coordinator, not a worker
    sys.stdout.write(f"unflushed-{{PID}}")


class Teardown:
    """Leaves a trace when the interpreter's teardown collects this module's globals (what it
    uses is bound in advance: the teardown clears module globals)."""
    def __del__(self, open=open, path=os.path.join(DIR, f"teardown-{{PID}}")):
        open(path, "w").close()


KEPT = Teardown()


def keep(line):
    return line
'''


def test_the_command_skips_teardown_but_runs_exit_handlers_threads_and_flushes(tmp_path):
    """The `dataflow` command ends without the interpreter's teardown once its job is done
    (quickexit.py), but user code the coordinator imported still gets its exit handlers, its
    non-daemon threads and its unflushed output."""
    (tmp_path / "exitmod.py").write_text(EXIT_MODULE.format(directory=str(tmp_path)))
    (tmp_path / "in.txt").write_bytes(b"line\n" * 1000)
    job = tmp_path / "job.yaml"
    job.write_text("source: {file: in.txt}\nstages:\n"
                   "  - python: {callable: 'exitmod:keep', mode: line}\n"
                   "sink: {file: out.txt}\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered stdout
    r = subprocess.run([sys.executable, "-m", "dataflow", "run", str(job), "-q"],
                       cwd=tmp_path, capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.txt").read_bytes() == b"line\n" * 1000
    assert r.stdout.decode().count("unflushed-") == 1, r.stdout
    pid = int(r.stdout.decode().split("unflushed-")[1])
    assert (tmp_path / f"atexit-{pid}").exists()
    assert (tmp_path / f"thread-{pid}").exists()
    assert not (tmp_path / f"teardown-{pid}").exists()
    r = run_cli("run", str(job), "-q", "--set", "source.file=missing.txt", cwd=str(tmp_path))
    assert r.returncode == 1 and b"cannot read missing.txt" in r.stderr    # the status stays


def test_output_the_command_cannot_flush_at_its_end_fails_it(tmp_path):
    """The quick exit flushes stdout itself: when that fails (a full disk), the status is 120
    with a message, as the interpreter's own exit gives, never 0."""
    job = tmp_path / "job.yaml"
    job.write_text("source: {generate: {size: 1MiB}}\nstages: [passthrough]\nsink: {null: true}\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    with open("/dev/full", "wb") as full:
        r = subprocess.run([sys.executable, "-m", "dataflow", "run", str(job), "--explain"],
                           stdout=full, stderr=subprocess.PIPE, env=env, timeout=60)
    assert r.returncode == 120
    assert b"cannot write to standard output: No space left on device" in r.stderr


def test_python_m_dataflow_cli_still_runs_the_command(tmp_path):
    """`python -m dataflow.cli` is the command without its front (no early workers, no quick
    exit): it still works."""
    src = tmp_path / "in.txt"
    src.write_bytes(b"a\nERROR b\nc\n" * 1000)
    r = subprocess.run([sys.executable, "-m", "dataflow.cli", "grep", "ERROR", str(src)],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"ERROR b\n" * 1000
