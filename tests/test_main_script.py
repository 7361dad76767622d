"""The user's main script and spawn: it is re-run in the workers only when a stage lives in it.

Each test runs a real script with `python script.py` in its own directory.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

GUARDLESS = """
    import sys
    from dataflow import FileSink, FileSource, pipeline
    from workers.grep import Grep
    print("script body ran", file=sys.stderr)
    stats = pipeline(FileSource("in.log"), Grep("keep"), FileSink("out.log"), workers=2,
                     chunk_size=4096)
    print("chunks", stats.chunks, file=sys.stderr)
"""

GUARDED = """
    import sys
    from dataflow import FileSink, FileSource, Transform, pipeline

    print("script body ran", file=sys.stderr)

    class Upper(Transform):
        def transform(self, data, chunk):
            return bytes(data).upper()

    if __name__ == "__main__":
        stats = pipeline(FileSource("in.log"), Upper(), FileSink("out.log"), workers=2,
                         chunk_size=4096)
        print("chunks", stats.chunks, file=sys.stderr)
"""


def _run(tmp_path, body: str) -> subprocess.CompletedProcess:
    (tmp_path / "script.py").write_text(textwrap.dedent(body))
    lines = [f"line {i} {'keep' if i % 3 else 'drop'}\n" for i in range(20000)]
    (tmp_path / "in.log").write_text("".join(lines))
    return subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)


def test_a_script_without_the_guard_runs_once(tmp_path):
    """Built-in stages only: the workers do not re-run the script, so no guard is needed
    (with the script re-run, each worker would try to start the job again and fail)."""
    proc = _run(tmp_path, GUARDLESS)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("script body ran") == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    src = (tmp_path / "in.log").read_text().splitlines(keepends=True)
    assert (tmp_path / "out.log").read_text() == "".join(l for l in src if "keep" in l)
    chunks = int(proc.stderr.split("chunks ")[1].split()[0])
    assert chunks > 2      # several chunks: both workers had work


def test_a_transform_defined_in_the_script_reaches_the_workers(tmp_path):
    """A stage named `__main__:Upper`: the workers re-import the script (under its guard)."""
    proc = _run(tmp_path, GUARDED)
    assert proc.returncode == 0, proc.stderr
    # the parent, plus each worker that imported the script to find Upper
    assert proc.stderr.count("script body ran") == 3, proc.stderr
    assert (tmp_path / "out.log").read_text() == (tmp_path / "in.log").read_text().upper()
