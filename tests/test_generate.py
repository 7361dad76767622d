"""Tests for dataflow.generate: determinism, the block and size contract, the line format."""
from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from dataflow import generate
from dataflow.generate import LINE_FORMAT_DESCRIPTION, generate_blocks, write_sample

ROOT = Path(__file__).resolve().parents[1]
MAX_LINE = 600

COMBINED = re.compile(
    rb"(?P<ip>\d{1,3}(?:\.\d{1,3}){3}) - - "
    rb"\[(?P<ts>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000)\] "
    rb'"(?P<method>GET|POST|PUT|DELETE|HEAD) (?P<path>/[^" ]*) HTTP/(?:1\.0|1\.1|2\.0)" '
    rb"(?P<status>[1-5]\d\d) (?P<size>\d+|-) "
    rb'"(?P<referer>-|https?://[^" ]+)" "(?P<agent>[^"]+)"'
)


def run(size: int, seed: int = 0, block_size: int = 1 << 20) -> bytes:
    return b"".join(generate_blocks(size, seed, block_size))


@pytest.fixture(scope="module")
def sample() -> bytes:
    return run(5 << 20, seed=7)


@pytest.fixture(scope="module")
def lines(sample: bytes) -> list[bytes]:
    assert sample.endswith(b"\n")
    return sample[:-1].split(b"\n")


def test_same_seed_same_bytes() -> None:
    assert run(300_000, seed=3) == run(300_000, seed=3)


