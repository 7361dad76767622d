"""`dataflow grep`, `dataflow map`, `dataflow count`: compared with grep, wc and Python."""
from __future__ import annotations

import json
import subprocess

import pytest

from conftest import run_cli


@pytest.fixture(scope="module")
def log(tmp_path_factory, sample_log) -> str:
    return sample_log


@pytest.mark.parametrize("flags", [[], ["-v"], ["-i"], ["-F"], ["-v", "-i", "-F"]])
def test_grep_matches_gnu_grep(log, flags):
    pattern = "GET /API" if "-i" in flags else '" 50[0-9] '
    if "-F" in flags:
        pattern = "Mozilla/5.0 (X11" if "-i" not in flags else "mozilla/5.0 (x11"
    ours = run_cli("grep", *flags, "-p", "2", pattern, log)
    ref = subprocess.run(["grep", *(flags if "-F" in flags else ["-E", *flags]), pattern, log],
                         capture_output=True)
    assert ours.returncode == ref.returncode == 0, ours.stderr
    assert ours.stdout == ref.stdout


def test_grep_exit_status_count_and_output_file(tmp_path, log):
    nothing = run_cli("grep", "no such text anywhere", log)
    assert (nothing.returncode, nothing.stdout) == (1, b"")
    count = run_cli("grep", "-c", '" 404 ', log)
    ref = subprocess.run(["grep", "-c", '" 404 ', log], capture_output=True, check=True)
    assert count.stdout == ref.stdout
    out = tmp_path / "e.log"
    r = run_cli("grep", '" 5[0-9][0-9] ', log, "-o", str(out))
    assert r.returncode == 0, r.stderr
    ref = subprocess.run(["grep", '" 5[0-9][0-9] ', log], capture_output=True, check=True)
    assert out.read_bytes() == ref.stdout
    again = run_cli("grep", "x", log, "-o", str(out))
    assert again.returncode == 2 and b"already exists; use --force" in again.stderr
    assert out.read_bytes() == ref.stdout


def test_grep_reads_stdin():
    r = run_cli("grep", "b", input=b"a\nb\nabc\n")
    assert (r.returncode, r.stdout) == (0, b"b\nabc\n")


def test_map_runs_a_function_from_the_current_directory(tmp_path):
    (tmp_path / "mymod.py").write_text(
        "def tag(line, prefix):\n    return prefix.encode() + line\n"
        "def total(rec):\n    rec['t'] = rec['a'] + rec['b']\n    return rec\n")
    (tmp_path / "in.txt").write_bytes(b"".join(b"%d\n" % i for i in range(5000)))
    r = run_cli("map", "mymod:tag", "in.txt", "--arg", "prefix=n", "-o", "out.txt",
                cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.txt").read_bytes() == b"".join(b"n%d\n" % i for i in range(5000))
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"a": i, "b": 2 * i}) + "\n"
                                               for i in range(100)))
    r = run_cli("map", "mymod:total", "--mode", "record", "--split", "jsonl", "in.jsonl",
                cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["t"] for x in r.stdout.splitlines()] == [3 * i for i in range(100)]
    bad = run_cli("map", "mymod:nope", "in.txt", cwd=str(tmp_path))
    assert bad.returncode == 2
    assert b"mymod:nope: AttributeError" in bad.stderr


def test_count_matches_wc_and_grep(log):
    r = run_cli("count", log, "--pattern", "POST")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    wc = subprocess.run(["wc", "-l", "-c", log], capture_output=True, check=True).stdout.split()
    grep = subprocess.run(["grep", "-c", "POST", log], capture_output=True, check=True).stdout
    assert (result["records"], result["bytes"]) == (int(wc[0]), int(wc[1]))
    assert result["matches"] == int(grep)


def test_count_csv_rows_not_lines(tmp_path):
    (tmp_path / "in.csv").write_bytes(b'id,note\n1,"two\nlines"\n2,x\n')
    r = run_cli("count", "--split", "csv", str(tmp_path / "in.csv"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["records"] == 2
