"""compose(): a reusable chain of transforms, from Python and by name from YAML."""
from __future__ import annotations

import re
import subprocess

import pytest

import dataflow
from dataflow import FileSource, compose, stream
from dataflow.config import load_job
from dataflow.errors import ConfigError, UsageError

from conftest import require_tool, run_cli

JOB = dict(workers=2, memory_limit="256MiB", chunk_size="256KiB")


def expected_error_ips(path: str) -> bytes:
    grep, sed = require_tool("grep"), require_tool("sed")
    hits = subprocess.run([grep, "-E", r'" [45][0-9][0-9] ', path], capture_output=True).stdout
    return subprocess.run([sed, "-E", r"s/^([^ ]+) .*$/\1/"], input=hits,
                          capture_output=True, check=True).stdout


def test_a_chain_runs_its_stages_in_place_and_nests(sample_log):
    chain = compose(dataflow.Grep(r'" [45][0-9][0-9] '), dataflow.Replace(r"^(\S+) .*$", r"\1"))
    assert [s.name for s in chain] == ["grep", "replace"] and len(chain) == 2
    twice = compose(chain, dataflow.Sample(fraction=1.0))
    assert [s.name for s in twice] == ["grep", "replace", "sample"]
    expect = expected_error_ips(sample_log)
    assert b"".join(stream(FileSource(sample_log), chain, **JOB)) == expect
    assert b"".join(stream(FileSource(sample_log), twice, **JOB)) == expect   # reused


def test_compose_refuses_what_is_not_a_transform():
    with pytest.raises(TypeError, match="argument 1"):
        compose(dataflow.Grep("x"), "gzip")
    with pytest.raises(TypeError, match="at least one"):
        compose()


def test_a_chain_is_not_a_sink_and_placement_rules_see_through_it(tmp_path):
    with pytest.raises(UsageError, match="must be a Writable"):
        dataflow.pipeline(dataflow.GenerateSource(1000), compose(dataflow.Grep("x")), **JOB)
    with pytest.raises(UsageError, match="must be the last stage"):
        dataflow.pipeline(dataflow.GenerateSource(1000), compose(dataflow.Gzip()),
                          dataflow.Grep("x"), dataflow.NullSink(), **JOB)


def test_yaml_compose_by_name(tmp_path, sample_log, monkeypatch):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    job = tmp_path / "job.yaml"
    out = tmp_path / "out.txt"
    job.write_text(f"source: {{file: {sample_log}}}\n"
                   f"stages: [{{compose: 'chains:errors_only'}}]\n"
                   f"sink: {{file: {out}}}\nworkers: 2\nmemory_limit: 256MiB\n")
    assert [s.name for s in load_job(str(job)).stages] == ["grep", "replace"]
    r = run_cli("run", str(job), "--quiet", cwd=str(__import__("pathlib").Path(__file__).parent))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == expected_error_ips(sample_log)


@pytest.mark.parametrize("ref,message", [
    ("chains:not_a_chain", "chains:not_a_chain is of type dict, not a chain"),
    ("chains:missing", "AttributeError: module 'chains' has no attribute 'missing'"),
    ("no_such_module:x", "ModuleNotFoundError"),
])
def test_yaml_compose_errors_name_the_stage(ref, message, monkeypatch):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    text = f"source: {{generate: {{size: 1000}}}}\nstages:\n  - grep: {{pattern: x}}\n" \
           f"  - compose: '{ref}'\n"
    with pytest.raises(ConfigError) as info:
        load_job("job.yaml", text=text)
    assert str(info.value).startswith("job.yaml:4: stages[1].compose: ")
    assert message in str(info.value)


def test_yaml_compose_placement_errors_point_at_the_compose_entry(monkeypatch):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    text = "source: {generate: {size: 1000}}\nstages:\n  - gzip\n  - compose: 'chains:as_list'\n"
    with pytest.raises(ConfigError, match=re.escape("job.yaml:3: stages[0]: gzip writes")):
        load_job("job.yaml", text=text)
