"""Issue 5.9: a file lying next to the job cannot shadow the standard library, in the
coordinator, in the workers or in multiprocessing's resource tracker; user code still comes
from the current directory, by the `module:function` the job names."""
from __future__ import annotations

import os
import subprocess
import sysconfig

import pytest

SHADOWED = ["pickle", "json", "re", "csv", "struct", "random", "base64", "enum", "copyreg",
            "signal", "selectors", "tempfile", "msgspec", "psutil", "yaml"]


def _console_script() -> str:
    path = os.path.join(sysconfig.get_path("scripts"), "dataflow")
    if not os.path.exists(path):
        pytest.skip("the dataflow console script is not installed (pip install -e .)")
    return path


def test_modules_in_the_current_directory_never_run(tmp_path):
    for name in SHADOWED:
        (tmp_path / f"{name}.py").write_text(
            f"open({str(tmp_path / ('RAN-' + name))!r}, 'w').close()\n"
            f"raise SystemExit('the shadowing {name}.py ran')\n")
    (tmp_path / "fns.py").write_text("import json\n\ndef tag(line):\n"
                                     "    return json.dumps(line.decode())\n")
    (tmp_path / "in.txt").write_bytes(b"a\nb\n" * 1000)
    (tmp_path / "job.yaml").write_text(
        "source: {file: in.txt}\n"
        "stages:\n"
        "  - python: {callable: 'fns:tag', mode: line}\n"
        "  - exec: {argv: [sh, -c, 'cat; echo \"safe=${PYTHONSAFEPATH-unset}\"']}\n"
        "sink: {file: out.txt}\nworkers: 2\nchunk_size: 4KiB\n")
    r = subprocess.run([_console_script(), "run", "job.yaml", "--quiet"], cwd=tmp_path,
                       capture_output=True, timeout=60, start_new_session=True)
    assert r.returncode == 0, r.stderr.decode()
    assert sorted(p.name for p in tmp_path.glob("RAN-*")) == []
    out = (tmp_path / "out.txt").read_bytes().split(b"\n")
    assert out[:2] == [b'"a"', b'"b"']              # fns.py came from the current directory
    # the commands a worker runs see the environment as it was (no PYTHONSAFEPATH of ours)
    assert set(line for line in out if line.startswith(b"safe=")) == {b"safe=unset"}


def test_a_command_started_while_another_job_starts_workers_sees_no_pythonsafepath(tmp_path):
    """A tee's branch starts its workers (with PYTHONSAFEPATH set around them) while the tee's
    command sink starts, in another thread: the command must get the environment as it was."""
    import dataflow

    src = tmp_path / "in.log"
    src.write_bytes(b"line\n" * 1000)
    seen = []
    for i in range(5):
        out = tmp_path / f"env{i}"
        dataflow.pipeline(
            dataflow.FileSource(str(src)),
            dataflow.Tee(dataflow.Branch(dataflow.Grep("line"), dataflow.NullSink(), workers=2),
                         dataflow.CommandSink(["sh", "-c", f"cat >/dev/null; env > {out}"])),
            workers=2, memory_limit="512MiB")
        seen.append(b"PYTHONSAFEPATH" in out.read_bytes())
    assert seen == [False] * 5
    assert "PYTHONSAFEPATH" not in os.environ
