"""A record far longer than the memory limit (issue 5.8): a clear error naming the file and the
byte where the record starts, never an out-of-memory kill; asking for such records is refused
by the plan before anything runs."""
from __future__ import annotations

import os

from conftest import run_cli


def test_a_record_far_longer_than_the_memory_limit(tmp_path):
    path = tmp_path / "huge.log"
    with open(path, "wb") as f:
        f.write(b"short line\n" * 1000)
    os.truncate(path, 11000 + (512 << 20))     # then 512 MiB of NULs with no newline
    out = tmp_path / "out.log"
    r = run_cli("grep", "-v", "x", str(path), "-o", str(out), "-m", "128MiB", timeout=120)
    assert r.returncode == 1, r.stderr
    err = r.stderr.decode()
    assert f"a record is longer than max_record_size (4.0 MiB) at {path}: byte 11000" in err
    assert "Traceback" not in err and not out.exists()
    job = tmp_path / "job.yaml"
    job.write_text(f"source: {{file: {path}, max_record_size: 1GiB}}\nsink: {{file: {out}}}\n"
                   f"memory_limit: 128MiB\n")
    r = run_cli("run", str(job))
    assert r.returncode == 2, r.stderr
    assert b"memory_limit 128.0 MiB is too small for" in r.stderr
    assert b"raise memory_limit, lower workers or max_record_size" in r.stderr
    assert not out.exists()
