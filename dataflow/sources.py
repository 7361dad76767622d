"""Readables: files (with an optional byte range), several files or a glob in order, stdin, and
the synthetic access-log generator. Plus `ChunkReader`, which frames a Readable into chunks.

Rules:
- Files are read unbuffered (`readinto` on a raw FileIO): one system call straight into the
  slot. Several files read as one stream, like `cat a b`.
- Offsets are stream offsets; `where(offset)` turns one into `file:byte` for messages.
- With `split: lines` a byte range covers the records that *start* inside it, so ranges that
  tile a file tile its records too.
- `split` says where records end and what they are (see framing.py and records.py): `lines`
  (with `delimiter`, or `record_start`, a pattern that starts a multi-line record), `bytes`,
  `jsonl`, `csv`, `tsv` (`header`: the first row names the columns; default true) or `fixed`
  (`record_size` bytes each). A CSV header belongs to one file: it takes a single file (or
  stdin), and no byte range.
"""
from __future__ import annotations

import glob as globmod
import os
import stat
from typing import Any, Iterator

from .errors import RecordTooLongError, SourceError
from .framing import CsvFramer, FixedFramer, Framer, RecordStartFramer, RecordTooLong
from .records import ERRORS, RecordFormat
from .sizes import format_size

SPLITS = ("lines", "bytes", "jsonl", "csv", "tsv", "fixed")


class Framed:
    """What every Readable here shares: how its bytes are cut into records, and what they are."""

    split = "lines"
    delimiter = b"\n"
    max_record_size = 0
    record_start: str | None = None
    record_size = 0
    header: bool | None = None
    errors = "strict"

    def _framing(self, split: str, delimiter: bytes | str, max_record_size: int,
                 record_start: str | None = None, record_size: int = 0,
                 header: bool | None = None, errors: str = "strict") -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if errors not in ERRORS:
            raise ValueError(f"errors must be one of {', '.join(ERRORS)}, got {errors!r}")
        if errors == "surrogateescape" and split == "jsonl":
            raise ValueError("errors: surrogateescape cannot go with split: jsonl: JSON text is "
                             "UTF-8, with no way to carry other bytes; use errors: replace")
        self.errors = errors
        self.split = split
        self.delimiter = delimiter.encode() if isinstance(delimiter, str) else delimiter
        self.max_record_size = max_record_size
        self.record_start = record_start
        self.record_size = record_size
        if record_start is not None and split != "lines":
            raise ValueError("record_start goes with split: lines")
        if split == "fixed" and record_size < 1:
            raise ValueError("split: fixed needs record_size (bytes per record)")
        if header and split not in ("csv", "tsv"):
            raise ValueError("header goes with split: csv or tsv")
        self.header = (header is not False) if split in ("csv", "tsv") else False
        if split == "fixed" and max_record_size < record_size:
            self.max_record_size = record_size

    def framer(self) -> Framer:
        split = self.split
        if split == "bytes":
            return Framer(None)
        if split in ("csv", "tsv"):
            return CsvFramer()
        if split == "fixed":
            return FixedFramer(self.record_size)
        if split == "jsonl":
            return Framer(b"\n")
        if self.record_start is not None:
            return RecordStartFramer(self.record_start)
        return Framer(self.delimiter)

    def record_format(self) -> RecordFormat:
        """The records' format before the header is read (columns unknown)."""
        kind = {"lines": "lines", "jsonl": "jsonl", "csv": "csv", "tsv": "tsv"}.get(self.split,
                                                                                 "bytes")
        if kind == "lines" and self.record_start is not None:
            kind = "bytes"  # multi-line records: no per-line record stages
        return RecordFormat(kind=kind, delimiter=self.delimiter, header=bool(self.header),
                            errors=self.errors)


def stat_files(paths: list[str]) -> list[os.stat_result]:
    """Each input file's stat; SourceError for one that is missing or not a regular file."""
    stats = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as e:
            raise SourceError(f"cannot read {p}: {e.strerror}", file=p) from None
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(f"{p} is not a regular file", file=p)
        stats.append(st)
    return stats


