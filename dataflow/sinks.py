"""Writables: a file (temp + fsync + rename), standard output, and null (discard).

Rules (PITFALLS 10):
- A file sink writes to a temp file created O_EXCL | O_NOFOLLOW next to the target, fsyncs it,
  gives it mode 0o666 & ~umask, renames it over the target and fsyncs the directory. Until then
  the target is untouched; on abort (any error, a signal) the temp file is removed. A failed
  fsync is not retried. `sync=False` skips the fsyncs (as gzip and pigz do by default): still
  atomic for readers, not durable across a power cut; faster where the disk is slower than
  the job.
- Temp files are named `.<target>.<pid>.<random hex>.dataflow-tmp`: the pid says whose it is.
  `open()` removes the target's temp files whose owner is dead (a killed run), and
  `remove_stale_temps(dir)` (`dataflow cleanup DIR`) all of a directory's. Only regular files
  are removed; nothing is followed.
- Symlinks are never written through: a symlink at the target is replaced by the new file (the
  rename replaces the link, its target is untouched), one at a temp name is skipped (O_EXCL).
- `check()` runs before any worker starts: the target's directory must exist and be writable,
  the target must not be a directory, a device or FIFO (it would be replaced by a plain file)
  or one of the inputs, and with `overwrite=False` it must not exist (then the final rename
  also refuses to replace a file that appeared meanwhile).
- Write errors name the file and the cause: disk full (ENOSPC), file too large (EFBIG: the
  filesystem's limit or `ulimit -f`), quota exceeded (EDQUOT).
- Writing to a closed pipe (`| head`) raises `BrokenPipe`, which the CLI exits on quietly.
- Drop-behind: the file sink starts the disk writing of every WRITEBACK_EVERY bytes as they
  are written, and once a range is DROP_LAG bytes behind, waits for its writing to finish
  (at once, unless the disk is that far behind; with `sync` only, and an error there is the
  sink's: the wait takes it from the file, so the final fsync would not see it) and drops it
  from the page cache (without `sync`, only what is on disk by then). A job's
  output then holds about DROP_LAG of page cache however large it grows, instead of growing
  the cache by its whole size: evicting what other programs had cached, counting against a
  cgroup's memory limit, stalling in the kernel's dirty-page throttling. The final fsync finds
  little left to write. `keep_cache=True` keeps what is written in the cache (a reader that
  comes right after reads memory, not disk); with `sync=False` as well, nothing is written
  before the kernel decides to.
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
import stat

from .errors import SinkError
from .owners import owner_alive


WRITEBACK_EVERY = 32 << 20  # start the disk writing every 32 MiB so the final fsync is short
DROP_LAG = 64 << 20         # drop-behind: written bytes kept in the page cache (see above)
_SYNC_FILE_RANGE_WRITE = 2
_SYNC_FILE_RANGE_WAIT = 1 | 2 | 4   # wait for writing under way, write, wait for that
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
TEMP_SUFFIX = ".dataflow-tmp"
_TEMP_NAME = re.compile(r"\.(?P<stem>.+)\.(?P<pid>[0-9]+)\.[0-9a-f]+" + re.escape(TEMP_SUFFIX),
                        re.DOTALL)
_STEM_MAX = 200  # bytes of the target's name kept in a temp name (NAME_MAX is 255)


def _random_tag() -> str:
    """16 random hex digits for a temp name (os.urandom: the `secrets` module would import
    hashlib, and with it OpenSSL, into every run)."""
    return os.urandom(8).hex()


def _libc_function(name: str, argtypes: list):
    """A libc function via ctypes (errno kept), or None."""
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = argtypes
    return fn


# Linux's sync_file_range(2): start writeback (or with _WAIT, finish it)
_sync_range = _libc_function("sync_file_range", [ctypes.c_int, ctypes.c_int64,
                                                 ctypes.c_int64, ctypes.c_uint])
# renameat2(2) with RENAME_NOREPLACE: rename unless the target exists, atomically
_renameat2 = _libc_function("renameat2", [ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                                          ctypes.c_char_p, ctypes.c_uint])


class BrokenPipe(SinkError):
    """The reader of our output went away (`dataflow ... | head`)."""


def ends_job_quietly(e: BaseException) -> bool:
    """The sink's reader finished early and said so properly (a `head` command that exited
    0: procio.SinkClosedEarly): the job ends there, like `yes | head` in a shell."""
    return bool(getattr(e, "ends_job_quietly", False))


class OutputExistsError(SinkError):
    """The output exists and the sink was told not to replace it. Nothing was started."""

    exit_code = 2

    def __init__(self, path: str):
        self.path = path
        super().__init__(f"{path} already exists; not replaced (overwrite=False)")


_HINTS = {errno.ENOSPC: " (disk full)",
          errno.EFBIG: " (the filesystem's maximum file size, or the file-size limit: ulimit -f)",
          errno.EDQUOT: " (quota exceeded)"}


def _reason(e: OSError) -> str:
    return f"{e.strerror or e}{_HINTS.get(e.errno, '')}"


def _write_all(fd: int, data: memoryview, what: str) -> int:
    total = len(data)
    while len(data):
        try:
            n = os.write(fd, data)
        except BrokenPipeError:
            raise BrokenPipe(f"{what}: the reading end was closed") from None
        except OSError as e:
            raise SinkError(f"cannot write {what}: {_reason(e)}") from None
        data = data[n:]
    return total


def _temp_stem(base: str) -> str:
    """The part of a temp file's name that names its target (shortened to fit NAME_MAX)."""
    raw = os.fsencode(base)
    return base if len(raw) <= _STEM_MAX else os.fsdecode(raw[:_STEM_MAX])


