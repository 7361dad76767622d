"""The record examples in configs/ (split: jsonl, csv) run as written on generated data and
agree with jq and with Python's csv module. The access-log examples are in test_cli.py."""
from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

from conftest import require_tool, run_cli
from dataflow.config import load_job
from dataflow.sample_records import sample_blocks

ROOT = Path(__file__).resolve().parents[1]
RECORD_CONFIGS = sorted(c.name for c in (ROOT / "configs").glob("*.yaml")
                        if load_job(str(c)).spec.source.split not in ("lines", "bytes"))


def write(path: Path, fmt: str) -> bytes:
    data = b"".join(sample_blocks(3 << 20, 4, fmt))
    path.write_bytes(data)
    return data


def run_example(name: str, tmp_path: Path) -> Path:
    shutil.copy(ROOT / "configs" / name, tmp_path / name)
    r = run_cli("run", name, "-q", "--set", "workers=2", "--set", "chunk_size=256KiB",
                cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert b"Traceback" not in r.stderr
    return tmp_path / load_job(str(tmp_path / name)).spec.sink.file


def test_every_record_example_is_tested():
    assert RECORD_CONFIGS == ["slow-requests.yaml", "top-failing-paths.yaml"]


def test_slow_requests_matches_jq(tmp_path):
    jq = require_tool("jq")
    data = write(tmp_path / "requests.jsonl", "jsonl")
    out = run_example("slow-requests.yaml", tmp_path).read_bytes()
    ref = subprocess.run([jq, "-c", "select(.status >= 500 and .duration_ms > 1000) | "
                                    "{time, ip, path, status, duration_ms}"],
                         input=data, capture_output=True, check=True).stdout
    assert 0 < len(out) < len(data) // 10
    assert out == ref


def test_top_failing_paths_matches_python_csv(tmp_path):
    data = write(tmp_path / "requests.csv", "csv")
    result = json.loads(run_example("top-failing-paths.yaml", tmp_path).read_bytes())
    rows = csv.DictReader(io.StringIO(data.decode(), newline=""))
    counts = Counter(r["path"] for r in rows if int(r["status"]) >= 400)
    expected = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    got = [(e["value"], e["count"]) for e in result["top"]]
    assert got == expected
    assert result.get("approximate", False) is False


def test_every_log_line_becomes_a_record():
    from dataflow.generate import generate_blocks
    from dataflow.sample_records import convert

    block = next(generate_blocks(1 << 20, 1))
    assert b'" 304 - "' in block or b'" 204 - "' in block   # lines without a body are there
    lines = block.count(b"\n")
    assert convert(block, "jsonl").count(b"\n") == lines
    assert len(list(csv.reader(io.StringIO(convert(block, "csv").decode(), newline="")))) == \
        lines
