"""Record framing (CSV, record_start, fixed), record mode, the CSV header, head and record
errors: compared with Python's csv module, jq, head, and the same job on one worker."""
from __future__ import annotations

import csv
import gzip
import io
import json
import random
import re
import subprocess
import textwrap

import pytest

from dataflow.api import pipeline, stream
from dataflow.errors import RecordTooLongError, StageError, UsageError
from dataflow.framing import CsvFramer, FixedFramer, RecordStartFramer
from dataflow.sinks import FileSink
from dataflow.sources import ChunkReader, FileSource
from workers.compress import Gzip
from workers.head import Head
from workers.python import PythonFunction

from conftest import require_tool, run_cli
from helper_transforms import FailOnField, FirstColumns
from test_framing import BytesSource

CHUNK_SIZES = [1, 2, 3, 7, 4096, "4MiB"]


def run(src: FileSource, *stages, workers=2, chunk_size="4MiB", **kw) -> bytes:
    return b"".join(stream(src, *stages, workers=workers, chunk_size=chunk_size,
                           max_record_size="64KiB", memory_limit="256MiB", **kw))


def tricky_csv(rows: int = 120, seed: int = 1, newline: str = "\n") -> bytes:
    """Quoted commas, doubled quotes, embedded newlines (LF and CRLF), empty fields, UTF-8,
    invalid UTF-8 (as surrogate escapes), a field of exactly 7 bytes."""
    rnd = random.Random(seed)
    values = ['plain', 'with,comma', 'say "hi"', 'multi\nline', 'crlf\r\ninside', '', 'ünï',
              '"', '7bytes!', 'a\n\nb', 'bad\udcffutf8']
    out = io.StringIO()
    w = csv.writer(out, lineterminator=newline)
    w.writerow(["id", "name", "note"])
    for i in range(rows):
        w.writerow([str(i), rnd.choice(values), rnd.choice(values)])
    return out.getvalue().encode("utf-8", "surrogateescape")


def csv_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8", "surrogateescape"), newline=""),
                           strict=True))


def reencoded(rows: list[list[str]], newline: str = "\n") -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator=newline).writerows(rows)
    return out.getvalue().encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------- framers, pure
def cut_all(data: bytes, framer, slot: int, step=None) -> list[bytes]:
    buf = bytearray(slot)
    reader = ChunkReader(BytesSource(data, step), framer=framer, chunk_size=slot,
                         max_record_size=slot)
    out = []
    while n := reader.fill(buf, 0, memoryview(buf)):
        out.append(bytes(buf[:n]))
    assert b"".join(out) == data
    return out


@pytest.mark.parametrize("slot", [40, 41, 64, 100, 4096])
@pytest.mark.parametrize("step", [None, 1, 5])
def test_csv_framer_never_cuts_inside_quotes(slot, step):
    data = tricky_csv(60)
    chunks = cut_all(data, CsvFramer(), slot, step)
    assert sum((csv_rows(c) for c in chunks), []) == csv_rows(data)
    if slot < len(data):
        assert len(chunks) > 1


def test_csv_framer_first_record_and_an_unclosed_quote():
    f = CsvFramer()
    assert f.first(b'a,"b\nc"\nrest\n') == 8
    assert f.first(b'a,"b\nc') == 0
    with pytest.raises(RecordTooLongError, match="quote that is not closed"):
        cut_all(b'id,x\n1,"never closed\n2,y\n3,z\n' + b"4,w\n" * 20, CsvFramer(), 32)


@pytest.mark.parametrize("slot", [64, 100, 4096])
def test_record_start_keeps_multiline_records_whole(slot):
    rnd = random.Random(3)
    lines = []
    for i in range(80):
        lines.append(f"2024-01-{i % 28 + 1:02d} ERROR thing {i}")
        lines += [f"  at frame {j}" for j in range(rnd.randrange(3))]
    data = ("\n".join(lines) + "\n").encode()
    chunks = cut_all(data, RecordStartFramer(r"\d{4}-\d\d-\d\d "), slot)
    for c in chunks:
        assert re.match(rb"\d{4}-\d\d-\d\d ", c), c[:30]


def test_fixed_framer_cuts_whole_records():
    data = bytes(range(256)) * 3 + b"tail"
    for slot in (16, 17, 100):
        chunks = cut_all(data, FixedFramer(8), slot)
        assert all(len(c) % 8 == 0 for c in chunks[:-1])
        assert all(len(c) % 8 == 0 for c in chunks if c is not chunks[-1])


