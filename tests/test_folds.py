"""Ordered folds (workers/folds.py) end to end, against the real tools on generated data:
wc, grep -c, awk, jq, Python's csv/Counter/fsum and numpy. Every result must be the same
for 1 worker and the default chunk size as for 2 workers and 1 KiB chunks."""
from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import random
import re
import stat
import subprocess
import textwrap
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

import dataflow
from dataflow import FileSink, FileSource, pipeline
from dataflow.config import load_job
from dataflow.errors import ConfigError, DataflowError, SinkError, StageError, UsageError
from dataflow.generate import write_sample

from conftest import require_tool, run_cli
from helper_transforms import FirstColumns, RaiseOn
from workers.folds import Count, Histogram, Max, Mean, Min, Sum, Top

MEM = "256MiB"
# (workers, chunk_size): the default chunk size on one worker, tiny chunks on two
VARIANTS = [(1, "4MiB"), (2, "1KiB")]


# ---------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("folds")


@pytest.fixture(scope="module")
def log(data) -> str:
    """A 1 MiB generated access log (combined format: $9 status, $10 bytes or "-")."""
    path = data / "access.log"
    write_sample(str(path), 1 << 20, seed=11)
    return str(path)


CITIES = ["Paris, FR", 'The "Big" Apple', "New\nYork", "Rome", "São Paulo", "Oslo", "",
          "Lima, PE\r\nnorth", "Kyiv"]


@pytest.fixture(scope="module")
def csv_file(data) -> str:
    """CSV with a header, quoted fields holding commas, quotes and newlines; amounts that
    are ints, floats, or not numbers at all."""
    rng = random.Random(5)
    rows = [["id", "city", "amount", "note"]]
    for i in range(6000):
        r = rng.random()
        amount = (str(rng.randint(-10**6, 10**6)) if r < 0.6 else
                  repr(rng.uniform(-1e6, 1e6)) if r < 0.8 else
                  f"{rng.uniform(0, 1):.3e}" if r < 0.9 else
                  rng.choice(["", "n/a", "1_000", "nan", "inf", "-"]))
        city = rng.choices(CITIES, weights=[9, 7, 5, 5, 3, 3, 2, 2, 1])[0]
        note = rng.choice(["ok", "multi\nline, note", 'said "hi"', ""])
        rows.append([str(i), city, amount, note])
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    path = data / "table.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def jsonl_file(data) -> str:
    rng = random.Random(9)
    lines = []
    for i in range(5000):
        rec: dict = {"id": i, "status": rng.choice([200, 200, 200, 304, 404, 500, "200"]),
                     "req": {"path": f"/p/{rng.randint(0, 30)}"}}
        r = rng.random()
        if r < 0.85:
            rec["bytes"] = rng.randint(0, 10**6)
        elif r < 0.9:
            rec["bytes"] = "n/a"
        elif r < 0.95:
            rec["bytes"] = None
        if rng.random() < 0.7:
            rec["req"]["bytes"] = rng.randint(0, 5000)
        lines.append(json.dumps(rec, separators=(",", ": ") if i % 2 else (",", ":")))
        if rng.random() < 0.02:
            lines.append(rng.choice(["", "   ", "\t"]))
    path = data / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def fold(tmp_path, source_args, stage_factory, variants=VARIANTS):
    """Run the fold (consuming) for each variant; check the JSON output line equals the
    result in stats; check every variant agrees; return the result."""
    results = []
    for i, (workers, chunk) in enumerate(variants):
        out = tmp_path / f"out{i}"
        path, kw = source_args
        stage = stage_factory()
        stats = pipeline(FileSource(path, **kw), stage, FileSink(str(out)), workers=workers,
                         memory_limit=MEM, chunk_size=chunk, max_record_size="4KiB")
        text = out.read_bytes()
        assert text.endswith(b"\n") and text.count(b"\n") == 1, text[:200]
        result = json.loads(text)
        (key, in_stats), = stats.results.items()
        assert key == f"0:{stage.name}"
        assert json.loads(json.dumps(in_stats)) == result
        results.append(result)
    for r in results[1:]:
        assert r == results[0], "the result depends on workers or chunk size"
    return results[0]


def sh(cmd: str, **kw) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True,
                          env={"LC_ALL": "C", "PATH": os.environ["PATH"]}, **kw).stdout


# ---------------------------------------------------------------------------- count
@pytest.mark.parametrize("content", [
    None,                                            # the generated log
    b"one\ntwo\nno final newline",
    b"",
    b"crlf\r\nlines\r\n\r\nand a bare \r inside\r\n",
    b"\n\n\n",
], ids=["log", "no-final-newline", "empty", "crlf", "blank"])
def test_count_matches_wc(tmp_path, log, content):
    wc = require_tool("wc")
    path = log if content is None else str(tmp_path / "in")
    if content is not None:
        Path(path).write_bytes(content)
    raw = Path(path).read_bytes()
    lines = int(sh(f"{wc} -l < {path}"))
    size = int(sh(f"{wc} -c < {path}"))
    got = fold(tmp_path, (path, {}), Count)
    missing_newline = 1 if raw and not raw.endswith(b"\n") else 0   # wc -l counts newlines
    assert got == {"records": lines + missing_newline, "bytes": size}


@pytest.mark.parametrize("kw,flags", [
    (dict(pattern=r'" 5[0-9][0-9] '), "-E"),
    (dict(pattern="firefox", ignore_case=True, fixed=True), "-i -F"),
    (dict(pattern=r"^1\d\d\.", ), "-P"),
])
def test_count_with_pattern_matches_grep_c(tmp_path, log, kw, flags):
    grep = require_tool("grep")
    want = int(sh(f"{grep} -c {flags} '{kw['pattern']}' {log}"))
    got = fold(tmp_path, (log, {}), lambda: Count(**kw))
    assert got["matches"] == want > 0
    assert got["records"] == int(sh(f"wc -l < {log}"))


def test_count_jsonl_skips_blank_lines_like_jq(tmp_path, jsonl_file):
    jq = require_tool("jq")
    values = int(sh(f"{jq} -c . {jsonl_file} | wc -l"))
    grep_c = int(sh(f"grep -c '\"status\":404' {jsonl_file}"))
    assert values < int(sh(f"wc -l < {jsonl_file}")), "the data should have blank lines"
    got = fold(tmp_path, (jsonl_file, {"split": "jsonl"}), lambda: Count(pattern='"status":404'))
    assert got == {"records": values, "bytes": os.path.getsize(jsonl_file), "matches": grep_c}


