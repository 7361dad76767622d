"""The shared-memory arena: one segment of fixed-size slots per job. The only module that
touches /dev/shm.

Rules (PITFALLS 1-3, 8):
- The coordinator creates and unlinks the segment; workers only map it, by path, without the
  multiprocessing resource tracker (which on 3.11 would claim and unlink it).
- Names are `dataflow-<pid>-<random hex>`, created O_EXCL with mode 0600; `remove_stale()`
  deletes segments whose creating process is gone (pid dead, or reused by a later process).
- Space is reserved with posix_fallocate, so a full /dev/shm is a clean error, never SIGBUS.
- Views into the arena are scoped: `view()` callers release them; close() tolerates none left.
"""
from __future__ import annotations

import mmap
import os

from .errors import ResourceError
from .owners import owner_alive
from .sizes import format_size

SHM_DIR = "/dev/shm"
PREFIX = "dataflow-"


def _path(name: str) -> str:
    return os.path.join(SHM_DIR, name)


class Arena:
    """`slots` slots of `slot_size` bytes. Create with `Arena.create`, attach with `Arena.attach`."""

    def __init__(self, name: str, fd: int, slots: int, slot_size: int, owner: bool):
        self.name = name
        self.slots = slots
        self.slot_size = slot_size
        self.owner = owner
        self._fd = fd
        self.map = mmap.mmap(fd, slots * slot_size) if slots else None
        self.buf = memoryview(self.map) if self.map is not None else memoryview(b"")

    @classmethod
    def create(cls, slots: int, slot_size: int) -> "Arena":
        size = slots * slot_size
        remove_stale()
        st = os.statvfs(SHM_DIR)
        free = st.f_bavail * st.f_frsize
        if size > free:
            raise ResourceError(
                f"{SHM_DIR} has {format_size(free)} free but the job needs {format_size(size)} "
                f"of shared memory; lower memory_limit, or give the container more "
                f"(docker run --shm-size=...)")
        # os.urandom, not secrets: the same bytes, without importing hashlib and OpenSSL in
        # every process (4 ms of each worker's start)
        name = f"{PREFIX}{os.getpid()}-{os.urandom(8).hex()}"
        fd = os.open(_path(name), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            if size:
                os.posix_fallocate(fd, 0, size)
            return cls(name, fd, slots, slot_size, owner=True)
        except BaseException as e:   # a signal's exception too (the fallocate takes 10-20 ms):
            os.close(fd)             # until it is returned, the segment is nobody else's
            os.unlink(_path(name))
            if isinstance(e, OSError):
                raise ResourceError(f"cannot reserve {format_size(size)} in {SHM_DIR}: "
                                    f"{e.strerror}; give the container more shared memory "
                                    f"(docker run --shm-size=...)") from None
            raise

    @classmethod
    def attach(cls, name: str, slots: int, slot_size: int) -> "Arena":
        fd = os.open(_path(name), os.O_RDWR | os.O_NOFOLLOW)
        return cls(name, fd, slots, slot_size, owner=False)

    def view(self, slot: int, length: int | None = None, start: int = 0) -> memoryview:
        base = slot * self.slot_size
        end = base + (self.slot_size if length is None else start + length)
        return self.buf[base + start:end]

    def offset(self, slot: int) -> int:
        return slot * self.slot_size

    def close(self) -> None:
        try:
            self.buf.release()
            if self.map is not None:
                try:
                    self.map.close()
                except BufferError:
                    pass  # a view escaped; the mapping goes with the process
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self.owner:
                try:
                    os.unlink(_path(self.name))
                except FileNotFoundError:
                    pass
                self.owner = False


def _owner_alive(name: str) -> bool:
    try:
        pid = int(name[len(PREFIX):].split("-", 1)[0])
    except ValueError:
        return True  # not ours to judge
    try:
        return owner_alive(pid, os.stat(_path(name)).st_mtime)
    except FileNotFoundError:
        return False


def remove_stale() -> list[str]:
    """Unlink segments left by dead dataflow processes; return their names."""
    removed = []
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return removed
    for name in names:
        if name.startswith(PREFIX) and not _owner_alive(name):
            try:
                os.unlink(_path(name))
                removed.append(name)
            except FileNotFoundError:
                pass
    return removed
