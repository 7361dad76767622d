"""Remote files through fsspec URLs (`s3://`, `gs://`, `memory://`, ...): a Readable and a
Writable. Optional: they need `pip install dataflow[remote]` (fsspec, and s3fs for S3).

Rules:
- fsspec is imported when a source or sink is built, never by the core. A missing package is
  a SourceError/SinkError naming the URL and the package (s3:// needs s3fs).
- `FsspecSource` reads one URL, a list, or glob patterns (expanded by the filesystem, sorted),
  in order, as one stream, like `cat`. Remote files are read with no readahead cache
  (`cache_type="none"`): each `readinto` is one ranged request of at most `block_size` bytes,
  copied into the caller's buffer. So the source holds at most about two blocks (the body
  being received and the bytes object it becomes), whatever the object's size:
  `buffer_bytes()` says how much. Filesystems with a real file (local, memory) read straight
  into the buffer and hold nothing.
- An object whose size differs from the one seen when the URLs were expanded is an error, and
  on S3 every request carries the ETag seen at open (`If-Match`): an object that changes while
  it is read is an error, never a mix of two versions.
- `FsspecSink` writes the ordered output to one URL, atomically: nothing appears at the target
  unless the job succeeds. On S3 it is a multipart upload (parts of at least `part_size`
  bytes, uploaded in order as the output grows), completed by `close()` and aborted by
  `abort()`, which leaves no object and no pending upload. Parts are uploaded by `write()`
  itself, in the writing thread: a slow upload is backpressure. The sink holds at most about
  two parts (the one being filled, `part_size` plus one write, and the copy s3fs uploads):
  `buffer_bytes()`. A run killed by SIGKILL cannot abort its upload: the parts stay, invisible
  and billed, until a bucket lifecycle rule (AbortIncompleteMultipartUpload) removes them.
  Elsewhere (memory://, file://, ...) it writes a temp object
  `.<name>.<pid>.<hex>.dataflow-tmp` next to the target and moves it into place on `close()`
  (atomic where the filesystem's move is a rename); `abort()` removes it.
- `check()` refuses, before the job starts: a target that is a directory; an existing target
  with `overwrite=False` (on S3 the completion is also conditional, `If-None-Match: *`, so an
  object that appears meanwhile is not replaced); a missing bucket or directory; missing
  credentials.
- Async filesystems (s3fs, gcsfs) run on an event loop in a thread of ours, started when a
  phase needs it (expanding URLs, a job) and ended with it: `close()`/`abort()` close the
  HTTP sessions and join the thread. No thread outlives the source or sink. (A chained URL,
  `simplecache::s3://...`, is left to fsspec, which runs it on its own shared IO thread.)
- Errors name the URL, the byte offset when reading, and the likely cause: no such object,
  no credentials, access denied, cannot connect to the endpoint.
"""
from __future__ import annotations

import asyncio
import glob as globmod
import importlib
import os
import secrets
import threading
from typing import Any

from .errors import SinkError, SourceError
from .sinks import TEMP_SUFFIX, OutputExistsError
from .sources import Framed
from .sizes import format_size

INSTALL = "pip install dataflow[remote]"
DEFAULT_BLOCK_SIZE = 4 << 20   # bytes per read request: the engine's default chunk, so a chunk
                               # is usually one request; small enough to hold two of
DEFAULT_PART_SIZE = 8 << 20    # S3 part: what the AWS CLI uses; 10,000 parts make 78 GiB
MIN_PART_SIZE = 5 << 20        # S3's smallest part (all but the last)
MAX_PARTS = 10_000             # S3's most parts in one upload
JOIN_SECONDS = 5.0             # close() waits this long for the loop thread and its sessions
MULTIPART = ("s3", "s3a")      # protocols written by a multipart upload (tested against moto)
UNBUFFERED = ("file", "local", "memory")  # their files read straight into the buffer
OBJECT_STORES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")  # no real directories
PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs",
            "abfs": "adlfs", "abfss": "adlfs"}


def _fsspec(url: str, error: type[Exception]) -> Any:
    try:
        return importlib.import_module("fsspec")
    except ImportError:
        raise error(f"{url}: remote URLs need the optional package fsspec: {INSTALL}"
                    + _package_hint(_protocol(url))) from None


def _protocol(url: str) -> str:
    head = url.rsplit("::", 1)[-1]
    return head.split("://", 1)[0].lower() if "://" in head else "file"


