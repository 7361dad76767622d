"""Is the process that made a file still alive? Shared by the stale-file sweeps (PITFALLS 2).

A file named after its creator's pid (a /dev/shm segment, a sink's temp file) is stale when
no process has that pid, or when the process that has it now started after the file was last
written: pids get reused, and the real owner existed before it wrote its file. psutil's
start times are rounded, hence one second of slack. Anything we may not inspect counts as
alive: never delete what might be in use.
"""
from __future__ import annotations


def owner_alive(pid: int, since: float) -> bool:
    """Whether process `pid` exists and started no later than `since` (a file's mtime)."""
    import psutil  # here, not at the top: workers import modules that import this one

    if pid <= 0:
        return True  # not a pid we made: not ours to judge
    try:
        return psutil.Process(pid).create_time() <= since + 1
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True
