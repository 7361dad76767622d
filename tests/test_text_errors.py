"""Bytes that are not UTF-8 where a stage reads text (issue 5.8): by default an error naming the
stage, the chunk, the line and the byte; `errors: surrogateescape` passes the bytes through
unchanged, `errors: replace` reads them as U+FFFD."""
from __future__ import annotations

import subprocess

import pytest

import dataflow
from dataflow import FileSink, FileSource, pipeline
from dataflow.errors import StageError

from conftest import require_tool, run_cli

# 3 rows a line; the bad byte is in line 3 (byte 0x e9: latin-1 for "é"), at byte 2 of the line
CSV = b"name,city,n\nann,oslo,1\nbo,caf\xe9,2\ncy,rome,3\n"
BAD_AT = CSV.index(b"bo,")
JSONL = b'{"n":1,"s":"ok"}\n{"n":2,"s":"caf\xe9"}\n{"n":3,"s":"x"}\n'


def _run(tmp_path, source, *stages, name="out"):
    out = tmp_path / name
    pipeline(source, *stages, FileSink(str(out)), workers=2, memory_limit="256MiB")
    return out.read_bytes()


def test_strict_csv_names_the_stage_chunk_line_and_byte_and_writes_nothing(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(CSV)
    with pytest.raises(StageError) as e:
        _run(tmp_path, FileSource(str(path), split="csv"), dataflow.Select(["city"]))
    msg = str(e.value)
    assert msg.startswith("stages[0] (select) failed on chunk 0 ")
    assert "not UTF-8: byte 6 of the line is 0xe9" in msg
    assert f"the record starts at {path}: byte {BAD_AT} (line 3)" in msg
    assert "errors: surrogateescape" in msg and "errors: replace" in msg
    assert "failed 4 times" not in msg and e.value.error_type == "RecordError"
    assert not (tmp_path / "out").exists()


def test_surrogateescape_passes_the_bytes_through_as_cut_does(tmp_path):
    cut = require_tool("cut")
    path = tmp_path / "in.csv"
    path.write_bytes(CSV * 500)
    got = _run(tmp_path, FileSource(str(path), split="csv", header=False,
                                    errors="surrogateescape"), dataflow.Select([2, 3]))
    assert got == subprocess.run([cut, "-d,", "-f2,3", str(path)], capture_output=True,
                                 check=True).stdout
    assert b"caf\xe9," in got


def test_replace_reads_a_bad_byte_as_the_replacement_character(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(CSV)
    got = _run(tmp_path, FileSource(str(path), split="csv", errors="replace"),
               dataflow.CsvToJsonl())
    assert got.splitlines()[1] == '{"name":"bo","city":"caf\ufffd","n":"2"}'.encode()


def test_bytes_passed_through_cannot_become_json_and_the_error_says_so(tmp_path):
    """The records are encoded after the last stage: a failure there is that stage's error,
    reported once (it used to kill the worker, which was retried four times)."""
    path = tmp_path / "in.csv"
    path.write_bytes(CSV)
    with pytest.raises(StageError, match=r"stages\[0\] \(csv_to_jsonl\) failed on chunk 0 .*"
                       r"record 2 of the chunk: output record 2: the byte 0xe9, passed through by "
                       r"errors: surrogateescape, cannot be written as JSON .*use errors: replace"):
        _run(tmp_path, FileSource(str(path), split="csv", errors="surrogateescape"),
             dataflow.CsvToJsonl())


@pytest.mark.parametrize("stage", [lambda: dataflow.Where({"s": {"ne": "x"}}),
                                   lambda: dataflow.Select(["s"]),
                                   lambda: dataflow.Sample(fraction=0.999, by="s")],
                         ids=["where", "select", "sample"])
def test_json_lines_strict_and_replace(tmp_path, stage):
    path = tmp_path / "in.jsonl"
    path.write_bytes(JSONL)
    with pytest.raises(StageError, match=r"line 2 of the chunk \(chunk byte 17\): not UTF-8: "
                       r"byte 15 of the line is 0xe9; give the source errors: replace .*"
                       rf"the record starts at {path}: byte 17 \(line 2\)"):
        _run(tmp_path, FileSource(str(path), split="jsonl"), stage())
    got = _run(tmp_path, FileSource(str(path), split="jsonl", errors="replace"), stage())
    assert "caf\ufffd".encode() in got


def test_a_line_whose_bad_text_no_stage_reads_passes_unchanged(tmp_path):
    """`where` on JSON lines decodes only the fields it tests and copies the lines it keeps,
    as grep would: text it does not read is not checked."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(JSONL)
    got = _run(tmp_path, FileSource(str(path), split="jsonl"), dataflow.Where({"n": {"gte": 2}}))
    assert got == JSONL.split(b"\n", 1)[1]


def test_surrogateescape_is_refused_for_json_lines(tmp_path):
    with pytest.raises(ValueError, match="JSON text is UTF-8"):
        FileSource("x.jsonl", split="jsonl", errors="surrogateescape")
    job = tmp_path / "job.yaml"
    job.write_text("source: {file: x.jsonl, split: jsonl, errors: surrogateescape}\n"
                   "sink: {file: out}\n")
    r = run_cli("validate", str(job))
    assert r.returncode == 2
    assert f"{job}:1: source.errors: surrogateescape cannot go with split: jsonl".encode() \
        in r.stderr, r.stderr


def test_python_record_mode_on_lines(tmp_path, monkeypatch):
    path = tmp_path / "in.log"
    path.write_bytes(b"plain\ncaf\xe9\n\xff\xfe raw\n")
    with pytest.raises(StageError, match=r"record 2 of the chunk: not UTF-8: byte 3 of the "
                       r"line is 0xe9"):
        _run(tmp_path, FileSource(str(path)),
             dataflow.PythonFunction("record_udfs:same", mode="record"))
    got = _run(tmp_path, FileSource(str(path), errors="surrogateescape"),
               dataflow.PythonFunction("record_udfs:same", mode="record"))
    assert got == path.read_bytes()


def test_a_header_that_is_not_utf8(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"n\xe9me,v\nann,1\nbo,2\n")
    job = tmp_path / "job.yaml"
    job.write_text(f"source: {{file: {path}, split: csv}}\nstages: [{{select: {{fields: [v]}}}}]\n"
                   f"sink: {{file: {tmp_path}/out.csv}}\n")
    r = run_cli("run", str(job), "-q")
    assert r.returncode == 1
    assert f"the header at {path}: byte 0: not UTF-8: byte 1 of the line is 0xe9".encode() \
        in r.stderr, r.stderr
    r = run_cli("run", str(job), "-q", "--set", "source.errors=surrogateescape")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.csv").read_bytes() == b"v\n1\n2\n"


def test_cli_errors_option_and_stdin(tmp_path):
    r = run_cli("count", "--split", "jsonl", "--errors", "surrogateescape", "-", input=b"{}\n")
    assert r.returncode == 2
    assert b"errors: surrogateescape cannot go with split: jsonl" in r.stderr
    r = run_cli("count", "--split", "csv", "--errors", "replace", "-", input=b"a\n\xff\n")
    assert r.returncode == 0, r.stderr


def test_invalid_json_after_replaced_bytes_is_placed_on_the_original_bytes():
    from dataflow.records import RecordError, RecordFormat

    data = b'{"a":"\xe9\xe9\xe9\xe9"}\n{"b":1}\n{bad\n'
    with pytest.raises(RecordError) as e:
        RecordFormat(kind="jsonl", errors="replace").decode(data)
    assert (e.value.line, e.value.offset) == (3, data.index(b"{bad"))
    assert RecordFormat(kind="jsonl", errors="replace").decode(data[:-5]) == \
        [{"a": "\ufffd" * 4}, {"b": 1}]
