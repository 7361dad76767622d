"""TcpSource and TcpSink: a byte stream over one TCP connection, made (`host:port`) or
accepted (`listen=True`).

Rules:
- Addresses are "host:port" or "[v6 address]:port" ("[::1]:9000"). Port 0 with
  `listen=True` lets the system pick a free port.
- Listening: `bind()` binds and listens, and returns the address actually bound
  ("127.0.0.1:43817"), also kept in `bound_address`; call it before the job starts when the
  peer must be told where to connect. `open()` binds if that was not done, then accepts one
  connection and stops listening (a second peer is refused).
- `timeout` (seconds, None: wait for ever) bounds connecting, accepting and every single
  send or receive; it is not a limit on the whole transfer.
- The source reads with `recv_into` straight into the caller's buffer until the peer
  closes its side. TCP has no length: a peer that closes cleanly early looks like the end of
  the data (a reset, or a sender that uses TcpSink, is an error).
- The sink sends with `sendall`. `close()` commits: it shuts down our sending side (the peer
  reads end of file), then waits up to `close_timeout` seconds for the peer to close its side.
  A peer that closes after reading everything is success; one that resets the connection
  (Linux resets when a socket is closed with unread data) or does not close in time is a
  SinkError naming host:port and the bytes sent. Bytes the peer sends us are discarded.
- `abort()` resets the connection (SO_LINGER 0) instead of closing it, so the peer sees an
  error rather than a stream that merely ends early: partial data is never passed on as a
  whole stream.
- Errors name the address, the byte offset (source) or bytes sent (sink) and the likely
  cause: connection refused, a host name that does not resolve, a timeout, a reset. A peer
  gone while we send is `BrokenPipe` (a SinkError).
"""
from __future__ import annotations

import errno
import socket
import struct
import time

from .errors import SinkError, SourceError
from .sinks import BrokenPipe
from .sources import Framed

CLOSE_TIMEOUT = 30.0  # seconds the sink waits, after its last byte, for the peer to close
DRAIN = 64 << 10      # bytes per recv while waiting for the peer to close


def parse_address(address: str, *, listen: bool = False) -> tuple[str, int]:
    """"host:port" or "[v6]:port" -> (host, port); ValueError says what is wrong."""
    if not isinstance(address, str):
        raise ValueError(f"a TCP address is a 'host:port' string, got {address!r}")
    if address.startswith("["):
        host, sep, port = address[1:].partition("]:")
        if not sep:
            raise ValueError(f"bad TCP address {address!r}: write an IPv6 address as "
                             f"'[::1]:9000'")
    else:
        host, sep, port = address.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"bad TCP address {address!r}: expected 'host:port' (an IPv6 "
                             f"address goes in brackets: '[::1]:9000')")
    if not host:
        raise ValueError(f"bad TCP address {address!r}: no host (use 0.0.0.0 or [::] to listen "
                         f"on every interface)")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"bad TCP address {address!r}: the port must be a number 0-65535")
    if int(port) == 0 and not listen:
        raise ValueError(f"bad TCP address {address!r}: port 0 only means 'any free port' "
                         f"when listening")
    return host, int(port)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _connect_error(address: str, e: OSError, timeout: float | None) -> str:
    if isinstance(e, socket.gaierror):
        return f"cannot resolve the host of {address} ({e.strerror})"
    if isinstance(e, ConnectionRefusedError):
        return f"connection to {address} refused (is anything listening there?)"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return f"timed out connecting to {address} after {timeout:g} s"
    return f"cannot connect to {address}: {e.strerror or e}"