class FileSource(Framed):
    """One or more files read in order as one stream. `paths` may hold glob patterns."""

    def __init__(self, paths: str | os.PathLike | list, *, split: str = "lines",
                 delimiter: bytes | str = b"\n", start: int = 0, end: int | None = None,
                 max_record_size: int = 0, record_start: str | None = None,
                 record_size: int = 0, header: bool | None = None, errors: str = "strict"):
        raw = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        self.patterns = [os.fspath(p) for p in raw]
        self._framing(split, delimiter, max_record_size, record_start, record_size, header,
                     errors)
        self.start = start
        self.end = end
        self.paths: list[str] = []
        self._sizes: list[int] = []
        self._stats: list[os.stat_result] = []   # each file as it was when the job started
        self._index = 0
        self._file = None
        self._pos = 0                  # bytes into the current file
        self._stop: int | None = None  # where reading the current file ends (None: at EOF)
        self.resume_at = 0  # stream offset open() starts at (a resumed run, see resume.py)

    # a read returns without waiting for a writer (stat_files admits regular files only; a
    # FIFO or a terminal could block for ever), so it may run in a thread that teardown
    # waits for (coordinator.ReadAhead)
    reads_return = True

    @property
    def ranged(self) -> bool:
        """A byte range of one file, not whole files."""
        return bool(self.start) or self.end is not None

    def expand(self) -> list[str]:
        """The paths the patterns name, globs expanded (sorted), in reading order."""
        paths: list[str] = []
        for pat in self.patterns:
            if globmod.has_magic(pat):
                found = sorted(globmod.glob(pat, recursive=True))  # `**`: any depth
                if not found:
                    raise SourceError(f"no file matches {pat!r}", file=pat)
                paths.extend(found)
            else:
                paths.append(pat)
        return paths

    def resolve(self) -> list[str]:
        """Expand globs and check every file exists; returns the paths in reading order."""
        paths = self.expand()
        self._snapshot(paths)
        if self.ranged and len(paths) != 1:
            raise SourceError("a byte range needs exactly one file")
        if self.header and len(paths) != 1:
            raise SourceError(f"a CSV header belongs to one file, and {len(paths)} files match "
                              f"(each would bring its own header): run one job per file, or "
                              f"set header: false")
        if self.ranged and self.split not in ("lines", "bytes", "jsonl"):
            raise SourceError(f"a byte range cannot be used with split: {self.split}: its "
                              f"records cannot be found from the middle of the file")
        self.paths = paths
        return paths

    def _snapshot(self, paths: list[str]) -> None:
        """Each file's size and identity now: reading checks them (see readinto)."""
        self._stats = stat_files(paths)
        self._sizes = [st.st_size for st in self._stats]

    def size(self) -> int | None:
        if not self.paths:
            self.resolve()
        if self.ranged:
            return max(0, (self.end if self.end is not None else self._sizes[0]) - self.start)
        return sum(self._sizes)

    def open(self) -> None:
        if not self.paths:
            self.resolve()
        else:
            self._snapshot(self.paths)   # as they are now (a source may be used again)
        self._index = 0
        if self.ranged:
            size = self._sizes[0]
            start, end = self.start, min(self.end if self.end is not None else size, size)
            if self.split in ("lines", "jsonl") and self.record_start is None:
                start, end = self._align(start), self._align(end)
            self._open_current(min(start + self.resume_at, end), stop=end)
        else:
            at = self.resume_at
            while self._index + 1 < len(self.paths) and at >= self._sizes[self._index]:
                at -= self._sizes[self._index]
                self._index += 1
            self._open_current(at)

    def read_before(self, offset: int, n: int) -> bytes:
        """The (up to) `n` stream bytes before stream offset `offset`."""
        first = max(0, offset - n)
        if self.ranged:
            with open(self.paths[0], "rb") as f:
                f.seek(self.start + first)
                return f.read(offset - first)
        out = []
        base = 0
        for path, size in zip(self.paths, self._sizes):
            lo, hi = max(first, base), min(offset, base + size)
            if lo < hi:
                with open(path, "rb") as f:
                    f.seek(lo - base)
                    out.append(f.read(hi - lo))
            base += size
        return b"".join(out)

    def _align(self, pos: int) -> int:
        """First record start at or after `pos`: 0, or just past a delimiter at pos-1 or later."""
        if pos <= 0:
            return 0
        size = self._sizes[0]
        if pos >= size:
            return size
        d = self.delimiter
        with open(self.paths[0], "rb") as f:
            at = pos - len(d)
            f.seek(max(0, at))
            buf = b""
            base = max(0, at)
            while True:
                block = f.read(1 << 16)
                buf += block
                i = buf.find(d, pos - base - len(d) if pos - base >= len(d) else 0)
                if i >= 0:
                    return base + i + len(d)
                if not block:
                    return size
                keep = len(d) - 1
                base += len(buf) - keep
                buf = buf[len(buf) - keep:] if keep else b""

    def _open_current(self, seek: int = 0, stop: int | None = None) -> None:
        self._file = open(self.paths[self._index], "rb", buffering=0)
        if seek:
            self._file.seek(seek)
        self._pos = seek
        size = self._sizes[self._index]
        # a whole file is read up to the size it had at the start (0: a pseudo-file such as
        # /proc/cpuinfo, which says 0 and has bytes: read to its end)
        self._stop = stop if stop is not None else (size or None)

    def readinto(self, buffer: memoryview) -> int:
        while self._file is not None:
            left = self._stop - self._pos if self._stop is not None else len(buffer)
            if left > 0:
                try:
                    n = self._file.readinto(buffer[:left] if len(buffer) > left else buffer)
                except OSError as e:
                    raise SourceError(f"cannot read {self.paths[self._index]}: {e.strerror}",
                                      file=self.paths[self._index]) from None
                if n:
                    self._pos += n
                    return n
                if self._stop is not None:
                    self._short_read()
            elif not self.ranged:
                self._check_unchanged()
            self._file.close()
            self._file = None
            self._index += 1
            if self._index < len(self.paths) and not self.ranged:
                self._open_current()
        return 0

    def _short_read(self) -> None:
        """The file ended before the size it had at the start: it shrank, unless it is a
        pseudo-file (sysfs says 4096 bytes and has fewer), whose size and time stay put."""
        was = self._stats[self._index]
        now = os.fstat(self._file.fileno())
        if now.st_size < was.st_size:
            self._changed(f"shrank while it was read: it had {was.st_size} bytes when the job "
                          f"started and ends at byte {self._pos} now")
        if (now.st_size, now.st_mtime_ns) != (was.st_size, was.st_mtime_ns):
            self._check_unchanged()

    def _check_unchanged(self) -> None:
        """A whole file read up to its starting size must still be that file, that size,
        unmodified: an appended or rewritten input would give an output of neither version."""
        was = self._stats[self._index]
        now = os.fstat(self._file.fileno())
        if (now.st_dev, now.st_ino) != (was.st_dev, was.st_ino):
            self._changed("was replaced by another file after the job started")
        if now.st_size > was.st_size:
            hint = (f"; to read a growing log up to a point, give a byte range (end: "
                    f"{was.st_size})" if len(self.paths) == 1 else "")
            self._changed(f"grew while it was read, from {was.st_size} to {now.st_size} "
                          f"bytes{hint}")
        if now.st_size != was.st_size or now.st_mtime_ns != was.st_mtime_ns:
            self._changed(f"was modified while it was read ({was.st_size} bytes, modified "
                          f"{_when(was.st_mtime_ns)} at the start; {now.st_size} bytes, modified "
                          f"{_when(now.st_mtime_ns)} at byte {self._pos})")

    def _changed(self, what: str) -> None:
        path = self.paths[self._index]
        raise SourceError(f"{path} {what}", file=path, offset=self._pos - self.start if self.ranged
                          else sum(self._sizes[:self._index]) + self._pos)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def where(self, offset: int) -> str:
        if not self.paths:
            return f"byte {offset}"
        if self.ranged:
            return f"{self.paths[0]}: byte {offset + self.start}"
        for path, size in zip(self.paths, self._sizes):
            if offset < size:
                return f"{path}: byte {offset}"
            offset -= size
        return f"{self.paths[-1]}: byte {offset + self._sizes[-1]}"

    def identities(self) -> list[tuple[int, int]]:
        out = []
        for p in self.paths:
            try:
                st = os.stat(p)
                out.append((st.st_dev, st.st_ino))
            except OSError:
                pass
        return out


