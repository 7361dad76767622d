"""Duplex: a stage whose work is done by a peer that we write each chunk into and read the
answer from, like Node's Duplex (both Writable and Readable): a child process (`exec`), a TCP
service (`tcp`), or one you write.

A subclass implements one method, `connect(chunk) -> Peer`: start or reach the peer for this
chunk and say where to write, where to read, and how to end. The base class's `transform()`
does the rest with one pump shared by every Duplex.

Rules of the pump:
- One selector multiplexes, over non-blocking descriptors: writing the chunk to `peer.input`,
  reading the answer from `peer.output` until EOF, reading `peer.side` descriptors (a
  process's stderr) until EOF, and `peer.watch` descriptors (a pidfd) that fire once. No
  threads. Input and output may be one descriptor (a socket).
- The chunk is written straight from its shared-memory slot, in pieces of at most WRITE_MAX,
  never copied. The answer is yielded as it is read, so an answer much larger than the chunk
  never sits whole in memory; and since we read while we write, a peer that answers before it
  has read everything never deadlocks, whatever the sizes of its output or its stderr.
- When the chunk is written, `peer.end_input()` (close stdin, shutdown(SHUT_WR)); with an
  empty chunk, at once. A peer that stops reading early (EPIPE) goes to `peer.refused()`: by
  default feeding stops and the answer is still read to its end; a peer that would rather
  fail raises there. Any other I/O error becomes `peer.failed(error, doing)`, raised.
- `peer.timeout` seconds with nothing to do (no byte moved either way) raise
  `peer.timed_out()`; None waits for ever (a process is bounded by chunk_timeout instead).
- When every stream has ended, `peer.finish()` checks the outcome (waits for the process,
  checks its exit status) and raises if it failed. On any error, and when the engine drops
  the chunk's output (GeneratorExit), `peer.abort()` instead (kill, reset). `peer.close()`
  always comes last and releases the descriptors.
- `connect()` runs when the engine first pulls the output, with the chunk's ChunkInfo: take
  what you need from it then (the worker reuses it).
"""
from __future__ import annotations

import errno
import os
import selectors
import socket
from typing import Any, Iterator, Sequence

from .errors import DataflowError
from .streams import ChunkInfo, Transform

WRITE_MAX = 256 << 10    # bytes per write: a pipe's capacity as children.py asks for it
READ_SIZE = 256 << 10    # bytes per read of the answer


class DuplexError(DataflowError):
    """A Duplex's peer failed: could not be reached, reset the connection, timed out."""

    def __init__(self, message: str, *, peer: str = "", cause: str = ""):
        self.peer = peer      # what the peer is: "127.0.0.1:7000", a command line
        self.cause = cause    # "refused", "reset", "timeout", ... ("" when not known)
        super().__init__(message)


class Peer:
    """One chunk's peer, as `Duplex.connect()` returns it. Override the hooks you need."""

    input: Any = None          # where the chunk is written: an fd or anything with fileno()
    output: Any = None         # where the answer is read from, until EOF
    side: Sequence[Any] = ()   # more readers (a process's stderr): bytes go to on_side()
    watch: Sequence[Any] = ()  # descriptors that become readable once (a pidfd): on_watch()
    timeout: float | None = None   # seconds with nothing moving before timed_out()
    read_size = READ_SIZE
    # kept up to date by the pump, for messages
    total = 0                  # bytes of the chunk
    sent = 0                   # bytes of it written so far
    received = 0               # bytes of answer read so far

    def end_input(self) -> None:
        """No more input: close the peer's stdin, or shutdown(SHUT_WR)."""

    def on_side(self, fd: int, part: bytes) -> None:
        """Bytes read from a `side` descriptor."""

    def on_watch(self, fd: int) -> None:
        """A `watch` descriptor became readable (it is not watched any more)."""

    def refused(self, error: BrokenPipeError) -> None:
        """The peer stopped reading (EPIPE) after `sent` bytes. By default feeding stops and
        its answer is read to the end; raise to fail instead."""

    def failed(self, error: OSError, doing: str) -> BaseException:
        """The exception to raise for an I/O error while `doing` ('writing', 'reading')."""
        return error

    def timed_out(self) -> BaseException:
        return DuplexError(f"nothing was sent or received for {self.timeout:g} s",
                           cause="timeout")

    def finish(self) -> None:
        """Every stream ended: wait for the peer and check how it ended; raise if it failed."""

    def abort(self) -> None:
        """An error, or the output is not wanted: stop the peer now. Must not raise."""

    def close(self) -> None:
        """Always last: release the descriptors."""


class Duplex(Transform):
    """Base class for a stage done by a peer: implement `connect(chunk) -> Peer`."""

    name = "duplex"

    def connect(self, chunk: ChunkInfo) -> Peer:
        raise NotImplementedError(f"{type(self).__name__} must implement connect(chunk)")

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Iterator[bytes]:
        return self._exchange(data, chunk)   # a generator: nothing starts until pulled

    def _exchange(self, data: Any, chunk: ChunkInfo) -> Iterator[bytes]:
        own_view = not (isinstance(data, memoryview) and data.format == "B" and data.ndim == 1)
        mv = memoryview(data).cast("B") if own_view else data
        try:
            peer = self.connect(chunk)
            try:
                try:
                    yield from pump(peer, mv)
                    peer.finish()
                except BaseException:   # an error, or the engine closing us (GeneratorExit)
                    peer.abort()
                    raise
            finally:
                peer.close()
        finally:
            if own_view:
                mv.release()