def test_count_csv_rows_with_quoted_newlines(tmp_path, csv_file):
    raw = Path(csv_file).read_bytes()
    with open(csv_file, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header_len = raw.index(b"\n") + 1
    assert raw.count(b"\n") > len(rows), "the data should have quoted newlines"
    want_matches = sum(1 for r in rows[1:] if "Paris" in ",".join(r))
    got = fold(tmp_path, (csv_file, {"split": "csv"}), lambda: Count(pattern="Paris"))
    assert got == {"records": len(rows) - 1, "bytes": len(raw) - header_len,
                   "matches": want_matches}
    # no quote in the file: the C-speed path; a header is still not a record
    plain = tmp_path / "plain.csv"
    plain.write_bytes(b"a,b\n1,2\n3,4\r\n5,6")
    assert fold(tmp_path, (str(plain), {"split": "csv"}), Count) == {"records": 3,
                                                                     "bytes": 12}


# ---------------------------------------------------------------------------- numbers
def awk(prog: str, path: str) -> str:
    return sh(f"awk '{prog}' {path}").strip()


NUM10 = "$10 ~ /^[0-9]+$/"


def test_sum_min_max_mean_match_awk_on_the_access_log(tmp_path, log):
    want_sum = int(awk('{s += $10} END {printf "%.0f\\n", s}', log))   # "-" is 0 to awk
    n = int(awk(f'{NUM10} {{n++}} END {{print n}}', log))
    lines = int(sh(f"wc -l < {log}"))
    got = fold(tmp_path, (log, {}), lambda: Sum(10))
    assert got == {"field": 10, "sum": want_sum, "count": n, "skipped": lines - n}
    assert isinstance(got["sum"], int)
    mean = float(awk(f'{NUM10} {{s += $10; n++}} END {{printf "%.17g\\n", s / n}}', log))
    assert fold(tmp_path, (log, {}), lambda: Mean(10))["mean"] == mean
    lo = int(awk(f'{NUM10} {{v = $10 + 0; if (!n++ || v < m) m = v}} END {{print m}}', log))
    hi = int(awk(f'{NUM10} {{v = $10 + 0; if (!n++ || v > m) m = v}} END {{print m}}', log))
    assert fold(tmp_path, (log, {}), lambda: Min(10))["min"] == lo
    assert fold(tmp_path, (log, {}), lambda: Max(10))["max"] == hi


def test_sum_by_status_matches_awk(tmp_path, log):
    want = {}
    prog = (f'{NUM10} {{s[$9] += $10; n[$9]++}} '
            f'END {{for (k in s) printf "%s %.0f %d\\n", k, s[k], n[k]}}')
    for line in awk(prog, log).splitlines():
        k, s, n = line.split()
        want[k] = (int(s), int(n))
    got = fold(tmp_path, (log, {}), lambda: Sum(10, by=9))
    assert got["by"] == 9
    groups = {g["key"]: (g["sum"], g["count"]) for g in got["groups"]
              if g["count"]}   # 204 and 304 have no body: only skipped values
    assert groups == want
    keys = [g["key"] for g in got["groups"]]
    assert keys == sorted(keys, key=int)      # numbers in numeric order
    assert got["count"] + got["skipped"] == int(sh(f"wc -l < {log}"))


def test_jsonl_sums_match_jq(tmp_path, jsonl_file):
    jq = require_tool("jq")
    want = int(sh(f"{jq} -s 'map(.bytes | numbers) | add' {jsonl_file}"))
    count = int(sh(f"{jq} -s 'map(.bytes | numbers) | length' {jsonl_file}"))
    records = int(sh(f"{jq} -c . {jsonl_file} | wc -l"))
    got = fold(tmp_path, (jsonl_file, {"split": "jsonl"}), lambda: Sum("bytes"))
    assert got == {"field": "bytes", "sum": want, "count": count, "skipped": records - count}
    # a dotted path, grouped by a field whose values are the number 200 and the text "200"
    want_by = json.loads(sh(
        f"{jq} -s -c 'map(select(.req.bytes | numbers)) | group_by(.status) "
        f"| map({{key: .[0].status, sum: (map(.req.bytes) | add), count: length}})' "
        f"{jsonl_file}"))
    got = fold(tmp_path, (jsonl_file, {"split": "jsonl"}), lambda: Sum("req.bytes", by="status"))
    assert sorted(((g["key"], g["sum"], g["count"]) for g in got["groups"]), key=repr) == \
        sorted(((g["key"], g["sum"], g["count"]) for g in want_by), key=repr)
    assert [g["key"] for g in got["groups"]] == [200, "200", 304, 404, 500]


def test_float_sums_are_exact_whatever_the_chunking(tmp_path):
    """Values whose naive running sum depends on the order and grouping: the result is the
    exact sum rounded once (math.fsum over all of them), for every chunking."""
    rng = random.Random(3)
    values = [rng.uniform(-1, 1) * rng.choice([1, 1e-3, 3.3e-17]) for _ in range(4000)]
    for _ in range(2000):      # large values that cancel out, wherever they fall
        big = rng.choice([1e16, 2.0 ** 60, 1e20])
        values += [big, -big]
    rng.shuffle(values)
    lines = [repr(v) for v in values] + ["7"]     # one int among the floats
    path = tmp_path / "floats.txt"
    path.write_text("\n".join(lines) + "\n")
    exact = sum(map(Fraction, values), Fraction(7))
    got = fold(tmp_path, (str(path), {}), lambda: Mean(1))
    assert got["sum"] == float(exact) == math.fsum(values + [7])
    assert got["mean"] == float(exact / len(lines))
    naive = sum(values) + 7
    assert naive != got["sum"], "the data should defeat naive summation"


def test_csv_fields_by_name_and_number_skip_what_is_not_a_number(tmp_path, csv_file):
    with open(csv_file, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    nums = []
    for r in rows:
        try:
            v = int(r[2])
        except ValueError:
            try:
                v = float(r[2])
            except ValueError:
                continue
        if "_" in r[2] or not math.isfinite(v):
            continue          # 1_000, nan, inf: not numbers here
        nums.append(v)
    got = fold(tmp_path, (csv_file, {"split": "csv"}), lambda: Sum("amount"))
    assert got["count"] == len(nums) and got["skipped"] == len(rows) - len(nums)
    assert got["sum"] == math.fsum(nums)
    assert fold(tmp_path, (csv_file, {"split": "csv"}), lambda: Min(3))["min"] == min(nums)
    assert fold(tmp_path, (csv_file, {"split": "csv"}), lambda: Max("amount"))["max"] == max(nums)


def test_ints_stay_ints_and_min_max_ties_have_one_answer(tmp_path):
    big = 2 ** 70
    path = tmp_path / "ints"
    path.write_text(f"{big}\n{big}\n-{big}\n5\n")
    assert fold(tmp_path, (str(path), {}), lambda: Sum(1))["sum"] == big + 5
    assert fold(tmp_path, (str(path), {}), lambda: Min(1))["min"] == -big
    # 1 and 1.0 (and 0.0 and -0.0) are equal: the int (and -0.0 for min) wins wherever it is
    for text, lo, hi in (("1.0\n1\n2\n", 1, 2), ("1\n1.0\n", 1, 1),
                         ("0.0\n-0.0\n3\n", -0.0, 3), ("-0.0\n0.0\n", -0.0, 0.0)):
        path.write_text(text)
        got_lo = fold(tmp_path, (str(path), {}), lambda: Min(1), variants=[(1, "4MiB")])["min"]
        got_hi = fold(tmp_path, (str(path), {}), lambda: Max(1), variants=[(1, "4MiB")])["max"]
        assert (repr(got_lo), repr(got_hi)) == (repr(lo), repr(hi)), text


def test_too_many_groups_is_a_clear_error(tmp_path, log):
    with pytest.raises(DataflowError, match="more than 50 groups.*max_groups"):
        pipeline(FileSource(log), Sum(10, by=1, max_groups=50), FileSink(str(tmp_path / "o")),
                 workers=2, memory_limit=MEM)
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------- top
def expected_top(values, k):
    counts = Counter(values)
    return [{"value": v, "count": c}
            for v, c in sorted(counts.items(), key=lambda vc: (-vc[1], vc[0]))[:k]], counts


def test_top_on_csv_matches_counter(tmp_path, csv_file):
    with open(csv_file, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    want, counts = expected_top([r[1] for r in rows], 5)
    got = fold(tmp_path, (csv_file, {"split": "csv"}), lambda: Top("city", k=5))
    assert got["top"] == want
    assert "New\nYork" in counts and "Paris, FR" in {w["value"] for w in want}
    assert got["distinct"] == len(counts) and got["approximate"] is False
    assert got["count"] == len(rows) and got["max_error"] == 0


def test_top_on_jsonl_and_ties_are_broken_by_value(tmp_path, jsonl_file):
    recs = [json.loads(l) for l in Path(jsonl_file).read_text().splitlines() if l.strip()]
    paths = Counter(r["req"]["path"] for r in recs)
    got = fold(tmp_path, (jsonl_file, {"split": "jsonl"}), lambda: Top("req.path", k=40))
    assert got["top"] == expected_top([r["req"]["path"] for r in recs], 40)[0]
    assert len(got["top"]) == len(paths)
    statuses = fold(tmp_path, (jsonl_file, {"split": "jsonl"}), lambda: Top("status", k=3))
    c = Counter(json.dumps(r["status"]) for r in recs)
    # numbers numerically, then text (the text "200" right after the number 200)
    order = {"200": 0, '"200"': 1, "304": 2, "404": 3, "500": 4}
    want = sorted(c.items(), key=lambda kv: (-kv[1], order[kv[0]]))[:3]
    assert [(json.dumps(t["value"]), t["count"]) for t in statuses["top"]] == want
    # ties: count desc, then value asc; numbers numerically, before text
    path = tmp_path / "ties"
    path.write_text("b\n10\na\n9\nb\n10\na\n9\nz\n")
    got = fold(tmp_path, (str(path), {}), lambda: Top(1, k=5))
    assert [t["value"] for t in got["top"]] == ["9", "10", "a", "b", "z"]


def test_top_past_capacity_is_approximate_with_bounds(tmp_path):
    rng = random.Random(1)
    heavy = {f"heavy{i}": 150 + 20 * i for i in range(8)}
    values = [v for v, n in heavy.items() for _ in range(n)]
    values += [f"rare{i}" for i in range(3000)]
    rng.shuffle(values)
    path = tmp_path / "values"
    path.write_text("\n".join(values) + "\n")
    truth = Counter(values)
    for workers, chunk in VARIANTS:
        out = tmp_path / "out"
        stats = pipeline(FileSource(str(path)), Top(1, k=8, capacity=100), FileSink(str(out)),
                         workers=workers, chunk_size=chunk, max_record_size="4KiB",
                         memory_limit=MEM)
        got = stats.results["0:top"]
        assert got["approximate"] is True and got["distinct"] is None
        err = got["max_error"]
        assert 0 < err <= len(values) / 101
        assert {t["value"] for t in got["top"]} == set(heavy)   # all far above the error
        for t in got["top"]:
            assert t["count"] <= truth[t["value"]] <= t["count"] + err
    # the same data within capacity: exact, and the same for every chunking
    got = fold(tmp_path, (str(path), {}), lambda: Top(1, k=8, capacity=4000))
    assert got["approximate"] is False
    assert got["top"] == expected_top(values, 8)[0]


def test_values_that_are_not_utf8_are_counted_and_shown_escaped(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"k,v\n\xff,1\nok,2\n\xff,3\n\"\xfe\nx\",4\n")
    with pytest.raises(StageError, match=r"not UTF-8: byte 0 of the line is 0xff; give the source "
                       r"errors: surrogateescape .*bad.csv: byte 4 \(line 2\)"):
        fold(tmp_path, (str(path), {"split": "csv"}), lambda: Top("k"))
    got = fold(tmp_path, (str(path), {"split": "csv", "errors": "surrogateescape"}),
               lambda: Top("k"))
    assert got["top"] == [{"value": "\\xff", "count": 2}, {"value": "\\xfe\nx", "count": 1},
                          {"value": "ok", "count": 1}]
    got = fold(tmp_path, (str(path), {"split": "csv", "errors": "surrogateescape"}),
               lambda: Sum("v", by="k"))
    assert [(g["key"], g["sum"]) for g in got["groups"]] == [("\\xfe\nx", 4), ("\\xff", 4),
                                                            ("ok", 2)]
    lines = tmp_path / "bad.log"
    lines.write_bytes(b"a \xff\nb \xff\nc caf\xc3\xa9\n")
    got = fold(tmp_path, (str(lines), {}), lambda: Top(2))
    assert got["top"] == [{"value": "\\xff", "count": 2}, {"value": "caf\u00e9", "count": 1}]


# ---------------------------------------------------------------------------- histogram
def test_histogram_matches_python_and_numpy(tmp_path, log):
    vals = [int(l.split()[9]) for l in Path(log).read_text().splitlines()
            if l.split()[9].isdigit()]
    skipped = int(sh(f"wc -l < {log}")) - len(vals)
    edges = [100, 1000, 5000, 20000, 100000]
    got = fold(tmp_path, (log, {}), lambda: Histogram(10, bins=edges))
    want = [sum(1 for v in vals if a <= v < b or (b == edges[-1] and v == b))
            for a, b in zip(edges, edges[1:])]
    assert [b["count"] for b in got["bins"]] == want
    assert [(b["low"], b["high"]) for b in got["bins"]] == list(zip(edges, edges[1:]))
    assert got["below"] == sum(v < 100 for v in vals)
    assert got["above"] == sum(v > 100000 for v in vals)
    assert got["skipped"] == skipped and got["count"] == len(vals)
    try:
        import numpy
    except ImportError:
        numpy = None
    if numpy is not None:
        assert want == numpy.histogram(vals, bins=edges)[0].tolist()
    # fixed width 2.5 KiB-ish bins from 1000 to 30000 (the last bin is shorter, closed)
    got = fold(tmp_path, (log, {}), lambda: Histogram(10, width=2500.5, start=1000, end=30000))
    lows = [1000 + i * 2500.5 for i in range(12)]
    highs = lows[1:] + [30000]
    want = [sum(1 for v in vals if lo <= v < hi or (hi == 30000 and v == hi))
            for lo, hi in zip(lows, highs)]
    assert [(b["low"], b["high"], b["count"]) for b in got["bins"]] == \
        list(zip(lows, highs, want))
    assert got["below"] == sum(v < 1000 for v in vals)
    assert got["above"] == sum(v > 30000 for v in vals)
    # without end: from the lowest to the highest bin with a value, empty ones in between
    got = fold(tmp_path, (log, {}), lambda: Histogram(10, width=10000))
    counts = Counter(v // 10000 for v in vals)
    assert [(b["low"], b["count"]) for b in got["bins"]] == \
        [(i * 10000, counts.get(i, 0)) for i in range(min(counts), max(counts) + 1)]


def test_fold_states_survive_a_checkpoint_and_any_split(log):
    """Pure: the accumulators go through msgpack (as in a --resume manifest) between chunks,
    and any way of cutting the records gives the same result."""
    import msgspec
    from dataflow.records import RecordFormat

    records = Path(log).read_bytes().split(b"\n")[:3000]
    fmt = RecordFormat(kind="lines")
    rng = random.Random(2)
    for make in (lambda: Sum(10, by=9), lambda: Mean(10), lambda: Min(10), lambda: Max(10),
                 lambda: Top(1, k=5), lambda: Top(7, k=3, capacity=50),
                 lambda: Histogram(10, width=5000), lambda: Histogram(10, bins=[0, 10, 10**9])):
        results = []
        for cuts in ([], sorted(rng.sample(range(1, len(records)), 40))):
            stage = make()
            stage.bind(fmt)
            acc = msgspec.msgpack.decode(msgspec.msgpack.encode(stage.initial()))
            for a, b in zip([0, *cuts], [*cuts, len(records)]):
                summary = msgspec.msgpack.decode(msgspec.msgpack.encode(
                    stage.summarise(records[a:b])))
                acc = stage.fold(acc, summary)
                acc = msgspec.msgpack.decode(msgspec.msgpack.encode(acc))
            results.append(stage.result(acc))
        if results[0].get("approximate"):
            continue    # past capacity: bounded, not chunking-independent (documented)
        assert results[0] == results[1], make().name


# ---------------------------------------------------------------------------- report
def temps(directory: Path) -> list[str]:
    return [n for n in os.listdir(directory) if n.endswith(".dataflow-tmp")]


def test_report_passes_the_data_through_and_writes_the_result_atomically(tmp_path, log,
                                                                        csv_file):
    require_tool("cmp")
    report = tmp_path / "count.json"
    out = tmp_path / "out.gz"
    stage = Count(report=str(report))
    assert stage.frames_output() is False and Count().frames_output() is True
    stats = pipeline(FileSource(log), stage, dataflow.Gzip(), FileSink(str(out)), workers=2,
                     memory_limit=MEM, chunk_size="64KiB")
    (tmp_path / "out").write_bytes(gzip.decompress(out.read_bytes()))
    subprocess.run(["cmp", log, str(tmp_path / "out")], check=True)
    result = stats.results["0:count"]
    assert result == {"records": int(sh(f"wc -l < {log}")), "bytes": os.path.getsize(log)}
    assert json.loads(report.read_bytes()) == result   # written by the engine at the end
    assert report.read_bytes().count(b"\n") == 1
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(report.stat().st_mode) == 0o666 & ~umask
    assert temps(tmp_path) == []
    # CSV: the header and the quoting come out exactly as they went in, after a record stage
    # too (its records are encoded once, as without the fold)
    for i, (workers, chunk) in enumerate(VARIANTS):
        out = tmp_path / f"table{i}.csv"
        stats = pipeline(FileSource(csv_file, split="csv"), Top("city", report=str(report)),
                         FileSink(str(out)), workers=workers, chunk_size=chunk,
                         max_record_size="4KiB", memory_limit=MEM)
        subprocess.run(["cmp", csv_file, str(out)], check=True)
    two = [pipeline(FileSource(csv_file, split="csv"), FirstColumns(3), *extra,
                    FileSink(str(tmp_path / f"first{len(extra)}.csv")), workers=2,
                    memory_limit=MEM) for extra in ([], [Sum("amount", report=str(report))])]
    assert (tmp_path / "first0.csv").read_bytes() == (tmp_path / "first1.csv").read_bytes()
    assert two[1].results["1:sum"] == fold(tmp_path, (csv_file, {"split": "csv"}),
                                           lambda: Sum("amount"), variants=VARIANTS[:1])


def test_a_record_stage_before_a_consuming_fold(tmp_path, csv_file):
    out = tmp_path / "out"
    stats = pipeline(FileSource(csv_file, split="csv"), FirstColumns(3), Top("city", k=3),
                     FileSink(str(out)), workers=2, memory_limit=MEM)
    assert json.loads(out.read_bytes()) == stats.results["1:top"]
    assert stats.results["1:top"]["top"] == fold(
        tmp_path, (csv_file, {"split": "csv"}), lambda: Top("city", k=3),
        variants=VARIANTS[:1])["top"]


def test_no_report_when_the_job_fails(tmp_path, log):
    report = tmp_path / "r.json"
    with pytest.raises(StageError):
        pipeline(FileSource(log), Count(report=str(report)), RaiseOn(3),
                 FileSink(str(tmp_path / "out")), workers=2, memory_limit=MEM,
                 chunk_size="64KiB")
    assert sorted(os.listdir(tmp_path)) == []


def test_write_report_replaces_atomically_or_not_at_all(tmp_path, monkeypatch):
    report = tmp_path / "r.json"
    report.write_text("old\n")
    stage = Sum(1, report=str(report))
    stage.write_report({"sum": 1})
    assert json.loads(report.read_text()) == {"sum": 1}

    def fail(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(SinkError, match="cannot write the report .*r.json.*No space"):
        stage.write_report({"sum": 2})
    assert json.loads(report.read_text()) == {"sum": 1}
    assert temps(tmp_path) == []
    monkeypatch.undo()
    gone = Sum(1, report=str(tmp_path / "missing" / "r.json"))
    with pytest.raises(SinkError, match="cannot write the report"):
        gone.write_report({"sum": 3})


def test_no_report_when_the_output_cannot_be_committed(tmp_path, log, monkeypatch):
    report = tmp_path / "r.json"

    def close(self):
        self.abort()
        raise SinkError("cannot write out: No space left on device (disk full)")
    monkeypatch.setattr(FileSink, "close", close)
    with pytest.raises(SinkError):
        pipeline(FileSource(log), Count(report=str(report)), FileSink(str(tmp_path / "out")),
                 workers=1, memory_limit=MEM)
    assert sorted(os.listdir(tmp_path)) == []


def test_report_in_two_steps_for_the_engine(tmp_path):
    report = tmp_path / "r.json"
    stage = Top(1, report=str(report))
    stage.prepare_report({"top": []})
    assert not report.exists() and len(temps(tmp_path)) == 1
    stage.discard_report()
    assert os.listdir(tmp_path) == []
    stage.prepare_report({"top": [1]})
    stage.commit_report()
    assert json.loads(report.read_bytes()) == {"top": [1]} and temps(tmp_path) == []
    Top(1).write_report({"top": []})   # no report: nothing to do


def test_dataflow_run_writes_the_report(tmp_path, log):
    """With `report:` the data goes on (here to zstd) and the result goes to the report."""
    zstd = require_tool("zstd")
    (tmp_path / "job.yaml").write_text(textwrap.dedent(f"""\
        source: {{file: {log}}}
        stages:
          - sum: {{field: 10, by: 9, report: sums.json}}
          - zstd
        sink: {{file: out.zst}}
        workers: 2
        memory_limit: {MEM}
        """))
    r = run_cli("run", "-q", "--stats", "stats.json", "job.yaml", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    stats = json.loads((tmp_path / "stats.json").read_bytes())
    assert json.loads((tmp_path / "sums.json").read_bytes()) == stats["results"]["0:sum"]
    assert stats["results"]["0:sum"]["count"] == int(awk(f"{NUM10} {{n++}} END {{print n}}", log))
    subprocess.run(f"{zstd} -dc out.zst | cmp - {log}", shell=True, check=True,
                   cwd=str(tmp_path))


# ---------------------------------------------------------------------------- the CLI
def test_dataflow_run_count_writes_the_json_result(tmp_path, log):
    pattern = '" 5[0-9][0-9] '
    (tmp_path / "job.yaml").write_text(textwrap.dedent(f"""\
        source: {{file: {log}}}
        stages:
          - count: {{pattern: '{pattern}'}}
        sink: {{file: counted.json}}
        workers: 2
        memory_limit: {MEM}
        chunk_size: 64KiB
        """))
    r = run_cli("run", "--stats", "stats.json", "job.yaml", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    want = {"records": int(sh(f"wc -l < {log}")), "bytes": os.path.getsize(log),
            "matches": int(sh(f"grep -c -E '{pattern}' {log}"))}
    assert json.loads((tmp_path / "counted.json").read_bytes()) == want
    assert json.loads((tmp_path / "stats.json").read_bytes())["results"] == {"0:count": want}
    assert f"0:count: {json.dumps(want, separators=(',', ':'))}" in r.stderr.decode()


def test_dataflow_run_mean_on_jsonl_prints_json_to_stdout(tmp_path, jsonl_file):
    jq = require_tool("jq")
    (tmp_path / "job.yaml").write_text(textwrap.dedent(f"""\
        source: {{file: {jsonl_file}, split: jsonl}}
        stages:
          - mean: {{field: bytes}}
        workers: 2
        memory_limit: {MEM}
        chunk_size: 16KiB
        """))
    r = run_cli("run", "-q", "job.yaml", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    total = int(sh(f"{jq} -s 'map(.bytes | numbers) | add' {jsonl_file}"))
    n = int(sh(f"{jq} -s 'map(.bytes | numbers) | length' {jsonl_file}"))
    records = int(sh(f"{jq} -c . {jsonl_file} | wc -l"))
    assert got == {"field": "bytes", "mean": total / n, "sum": total, "count": n,
                   "skipped": records - n}


# ---------------------------------------------------------------------------- validation
def job(text: str) -> None:
    load_job("job.yaml", text=text)


@pytest.mark.parametrize("stages,path,message", [
    ("- sum: {field: bytes}", "stages[0].sum(.field)?", "field: lines have no named fields"),
    ("- sum: {field: 0}", "stages[0].sum.field", ">= 1"),
    ("- mean: {field: 10, by: status}", "stages[0].mean(.by)?",
     "by: lines have no named fields"),
    ("- sum: {fields: 10}", "stages[0].sum.fields", "did you mean 'field'"),
    ("- min", "stages[0].min", "missing required key `field`"),
    ("- top: {field: 1, k: 0}", "stages[0].top.k", ">= 1"),
    ("- top: {field: 1, k: 20, capacity: 10}", "stages[0].top.capacity", "at least k (20)"),
    ("- histogram: {field: 1, bins: [5, 1]}", "stages[0].histogram.bins", "must increase"),
    ("- histogram: {field: 1, bins: [5]}", "stages[0].histogram.bins", "at least 2 edges"),
    ("- histogram: {field: 1}", "stages[0].histogram.width", "either bins"),
    ("- histogram: {field: 1, width: -1}", "stages[0].histogram.width", "more than 0"),
    ("- histogram: {field: 1, width: 1, end: 1000000}", "stages[0].histogram.end", "max_bins"),
    ("- count: {pattern: '('}", "stages[0].count.pattern", "invalid regular expression"),
    ("- count: {report: /nonexistent/dir/r.json}", "stages[0].count.report", "does not exist"),
    ("- count\n  - gzip", "stages[0]", "must be the last stage"),
])
def test_bad_options_fail_at_validate_time_with_their_path(stages, path, message):
    with pytest.raises(ConfigError) as e:
        job(f"source: {{file: access.log}}\nstages:\n  {stages}\n")
    # a field checked against the input's format (bind) gets its option in the path when
    # config.py appends an error's `field`, as it does for constructor errors
    assert re.fullmatch(path.replace("[", r"\[").replace("]", r"\]").replace(".", r"\."),
                        e.value.path), str(e.value)
    assert message in str(e.value)
    assert e.value.line == 3


def test_fields_are_checked_against_the_format(tmp_path, csv_file):
    with pytest.raises(ConfigError, match=r"stages.0..sum.field: the CSV has no header"):
        job(f"source: {{file: {csv_file}, split: csv, header: false}}\n"
            f"stages: [sum: {{field: amount}}]\n")
    with pytest.raises(ConfigError, match=r"stages.1..count.pattern: its input has no "
                                          "records"):
        job(f"source: {{file: {csv_file}}}\nstages: [zstd, count: {{pattern: x}}]\n")
    with pytest.raises(ConfigError, match="stages.1..top: .*no records"):
        job(f"source: {{file: {csv_file}}}\nstages: [zstd, top: {{field: 1}}]\n")
    job(f"source: {{file: {csv_file}}}\nstages: [zstd, count]\n")   # bytes only: fine
    # a column the header lacks is found once the header is read, before any worker starts
    with pytest.raises(UsageError, match=r"stages\[0\] \(sum\): field: no column 'amt'"):
        pipeline(FileSource(csv_file, split="csv"), Sum("amt"),
                 FileSink(str(tmp_path / "o")), workers=1, memory_limit=MEM)


def test_validate_on_the_command_line_names_the_option(tmp_path):
    (tmp_path / "job.yaml").write_text("source: {file: access.log}\n"
                                       "stages:\n"
                                       "  - histogram: {field: 10, bins: [0, 10, 5]}\n")
    r = run_cli("validate", "job.yaml", cwd=str(tmp_path))
    assert r.returncode == 2
    assert "job.yaml:3: stages[0].histogram.bins: edges must increase" in r.stderr.decode()