def test_same_bytes_in_another_process() -> None:
    code = (
        "import hashlib, sys; from dataflow.generate import generate_blocks; "
        "h = hashlib.sha256(); [h.update(b) for b in generate_blocks(300_000, 3)]; "
        "sys.stdout.write(h.hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    assert out == hashlib.sha256(run(300_000, seed=3)).hexdigest()


def test_different_seeds_differ() -> None:
    a, b = run(100_000, seed=0), run(100_000, seed=1)
    assert a != b
    assert a.split(b"\n")[0] != b.split(b"\n")[0]


@pytest.mark.parametrize("size", [0, 1, 50, 150, 599, 600, 601, 1000, 4096, 65_537, 1 << 20,
                                  3_000_001])
def test_total_size_bounds(size: int) -> None:
    out = run(size, seed=2)
    assert size - MAX_LINE < len(out) <= size
    assert out == b"" or out.endswith(b"\n")


def test_size_zero_yields_nothing() -> None:
    assert list(generate_blocks(0)) == []


def test_size_smaller_than_first_line_yields_nothing() -> None:
    first = run(10_000).split(b"\n")[0] + b"\n"
    assert list(generate_blocks(len(first) - 1)) == []
    assert run(len(first)) == first


def test_output_is_longest_whole_line_prefix_of_the_stream() -> None:
    full = run(400_000, seed=5)
    for size in (1234, 50_000, 123_457, 199_999):
        out = run(size, seed=5)
        assert full.startswith(out)
        next_line_end = full.index(b"\n", len(out)) + 1
        assert next_line_end > size          # stopped only because the next line did not fit


@pytest.mark.parametrize("size", [1_000_003, 2_500_000])
def test_independent_of_block_size(size: int) -> None:
    outputs = {bs: list(generate_blocks(size, 11, bs)) for bs in (1, 100, 1000, 4096, 1 << 20,
                                                                  64 << 20)}
    reference = b"".join(outputs[1 << 20])
    for bs, blocks in outputs.items():
        assert b"".join(blocks) == reference, bs
        for block in blocks:
            assert block and block.endswith(b"\n")
            assert len(block) <= bs or block.count(b"\n") == 1
        # Blocks are full: each one plus the next line would not have fitted in block_size.
        for block, nxt in zip(blocks, blocks[1:]):
            assert len(block) + nxt.index(b"\n") + 1 > bs


def test_blocks_are_roughly_block_size() -> None:
    blocks = list(generate_blocks(10 << 20, 0, 1 << 20))
    assert all((1 << 20) - MAX_LINE < len(b) <= 1 << 20 for b in blocks[:-1])


def test_every_line_is_combined_log_format(lines: list[bytes]) -> None:
    bad = [line for line in lines if not COMBINED.fullmatch(line)]
    assert not bad, bad[:3]
    assert all(len(line) < MAX_LINE for line in lines)


def test_lines_are_ascii_and_realistic_length(sample: bytes, lines: list[bytes]) -> None:
    assert sample.isascii()
    assert 180 <= len(sample) / len(lines) <= 250


def test_timestamps_never_go_back(lines: list[bytes]) -> None:
    stamps = [COMBINED.fullmatch(line)["ts"].decode() for line in lines]
    parsed = {s: datetime.strptime(s, "%d/%b/%Y:%H:%M:%S %z") for s in set(stamps)}
    times = [parsed[s] for s in stamps]
    assert all(a <= b for a, b in zip(times, times[1:]))
    assert times[-1] > times[0]
    assert times[0].year == 2026


def test_field_mix_is_plausible(lines: list[bytes]) -> None:
    fields = [COMBINED.fullmatch(line) for line in lines]
    n = len(fields)
    classes = Counter(m["status"][:1] for m in fields)
    assert 0.80 < classes[b"2"] / n < 0.90
    assert 0.05 < classes[b"3"] / n < 0.11
    assert 0.03 < classes[b"4"] / n < 0.08
    assert 0.005 < classes[b"5"] / n < 0.03
    methods = Counter(m["method"] for m in fields)
    assert set(methods) == {b"GET", b"POST", b"PUT", b"DELETE", b"HEAD"}
    assert methods.most_common(1)[0][0] == b"GET" and methods[b"GET"] / n > 0.7
    ips = Counter(m["ip"] for m in fields)
    assert len(ips) > 500
    assert ips.most_common(1)[0][1] / n > 0.01            # a few heavy hitters
    assert len({m["path"].split(b"?")[0] for m in fields}) > 150
    assert sum(b"?" in m["path"] for m in fields) / n > 0.1
    assert len({m["agent"] for m in fields}) > 15


def test_grep_for_5xx_matches_one_to_two_percent(sample: bytes, lines: list[bytes]) -> None:
    share = len(re.findall(rb'" 5[0-9][0-9] ', sample)) / len(lines)
    assert 0.005 < share < 0.03


def test_write_sample_to_path(tmp_path: Path) -> None:
    target = tmp_path / "access.log"
    target.write_bytes(b"old contents\n")
    written = write_sample(target, 1_500_000, seed=4)
    assert target.read_bytes() == run(1_500_000, seed=4)
    assert written == target.stat().st_size
    assert os.listdir(tmp_path) == ["access.log"]


def test_write_sample_to_str_path_and_file_object(tmp_path: Path) -> None:
    assert write_sample(str(tmp_path / "a.log"), 10_000, seed=9) == len(run(10_000, seed=9))
    buf = io.BytesIO()
    assert write_sample(buf, 10_000, seed=9) == len(buf.getvalue())
    assert buf.getvalue() == (tmp_path / "a.log").read_bytes()


def test_write_sample_removes_temp_file_on_error(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "access.log"
    target.write_bytes(b"old contents\n")

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(generate.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk on fire"):
        write_sample(target, 100_000)
    assert os.listdir(tmp_path) == ["access.log"]
    assert target.read_bytes() == b"old contents\n"


@pytest.mark.parametrize("kwargs", [{"size": -1}, {"size": 10, "block_size": 0}])
def test_rejects_bad_arguments(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        list(generate_blocks(**kwargs))


def test_description_is_one_ascii_paragraph() -> None:
    assert LINE_FORMAT_DESCRIPTION.isascii() and "\n" not in LINE_FORMAT_DESCRIPTION
    assert "combined" in LINE_FORMAT_DESCRIPTION