# ---------------------------------------------------------------------------- CSV end to end
@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_csv_chunks_are_whole_rows_at_any_chunk_size(tmp_path, chunk_size):
    data = tricky_csv(40, newline="\r\n")
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    src = lambda: FileSource(str(path), split="csv", header=False)  # noqa: E731
    fn = PythonFunction("record_udfs:rows_of_chunk")
    out = run(src(), fn, chunk_size=chunk_size)
    assert [json.loads(x) for x in out.splitlines()] == csv_rows(data)
    assert out == run(src(), fn, chunk_size=chunk_size, workers=1)


@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_csv_header_is_written_once_and_reaches_every_chunk(tmp_path, chunk_size):
    data = tricky_csv(50)
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    rows = csv_rows(data)
    out = run(FileSource(str(path), split="csv", errors="surrogateescape"), PythonFunction("record_udfs:same",
                                                                 mode="record"),
              chunk_size=chunk_size)
    assert out == reencoded(rows)                     # Python's csv, whole file at once
    assert out.count(b"id,name,note") == 1
    two = run(FileSource(str(path), split="csv", errors="surrogateescape"), FirstColumns(2), chunk_size=chunk_size)
    assert two == reencoded([r[:2] for r in rows])
    assert two == run(FileSource(str(path), split="csv", errors="surrogateescape"), FirstColumns(2),
                      chunk_size=chunk_size, workers=1)


def test_csv_header_goes_through_a_compressor_after_record_stages(tmp_path):
    data = tricky_csv(300)
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    out = tmp_path / "out.csv.gz"
    pipeline(FileSource(str(path), split="csv", errors="surrogateescape"), FirstColumns(1), Gzip(), FileSink(str(out)),
             workers=2, chunk_size=256, max_record_size="64KiB")
    subprocess.run(["gzip", "-t", str(out)], check=True)
    assert gzip.decompress(out.read_bytes()) == reencoded([r[:1] for r in csv_rows(data)])


def test_csv_dict_records_and_crlf_header(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"a,b\r\n1,2\r\n3,4\r\n")
    out = run(FileSource(str(path), split="csv"),
              PythonFunction("record_udfs:add_total", mode="record"), chunk_size=4)
    assert out == b"a,b\r\n1,2\r\n3,4\r\n".replace(b"a,b\r\n", b"a,b\r\n")  # columns kept
    assert run(FileSource(str(path), split="tsv", header=False), FirstColumns(1)) == \
        b"a,b\r\n1,2\r\n3,4\r\n".replace(b"\r\n", b"\n")


@pytest.mark.parametrize("content", [b"", b"only,header\n", b"only,header"])
def test_csv_empty_and_header_only(tmp_path, content):
    path = tmp_path / "in.csv"
    path.write_bytes(content)
    out = run(FileSource(str(path), split="csv"), FirstColumns(1))
    assert out == (b"only\n" if content else b"")


def test_a_stray_quote_only_makes_chunks_longer_or_fails_with_a_hint(tmp_path):
    """A quote inside an unquoted field (not RFC 4180) hides record ends from the framing:
    the chunk runs on to the next even quote, so the output is still right; past
    max_record_size the error says why."""
    path = tmp_path / "in.csv"
    body = b"".join(b"%d,fine\n" % i for i in range(50))
    data = b"id,v\n" + body + b'50,5" disk\n51,x\n' + body
    path.write_bytes(data)
    out = run(FileSource(str(path), split="csv"), FirstColumns(1), chunk_size=64)
    assert out == reencoded([r[:1] for r in csv_rows(data)])
    with pytest.raises(RecordTooLongError, match=r"in.csv: byte \d+; in a CSV file, a quote "
                                                 r"that is not closed"):
        b"".join(stream(FileSource(str(path), split="csv"), FirstColumns(1), workers=2,
                        chunk_size=64, max_record_size=256))


