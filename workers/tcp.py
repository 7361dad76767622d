"""tcp: send each chunk to a TCP service and take its answer as the chunk's output.

Rules:
- Per chunk: connect to `connect` ("host:port", "[::1]:port"), send the chunk, half-close
  (shutdown SHUT_WR: the service reads EOF), read the answer until the service closes. The
  answer is the chunk's output, byte for byte; the engine writes outputs in chunk order.
  One connection per chunk, as `exec` runs one command per chunk: the service needs no
  framing of its own, and a chunk that failed can be sent again.
- `timeout` (seconds, or a duration like 30s or 500ms) bounds connecting, and then any time
  with nothing sent or received; a service that is slow but steadily answering is not cut.
- It is a Duplex (dataflow/duplex.py): the chunk is sent from its slot without a copy while
  the answer is read, so a service that answers more than it got, or answers as it reads,
  never deadlocks with us.
- Errors name the service (host:port), the chunk, how far the exchange got, and the cause:
  refused (nothing listens), reset (the service dropped the connection, or closed it without
  reading all of the chunk), timeout, a host name that does not resolve.
- `check()` only parses the address: whether the service is up is known when it is used.
"""
from __future__ import annotations

import socket
from typing import Any

import msgspec

from dataflow.children import OptionError
from dataflow.duplex import Duplex, DuplexError, Peer, SocketPeer, socket_cause
from dataflow.sizes import parse_duration
from dataflow.streams import ChunkInfo
from dataflow.tcp import parse_address


class TcpService(Duplex):
    name = "tcp"

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        connect: str
        timeout: float | str = 30.0

    def __init__(self, connect: str, timeout: float | str = 30.0):
        self.address = connect
        self.timeout = timeout
        self._host: str | None = None
        self._port = 0
        self._seconds = 30.0

    def check(self) -> None:
        try:
            self._host, self._port = parse_address(self.address)
        except ValueError as e:
            raise OptionError("connect", str(e)) from None
        try:
            self._seconds = parse_duration(self.timeout)
        except ValueError as e:
            raise OptionError("timeout", str(e)) from None

    def setup(self) -> None:
        self.check()

    def transform(self, data: memoryview, chunk: ChunkInfo) -> Any:
        if self._host is None:
            self.check()
        return self._exchange(data, chunk)

    def connect(self, chunk: ChunkInfo) -> Peer:
        what = f"chunk {chunk.seq}"
        name = f"{self._host}:{self._port}" if ":" not in (self._host or "") else \
            f"[{self._host}]:{self._port}"
        try:
            sock = socket.create_connection((self._host, self._port), timeout=self._seconds)
        except OSError as e:
            cause, text = socket_cause(e)
            if cause == "timeout":
                text = f"no connection within {self._seconds:g} s (timeout)"
            raise DuplexError(f"tcp {name}: cannot connect for {what}: {text}",
                              peer=name, cause=cause) from None
        return SocketPeer(sock, name=name, what=what, timeout=self._seconds, label="tcp")