class _Endpoint:
    """What the source and the sink share: one connection, made or accepted."""

    what = "connection"

    def _setup(self, address: str, listen: bool, timeout: float | None) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive seconds (or None), got {timeout!r}")
        self.address = address
        self.host, self.port = parse_address(address, listen=listen)
        self.listen = listen
        self.timeout = timeout
        self.bound_address: str | None = None
        self.peer: str | None = None
        self._listener: socket.socket | None = None
        self._sock: socket.socket | None = None

    @property
    def name(self) -> str:
        return f"tcp://{self.bound_address or self.address}"

    def bind(self) -> str:
        """Bind and listen (listen=True only); return the address bound, "host:port"."""
        if not self.listen:
            raise ValueError(f"{self.name}: bind() is for listen=True")
        if self._listener is not None:
            assert self.bound_address is not None
            return self.bound_address
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        except socket.gaierror as e:
            raise self._fail(f"cannot resolve {self.host} to listen on it ({e.strerror})")
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(1)
        except OSError as e:
            sock.close()
            hint = " (another program listens there)" if e.errno == errno.EADDRINUSE else ""
            raise self._fail(f"cannot listen on {self.address}: {e.strerror}{hint}") from None
        host, port = sock.getsockname()[:2]
        self._listener = sock
        self.bound_address = format_address(host, port)
        return self.bound_address

    def _connect(self) -> None:
        if self.listen:
            self.bind()
            assert self._listener is not None
            self._listener.settimeout(self.timeout)
            try:
                sock, peer = self._listener.accept()
            except (socket.timeout, TimeoutError):
                raise self._fail(f"no peer connected to {self.bound_address} within "
                                 f"{self.timeout:g} s") from None
            except OSError as e:
                raise self._fail(f"cannot accept a connection on {self.bound_address}: "
                                 f"{e.strerror or e}") from None
            finally:
                self._listener.close()    # one peer only
                self._listener = None
            self.peer = format_address(*peer[:2])
        else:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            except OSError as e:
                raise self._fail(_connect_error(self.address, e, self.timeout)) from None
            self.peer = self.address
        sock.settimeout(self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock

    def _fail(self, message: str) -> Exception:
        raise NotImplementedError

    def _close_sockets(self) -> None:
        for sock in (self._sock, self._listener):
            if sock is not None:
                sock.close()
        self._sock = self._listener = None


class TcpSource(_Endpoint, Framed):
    """The bytes a TCP peer sends until it closes its side; see the module docstring."""

    def __init__(self, address: str, *, listen: bool = False, timeout: float | None = None,
                 split: str = "lines", delimiter: bytes | str = b"\n",
                 max_record_size: int = 0, record_start: str | None = None,
                 record_size: int = 0, header: bool | None = None, errors: str = "strict"):
        self._setup(address, listen, timeout)
        self._framing(split, delimiter, max_record_size, record_start, record_size, header,
                     errors)
        self._offset = 0

    def _fail(self, message: str) -> SourceError:
        return SourceError(message, file=self.name, offset=None)

    def size(self) -> int | None:
        return None

    def where(self, offset: int) -> str:
        return f"{self.name}: byte {offset}"

    def identities(self) -> list:
        return []

    def open(self) -> None:
        self._offset = 0
        self._connect()

    def readinto(self, buffer: memoryview) -> int:
        assert self._sock is not None, "open() first"
        try:
            n = self._sock.recv_into(buffer)
        except (socket.timeout, TimeoutError):
            raise SourceError(f"no data from {self.peer} for {self.timeout:g} s at byte "
                              f"{self._offset:,} of {self.name}", file=self.name,
                              offset=self._offset) from None
        except OSError as e:
            cause = ("the peer reset the connection" if isinstance(e, ConnectionResetError)
                     else e.strerror or str(e))
            raise SourceError(f"cannot read {self.name} (peer {self.peer}) at byte "
                              f"{self._offset:,}: {cause}; the data may be incomplete",
                              file=self.name, offset=self._offset) from None
        self._offset += n
        return n

    def close(self) -> None:
        self._close_sockets()


class TcpSink(_Endpoint):
    """Send the output to a TCP peer; see the module docstring."""

    def __init__(self, address: str, *, listen: bool = False, timeout: float | None = None,
                 close_timeout: float = CLOSE_TIMEOUT):
        self._setup(address, listen, timeout)
        if close_timeout <= 0:
            raise ValueError(f"close_timeout must be positive seconds, got {close_timeout!r}")
        self.close_timeout = close_timeout
        self.bytes = 0

    def _fail(self, message: str) -> SinkError:
        return SinkError(message)

    def check(self, input_ids: list) -> None:
        """Refuse early what can be: a host name that does not resolve."""
        if self.listen:
            return
        try:
            socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise SinkError(f"cannot resolve the host of {self.address} ({e.strerror})") \
                from None

    def open(self) -> None:
        self.bytes = 0
        self._connect()

    def write(self, data: memoryview) -> None:
        assert self._sock is not None, "open() first"
        try:
            self._sock.sendall(data)
        except (socket.timeout, TimeoutError):
            raise SinkError(f"cannot send to {self.name} (peer {self.peer}): it took no data "
                            f"for {self.timeout:g} s after {self.bytes:,} bytes") from None
        except (BrokenPipeError, ConnectionResetError) as e:
            raise BrokenPipe(f"cannot send to {self.name} (peer {self.peer}): the peer closed "
                             f"the connection ({e.strerror}) after {self.bytes:,} bytes sent")\
                from None
        except OSError as e:
            raise SinkError(f"cannot send to {self.name} (peer {self.peer}) after "
                            f"{self.bytes:,} bytes: {e.strerror or e}") from None
        self.bytes += len(data)

    def close(self) -> None:
        """Commit: end our side, then wait for the peer to close after reading everything."""
        sock = self._sock
        assert sock is not None, "open() first"
        try:
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + self.close_timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout()
                sock.settimeout(left)
                if not sock.recv(DRAIN):
                    break
        except (socket.timeout, TimeoutError):
            self.abort()
            raise SinkError(f"{self.name} (peer {self.peer}) did not close the connection "
                            f"within {self.close_timeout:g} s after the last of {self.bytes:,} "
                            f"bytes: cannot tell whether it received them all") from None
        except OSError as e:
            self.abort()
            if e.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
                # ENOTCONN: the reset came before our shutdown()
                why = "connection reset" if e.errno == errno.ENOTCONN else e.strerror
                raise BrokenPipe(f"{self.name} (peer {self.peer}) reset the connection "
                                 f"({why}) after {self.bytes:,} bytes were sent: it "
                                 f"may not have read them all") from None
            raise SinkError(f"cannot finish sending to {self.name} (peer {self.peer}) after "
                            f"{self.bytes:,} bytes: {e.strerror or e}") from None
        self._close_sockets()

    def abort(self) -> None:
        sock = self._sock
        if sock is not None:
            try:   # a reset, not a clean end: the peer must not take this for the whole stream
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self._close_sockets()