def _package_hint(protocol: str) -> str:
    package = PACKAGES.get(protocol)
    if package is None:
        return ""
    if package == "s3fs":
        return " (s3:// needs s3fs, which that installs)"
    return f" ({protocol}:// needs {package}: pip install {package})"


def _filesystem_class(fsspec: Any, url: str, error: type[Exception]) -> Any:
    """The filesystem class for `url` (imports its package): a clear error when it is missing."""
    protocol = _protocol(url)
    try:
        return fsspec.get_filesystem_class(protocol)
    except ImportError:
        raise error(f"{url}: {protocol}:// URLs need an optional package: {INSTALL}"
                    + _package_hint(protocol)) from None
    except ValueError:
        raise error(f"{url}: unknown URL scheme {protocol}:// (fsspec knows no such "
                    f"filesystem)") from None


def _chain(e: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while e is not None and e not in out and len(out) < 10:
        out.append(e)
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return out


def reason(e: BaseException) -> str:
    """What went wrong, in words, with the likely cause."""
    chain = _chain(e)
    names = {type(x).__name__ for x in chain}
    if names & {"NoCredentialsError", "PartialCredentialsError"}:
        return ("no credentials: pass storage_options {key, secret} (or profile), set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use anon: true for a "
                "public bucket")
    if names & {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError",
                "ServerDisconnectedError"} or any(isinstance(x, ConnectionError) for x in chain):
        return f"cannot connect to the endpoint ({e}): check endpoint_url and the network"
    if "FileExpired" in names:
        return "the object changed while it was read (its ETag differs): run the job again"
    if isinstance(e, FileNotFoundError):
        return "no such object (check the bucket, the key and the endpoint)"
    if isinstance(e, PermissionError):
        return (f"access denied ({e}): check the credentials in storage_options and the "
                f"bucket's policy")
    if isinstance(e, (TimeoutError, asyncio.TimeoutError)) or "FSTimeoutError" in names:
        return "timed out: the endpoint did not answer"
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}" if type(e).__name__ not in text else text


class _Session:
    """The filesystems one phase of a source or sink uses, and the event loop their async
    implementations run on: a thread of ours, started on first need, ended by close()."""

    def __init__(self, fsspec: Any, storage_options: dict | None):
        self.fsspec = fsspec
        self.options = dict(storage_options or {})
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.fss: dict[str, Any] = {}

    def _start_loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=_run_loop, args=(loop,), name="dataflow-fsspec",
                                      daemon=True)
            thread.start()
            self.loop, self.thread = loop, thread
        return self.loop

    def filesystem(self, url: str) -> tuple[Any, str]:
        """The filesystem of `url` (one per protocol and session) and the path in it."""
        protocol = _protocol(url)
        if "::" in url:  # a chained URL: fsspec's own loop, its own options per layer
            return self.fsspec.core.url_to_fs(url, **self.options)
        fs = self.fss.get(protocol)
        if fs is None:
            options = dict(self.options)
            cls = self.fsspec.get_filesystem_class(protocol)
            if issubclass(cls, importlib.import_module("fsspec.asyn").AsyncFileSystem):
                options.update(loop=self._start_loop(), skip_instance_cache=True)
            fs, path = self.fsspec.core.url_to_fs(url, **options)
            self.fss[protocol] = fs
            return fs, path
        return fs, fs._strip_protocol(url)

    def close(self) -> None:
        """Close the async filesystems' HTTP sessions and end the loop thread. Never raises."""
        loop, thread, fss = self.loop, self.thread, list(self.fss.values())
        self.loop = self.thread = None
        self.fss = {}
        if loop is None or thread is None:
            return
        if thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(_close_sessions(fss), loop)
            try:
                future.result(JOIN_SECONDS)
            except Exception:  # noqa: BLE001 - a timeout: the sockets die with the loop
                future.cancel()
            loop.call_soon_threadsafe(loop.stop)
        thread.join(JOIN_SECONDS)


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _close_sessions(fss: list[Any]) -> None:
    for fs in fss:
        try:
            creator = getattr(fs, "_s3creator", None)     # s3fs: the aiobotocore client
            if creator is not None:
                fs._s3 = fs._s3creator = None
                await creator.__aexit__(None, None, None)
            session = getattr(fs, "_session", None)       # gcsfs, http: an aiohttp session
            if session is not None and hasattr(session, "close") and \
                    not getattr(session, "closed", True):
                await session.close()
        except Exception:  # noqa: BLE001 - closing is best effort, the loop ends anyway
            pass


