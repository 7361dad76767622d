"""Stages declare what they hold per worker (`Transform.worker_memory`); the memory plan sets
it aside and the watchdog allows it (issue 5.3: the plan used to under-count xz's encoder,
so the watchdog had to recycle workers to stay under the limit)."""
from __future__ import annotations

import lzma

import pytest
import zstandard

import dataflow
from dataflow.errors import ResourceError
from dataflow.plan import make_plan
from dataflow.sizes import parse_size

from conftest import run_cli
from holding import Hold

MiB = 1 << 20


def test_the_plan_sets_declared_memory_aside_for_each_worker():
    bare = make_plan(workers=2, chunk_size=4 * MiB, memory_limit=512 * MiB)
    held = make_plan(workers=2, chunk_size=4 * MiB, memory_limit=512 * MiB,
                     stage_memory=lambda capacity: 100 * MiB)
    assert held.stage_memory == 100 * MiB
    assert held.slots == bare.slots and held.estimate() == bare.estimate() + 200 * MiB
    assert "stages' own memory      200.0 MiB   2 workers x 100.0 MiB" in held.explain()
    with pytest.raises(ResourceError, match=r"and 300.0 MiB per worker that the stages declare"):
        make_plan(workers=2, chunk_size=4 * MiB, memory_limit=512 * MiB,
                  stage_memory=lambda capacity: 300 * MiB)


def test_smaller_chunks_are_tried_when_what_a_stage_holds_depends_on_them():
    plan = make_plan(workers=2, chunk_size=4 * MiB, memory_limit=200 * MiB,
                     stage_memory=lambda capacity: 16 * capacity)
    assert plan.slot_size < 4 * MiB and plan.stage_memory == 16 * plan.slot_size
    assert plan.estimate() <= 200 * MiB


@pytest.mark.parametrize("level", range(10))
def test_xz_declares_its_encoder_up_to_the_xz_manual_figures(level):
    xz = dataflow.Xz(level)
    table = [3, 9, 17, 32, 48, 94, 94, 186, 370, 674][level] * MiB
    sizes = [MiB, 4 * MiB, 16 * MiB, 64 * MiB, 256 * MiB]
    got = [xz.worker_memory(s) for s in sizes]
    assert got == sorted(got) and got[-1] == table and 0 < got[0] <= table


@pytest.mark.parametrize("level", [1, 3, 19])
def test_zstd_declares_what_the_library_estimates(level):
    want = zstandard.ZstdCompressionParameters.from_level(
        level, source_size=4 * MiB).estimated_compression_context_size()
    assert dataflow.Zstd(level).worker_memory(4 * MiB) == want


def test_xz_measured_below_what_it_declares():
    """A 4 MiB chunk at -6 (the default): liblzma's touched memory stays under the bound."""
    import psutil

    data = bytes(range(256)) * (4 * MiB // 256)
    before = psutil.Process().memory_full_info().uss
    c = lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=6)
    c.compress(data)
    during = psutil.Process().memory_full_info().uss
    c.flush()
    assert during - before <= dataflow.Xz(6).worker_memory(4 * MiB)


def test_python_stage_memory_option(tmp_path):
    stage = dataflow.PythonFunction("os.path:basename", mode="line", memory="64MiB")
    assert stage.worker_memory(MiB) == 64 * MiB
    job = tmp_path / "job.yaml"
    job.write_text("source: {generate: {size: 1MiB}}\nstages:\n"
                   "  - python: {callable: 'os.path:basename', mode: line, memory: 64MiB}\n"
                   "sink: {null: true}\nmemory_limit: 400MiB\n")
    r = run_cli("run", str(job), "--explain")
    assert r.returncode == 0, r.stderr
    # 64 MiB declared, and the chunk's lines (2 x 4 MiB), kept mapped
    assert b"stages' own memory      144.0 MiB   2 workers x 72.0 MiB" in r.stdout
    r = run_cli("run", str(job), "--set", "stages[0].python.memory=lots")
    assert r.returncode == 2
    assert b"stages[0].python.memory: expected a size" in r.stderr


def test_a_stage_holding_what_it_declares_stays_under_the_limit_without_recycling(tmp_path):
    """56 MiB held per worker, 8 MiB chunks, 280 MiB: undeclared, the plan would fill the arena
    (14 slots) and the watchdog would have to pause reading near the limit; declared, the
    arena is smaller and nothing has to act."""
    limit = parse_size("280MiB")
    stats = dataflow.pipeline(dataflow.GenerateSource(128 * MiB, seed=3), Hold(56),
                              dataflow.NullSink(), workers=2, memory_limit=limit,
                              chunk_size="8MiB")
    assert stats.slots < 14
    # the job's peak: the calling process (pytest, which has run other tests) is the
    # coordinator, and what it held before the job is the host's, not the job's
    job_peak = stats.peak_memory - stats.host_memory
    shown = (stats.recycled, stats.paused_seconds, stats.memory_kills, stats.retries,
             stats.peak_memory, stats.host_memory, limit)
    assert stats.recycled == 0 and stats.paused_seconds == 0, shown
    assert 0 < job_peak <= limit, shown