def temp_path(path: str) -> str:
    """A fresh temp file name beside `path` that the sweeps recognise (its pid marks it):
    `.{name}.{pid}.{random}.dataflow-tmp`."""
    directory, base = os.path.split(path)
    return os.path.join(directory, f".{_temp_stem(base)}.{os.getpid()}."
                                   f"{_random_tag()}{TEMP_SUFFIX}")


def remove_stale_temps(directory: str, base: str | None = None) -> list[str]:
    """Remove this directory's dataflow temp files (only those of target `base`, if given)
    whose owner is dead; return their paths. Only regular files are removed; errors (an
    unreadable directory, a file removed meanwhile) are skipped: this is housekeeping."""
    stem = None if base is None else _temp_stem(base)
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_NAME.fullmatch(entry.name)
        if m is None or (stem is not None and m.group("stem") != stem):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or owner_alive(int(m.group("pid")), st.st_mtime):
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(entry.path)
    return removed


def _rename_noreplace(src: str, dst: str) -> None:
    """Rename `src` to `dst` unless `dst` exists (FileExistsError), atomically where the
    kernel and filesystem allow (renameat2), else by link + unlink."""
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
                      _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), dst)
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(dst):  # no hard links here: check, then rename
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst) from None
        os.rename(src, dst)
        return
    os.unlink(src)