class StdinSource(Framed):
    """Standard input (fd 0), read unbuffered."""

    def __init__(self, *, split: str = "lines", delimiter: bytes | str = b"\n",
                 max_record_size: int = 0, fd: int = 0, record_start: str | None = None,
                 record_size: int = 0, header: bool | None = None, errors: str = "strict"):
        self._framing(split, delimiter, max_record_size, record_start, record_size, header,
                     errors)
        self.fd = fd
        self._file = None

    def size(self) -> int | None:
        try:
            st = os.fstat(self.fd)
        except OSError:
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def open(self) -> None:
        self._file = open(self.fd, "rb", buffering=0, closefd=False)

    def readinto(self, buffer: memoryview) -> int:
        assert self._file is not None
        try:
            return self._file.readinto(buffer) or 0
        except OSError as e:
            raise SourceError(f"cannot read standard input: {e.strerror}", file="<stdin>") from None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def where(self, offset: int) -> str:
        return f"<stdin>: byte {offset}"

    def identities(self) -> list[tuple[int, int]]:
        try:
            st = os.fstat(self.fd)
            return [(st.st_dev, st.st_ino)]
        except OSError:
            return []


class GenerateSource(Framed):
    """Synthetic, realistic access-log lines: `size` bytes (whole lines), fixed by `seed`."""

    def __init__(self, size: int, seed: int = 0, *, split: str = "lines",
                 delimiter: bytes | str = b"\n", max_record_size: int = 0,
                 record_start: str | None = None, record_size: int = 0,
                 header: bool | None = None, errors: str = "strict"):
        self.total = size
        self.seed = seed
        self._framing(split, delimiter, max_record_size, record_start, record_size, header,
                     errors)
        self._blocks: Iterator[bytes] | None = None
        self._block = memoryview(b"")

    def size(self) -> int | None:
        return self.total

    def open(self) -> None:
        from .generate import generate_blocks

        self._blocks = generate_blocks(self.total, self.seed)
        self._block = memoryview(b"")

    def readinto(self, buffer: memoryview) -> int:
        while not len(self._block):
            nxt = next(self._blocks, None) if self._blocks is not None else None
            if nxt is None:
                return 0
            self._block = memoryview(nxt)
        n = min(len(buffer), len(self._block))
        buffer[:n] = self._block[:n]
        self._block = self._block[n:]
        return n

    def close(self) -> None:
        self._blocks = None
        self._block = memoryview(b"")

    def where(self, offset: int) -> str:
        return f"<generate>: byte {offset}"

    def identities(self) -> list[tuple[int, int]]:
        return []


