"""Worker processes started as multiprocessing's spawn starts them, without its resource tracker.

Rules:
- spawn starts a resource tracker (a third interpreter: 20-30 ms of CPU, taken while the
  workers start on the same cores) and hands each child its descriptor, for the semaphores
  and shared memory the child might create. Our workers create neither: the arena is created
  and unlinked by the coordinator alone and mapped by path (shm.py). So the child gets no
  tracker descriptor; if user code in it does create such a resource, multiprocessing starts
  a tracker for that process then, as for any process.
- Everything else is spawn's own: the command line, the preparation data and the pickled
  Process object written to the child over a pipe, the sentinel (the read end of a pipe whose
  write end only the child holds), the finalizer that closes our ends.
- Other start methods (forkserver) keep multiprocessing's classes, tracker included.
"""
from __future__ import annotations

import io
import multiprocessing
import os
from typing import Any

from multiprocessing import context, popen_spawn_posix, reduction, spawn, util


class _Popen(popen_spawn_posix.Popen):
    def _launch(self, process_obj: Any) -> None:
        start_data = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            reduction.dump(spawn.get_preparation_data(process_obj._name), start_data)
            reduction.dump(process_obj, start_data)
        finally:
            context.set_spawning_popen(None)
        ours: list[int] = []       # closed by the finalizer
        theirs: list[int] = []     # the child's ends, closed here once it has them
        try:
            sentinel, child_end = os.pipe()     # EOF on `sentinel` once the child is gone
            ours.append(sentinel)
            theirs.append(child_end)
            data_in, data_out = os.pipe()       # the child reads its start data from data_in
            ours.append(data_out)
            theirs.append(data_in)
            self._fds.extend(theirs)
            command = spawn.get_command_line(pipe_handle=data_in)
            self.pid = util.spawnv_passfds(spawn.get_executable(), command, self._fds)
            self.sentinel = sentinel
            with open(data_out, "wb", closefd=False) as f:
                f.write(start_data.getbuffer())
        finally:
            self.finalizer = util.Finalize(self, util.close_fds, ours)
            for fd in theirs:
                os.close(fd)


class SpawnWithoutTracker(context.SpawnProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _Popen(process_obj)


def process_class(start_method: str) -> Any:
    """The Process class that starts workers by `start_method`."""
    if start_method == "spawn":
        return SpawnWithoutTracker
    return multiprocessing.get_context(start_method).Process
