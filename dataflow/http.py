"""HttpSource: a Readable over an http:// or https:// URL, streamed, with concurrent Range
requests when the server takes them.

Rules:
- The body is streamed, never loaded whole. We use urllib3 (pooling, redirects, TLS); the
  body is read with the standard library's `readinto` under it, straight into the caller's
  buffer (one copy from the kernel), and with urllib3's own `read` (one more copy) where that
  is not available.
- The bytes are the bytes as served: a `Content-Encoding: gzip` body stays gzip (put a
  `decompress` stage first). We send no `Accept-Encoding` ourselves, so http.client asks for
  `identity`; a user header can ask for more.
- Unless `ranges` is False, the first request asks for the first part (`Range: bytes=0-N`).
  A 206 answer with the total length is the proof the server takes ranges (better than an
  `Accept-Ranges` header, which some servers omit, and one round trip fewer than a HEAD).
  Then, if the body is longer than one part, parts of `part_size` bytes are fetched by
  `connections` threads and handed over in order. A 200 answer means no ranges: with
  `ranges="auto"` that response is streamed as it is; with `ranges=True` it is an error.
- Memory is bounded: a part holds one of `connections` buffers of `part_size` bytes from
  the moment a thread starts it until the reader has taken its last byte, so at most
  `connections` parts are in flight or waiting. `buffer_bytes()` says how much that is.
- Failures are retried `retries` times with exponential backoff (BACKOFF, 2*BACKOFF, ...):
  connection refused or reset, timeouts, 5xx answers, a body that stops early. A part (and
  a single stream from a server that takes ranges) resumes from the byte it reached; range
  requests are idempotent. Every later answer must carry the first one's ETag and
  Last-Modified (when the server sent them) and total length: a file that changed while we
  read it is an error, never a mix of two versions.
- Errors are SourceError naming the URL, the byte offset, the status and reason, and the
  likely cause. A body shorter than its Content-Length is an error naming the offset reached
  and the length expected: partial data is never accepted silently. 4xx answers and
  unresolvable hosts are not retried.
- `close()` stops the threads: it sets the stop flag, wakes the waiting ones and shuts down
  the sockets of the ones blocked in a read, then joins them. A thread still connecting, or
  waiting for an answer's headers, cannot be woken: it ends within `timeout`, and close()
  waits up to JOIN_SECONDS for it (the threads are daemons).
- `size()` is the body's length once `open()` has seen it, None before (and for a body of
  unknown length). `where(offset)` is "<url>: byte N".
"""
from __future__ import annotations

import http.client
import re
import threading
from typing import Any
from urllib.parse import urljoin

import urllib3
from urllib3.exceptions import (ConnectTimeoutError, HTTPError, LocationValueError,
                                MaxRetryError, NameResolutionError, NewConnectionError,
                                ProtocolError, ReadTimeoutError, SSLError)

from .errors import SourceError
from .sources import Framed

BACKOFF = 0.25        # seconds before the first retry; doubled each time
BACKOFF_MAX = 8.0     # a retry never waits longer than this
PIECE = 1 << 20       # a part thread hands bytes over every MiB: the reader need not wait
                      # for a whole part, and the lock is taken ~8 times per 8 MiB part
SINGLE_BUFFER = 64 << 10  # what a single stream holds besides the caller's buffer (http.client
                          # and socket buffers): small, and not ours to size