class FsspecSource(Framed):
    """One or more fsspec URLs (globs allowed) read in order as one stream."""

    def __init__(self, urls: str | list[str], *, storage_options: dict | None = None,
                 block_size: int | None = None, split: str = "lines",
                 delimiter: bytes | str = b"\n", max_record_size: int = 0,
                 record_start: str | None = None, record_size: int = 0,
                 header: bool | None = None, errors: str = "strict"):
        self.patterns = [os.fspath(urls)] if isinstance(urls, (str, os.PathLike)) \
            else [os.fspath(u) for u in urls]
        if not self.patterns:
            raise ValueError("FsspecSource needs at least one URL")
        self._framing(split, delimiter, max_record_size, record_start, record_size, header,
                     errors)
        self.storage_options = dict(storage_options or {})
        self.block_size = DEFAULT_BLOCK_SIZE if block_size is None else int(block_size)
        if self.block_size < 1:
            raise ValueError(f"block_size must be at least 1 byte, got {block_size}")
        self._fsspec = _fsspec(self.patterns[0], SourceError)
        for url in self.patterns:
            _filesystem_class(self._fsspec, url, SourceError)
        self.urls: list[str] = []          # the objects, in reading order (after expand())
        self._paths: list[str] = []        # their paths inside their filesystems
        self._sizes: list[int | None] = []   # None: the filesystem does not say
        self._buffered = False             # the file in hand has no readinto of its own
        self._session: _Session | None = None
        self._file: Any = None
        self._index = 0

    # ----------------------------------------------------------- expansion and sizes
    def expand(self) -> list[str]:
        """Expand globs and check every object exists; return the URLs in reading order."""
        session = _Session(self._fsspec, self.storage_options)
        try:
            self._expand(session)
        finally:
            session.close()
        return self.urls

    def _expand(self, session: _Session) -> None:
        urls: list[str] = []
        paths: list[str] = []
        sizes: list[int | None] = []
        for pattern in self.patterns:
            try:
                fs, path = session.filesystem(pattern)
            except ImportError:
                raise SourceError(f"{pattern}: {_protocol(pattern)}:// URLs need an optional "
                                  f"package: {INSTALL}{_package_hint(_protocol(pattern))}",
                                  file=pattern) from None
            except Exception as e:  # noqa: BLE001 - a bad option: say which URL
                raise SourceError(f"cannot read {pattern}: {reason(e)}", file=pattern) \
                    from None
            if globmod.has_magic(path):
                try:
                    found = fs.glob(path, detail=True)
                except Exception as e:  # noqa: BLE001
                    raise SourceError(f"cannot list {pattern}: {reason(e)}", file=pattern) \
                        from None
                files = sorted((p, i) for p, i in found.items() if i.get("type") == "file")
                if not files:
                    raise SourceError(f"no object matches {pattern!r}", file=pattern)
                for p, info in files:
                    urls.append(fs.unstrip_protocol(p))
                    paths.append(p)
                    sizes.append(info.get("size"))
                continue
            try:
                info = fs.info(path)
            except Exception as e:  # noqa: BLE001
                raise SourceError(f"cannot read {pattern}: {reason(e)}", file=pattern) \
                    from None
            if info.get("type") != "file":
                raise SourceError(f"cannot read {pattern}: it is a directory, not an object "
                                  f"(use a glob such as {pattern.rstrip('/')}/*)", file=pattern)
            urls.append(pattern)
            paths.append(path)
            sizes.append(info.get("size"))
        if self.header and len(urls) != 1:
            raise SourceError(f"a CSV header belongs to one file, and {len(urls)} objects "
                              f"match (each would bring its own header): run one job per "
                              f"object, or set header: false")
        self.urls, self._paths, self._sizes = urls, paths, sizes

    def size(self) -> int | None:
        if not self.urls:
            self.expand()
        return None if None in self._sizes else sum(self._sizes)  # type: ignore[arg-type]

    def buffer_bytes(self) -> int:
        """The most bytes this source holds besides the caller's buffer: one request's body
        as it arrives and the bytes object it becomes (0 for local and memory files)."""
        if all(_protocol(u) in UNBUFFERED for u in self.patterns):
            return 0
        return 2 * self.block_size

    # ----------------------------------------------------------- reading
    def open(self) -> None:
        self.close()
        self._session = _Session(self._fsspec, self.storage_options)
        if not self.urls:
            self._expand(self._session)
        self._index = 0
        self._open_current()

    def _open_current(self) -> None:
        assert self._session is not None
        url, path = self.urls[self._index], self._paths[self._index]
        try:
            fs, _ = self._session.filesystem(url)
            f = fs.open(path, "rb", block_size=self.block_size, cache_type="none")
        except Exception as e:  # noqa: BLE001
            raise SourceError(f"cannot read {url}: {reason(e)}", file=url,
                              offset=self._base()) from None
        size = getattr(f, "size", None)
        if callable(size):
            size = None
        if size is not None and self._sizes[self._index] not in (None, size):
            f.close()
            raise SourceError(f"cannot read {url}: it changed since the job started (it was "
                              f"{self._sizes[self._index]} bytes, it is {size})", file=url,
                              offset=self._base())
        self._file = f
        self._buffered = isinstance(f, importlib.import_module("fsspec.spec")
                                    .AbstractBufferedFile)

    def _base(self) -> int:
        return sum(s or 0 for s in self._sizes[:self._index])

    def readinto(self, buffer: memoryview) -> int:
        while self._file is not None:
            view = buffer[:self.block_size] if self._buffered else buffer
            try:
                n = self._file.readinto(view)
            except Exception as e:  # noqa: BLE001
                url = self.urls[self._index]
                try:
                    at = self._file.tell()
                except Exception:  # noqa: BLE001 - the file is broken: no position
                    at = None
                where = f" at byte {at}" if at is not None else ""
                raise SourceError(f"cannot read {url}{where}: {reason(e)}", file=url,
                                  offset=None if at is None else self._base() + at) from None
            if n:
                return n
            self._close_file()
            self._index += 1
            if self._index < len(self.urls):
                self._open_current()
        return 0

    def _close_file(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except Exception:  # noqa: BLE001 - a read-only file: nothing to lose
                pass

    def close(self) -> None:
        self._close_file()
        if self._session is not None:
            session, self._session = self._session, None
            session.close()

    def where(self, offset: int) -> str:
        for url, size in zip(self.urls, self._sizes):
            if size is None or offset < size:
                return f"{url}: byte {offset}"
            offset -= size
        if self.urls:
            return f"{self.urls[-1]}: byte {offset + (self._sizes[-1] or 0)}"
        return f"{self.patterns[0]}: byte {offset}"

    def identities(self) -> list:
        return []


class FsspecSink:
    """Write the output to one fsspec URL, atomically (S3: a multipart upload)."""

    def __init__(self, url: str, *, storage_options: dict | None = None,
                 part_size: int = DEFAULT_PART_SIZE, overwrite: bool = True):
        self.url = os.fspath(url)
        self.storage_options = dict(storage_options or {})
        self.part_size = int(part_size)
        self.overwrite = overwrite
        self.protocol = _protocol(self.url)
        self.multipart = self.protocol in MULTIPART and "::" not in self.url
        if self.multipart and self.part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least 5 MiB (S3's smallest part), got "
                             f"{self.part_size} bytes")
        if self.part_size < 1:
            raise ValueError(f"part_size must be positive, got {part_size}")
        self._fsspec = _fsspec(self.url, SinkError)
        _filesystem_class(self._fsspec, self.url, SinkError)
        self.bytes = 0
        self.tmp: str | None = None    # the temp object's path (temp + move filesystems)
        self.abort_error: str | None = None  # what abort() could not clean up, if anything
        self._session: _Session | None = None
        self._fs: Any = None
        self._path = ""
        self._file: Any = None
        self._largest = 0

    def buffer_bytes(self) -> int:
        """The most bytes this sink holds: on S3, a part being filled (part_size plus one
        write) and the copy it is uploaded from. (botocore's parsed S3 model, about 10 MiB
        once per client, comes on top.)"""
        return 2 * (self.part_size + self._largest) if self.multipart else 0

    def _fail(self, what: str, e: BaseException) -> SinkError:
        return SinkError(f"cannot {what} {self.url}: {reason(e)}")

    def check(self, input_ids: list) -> None:
        """Refuse to start when the target cannot be written or must not be replaced."""
        session = _Session(self._fsspec, self.storage_options)
        try:
            try:
                fs, path = session.filesystem(self.url)
            except Exception as e:  # noqa: BLE001
                raise self._fail("write", e) from None
            try:
                info = fs.info(path)
            except FileNotFoundError:
                info = None
            except Exception as e:  # noqa: BLE001
                raise self._fail("write", e) from None
            if info is not None:
                if info.get("type") != "file":
                    raise SinkError(f"cannot write {self.url}: it is a directory")
                if not self.overwrite:
                    raise OutputExistsError(self.url)
                return
            self._check_parent(fs, path)
        finally:
            session.close()

    def _check_parent(self, fs: Any, path: str) -> None:
        if self.protocol in OBJECT_STORES:
            bucket = path.split("/", 1)[0]
            try:
                found = fs.exists(bucket)
            except Exception as e:  # noqa: BLE001
                raise self._fail("write", e) from None
            if not found:
                raise SinkError(f"cannot write {self.url}: bucket {bucket} does not exist (or "
                                f"these credentials cannot see it)")
            return
        parent = fs._parent(path)
        try:
            ok = not parent or parent == fs.root_marker or fs.isdir(parent)
        except Exception as e:  # noqa: BLE001
            raise self._fail("write", e) from None
        if not ok:
            raise SinkError(f"cannot write {self.url}: directory {parent} does not exist")

    def open(self) -> None:
        self._session = _Session(self._fsspec, self.storage_options)
        try:
            self._fs, self._path = self._session.filesystem(self.url)
            if self.multipart:
                mode = "wb" if self.overwrite else "xb"   # xb: If-None-Match on completion
                self._file = self._fs.open(self._path, mode, block_size=self.part_size,
                                           autocommit=False)
            else:
                parent = self._fs._parent(self._path)
                name = self._path.rsplit("/", 1)[-1]
                tmp = f".{name}.{os.getpid()}.{secrets.token_hex(8)}{TEMP_SUFFIX}"
                self.tmp = f"{parent.rstrip('/')}/{tmp}" if parent else tmp
                self._file = self._fs.open(self.tmp, "wb", block_size=self.part_size)
        except Exception as e:  # noqa: BLE001
            self.abort()
            raise self._fail("write", e) from None

    def write(self, data: memoryview) -> None:
        n = len(data)
        if self.multipart and self.bytes + n > (MAX_PARTS - 1) * self.part_size:
            raise SinkError(f"cannot write {self.url}: the output passed "
                            f"{format_size(self.bytes)}, more than S3's {MAX_PARTS} parts of "
                            f"part_size {format_size(self.part_size)} can hold: raise part_size")
        try:
            self._file.write(data)
        except Exception as e:  # noqa: BLE001
            raise self._fail("write", e) from None
        self.bytes += n
        self._largest = max(self._largest, n)

    def close(self) -> None:
        """Commit: complete the multipart upload, or move the temp object into place."""
        f = self._file
        try:
            try:
                f.close()           # uploads the last part / flushes the temp object
                if self.multipart:
                    f.commit()      # CompleteMultipartUpload (or one PUT for an empty file)
                else:
                    self._move()
            except FileExistsError:
                raise SinkError(f"{self.url} appeared while the job ran; not replaced (the "
                                f"new output was discarded)") from None
            except SinkError:
                raise
            except Exception as e:  # noqa: BLE001
                raise self._fail("finish", e) from None
        except SinkError:
            self.abort()
            raise
        self._file = None
        self.tmp = None
        self._end_session()

    def _move(self) -> None:
        if not self.overwrite and self._fs.exists(self._path):
            raise FileExistsError(self._path)
        self._fs.mv(self.tmp, self._path)

    def abort(self) -> None:
        """Drop everything: abort the multipart upload, or remove the temp object. Never
        raises; what could not be cleaned up is kept in `abort_error`."""
        f, self._file = self._file, None
        try:
            if f is not None and self.multipart:
                try:
                    f.discard()     # AbortMultipartUpload, if one was started
                finally:
                    f.closed = True  # nothing left to flush, now or when collected
            elif f is not None:
                try:
                    f.close()
                except Exception:  # noqa: BLE001 - the temp object goes anyway
                    pass
            if self.tmp is not None and self._fs is not None:
                tmp, self.tmp = self.tmp, None
                if self._fs.exists(tmp):
                    self._fs.rm(tmp)
        except Exception as e:  # noqa: BLE001 - abort must not raise
            self.abort_error = f"cannot clean up after {self.url}: {reason(e)}"
        finally:
            self._end_session()

    def _end_session(self) -> None:
        session, self._session = self._session, None
        self._fs = None
        if session is not None:
            session.close()
