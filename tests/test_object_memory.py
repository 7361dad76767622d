"""The Python objects a chunk becomes (its lines, records and their fields): each stage says how
much (`Transform.object_memory`), each worker keeps that much of pymalloc's memory mapped from
chunk to chunk, and the memory plan counts it (plan.object_reserve)."""
from __future__ import annotations

import subprocess
import sys

import pytest

import dataflow
from dataflow.api import stage_memory
from dataflow.plan import object_reserve
from dataflow.records import OBJECTS, RecordFormat

from conftest import run_cli

MiB = 1 << 20

# Splits a chunk of 40,000 lines into bytes objects and slices each, 20 times over, as a
# per-line stage does; prints the page faults of those 20 rounds.
CHURN = """
import resource, sys
from dataflow.worker import _reserve_object_memory
if sys.argv[1] == "reserve":
    _reserve_object_memory(16 << 20)
chunk = b"".join(b"%099d\\n" % i for i in range(40000))
def work():
    lines = chunk.split(b"\\n")
    return len([line[:50] for line in lines])
work()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    work()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, check=True)
    return int(out.stdout)


def test_the_reserve_keeps_a_chunks_objects_from_faulting_in_again():
    without, with_reserve = faults("none"), faults("reserve")
    assert without > 20 * 1000          # ~6 MiB of objects per round, mapped anew each time
    assert with_reserve < without // 10


def bound(stage, fmt):
    stage.bind(fmt)
    return stage


@pytest.mark.parametrize("stage, per_byte", [
    (dataflow.PythonFunction("os.path:basename", mode="line"), OBJECTS["lines"]),
    (dataflow.PythonFunction("os.path:basename", mode="chunk"), 0),
    (bound(dataflow.PythonFunction("os.path:basename", mode="record"),
           RecordFormat(kind="jsonl")), OBJECTS["jsonl"]),
    (bound(dataflow.Select(["a"]), RecordFormat(kind="csv", header=True, columns=("a",))),
     OBJECTS["csv"]),
    (dataflow.Select(["a"]), max(OBJECTS.values())),      # format not known yet: the most
    (dataflow.Gzip(6), 0),
    (dataflow.Grep("x"), 0),
])
def test_stages_declare_the_objects_a_chunk_becomes(stage, per_byte):
    assert stage.object_memory(4 * MiB) == per_byte * 4 * MiB


def test_the_plan_counts_the_largest_object_reserve_once_beside_what_stages_hold():
    select = bound(dataflow.Select(["a"]), RecordFormat(kind="jsonl"))
    where = bound(dataflow.Where({"a": {"gte": 1}}), RecordFormat(kind="jsonl"))
    xz = dataflow.Xz(6)
    stages = [where, select, xz]
    assert object_reserve(stages, 4 * MiB) == OBJECTS["jsonl"] * 4 * MiB
    assert stage_memory(stages, 4 * MiB) == xz.worker_memory(4 * MiB) + 12 * MiB


def test_explain_shows_the_object_reserve(tmp_path):
    (tmp_path / "in.jsonl").write_bytes(b'{"status": 200}\n' * 100)
    job = tmp_path / "job.yaml"
    job.write_text(f"source: {{file: {tmp_path / 'in.jsonl'}, split: jsonl}}\n"
                   "stages:\n  - select: {fields: [status]}\nsink: {null: true}\n"
                   "chunk_size: 1MiB\nworkers: 2\n")
    r = run_cli("run", str(job), "--explain")
    assert r.returncode == 0, r.stderr
    assert b"stages' own memory        6.0 MiB   2 workers x 3.0 MiB" in r.stdout


def test_a_python_api_job_plans_for_the_records_of_its_source(tmp_path):
    """pipeline()/stream() plan before the run reads a CSV header: the stages are bound to the
    source's kind of records first, as a job file's are, so a JSON lines job reserves the
    objects of JSON lines (OBJECTS['jsonl']), not the most any format needs."""
    from dataflow.api import _run
    from dataflow.records import MOST_OBJECTS

    src = tmp_path / "in.jsonl"
    src.write_text('{"status": 500, "path": "/"}\n')
    run = _run(dataflow.FileSource(str(src), split="jsonl"), (dataflow.Select(["path"]),),
               workers=2, memory_limit="256MiB", chunk_size="4MiB", ordered=True,
               max_record_size=None, progress=None, start_method="spawn")
    capacity = run.plan.capacity
    assert OBJECTS["jsonl"] < MOST_OBJECTS
    assert run.plan.stage_memory == OBJECTS["jsonl"] * capacity