def test_unknown_column_fails_before_any_output(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,name\n1,x\n")
    out = tmp_path / "out.csv"
    with pytest.raises(UsageError, match=r"stages\[0\] \(fail-on-field\): no column 'nme' in "
                                         r"the header \(columns: id, name\)"):
        pipeline(FileSource(str(path), split="csv"), FailOnField("nme", "x"),
                 FileSink(str(out)), workers=1)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in.csv"]


# ---------------------------------------------------------------------------- JSON lines
def jsonl_data(n: int = 200) -> bytes:
    rnd = random.Random(5)
    lines = []
    for i in range(n):
        lines.append(json.dumps({"i": i, "s": rnd.choice(["a", "ü", "x y", "q\"q", "t\tt"]),
                                 "n": rnd.choice([None, True, [1, 2], {"k": "v"}, -3])},
                                separators=(",", ":"), ensure_ascii=False))
        if i % 50 == 7:
            lines.append("")   # blank lines are skipped, as jq does
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_jsonl_record_mode_matches_jq(tmp_path, chunk_size):
    jq = require_tool("jq")
    data = jsonl_data()
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    out = run(FileSource(str(path), split="jsonl"),
              PythonFunction("record_udfs:same", mode="record"), chunk_size=chunk_size)
    ref = subprocess.run([jq, "-c", "."], input=data, capture_output=True, check=True).stdout
    assert out == ref


def test_invalid_json_names_the_file_line(tmp_path):
    path = tmp_path / "in.jsonl"
    lines = [b'{"i":%d}' % i for i in range(300)]
    lines[211] = b'{"i":211,'
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(StageError) as e:
        run(FileSource(str(path), split="jsonl"), PythonFunction("record_udfs:same",
                                                                mode="record"),
            chunk_size=512)
    offset = sum(len(x) + 1 for x in lines[:211])
    assert "invalid JSON" in str(e.value)
    assert f"the record starts at {path}: byte {offset} (line 212)" in str(e.value)


# ---------------------------------------------------------------------------- lines
LINE_CASES = {
    "no final newline": b"a\nbb\nccc",
    "crlf": b"GET /\r\nPOST /x\r\n\r\nlast\r\n",
    "lone cr is data": b"a\rb\rc\nd\re\n",
    "nul and invalid utf8": b"\x00\xff\xfe\n\x00\n\xc3(\n",
    "record exactly the chunk size": b"1234567\n1234567\n1234567\n",
}


@pytest.mark.parametrize("name", LINE_CASES)
@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 8, 4096])
def test_line_function_sees_every_line_once(tmp_path, name, chunk_size):
    data = LINE_CASES[name]
    path = tmp_path / "in.txt"
    path.write_bytes(data)
    out = run(FileSource(str(path)), PythonFunction("record_udfs:same", mode="line"),
              chunk_size=chunk_size)
    assert out == data


def test_line_function_error_names_the_line_and_keeps_the_traceback(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(1000)))
    with pytest.raises(StageError) as e:
        run(FileSource(str(path)), PythonFunction("record_udfs:fail_on", mode="line",
                                                  args={"value": b"line 777"}),
            chunk_size=1024)
    msg = str(e.value)
    offset = sum(len(b"line %d\n" % i) for i in range(777))
    assert e.value.error_type == "ValueError"
    assert f"the record starts at {path}: byte {offset} (line 778)" in msg
    assert "refusing b'line 777'" in msg
    assert 'record_udfs.py", line' in e.value.worker_traceback


@pytest.mark.parametrize("final_newline", [True, False])
def test_line_function_may_drop_lines_and_return_text(tmp_path, final_newline):
    data = b"".join(b"line %d\n" % i for i in range(3001))
    path = tmp_path / "in.txt"
    path.write_bytes(data if final_newline else data[:-1])
    out = run(FileSource(str(path)), PythonFunction("record_udfs:keep_even_as_text",
                                                    mode="line"), chunk_size=1000)
    # the last line (3000, even) keeps the input's ending: no newline added when it had none
    want = b"".join(b"even %d\n" % i for i in range(0, 3001, 2))
    assert out == (want if final_newline else want[:-1])


@pytest.mark.parametrize("bad", [b"line 5", b"line 9"])   # 9: the open last record
def test_line_function_returning_another_type_names_the_line(tmp_path, bad):
    path = tmp_path / "in.txt"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(10))[:-1])
    with pytest.raises(StageError) as e:
        run(FileSource(str(path)), PythonFunction("record_udfs:number_on", mode="line",
                                                  args={"value": bad}))
    n = int(bad.split()[1])
    msg = str(e.value)
    assert "record_udfs:number_on returned int, not bytes, str or None" in msg
    assert f"byte {7 * n} (line {n + 1})" in msg, msg


def test_record_mode_error_names_the_record(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"k,v\n" + b"".join(b"%d,x\n" % i for i in range(100)) + b"boom,y\n")
    with pytest.raises(StageError, match=r"record 101 of the chunk: record_udfs:fail_on: "
                                         r"refusing 'boom'"):
        run(FileSource(str(path), split="csv"),
            PythonFunction("record_udfs:fail_on", mode="record", args={"value": "boom"}))


def test_python_setup_state_is_built_once_per_worker(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"a\nb\n")
    out = run(FileSource(str(path)), PythonFunction(
        "record_udfs:with_state", mode="line", setup="record_udfs:make_state",
        args={"suffix": "!"}))
    assert out == b"a|state:!\nb|state:!\n"


