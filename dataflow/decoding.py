"""Jobs whose first stage is `decompress`: choosing parallel or sequential decoding, and the
Readable that decodes sequentially.

Rules:
- The format of each input file comes from its magic bytes (`format: auto`) or the option.
  Unknown or empty input is an error naming the file, before anything starts.
- **Parallel** when the input can be cut at member boundaries without decoding (BGZF blocks,
  zstd/lz4 frames, bz2/xz streams; `containers.member_cuts`), every member fits in a chunk,
  all files have one format, and the stages after `decompress` do not need whole records
  (compressors, passthrough): the source then cuts chunks at member boundaries and workers
  decode them (workers/decompress.py).
- **Sequential** otherwise (one gzip member, a single zstd frame, or record stages after it):
  `DecodingSource` decodes in a thread beside the coordinator (zlib, bz2, lzma and zstandard
  release the GIL while they work), so decoding overlaps the workers' stages; its output is
  then framed into records like any other stream. Memory: a queue of QUEUED pieces of PIECE.
- Never silent truncation: a truncated, corrupt or trailing-garbage input fails the job with
  the file, the compressed offset and the member; the sink then removes its output.
"""
from __future__ import annotations

import os
import queue
import threading
from typing import Any

from .containers import CorruptInput, Decoder, detect, member_layout, zlib_module
from .errors import SourceError
from .framing import RecordTooLong

PIECE = 1 << 20   # decoded bytes per hand-over from the decoding thread
GUESSED_RATIO = 8  # decoded/compressed for members whose headers do not record it (bz2)
QUEUED = 4        # pieces that may wait for the coordinator
READ = 1 << 20    # compressed bytes per read
HEAD = 64         # bytes read to detect the format


def inflate_backend(backend: str = "auto") -> str:
    """The streaming inflate implementation for gzip/bgzf/zlib: the fastest installed for auto.
    `libdeflate` inflates whole BGZF blocks only (block_inflater): streams then take auto's."""
    import importlib

    if backend == "libdeflate":
        backend = "auto"
    modules = {"isal": "isal.isal_zlib", "zlib-ng": "zlib_ng.zlib_ng", "zlib": "zlib"}
    names = ("isal", "zlib-ng", "zlib") if backend == "auto" else (backend,)
    for name in names:
        if name not in modules:
            raise ValueError(f"unknown backend {name!r}; one of auto, {', '.join(modules)}")
        try:
            importlib.import_module(modules[name])
            return name
        except ImportError:
            if backend != "auto":
                raise ValueError(f"backend {name} is not installed: pip install "
                                 f"'dataflow[fast]'") from None
    return "zlib"  # pragma: no cover


def block_inflater(backend: str = "auto") -> tuple[Any, Any]:
    """(inflate, crc32) for whole raw-deflate blocks of known decoded size (BGZF's):
    `inflate(data, size)` returns the decoded bytes (at most `size` of them) and raises on
    corrupt or truncated data. `auto` takes libdeflate when installed (the fastest here: about
    2.1 GB/s per core against isal's 1.3), else the streaming backends' order. With a zlib-family
    backend it also raises when the deflate data ends before `data` does; libdeflate cannot
    tell (workers/decompress.py says what that means)."""
    if backend in ("auto", "libdeflate"):
        try:
            import deflate
        except ImportError:
            if backend == "libdeflate":
                raise ValueError("backend libdeflate is not installed: pip install "
                                 "'dataflow[fast]' (or pip install deflate)") from None
        else:
            return deflate.deflate_decompress, deflate.crc32
    module = zlib_module(inflate_backend(backend))
    make = module.decompressobj

    def inflate(data: Any, size: int) -> bytes:
        d = make(-15)
        out = d.decompress(data)
        if not d.eof or d.unused_data:
            raise ValueError("the deflate data does not fill the block")
        return out

    return inflate, module.crc32