def _when(ns: int) -> str:
    import datetime
    return datetime.datetime.fromtimestamp(ns / 1e9).isoformat(sep=" ", timespec="microseconds")


LINE_COUNT_LIMIT = 4 << 30  # an error's line number is counted up to this far into the input


def line_number(source, offset: int) -> int | None:
    """The 1-based line (of newline-delimited records) that stream `offset` is on, for error
    messages; None when the source cannot be read again or the offset is too far in."""
    paths = getattr(source, "paths", None)
    if not paths or offset > LINE_COUNT_LIMIT or getattr(source, "start", 0) or \
            getattr(source, "end", None) is not None:
        return None
    lines = 1
    remaining = offset
    try:
        for path in paths:
            with open(path, "rb") as f:
                while remaining > 0:
                    block = f.read(min(remaining, 1 << 20))
                    if not block:
                        break
                    lines += block.count(b"\n")
                    remaining -= len(block)
            if remaining <= 0:
                break
    except OSError:
        return None
    return lines


def where(source: Any, offset: int) -> str:
    """Where stream `offset` is, in the source's own words ("access.log: byte 123") when it
    has them (a user's Readable need not), else "byte 123"."""
    describe = getattr(source, "where", None)
    return describe(offset) if describe is not None else f"byte {offset}"