JOIN_SECONDS = 5.0    # close() waits this long per thread; a blocked read ends at once
MAX_REDIRECTS = 10
RETRY_STATUS = frozenset({500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_REASONS = {
    401: "authentication required: pass credentials in `headers`",
    403: "access denied: check the URL and the credentials in `headers`",
    404: "the server has no such file: check the URL",
    410: "the file was removed from the server",
}


class _Stopped(Exception):
    """close() was called: a part thread ends quietly."""


class _Retry(Exception):
    """A failure worth another attempt (connection, timeout, 5xx, a short body)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _cause(exc: BaseException, timeout: float | None) -> str:
    """What a urllib3 / socket exception means, in words."""
    e = exc.reason if isinstance(exc, MaxRetryError) and exc.reason is not None else exc
    if isinstance(e, NameResolutionError):
        return f"cannot resolve the host name ({e.__cause__ or e})"
    if isinstance(e, NewConnectionError):   # (a subclass of ConnectTimeoutError)
        inner = e.__cause__ or e.__context__
        if isinstance(inner, ConnectionRefusedError) or "refused" in str(e).lower():
            return "connection refused (is the server running, on that port?)"
        if not isinstance(inner, TimeoutError):
            return f"cannot connect ({inner or e})"
    if isinstance(e, ConnectTimeoutError):
        return f"timed out connecting after {timeout:g} s" if timeout else "timed out connecting"
    if isinstance(e, SSLError):
        return f"TLS error ({e})"
    if isinstance(e, (ReadTimeoutError, TimeoutError)):
        return f"no data for {timeout:g} s (timeout)" if timeout else "timed out"
    if isinstance(e, (ProtocolError, http.client.IncompleteRead, ConnectionError)):
        return f"the connection was dropped ({e})"
    return f"{type(e).__name__}: {e}"


def _retryable(exc: BaseException) -> bool:
    e = exc.reason if isinstance(exc, MaxRetryError) and exc.reason is not None else exc
    if isinstance(e, (NameResolutionError, LocationValueError)):   # a bad name or URL
        return False
    if isinstance(e, SSLError):  # a certificate does not fix itself
        return False
    return isinstance(e, (HTTPError, OSError, http.client.HTTPException))


class _Part:
    """Bytes [start, start + length) of the body, filled by a thread into `buf`."""

    __slots__ = ("index", "start", "length", "buf", "view", "filled")

    def __init__(self, index: int, start: int, length: int, buf: bytearray):
        self.index = index
        self.start = start
        self.length = length
        self.buf = buf
        self.view = memoryview(buf)
        self.filled = 0


class _Body:
    """One byte range of the resource, read in order; after a failure it is requested again
    from the byte reached (when the server takes ranges), at most `retries` times."""

    def __init__(self, src: "HttpSource", start: int, end: int | None, resp: Any = None):
        self.src = src
        self.pos = start
        self.end = end          # exclusive; None: to the end of a body of unknown length
        self.resp = resp
        self.reader = None if resp is None else _reader(resp)
        self.attempts = 0

    def readinto(self, view: memoryview) -> int:
        src = self.src
        if self.end is not None and len(view) > self.end - self.pos:
            view = view[:self.end - self.pos]
        if not len(view):
            self.release()
            return 0
        while True:
            try:
                if self.resp is None:
                    self.resp = src._get_range(self.pos, self.end)
                    self.reader = _reader(self.resp)
                assert self.reader is not None
                n = self.reader(view)
            except _Retry as e:
                failure = e.message
            except SourceError:
                raise
            except (HTTPError, OSError, http.client.HTTPException) as e:
                if not _retryable(e):
                    raise src._error(_cause(e, src.timeout), self.pos) from None
                failure = _cause(e, src.timeout)
            else:
                if n:
                    self.pos += n
                    return n
                if self.end is None or self.pos >= self.end:
                    self.release()
                    return 0
                failure = "the server closed the connection before the end of the body"
            src._check_stop()
            self.close()
            if not src.resumable or self.attempts >= src.retries:
                tried = f" (after {self.attempts} retries)" if self.attempts else ""
                expected = (f"; got {self.pos:,} of {src._length:,} bytes"
                            if src._length is not None else f"; got {self.pos:,} bytes")
                raise src._error(f"{failure}{expected}{tried}", self.pos)
            self.attempts += 1
            src._backoff(self.attempts)

    def release(self) -> None:
        """Done: the connection goes back to the pool if its answer was read to the end
        (a server may send more than the range asked for), else it is dropped."""
        if self.resp is not None:
            if _finished(self.resp):
                self.src._forget(self.resp)
                self.resp.release_conn()
                self.resp = self.reader = None
            else:
                self.close()

    def close(self) -> None:
        """Drop the connection (unread bytes cannot go back to the pool)."""
        if self.resp is not None:
            self.src._forget(self.resp)
            self.resp.close()
            self.resp = self.reader = None


def _final_url(url: str, resp: Any) -> str:
    """The URL `resp` came from, after the redirects urllib3 followed."""
    retries = getattr(resp, "retries", None)
    for step in getattr(retries, "history", ()) or ():
        if step.redirect_location:
            url = urljoin(url, step.redirect_location)
    return url


def _finished(resp: Any) -> bool:
    """True when `resp`'s body has been read to its end."""
    fp = getattr(resp, "_fp", None)
    if isinstance(fp, http.client.HTTPResponse):
        return fp.isclosed()
    return resp.length_remaining == 0


def _reader(resp: Any):
    """A readinto for `resp`'s body: http.client's under urllib3 (straight into the buffer)
    when we can reach it and urllib3 has nothing to decode, else urllib3's read (a copy)."""
    fp = getattr(resp, "_fp", None)
    if isinstance(fp, http.client.HTTPResponse) and not getattr(resp, "_decoder", None):
        return fp.readinto

    def read_copy(view: memoryview) -> int:
        data = resp.read(len(view), decode_content=False)
        view[:len(data)] = data
        return len(data)

    return read_copy


class HttpSource(Framed):
    """The body of an http:// or https:// URL; see the module docstring."""

    def __init__(self, url: str, *, connections: int = 4, part_size: int = 8 << 20,
                 ranges: bool | str = "auto", headers: dict[str, str] | None = None,
                 timeout: float | None = 30.0, retries: int = 3, split: str = "lines",
                 delimiter: bytes | str = b"\n", max_record_size: int = 0,
                 record_start: str | None = None, record_size: int = 0,
                 header: bool | None = None, errors: str = "strict"):
        if not isinstance(url, str) or not re.match(r"(?i)https?://[^/]", url):
            raise ValueError(f"HttpSource needs an http:// or https:// URL, got {url!r}")
        if isinstance(connections, bool) or not isinstance(connections, int) or connections < 1:
            raise ValueError(f"connections must be a positive integer, got {connections!r}")
        if isinstance(part_size, bool) or not isinstance(part_size, int) or part_size < 1:
            raise ValueError(f"part_size must be a positive number of bytes, got {part_size!r}")
        if ranges not in (True, False, "auto"):
            raise ValueError(f"ranges must be true, false or 'auto', got {ranges!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive seconds (or None), got {timeout!r}")
        self._framing(split, delimiter, max_record_size, record_start, record_size, header,
                     errors)
        self.url = url
        self.connections = connections
        self.part_size = part_size
        self.ranges = ranges
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.retries = retries
        self.mode: str | None = None       # after open(): "single" or "ranges"
        self.resumable = False             # the server answered a Range request with 206
        self.retried = 0                   # retries made (all threads): for stats and tests
        self._length: int | None = None
        self._validators: dict[str, str] = {}
        self._target = url                 # the URL after redirects
        self._pool: urllib3.PoolManager | None = None
        self._body: _Body | None = None
        # range mode, shared with the part threads under _cond
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._parts: dict[int, _Part] = {}  # started and not yet fully taken by the reader
        self._free: list[bytearray] = []
        self._allocated = 0
        self._next = 0                      # the next part to start
        self._nparts = 0
        self._first: Any = None             # the first answer: part 0's bytes
        self._failure: SourceError | None = None  # a part's, raised by readinto
        self._responses: set[Any] = set()   # answers being read by part threads
        self._reading = 0                   # the part the reader is in, and where
        self._at = 0

    # ------------------------------------------------------------------ the protocol
    def size(self) -> int | None:
        return self._length

    def buffer_bytes(self) -> int:
        """The most bytes this source holds in memory: before open() what it may hold, after
        open() what it holds (connections x part_size in range mode, little otherwise)."""
        if self.mode == "ranges":
            return self._nbuffers() * self._part_length()
        if self.mode == "single" or self.ranges is False:
            return SINGLE_BUFFER
        return self.connections * self.part_size

    def where(self, offset: int) -> str:
        return f"{self.url}: byte {offset}"

    def identities(self) -> list:
        return []

    def open(self) -> None:
        self._stop.clear()
        self._pool = urllib3.PoolManager(
            num_pools=4, maxsize=self.connections, block=False,
            timeout=urllib3.Timeout(connect=self.timeout, read=self.timeout),
            retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0,
                                  redirect=MAX_REDIRECTS, raise_on_status=False))
        resp = self._first_response()
        if self.resumable and self._length is not None and self._length > self.part_size:
            self.mode = "ranges"
            self._first = resp
            self._nparts = -(-self._length // self.part_size)
            for i in range(min(self.connections, self._nparts)):
                t = threading.Thread(target=self._part_thread, name=f"dataflow-http-{i}",
                                     daemon=True)
                self._threads.append(t)
                t.start()
        else:
            self.mode = "single"
            self._body = _Body(self, 0, self._length, resp)

    def readinto(self, buffer: memoryview) -> int:
        if self.mode == "single":
            assert self._body is not None
            return self._body.readinto(buffer)
        with self._cond:
            while True:
                if self._failure is not None:
                    raise self._failure
                if self._reading >= self._nparts:
                    return 0
                part = self._parts.get(self._reading)
                if part is not None and part.filled > self._at:
                    break
                self._cond.wait()
        n = min(len(buffer), part.filled - self._at)
        buffer[:n] = part.view[self._at:self._at + n]   # bytes below `filled` stay put
        self._at += n
        if self._at == part.length:
            with self._cond:
                del self._parts[self._reading]
                self._free.append(part.buf)
                self._reading += 1
                self._at = 0
                self._cond.notify_all()
        return n

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
            responses = list(self._responses)
        for resp in responses:   # unblock threads in a read: recv() returns at once
            try:
                resp.shutdown()
            except (ValueError, RuntimeError, OSError):
                pass
        for t in self._threads:
            t.join(JOIN_SECONDS)
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._body is not None:
            self._body.close()
            self._body = None
        if self._first is not None:
            self._first.close()
            self._first = None
        self._parts.clear()
        self._free.clear()
        if self._pool is not None:
            self._pool.clear()
            self._pool = None

    # ------------------------------------------------------------------ requests
    def _error(self, what: str, offset: int | None) -> SourceError:
        at = f" at byte {offset:,}" if offset is not None else ""
        return SourceError(f"cannot read {self.url}{at}: {what}", file=self.url, offset=offset)

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise _Stopped()

    def _backoff(self, attempt: int) -> None:
        with self._cond:
            self.retried += 1
        if self._stop.wait(min(BACKOFF_MAX, BACKOFF * 2 ** (attempt - 1))):
            raise _Stopped()

    def _forget(self, resp: Any) -> None:
        with self._cond:
            self._responses.discard(resp)

    def _request(self, url: str, extra: dict[str, str], offset: int) -> Any:
        """One GET (redirects followed), retried on connection failures and 5xx."""
        assert self._pool is not None
        attempt = 0
        while True:
            self._check_stop()
            try:
                resp = self._pool.request("GET", url, headers={**self.headers, **extra},
                                          preload_content=False, decode_content=False)
            except HTTPError as e:
                failure = _cause(e, self.timeout)
                if not _retryable(e) or attempt >= self.retries:
                    tried = f" (after {attempt} retries)" if attempt else ""
                    raise self._error(f"{failure}{tried}", offset) from None
            else:
                if resp.status not in RETRY_STATUS:
                    with self._cond:
                        if self._stop.is_set():
                            resp.close()
                            raise _Stopped()
                        self._responses.add(resp)
                    return resp
                failure = f"{resp.status} {resp.reason} (a server error)"
                resp.drain_conn()
                resp.release_conn()
                if attempt >= self.retries:
                    tried = f" (after {attempt} retries)" if attempt else ""
                    raise self._error(f"the server answered {failure}{tried}", offset)
            attempt += 1
            self._backoff(attempt)

    def _status_error(self, resp: Any, offset: int) -> SourceError:
        hint = _REASONS.get(resp.status, "")
        reason = f" {resp.reason}" if resp.reason else ""
        self._drop(resp)
        return self._error(f"the server answered {resp.status}{reason}"
                           f"{': ' + hint if hint else ''}", offset)

    def _drop(self, resp: Any) -> None:
        self._forget(resp)
        resp.close()

    def _first_response(self) -> Any:
        """The first answer: the first part (206) or the whole body (200)."""
        if self.ranges is False:
            return self._whole()
        resp = self._request(self.url, {"Range": f"bytes=0-{self.part_size - 1}"}, 0)
        if resp.status == 416:     # an empty file has no byte 0
            self._drop(resp)
            return self._whole()
        if resp.status == 206:
            m = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
            if m is None or int(m[1]) != 0 or m[3] == "*":
                self._drop(resp)    # no usable total length: read it as one stream
                if self.ranges is True:
                    raise self._error("the server's answer to a Range request has no total "
                                      "length (Content-Range), so parts cannot be fetched; "
                                      "use ranges: auto or false", 0)
                return self._whole()
            self._length = int(m[3])
            self.resumable = True
            self._target = _final_url(self.url, resp)
            self._remember(resp)
            return resp
        if resp.status == 200:
            if self.ranges is True:
                self._drop(resp)
                raise self._error("the server does not support Range requests (it answered "
                                  "200 with the whole body, ranges: true asks for parts); use "
                                  "ranges: auto to read one stream", 0)
            self._accept_whole(resp)
            return resp
        raise self._status_error(resp, 0)

    def _whole(self) -> Any:
        resp = self._request(self.url, {}, 0)
        if resp.status != 200:
            raise self._status_error(resp, 0)
        self._accept_whole(resp)
        return resp

    def _accept_whole(self, resp: Any) -> None:
        length = resp.headers.get("Content-Length")
        te = resp.headers.get("Transfer-Encoding", "").lower()
        self._length = int(length) if length and length.isdigit() and "chunked" not in te \
            else None
        self._target = _final_url(self.url, resp)
        self._remember(resp)

    def _remember(self, resp: Any) -> None:
        self._validators = {k: resp.headers[k] for k in ("ETag", "Last-Modified")
                            if resp.headers.get(k)}

    def _get_range(self, start: int, end: int | None) -> Any:
        """An answer carrying bytes [start, end) of the same file (checked), for a part or
        to resume after a failure. Raises _Retry for a failure worth another attempt."""
        last = "" if end is None else str(end - 1)
        resp = self._request(self._target, {"Range": f"bytes={start}-{last}"}, start)
        if resp.status != 206:
            if resp.status == 200 or resp.status == 416 or resp.status < 400:
                self._drop(resp)
                why = ("the server now ignores Range requests" if resp.status == 200 else
                       f"the server answered {resp.status} {resp.reason}")
                raise self._error(f"{why} (asked for bytes {start}-{last}); the file may have "
                                  f"changed or been replaced: start again", start)
            raise self._status_error(resp, start)
        m = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
        total = int(m[3]) if m is not None and m[3] != "*" else None
        if m is None or int(m[1]) != start or (end is not None and int(m[2]) != end - 1):
            self._drop(resp)
            raise _Retry(f"the server sent the wrong bytes (Content-Range "
                         f"{resp.headers.get('Content-Range')!r} for bytes {start}-{last})")
        changed = [f"{k} {old!r} -> {resp.headers.get(k)!r}"
                   for k, old in self._validators.items() if resp.headers.get(k) != old]
        if total != self._length:
            changed.append(f"length {self._length} -> {total}")
        if changed:
            self._drop(resp)
            raise self._error(f"the file changed while it was being read ({', '.join(changed)}); "
                              f"start again", start)
        return resp

    # ------------------------------------------------------------------ range mode
    def _part_length(self) -> int:
        return min(self.part_size, self._length or self.part_size)

    def _nbuffers(self) -> int:
        return min(self.connections, self._nparts) if self._nparts else self.connections

    def _part_thread(self) -> None:
        try:
            while True:
                with self._cond:
                    while (not self._stop.is_set() and self._failure is None
                           and self._next < self._nparts
                           and len(self._parts) >= self.connections):
                        self._cond.wait()
                    if self._stop.is_set() or self._failure is not None \
                            or self._next >= self._nparts:
                        return
                    index = self._next
                    self._next += 1
                    if self._free:
                        buf = self._free.pop()
                    else:
                        buf = bytearray(self._part_length())
                        self._allocated += 1
                    start = index * self.part_size
                    assert self._length is not None
                    part = _Part(index, start, min(self.part_size, self._length - start), buf)
                    self._parts[index] = part
                    first = None
                    if index == 0:   # the first answer already carries part 0
                        first, self._first = self._first, None
                self._fill(part, first)
        except _Stopped:
            pass
        except SourceError as e:
            with self._cond:
                if self._failure is None and not self._stop.is_set():
                    self._failure = e
                self._cond.notify_all()
        except BaseException as e:  # a bug: the reader must not wait forever for this part
            with self._cond:
                if self._failure is None:
                    self._failure = self._error_from_bug(e)
                self._cond.notify_all()

    def _error_from_bug(self, e: BaseException) -> SourceError:
        err = SourceError(f"cannot read {self.url}: a part thread failed: "
                          f"{type(e).__name__}: {e}", file=self.url)
        err.__cause__ = e
        return err

    def _fill(self, part: _Part, first: Any) -> None:
        body = _Body(self, part.start, part.start + part.length, first)
        try:
            while part.filled < part.length:
                self._check_stop()
                end = min(part.length, part.filled + PIECE)
                n = body.readinto(part.view[part.filled:end])
                if n == 0:   # _Body raises on a short body; this is a bug guard
                    raise self._error(f"part {part.index} ended early", part.start + part.filled)
                with self._cond:
                    part.filled += n
                    self._cond.notify_all()
            body.release()
        finally:
            body.close()

    def __repr__(self) -> str:
        return f"HttpSource({self.url!r})"