def _detect_file(path: str, fmt: str) -> str:
    with open(path, "rb") as f:
        head = f.read(HEAD)
    if not head:
        raise SourceError(f"{path} is empty: not compressed data", file=path, offset=0)
    found = detect(head)
    if fmt != "auto":
        if found is not None and found != fmt and {found, fmt} != {"gzip", "bgzf"}:
            raise SourceError(f"{path} is {found} data, not {fmt}", file=path, offset=0)
        return fmt
    if found is None:
        raise SourceError(f"{path} is not in a known compressed format (gzip, bgzf, zlib, "
                          f"zstd, bz2, xz, lz4)", file=path, offset=0)
    return found


def prepare(source: Any, stages: list[Any], capacity: int,
            chunk_size: int) -> tuple[Any, list[Any]]:
    """Rewrite a job that starts with `decompress` into a parallel or a sequential one."""
    first, rest = stages[0], list(stages[1:])
    paths = None
    if hasattr(source, "resolve") and not (getattr(source, "start", 0)
                                           or getattr(source, "end", None) is not None):
        paths = source.paths or source.resolve()
    elif hasattr(source, "start"):
        raise SourceError("decompress reads whole files: drop the source's byte range")
    if paths is not None:
        formats = [_detect_file(p, first.format) for p in paths]
        records = any(getattr(s, "needs_records", True) for s in rest)
        if len(set(formats)) == 1 and not records:
            cuts = _cuts(paths, formats[0], capacity, chunk_size)
            if cuts is not None:
                stage = type(first)(format=formats[0], backend=first.backend)
                return MemberSource(source, cuts), [stage, *rest]
        return DecodingSource(source, formats, first.backend), rest
    return DecodingSource(source, None if first.format == "auto" else [first.format],
                          first.backend), rest


def _cuts(paths: list[str], fmt: str, capacity: int, chunk_size: int) -> list[int] | None:
    """Where chunks of the compressed files end (stream offsets), or None when a file cannot
    be split. Whole members are grouped so that a chunk's decoded size fits in one slot (it
    goes out whole, with no piece waiting for its turn) and it reads at most `chunk_size`."""
    cuts: list[int] = []
    base = 0
    for path in paths:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            try:
                layout = member_layout(f, fmt, size, limit=capacity)
            except CorruptInput as e:
                raise SourceError(f"{path}: {e.message} (compressed byte {e.offset})",
                                  file=path, offset=e.offset) from None
        if layout is None:
            return None
        cuts.extend(base + c for c in group_members(*layout, capacity, chunk_size))
        base += size
    return cuts


def group_members(cuts: list[int], sizes: list[int | None], out_limit: int,
                  in_limit: int) -> list[int]:
    """The offsets (from `cuts`, after 0) at which chunks end: each chunk takes whole members
    while its decoded size (recorded, or guessed at GUESSED_RATIO) stays within `out_limit`
    and its compressed size within `in_limit`; a chunk has at least one member."""
    ends: list[int] = []
    chunk_start = chunk_out = 0
    for begin, end, size in zip(cuts, cuts[1:], sizes):
        grow = size if size is not None else (end - begin) * GUESSED_RATIO
        if begin > chunk_start and (chunk_out + grow > out_limit
                                    or end - chunk_start > in_limit):
            ends.append(begin)
            chunk_start, chunk_out = begin, 0
        chunk_out += grow
    ends.append(cuts[-1])
    return ends


class CutFramer:
    """Cuts chunks only at the given stream offsets (chunk ends made of whole members); asks
    the reader for exactly the bytes up to the next one (`want`)."""

    def __init__(self, cuts: list[int]):
        self.cuts = cuts
        self.index = 0      # first cut after `offset`
        self.offset = 0     # stream offset of the chunk being cut

    def want(self) -> int:
        """Bytes from `offset` to the next cut."""
        if self.index < len(self.cuts):
            return self.cuts[self.index] - self.offset
        return 0

    def cut(self, buf: Any, start: int, length: int, capacity: int, eof: bool) -> int:
        end = self.offset + length
        i = self.index
        while i < len(self.cuts) and self.cuts[i] <= end:
            i += 1
        if i == self.index:  # no chunk end within what was read
            if eof or length >= capacity:  # cannot happen: chunks fit, the last cut is the end
                raise RecordTooLong(capacity)
            return 0
        cut = self.cuts[i - 1] - self.offset
        self.index = i
        self.offset += cut
        return cut


