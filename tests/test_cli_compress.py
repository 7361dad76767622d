"""`dataflow compress` / `dataflow decompress` as a user runs them: pigz-like names, flags,
keep/remove rules and refusals, checked with the real tools."""
from __future__ import annotations

import gzip
import os
import subprocess

import pytest

from conftest import require_tool, run_cli


@pytest.fixture
def log(tmp_path, sample_log):
    path = tmp_path / "app.log"
    with open(sample_log, "rb") as f:
        path.write_bytes(f.read(3 << 20))
    os.chmod(path, 0o640)
    os.utime(path, (1_600_000_000, 1_600_000_000))
    return path


def ok(*args, **kw) -> subprocess.CompletedProcess:
    r = run_cli(*args, **kw)
    assert r.returncode == 0, r.stderr.decode()
    return r


def test_compress_replaces_the_file_like_gzip(tmp_path, log):
    original = log.read_bytes()
    ok("compress", "-p", "2", str(log))
    out = tmp_path / "app.log.gz"
    assert not log.exists()  # removed only after the output was in place
    assert os.stat(out).st_mode & 0o777 == 0o640
    assert os.stat(out).st_mtime == 1_600_000_000
    require_tool("gzip")
    subprocess.run(["gzip", "-t", str(out)], check=True)
    listing = subprocess.run(["gzip", "-lvN", str(out)], capture_output=True, check=True)
    assert b"app.log" in listing.stdout
    assert gzip.decompress(out.read_bytes()) == original


def test_keep_output_name_level_and_format(tmp_path, log):
    ok("compress", "-k", "--no-sync", "-f", "zstd", "-l", "3", "-p", "2", str(log), "-o",
       str(tmp_path / "x.zst"))
    assert log.exists()
    require_tool("zstd")
    got = subprocess.run(["zstd", "-q", "-dc", str(tmp_path / "x.zst")], capture_output=True,
                         check=True).stdout
    assert got == log.read_bytes()
    ok("compress", "-k", "-9", str(log))
    assert gzip.decompress((tmp_path / "app.log.gz").read_bytes()) == log.read_bytes()
    assert (tmp_path / "app.log.gz").read_bytes()[8] == 2  # XFL says level 9


def test_an_existing_output_is_not_overwritten_without_force(tmp_path, log):
    out = tmp_path / "app.log.gz"
    out.write_bytes(b"precious")
    r = run_cli("compress", str(log))
    assert r.returncode == 2
    assert b"already exists; use --force" in r.stderr
    assert out.read_bytes() == b"precious" and log.exists()
    ok("compress", "--force", "-k", str(log))
    assert gzip.decompress(out.read_bytes()) == log.read_bytes()


def test_filter_from_stdin_to_stdout(log):
    r = ok("compress", "-c", input=log.read_bytes())
    assert gzip.decompress(r.stdout) == log.read_bytes()
    r = ok("compress", "-f", "xz", "-l", "0", "-c", str(log))
    require_tool("xz")
    got = subprocess.run(["xz", "-dc"], input=r.stdout, capture_output=True, check=True).stdout
    assert got == log.read_bytes()
    assert log.exists()  # -c never removes the input


@pytest.mark.parametrize("argv,message", [
    (["-l", "12"], b"gzip levels are 0 to 9, not 12"),
    (["-f", "bz2", "-l", "0"], b"bz2 levels are 1 to 9, not 0"),
    (["--index"], b"--index is for -f bgzf"),
    (["-p", "0"], b"-p/--workers must be at least 1"),
    (["--backend", "isal", "-l", "6"], b"isal supports levels 0-3, not 6"),
])
def test_bad_options_are_usage_errors(log, argv, message):
    r = run_cli("compress", "-k", *argv, str(log))
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert not os.path.exists(str(log) + ".gz")


def test_bgzf_with_index_serves_bgzip_random_access(tmp_path, log):
    out = tmp_path / "app.bgz"
    ok("compress", "-k", "-f", "bgzf", "--index", str(log), "-o", str(out))
    require_tool("bgzip")
    got = subprocess.run(["bgzip", "-b", "1000000", "-s", "5000", str(out)],
                         capture_output=True, check=True).stdout
    assert got == log.read_bytes()[1000000:1005000]


def test_input_that_already_has_the_suffix_is_left_alone(tmp_path, log):
    gz = tmp_path / "already.gz"
    gz.write_bytes(gzip.compress(b"x"))
    r = run_cli("compress", str(gz))
    assert r.returncode == 2 and b"already has the .gz suffix" in r.stderr
    assert gz.exists() and not (tmp_path / "already.gz.gz").exists()


def test_verbose_summary_counts_the_compressed_file_as_input(tmp_path, log):
    ok("compress", "-k", str(log))
    gz = tmp_path / "app.log.gz"
    r = ok("decompress", "-v", "-c", str(gz))
    assert r.stdout == log.read_bytes()
    line = r.stderr.decode()
    from dataflow.sizes import format_size
    assert f"{format_size(gz.stat().st_size)} in, {format_size(log.stat().st_size)} out" in line