# ---------------------------------------------------------------------------- record_start, fixed
def test_record_start_job_matches_one_worker(tmp_path):
    rnd = random.Random(9)
    text = []
    for i in range(300):
        text.append(f"2024-02-{i % 28 + 1:02d}T00:00 WARN event {i}\n")
        text += [f"    at frame{j}\n" for j in range(rnd.randrange(4))]
    data = "".join(text).encode()
    path = tmp_path / "trace.log"
    path.write_bytes(data)
    pattern = r"\d{4}-\d\d-\d\dT"
    fn = PythonFunction("record_udfs:starts_with_record", args={"pattern": pattern})
    for chunk_size in (16, 300, 4096):
        src = FileSource(str(path), record_start=pattern)
        assert run(src, fn, chunk_size=chunk_size) == data


def test_fixed_records(tmp_path):
    data = bytes(random.Random(2).randrange(256) for _ in range(64 * 100))
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    fn = PythonFunction("record_udfs:whole_records", args={"size": 64})
    assert run(FileSource(str(path), split="fixed", record_size=64), fn,
               chunk_size=1000) == data


# ---------------------------------------------------------------------------- head
@pytest.mark.parametrize("n", [0, 1, 777, 5000])
def test_head_matches_head_and_stops_reading(tmp_path, n):
    path = tmp_path / "in.txt"
    path.write_bytes(b"".join(b"%06d\n" % i for i in range(200_000)))
    ref = subprocess.run(["head", "-n", str(n), str(path)], capture_output=True,
                         check=True).stdout
    out_path = tmp_path / "out.txt"
    stats = pipeline(FileSource(str(path)), Head(n), FileSink(str(out_path)), workers=2,
                     chunk_size="16KiB")
    assert out_path.read_bytes() == ref
    assert stats.bytes_in < path.stat().st_size // 2   # it stopped reading early


def test_head_counts_csv_rows_not_lines(tmp_path):
    data = tricky_csv(100)
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    rows = csv_rows(data)
    for n in (0, 1, 10, 99, 100, 150):
        out = run(FileSource(str(path), split="csv"), Head(n), chunk_size=64)
        assert csv_rows(out) == (rows[:1 + n] if n else [])   # head 0: nothing at all


def test_head_yaml_job_and_its_place(tmp_path):
    (tmp_path / "in.txt").write_bytes(b"".join(b"%d ERROR\n" % i for i in range(10000)))
    job = tmp_path / "job.yaml"
    job.write_text(textwrap.dedent("""\
        source: {file: in.txt}
        stages:
          - grep: {pattern: "7 ERROR"}
          - head: {n: 3}
        sink: {file: out.txt}
        chunk_size: 4KiB
    """))
    r = run_cli("run", str(job), cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.txt").read_bytes() == b"7 ERROR\n17 ERROR\n27 ERROR\n"
    job.write_text(textwrap.dedent("""\
        source: {file: in.txt}
        stages:
          - head: {n: 3}
          - passthrough
    """))
    r = run_cli("validate", str(job), cwd=str(tmp_path))
    assert r.returncode != 0
    assert b"stages[0]: head cuts the output after its last record, so it must be the last " \
           b"stage" in r.stderr


def test_record_stages_after_a_record_stage_share_its_records(tmp_path):
    """python(record) -> where -> select -> count: after the first decode, the later stages
    take the decoded records (no encode and decode in between) and agree with jq."""
    jq = require_tool("jq")
    from workers.folds import Count
    from workers.select import Select
    from workers.where import Where

    data = jsonl_data(400)
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    report = tmp_path / "count.json"
    out = run(FileSource(str(path), split="jsonl"),
              PythonFunction("record_udfs:same", mode="record"), Where(i={"gte": 100}),
              Select(fields=["s", "i"]), Count(report=str(report)), chunk_size=1024)
    ref = subprocess.run([jq, "-c", "select(.i >= 100) | {s, i}"], input=data,
                         capture_output=True, check=True).stdout
    assert out == ref
    assert json.loads(report.read_bytes())["records"] == 300


def test_a_summary_msgpack_cannot_carry_fails_its_stage_not_the_worker(tmp_path):
    from helper_transforms import BadSummary

    path = tmp_path / "in.txt"
    path.write_bytes(b"x\n" * 5000)
    with pytest.raises(StageError, match=r"stages\[1\] \(bad-summary\) failed on chunk 3 "):
        run(FileSource(str(path)), PythonFunction("record_udfs:same", mode="line"),
            BadSummary(3), chunk_size=1024)


@pytest.mark.parametrize("text,value", [("12", 12), ("-3", -3), ("+2", 2), ("1.5", 1.5),
                                        (".5", 0.5), ("5.", 5.0), ("1e3", 1000.0),
                                        (b"7", 7), ("1_000", None), ("nan", None),
                                        ("inf", None), ("1e999", None), (" 1", None),
                                        ("\u0661\u0662", None), (b"\xff", None), (True, None)])
def test_number_reads_plain_decimal_only(text, value):
    from dataflow.records import number

    got = number(text)
    assert got == value and type(got) is type(value)