class FileSink:
    """Write to `path` atomically: readers see the old file or the complete new one.

    `overwrite=False` refuses an existing `path` (in `check()`, before the job starts, and
    again at the final rename). The Python API's default replaces it, like `open(path, "wb")`;
    `dataflow run` passes `overwrite=False` unless given `--force`.
    """

    def __init__(self, path: str | os.PathLike, *, sync: bool = True, overwrite: bool = True,
                 keep_cache: bool = False):
        self.path = os.fspath(path)
        self.sync = sync
        self.overwrite = overwrite
        self.keep_cache = keep_cache
        self.tmp: str | None = None
        self.fd = -1
        self.bytes = 0
        self._synced = 0   # bytes whose writeback has been started
        self._dropped = 0  # bytes written to disk and dropped from the page cache
        # writeback is started early when the final fsync needs it, or to drop behind
        self._write_back = _sync_range is not None and (sync or not keep_cache)

    @property
    def directory(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    def check(self, input_ids: list[tuple[int, int]]) -> None:
        """Refuse to start when the output cannot be written or must not be replaced."""
        directory = self.directory
        if not os.path.isdir(directory):
            raise SinkError(f"cannot write {self.path}: directory {directory} does not exist")
        try:
            st = os.lstat(self.path)  # a symlink is replaced, never followed
        except FileNotFoundError:
            st = None
        except OSError as e:
            raise SinkError(f"cannot write {self.path}: {e.strerror}") from None
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                raise SinkError(f"cannot write {self.path}: it is a directory")
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                # renaming over /dev/null or a FIFO would replace it with a plain file
                raise SinkError(f"cannot write {self.path}: it is not a regular file and the "
                                f"file sink replaces its target; use `sink: {{stdout: true}}` "
                                f"and redirect to it instead")
            if (st.st_dev, st.st_ino) in input_ids:
                raise SinkError(f"the output {self.path} is also an input; write elsewhere")
        # root passes os.access whatever the mode bits; it still fails on a read-only
        # filesystem or an immutable directory, and open() reports what access() cannot see
        if not os.access(directory, os.W_OK | os.X_OK):
            raise SinkError(f"cannot write {self.path}: directory {directory} is not writable")
        if st is not None and not self.overwrite:
            raise OutputExistsError(self.path)

    def open(self, *, sweep: bool = True) -> None:
        directory = self.directory
        base = os.path.basename(self.path)
        if sweep:
            remove_stale_temps(directory, base)
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for _ in range(100):
            tmp = temp_path(os.path.join(directory, base))
            try:
                self.fd = os.open(tmp, flags, 0o600)
            except FileExistsError:
                continue  # taken (or a planted symlink): O_EXCL never follows it; next name
            except OSError as e:
                raise SinkError(f"cannot write {self.path}: cannot create a temp file in "
                                f"{directory}: {_reason(e)}") from None
            self.tmp = tmp
            return
        raise SinkError(f"cannot write {self.path}: no free temp file name in {directory}")

    def adopt(self, temp: str, length: int) -> None:
        """Continue a killed run's temp file (see resume.py): keep its first `length` bytes,
        and take it over under a name with our pid, so no sweep takes it for a dead run's."""
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(temp, flags)
        except OSError as e:
            raise SinkError(f"cannot resume {self.path}: cannot open {temp}: {_reason(e)}") \
                from None
        self.open(sweep=False)  # a fresh name of ours (empty); the old file replaces it
        try:
            os.replace(temp, self.tmp)
            os.close(self.fd)
            self.fd = fd
            os.ftruncate(fd, length)
            os.lseek(fd, length, os.SEEK_SET)
        except OSError as e:
            os.close(fd)
            raise SinkError(f"cannot resume {self.path}: {_reason(e)}") from None
        self.bytes = self._synced = self._dropped = length

    def sync_data(self) -> None:
        """Make the bytes written so far durable (when this sink syncs at all)."""
        if self.sync:
            try:
                os.fdatasync(self.fd)
            except OSError as e:
                raise SinkError(f"cannot write {self.path}: {_reason(e)}") from None

    def write(self, data: memoryview) -> None:
        self.bytes += _write_all(self.fd, data, self.path)
        if self._write_back and self.bytes - self._synced >= WRITEBACK_EVERY:
            # overlap the disk writes with the job
            self._sync_range(self._synced, self.bytes - self._synced, _SYNC_FILE_RANGE_WRITE)
            self._synced = self.bytes
            if not self.keep_cache and self._synced - self._dropped > DROP_LAG:
                self._drop_behind(self._synced - DROP_LAG)

    def _drop_behind(self, end: int) -> None:
        """Drop the bytes before `end` from the page cache. With `sync`, once they are on disk
        (waited for: a write error is this job's error, and its pages are not dropped); without,
        what is on disk already (the kernel drops clean pages only), never waiting for it."""
        start, length = self._dropped, end - self._dropped
        if self.sync:
            # the wait takes the file's write error, if any: the final fsync would not see it
            self._sync_range(start, length, _SYNC_FILE_RANGE_WAIT)
        try:
            os.posix_fadvise(self.fd, start, length, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass        # advice only
        self._dropped = end

    def _sync_range(self, start: int, length: int, flags: int) -> None:
        if _sync_range(self.fd, start, length, flags) != 0:
            e = ctypes.get_errno()
            raise SinkError(f"cannot write {self.path}: {_reason(OSError(e, os.strerror(e)))}")

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
            if self.overwrite:
                os.replace(self.tmp, self.path)
            else:
                _rename_noreplace(self.tmp, self.path)
        except FileExistsError:
            self.abort()
            raise SinkError(f"{self.path} appeared while the job ran; not replaced (the new "
                            f"output was discarded)") from None
        except OSError as e:
            self.abort()
            raise SinkError(f"cannot finish {self.path}: {_reason(e)}") from None
        self.tmp = None
        if not self.sync:
            return
        try:
            dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            raise SinkError(f"{self.path} is complete but its directory could not be synced "
                            f"({e.strerror}): it may not survive a power cut") from None

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