class ChunkReader:
    """Cuts a Readable into chunks that end on record boundaries, reading into slots.

    The partial record after a cut is carried (copied, it is short) to the next chunk.
    With `context` > 0, the last `context` bytes of the stream before each chunk are kept
    (a copy of at most that many bytes per chunk) and handed over with it.
    """

    def __init__(self, source, *, framer: Framer, chunk_size: int, max_record_size: int,
                 context: int = 0):
        self.source = source
        self.framer = framer
        self.chunk_size = chunk_size
        self.max_record_size = max_record_size
        self.context = context
        self.offset = 0            # stream offset of the next chunk
        self.carry = b""
        self.tail = b""            # the last `context` bytes before `offset`
        self.eof = False

    def read_header(self, capacity: int) -> bytes:
        """Read the stream's first record (a CSV header) and return it; the bytes read stay
        queued for the first chunk. b"" for an empty stream."""
        buf = bytearray(self.carry)
        while True:
            n = self.framer.first(bytes(buf))
            if n:
                break
            if len(buf) >= capacity:
                raise RecordTooLongError(
                    f"the header is longer than max_record_size ({format_size(capacity)}) at "
                    f"{where(self.source, 0)}{self._hint()}", offset=0)
            block = bytearray(max(1, min(4096, self.chunk_size, capacity - len(buf))))
            got = self.source.readinto(memoryview(block)) if not self.eof else 0
            if not got:
                self.eof = True
                n = len(buf)    # a header without a final newline, or nothing at all
                break
            buf += block[:got]
        self.carry = bytes(buf)
        return bytes(buf[:n])

    def _hint(self) -> str:
        if isinstance(self.framer, CsvFramer):
            return ("; in a CSV file, a quote that is not closed (or a quote inside an "
                    "unquoted field) makes everything after it one record")
        return "; raise max_record_size or check the delimiter"

    def fill(self, findable, base: int, view: memoryview,
             context_view: memoryview | None = None) -> int:
        """Fill `view` (a slot at `findable[base:]`); return the chunk length, 0 at end.

        `context_view` (when the job wants context) receives the stream bytes just before the
        chunk, right-aligned: its last `min(context, offset)` bytes."""
        if context_view is not None and self.tail:
            context_view[len(context_view) - len(self.tail):] = self.tail
        n = len(self.carry)
        if n:
            view[:n] = self.carry
        capacity = min(len(view), max(self.max_record_size, self.chunk_size))
        target = min(self.chunk_size, capacity)
        want = getattr(self.framer, "want", None)
        if want is not None:  # a framer with known cut points: read exactly up to the next
            target = min(capacity, max(n, want()))
        while True:
            while n < target and not self.eof:
                got = self.source.readinto(view[n:target])
                if got == 0:
                    self.eof = True
                else:
                    n += got
            if n == 0:
                return 0
            try:
                cut = self.framer.cut(findable, base, n, capacity, self.eof)
            except RecordTooLong:
                at = where(self.source, self.offset)
                raise RecordTooLongError(
                    f"a record is longer than max_record_size ({format_size(capacity)}) at "
                    f"{at}{self._hint()}", file=at.rsplit(": byte", 1)[0] if ": byte" in at else "",
                    offset=self.offset) from None
            if cut:
                break
            target = capacity  # no record end yet: read on, up to the largest record
        self.carry = bytes(view[cut:n])
        self.offset += cut
        if self.context:
            if cut >= self.context:
                self.tail = bytes(view[cut - self.context:cut])
            else:
                self.tail = (self.tail + bytes(view[:cut]))[-self.context:]
        return cut
