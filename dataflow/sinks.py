"""Writables: a file (temp + fsync + rename), standard output, and null (discard).

Rules (PITFALLS 10):
- A file sink writes to a temp file created O_EXCL next to the target, fsyncs it, gives it mode
  0o666 & ~umask, renames it over the target and fsyncs the directory. Until then the target
  is untouched; on abort the temp file is removed. A failed fsync is not retried.
  `sync=False` skips the fsyncs (as gzip and pigz do by default): still atomic for readers,
  not durable across a power cut; faster where the disk is slower than the job.
- Writing to a closed pipe (`| head`) raises `BrokenPipe`, which the CLI exits on quietly.
"""
from __future__ import annotations

import ctypes
import errno
import os
import tempfile

from .errors import SinkError


WRITEBACK_EVERY = 32 << 20  # start the disk writing every 32 MiB so the final fsync is short
_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range():
    """Linux's sync_file_range(2) via libc, or None: it starts writeback without waiting."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return fn


_start_writeback = _sync_file_range()


class BrokenPipe(SinkError):
    """The reader of our output went away (`dataflow ... | head`)."""


def _write_all(fd: int, data: memoryview, what: str) -> int:
    total = len(data)
    while len(data):
        try:
            n = os.write(fd, data)
        except BrokenPipeError:
            raise BrokenPipe(f"{what}: the reading end was closed") from None
        except OSError as e:
            hint = {errno.ENOSPC: " (disk full)", errno.EFBIG: " (file too large)",
                    errno.EDQUOT: " (quota exceeded)"}.get(e.errno, "")
            raise SinkError(f"cannot write {what}: {e.strerror}{hint}") from None
        data = data[n:]
    return total


class FileSink:
    """Write to `path` atomically: readers see the old file or the complete new one."""

    def __init__(self, path: str | os.PathLike, *, sync: bool = True):
        self.path = os.fspath(path)
        self.sync = sync
        self.tmp: str | None = None
        self.fd = -1
        self.bytes = 0
        self._synced = 0  # bytes whose writeback has been started

    def check(self, input_ids: list[tuple[int, int]]) -> None:
        """Refuse to start when the output is one of the inputs or cannot be created."""
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise SinkError(f"cannot write {self.path}: directory {directory} does not exist")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise SinkError(f"cannot write {self.path}: directory {directory} is not writable")
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) in input_ids:
            raise SinkError(f"the output {self.path} is also an input; write elsewhere")
        if os.path.isdir(self.path):
            raise SinkError(f"cannot write {self.path}: it is a directory")

    def open(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        base = os.path.basename(self.path)
        try:
            self.fd, self.tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".dataflow-tmp",
                                                 dir=directory)
        except OSError as e:
            raise SinkError(f"cannot create a temp file in {directory}: {e.strerror}") from None

    def write(self, data: memoryview) -> None:
        self.bytes += _write_all(self.fd, data, self.path)
        if (self.sync and _start_writeback is not None
                and self.bytes - self._synced >= WRITEBACK_EVERY):
            # overlap the disk writes with the job; errors surface at the final fsync
            _start_writeback(self.fd, self._synced, self.bytes - self._synced,
                             _SYNC_FILE_RANGE_WRITE)
            self._synced = self.bytes

    def close(self) -> None:
        assert self.tmp is not None
        try:
            if self.sync:
                os.fsync(self.fd)
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(self.fd, 0o666 & ~umask)
            os.close(self.fd)
            self.fd = -1
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.abort()
            raise SinkError(f"cannot finish {self.path}: {e.strerror}") from None
        self.tmp = None
        if not self.sync:
            return
        dfd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass
            self.tmp = None


class StdoutSink:
    """Standard output (fd 1), written directly, unbuffered."""

    def __init__(self, fd: int = 1):
        self.fd = fd
        self.bytes = 0

    def check(self, input_ids: list[tuple[int, int]]) -> None:
        try:
            st = os.fstat(self.fd)
        except OSError:
            return
        import stat
        if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) in input_ids:
            raise SinkError("standard output is also an input; write elsewhere")

    def open(self) -> None:
        pass

    def write(self, data: memoryview) -> None:
        self.bytes += _write_all(self.fd, data, "standard output")

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class NullSink:
    """Discard everything (benchmarks, folds-only jobs)."""

    def __init__(self) -> None:
        self.bytes = 0

    def check(self, input_ids: list[tuple[int, int]]) -> None:
        pass

    def open(self) -> None:
        pass

    def write(self, data: memoryview) -> None:
        self.bytes += len(data)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass
