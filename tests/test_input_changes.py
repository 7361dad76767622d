"""An input that grows, shrinks, is rewritten or replaced while it is read fails the job with
the file and the byte reached; nothing is written (issue 5.8)."""
from __future__ import annotations

import os
import re

import pytest

import dataflow
from dataflow.errors import SourceError
from changing_input import ChangeInput

LINE = b"0123456789abcdef ok\n"


def _file(path, n=4096) -> str:
    path.write_bytes(LINE * n)
    return str(path)


def _read_some(src, n=8192) -> bytearray:
    buf = bytearray(n)
    got = src.readinto(memoryview(buf))
    assert got == n
    return buf


def _drain(src) -> int:
    buf = memoryview(bytearray(1 << 16))
    total = 0
    while (n := src.readinto(buf)):
        total += n
    return total


@pytest.mark.parametrize("how, message", [
    ("append", r"grew while it was read, from 81920 to 81947 bytes; .*end: 81920"),
    ("truncate", r"shrank while it was read: it had 81920 bytes when the job started and "
                 r"ends at byte 40960 now"),
    ("touch", r"was modified while it was read \(81920 bytes, modified .* at the start; "
              r"81920 bytes, modified .* at byte 81920\)"),
])
def test_a_changed_file_is_refused_when_it_is_read(tmp_path, how, message):
    path = _file(tmp_path / "in.log")
    src = dataflow.FileSource(path)
    src.open()
    _read_some(src)
    ChangeInput(path, how, delay=0).transform(memoryview(b""), dataflow.ChunkInfo())
    with pytest.raises(SourceError, match=re.escape(path) + " " + message) as e:
        _drain(src)
    src.close()
    assert e.value.file == path
    assert e.value.offset == (40960 if how == "truncate" else 81920)


def test_a_file_replaced_before_its_turn_is_refused(tmp_path):
    a = _file(tmp_path / "a.log", 100)
    b = _file(tmp_path / "b.log")
    src = dataflow.FileSource([a, b])
    src.open()
    _read_some(src, 1000)                  # into a; b is opened when a is done
    os.rename(b, tmp_path / "old.log")
    _file(tmp_path / "b.log")
    with pytest.raises(SourceError, match=re.escape(b) + " was replaced by another file after "
                       "the job started"):
        _drain(src)
    src.close()


def test_the_second_of_several_files_is_checked_and_offsets_are_stream_offsets(tmp_path):
    a = _file(tmp_path / "a.log", 100)
    b = _file(tmp_path / "b.log")
    src = dataflow.FileSource([a, b])
    src.open()
    _read_some(src, 100 * len(LINE))     # all of a
    _read_some(src, 1000)               # into b
    os.truncate(b, 500)
    with pytest.raises(SourceError, match=re.escape(b) + " shrank") as e:
        _drain(src)
    src.close()
    assert e.value.offset == 100 * len(LINE) + 1000


def test_unchanged_files_read_whole_and_a_byte_range_may_grow_past_its_end(tmp_path):
    path = _file(tmp_path / "in.log")
    src = dataflow.FileSource([path, path])
    src.open()
    assert _drain(src) == 2 * 81920
    src.close()
    ranged = dataflow.FileSource(path, end=40960)
    ranged.open()
    _read_some(ranged, 100)
    with open(path, "ab") as f:           # a log still being written, read up to a point
        f.write(LINE * 10)
    assert _drain(ranged) == 40960 - 100
    ranged.close()


def test_a_pseudo_file_that_says_zero_bytes_is_read_to_its_end():
    src = dataflow.FileSource("/proc/self/status")
    assert src.size() == 0
    src.open()
    assert _drain(src) > 100
    src.close()


@pytest.mark.parametrize("how", ["append", "truncate"])
def test_a_job_whose_input_changes_fails_and_writes_nothing(tmp_path, how):
    path = _file(tmp_path / "in.log", 1 << 16)   # 1.25 MiB in 64 KiB chunks
    out = tmp_path / "out.log"
    out.write_bytes(b"the old output\n")
    with pytest.raises(SourceError, match=re.escape(path) + (" grew" if how == "append"
                                                             else " shrank")):
        dataflow.pipeline(dataflow.FileSource(path), ChangeInput(path, how),
                          dataflow.FileSink(str(out), overwrite=True), workers=2,
                          chunk_size="64KiB", memory_limit="128MiB")
    assert out.read_bytes() == b"the old output\n"
    assert sorted(os.listdir(tmp_path)) == ["in.log", "out.log"]


def test_a_source_used_again_takes_the_file_as_it_is_then(tmp_path):
    path = _file(tmp_path / "in.log")
    src = dataflow.FileSource(path)
    src.open()
    assert _drain(src) == 81920
    src.close()
    with open(path, "ab") as f:
        f.write(LINE)
    src.open()
    assert _drain(src) == 81920 + len(LINE)
    src.close()


def test_a_byte_range_may_end_past_the_end_of_the_file(tmp_path):
    path = _file(tmp_path / "in.log", 100)
    src = dataflow.FileSource(path, split="bytes", start=100, end=10**6)
    src.open()
    assert _drain(src) == 100 * len(LINE) - 100
    src.close()


def test_a_pseudo_file_shorter_than_its_size_is_read_to_its_end():
    path = "/sys/kernel/mm/transparent_hugepage/enabled"     # says 4096 bytes, holds fewer
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        pytest.skip(f"{path} is not here")
    src = dataflow.FileSource(path)
    src.open()
    got = _drain(src)
    src.close()
    with open(path, "rb") as f:
        assert 0 < got == len(f.read()) < os.path.getsize(path)