class _Delegate:
    def __init__(self, inner: Any):
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class MemberSource(_Delegate):
    """The compressed files, read as they are, cut only at member boundaries."""

    def __init__(self, inner: Any, cuts: list[int]):
        super().__init__(inner)
        self.cuts = cuts
        self.split = "members"

    def framer(self) -> CutFramer:
        return CutFramer(self.cuts)


class DecodingSource(_Delegate):
    """A Readable of the decoded bytes of `inner` (files decoded one after the other, each in
    its own format; or one stream, format detected from its first bytes)."""

    reads_return = False   # a read waits for the decoding thread (which may wait on stdin)

    def __init__(self, inner: Any, formats: list[str] | None, backend: str):
        super().__init__(inner)
        self.formats = formats
        self.backend = inflate_backend(backend)
        self._queue: queue.Queue[Any] = queue.Queue(QUEUED)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._piece = memoryview(b"")
        self._done = False

    def size(self) -> int | None:
        return None  # unknown until decoded

    def where(self, offset: int) -> str:
        return f"{self._name()}: decompressed byte {offset}"

    def _name(self) -> str:
        paths = getattr(self.inner, "paths", None)
        return ", ".join(paths) if paths else "<stdin>"

    # ------------------------------------------------------------------ the decoding thread
    def open(self) -> None:
        self._stop.clear()
        self._done = False
        self._piece = memoryview(b"")
        paths = getattr(self.inner, "paths", None)
        target = self._decode_files if paths else self._decode_stream
        self._thread = threading.Thread(target=self._guarded, args=(target,),
                                        name="dataflow-decode", daemon=True)
        if not paths:
            self.inner.open()
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _guarded(self, target: Any) -> None:
        try:
            target()
            self._put(None)
        except BaseException as e:  # handed to the coordinator, raised there
            self._put(e)

    def _decode(self, read: Any, fmt: str | None, name: str) -> None:
        buf = bytearray(READ)
        view = memoryview(buf)
        n = read(view)
        if fmt is None:
            found = detect(bytes(view[:n]))
            if n == 0:
                raise SourceError(f"{name} is empty: not compressed data", file=name, offset=0)
            if found is None:
                raise SourceError(f"{name} is not in a known compressed format", file=name,
                                  offset=0)
            fmt = found
        decoder = Decoder(fmt, backend=self.backend)
        try:
            while n:
                out = decoder.decompress(view[:n], PIECE)
                while True:
                    if out and not self._put(out):
                        return
                    if decoder.needs_input:
                        break
                    out = decoder.decompress(b"", PIECE)
                n = read(view)
            decoder.finish()
        except CorruptInput as e:
            raise SourceError(f"{name}: {e.message} (compressed byte {e.offset}, member "
                              f"{e.member})", file=name, offset=e.offset) from None

    def _decode_files(self) -> None:
        for i, path in enumerate(self.inner.paths):
            fmt = self.formats[i] if self.formats else None
            try:
                f = open(path, "rb", buffering=0)
            except OSError as e:
                raise SourceError(f"cannot read {path}: {e.strerror}", file=path) from None
            with f:
                self._decode(f.readinto, fmt, path)
            if self._stop.is_set():
                return

    def _decode_stream(self) -> None:
        fmt = self.formats[0] if self.formats else None
        self._decode(self.inner.readinto, fmt, self._name())

    # ------------------------------------------------------------------ the Readable side
    def readinto(self, buffer: memoryview) -> int:
        while not len(self._piece):
            if self._done:
                return 0
            try:  # with a timeout, so that a signal handler runs promptly
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is None:
                self._done = True
                return 0
            if isinstance(item, BaseException):
                self._done = True
                raise item
            self._piece = memoryview(item)
        n = min(len(buffer), len(self._piece))
        buffer[:n] = self._piece[:n]
        self._piece = self._piece[n:]
        return n

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._thread.join()
            self._thread = None
        if not getattr(self.inner, "paths", None):
            self.inner.close()
        self._piece = memoryview(b"")