def _fd(obj: Any) -> int:
    return obj if isinstance(obj, int) else obj.fileno()


def pump(peer: Peer, data: memoryview) -> Iterator[bytes]:
    """Write `data` to the peer while yielding its answer, until every stream has ended."""
    sel = selectors.DefaultSelector()
    reads: dict[int, str] = {}     # fd -> "out" | "side" | "watch"
    write_fd = -1

    def update(fd: int) -> None:
        mask = (selectors.EVENT_READ if fd in reads else 0) | \
               (selectors.EVENT_WRITE if fd == write_fd else 0)
        try:
            key = sel.get_key(fd)
        except KeyError:
            if mask:
                sel.register(fd, mask)
            return
        if not mask:
            sel.unregister(fd)
        elif key.events != mask:
            sel.modify(fd, mask)

    try:
        end = len(data)
        pos = 0
        peer.total, peer.sent, peer.received = end, 0, 0
        for f in peer.watch:
            reads[_fd(f)] = "watch"
        for f in peer.side:
            reads[_fd(f)] = "side"
        reads[_fd(peer.output)] = "out"
        for fd, role in reads.items():
            if role != "watch":
                os.set_blocking(fd, False)
        if end:
            write_fd = _fd(peer.input)
            os.set_blocking(write_fd, False)
        else:
            peer.end_input()
        for fd in {*reads, write_fd} - {-1}:
            update(fd)
        read_size = peer.read_size
        while sel.get_map():
            events = sel.select(peer.timeout)
            if not events:
                raise peer.timed_out()
            for key, mask in events:
                fd = key.fd
                if mask & selectors.EVENT_WRITE and fd == write_fd:
                    try:
                        with data[pos:pos + WRITE_MAX] as piece:
                            pos += os.write(fd, piece)
                        peer.sent = pos
                    except BlockingIOError:
                        pass
                    except BrokenPipeError as e:   # it stopped reading (head)
                        peer.refused(e)
                        pos = end                  # the rest is dropped; `sent` stays
                    except OSError as e:
                        raise peer.failed(e, "writing") from None
                    if pos >= end:
                        write_fd = -1
                        update(fd)
                        peer.end_input()
                if mask & selectors.EVENT_READ and fd in reads:
                    role = reads[fd]
                    if role == "watch":
                        del reads[fd]
                        update(fd)
                        peer.on_watch(fd)
                        continue
                    try:
                        part = os.read(fd, read_size)
                    except BlockingIOError:
                        continue
                    except OSError as e:
                        raise peer.failed(e, "reading") from None
                    if not part:
                        del reads[fd]
                        update(fd)
                    elif role == "out":
                        peer.received += len(part)
                        yield part
                    else:
                        peer.on_side(fd, part)
    finally:
        sel.close()


# ---------------------------------------------------------------------- sockets
_CAUSES = {
    errno.ECONNRESET: ("reset", "the connection was reset by the service"),
    errno.EPIPE: ("reset", "the connection was reset: the service closed it before reading "
                           "all of the chunk"),
    errno.ENOTCONN: ("reset", "the connection was reset by the service (no longer "
                              "connected)"),
    errno.ECONNREFUSED: ("refused", "connection refused (is the service running?)"),
    errno.ETIMEDOUT: ("timeout", "the connection timed out"),
    errno.EHOSTUNREACH: ("unreachable", "no route to the host"),
    errno.ENETUNREACH: ("unreachable", "the network is unreachable"),
}


def socket_cause(error: BaseException) -> tuple[str, str]:
    """(short cause, explanation) of a socket error."""
    if isinstance(error, socket.gaierror):
        return "resolve", f"cannot resolve the host name: {error.strerror}"
    if isinstance(error, TimeoutError) and getattr(error, "errno", None) is None:
        return "timeout", "timed out"
    code = getattr(error, "errno", None)
    if code in _CAUSES:
        return _CAUSES[code]
    return "error", str(getattr(error, "strerror", None) or error)


class SocketPeer(Peer):
    """A connected stream socket as a peer: write the chunk, half-close (SHUT_WR), read the
    answer until the service closes. `name` says what it is in messages ("127.0.0.1:7000"),
    `what` which chunk ("chunk 3")."""

    def __init__(self, sock: socket.socket, *, name: str, what: str = "",
                 timeout: float | None = None, label: str = "service"):
        sock.setblocking(False)
        self.sock = sock
        self.input = self.output = sock
        self.name = name
        self.what = what
        self.label = label
        self.timeout = timeout

    def end_input(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            raise self.failed(e, "ending its input") from None

    def refused(self, error: BrokenPipeError) -> None:
        raise self.failed(error, "writing")   # on a socket, EPIPE follows a reset

    def _progress(self) -> str:
        return (f"{self.what + ': ' if self.what else ''}{self.sent} of {self.total} bytes "
                f"sent, {self.received} received")

    def failed(self, error: OSError, doing: str) -> BaseException:
        cause, text = socket_cause(error)
        return DuplexError(f"{self.label} {self.name}: {text} while {doing} ({self._progress()})",
                           peer=self.name, cause=cause)

    def timed_out(self) -> BaseException:
        return DuplexError(f"{self.label} {self.name}: nothing was sent or received for "
                           f"{self.timeout:g} s (timeout; {self._progress()})",
                           peer=self.name, cause="timeout")

    def abort(self) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()
