"""TcpSource and TcpSink on loopback: a generated file sent through a listening TcpSource and
back out through a TcpSink, compared byte for byte (and against nc and GNU grep); refused
connections, unresolvable hosts, timeouts, peers that reset or close early."""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
import time

import pytest

import dataflow
from dataflow.errors import SinkError, SourceError
from dataflow.generate import generate_blocks
from dataflow.sinks import BrokenPipe, FileSink
from dataflow.tcp import TcpSink, TcpSource, parse_address

from conftest import require_tool

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def log_bytes() -> bytes:
    return b"".join(generate_blocks(6 << 20, 5))


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Receiver:
    """A thread that accepts one connection and keeps what it reads (until EOF, or `limit`
    bytes, after which it closes without reading the rest)."""

    def __init__(self, *, limit: int | None = None, hold: bool = False):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.limit = limit
        self.hold = hold          # keep the connection open after EOF (never close)
        self.data = bytearray()
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                while self.limit is None or len(self.data) < self.limit:
                    block = conn.recv(1 << 16)
                    if not block:
                        break
                    self.data += block
                if self.hold:
                    self.done.wait(10)
        except BaseException as e:
            self.error = e
        finally:
            self.listener.close()

    def join(self) -> bytes:
        self.done.set()
        self.thread.join(10)
        assert not self.thread.is_alive()
        return bytes(self.data)


class Sender(threading.Thread):
    """Connect to `address` and send `data`, then wait for the reader to close (or, with
    `reset_after`, send that much and reset the connection). `error`: what went wrong."""

    def __init__(self, address: str, data: bytes, *, reset_after: int | None = None):
        super().__init__(daemon=True)
        self.target = parse_address(address)
        self.data = data
        self.reset_after = reset_after
        self.error: OSError | None = None
        self.start()

    def run(self) -> None:
        try:
            with socket.create_connection(self.target, timeout=10) as s:
                if self.reset_after is None:
                    s.sendall(self.data)
                    s.shutdown(socket.SHUT_WR)
                    s.recv(1)       # wait for the reader to close
                else:
                    s.sendall(self.data[:self.reset_after])
                    time.sleep(0.1)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError as e:        # the reader closed without reading all (reset)
            self.error = e

    def finish(self) -> OSError | None:
        self.join(10)
        assert not self.is_alive()
        return self.error


# ----------------------------------------------------------------------------- round trips
def test_round_trip_through_a_listening_source_and_a_sink(log_bytes):
    src = TcpSource("127.0.0.1:0", listen=True, timeout=20)
    address = src.bind()
    assert address == src.bound_address and address.startswith("127.0.0.1:")
    assert int(address.rsplit(":", 1)[1]) > 0
    rx = Receiver()
    sink = TcpSink(rx.address, timeout=20)
    tx = Sender(address, log_bytes)
    stats = dataflow.pipeline(src, dataflow.Passthrough(), sink, workers=2,
                              memory_limit="256MiB", chunk_size="256KiB")
    assert tx.finish() is None
    assert rx.join() == log_bytes
    assert sink.bytes == len(log_bytes) == stats.bytes_out
    assert src.where(10) == f"tcp://{address}: byte 10"


def test_grep_over_tcp_matches_gnu_grep(tmp_path, log_bytes):
    grep = require_tool("grep")
    pattern = '" 5[0-9][0-9] '
    (tmp_path / "in.log").write_bytes(log_bytes)
    ref = subprocess.run([grep, pattern, str(tmp_path / "in.log")], capture_output=True,
                         env={**os.environ, "LC_ALL": "C"}, check=True).stdout
    src = TcpSource("127.0.0.1:0", listen=True, timeout=20)
    sink = TcpSink("127.0.0.1:0", listen=True, timeout=20)   # the peer connects to us
    tx = Sender(src.bind(), log_bytes)
    sink_address = sink.bind()
    got = bytearray()

    def fetch():
        with socket.create_connection(parse_address(sink_address), timeout=20) as s:
            while block := s.recv(1 << 16):
                got.extend(block)

    rx = threading.Thread(target=fetch, daemon=True)
    rx.start()
    dataflow.pipeline(src, dataflow.Grep(pattern), sink, workers=2, memory_limit="256MiB",
                      chunk_size="256KiB")
    assert tx.finish() is None
    rx.join(10)
    assert ref and bytes(got) == ref


def test_round_trip_with_nc_at_both_ends(tmp_path, log_bytes):
    nc = require_tool("nc")
    src_file, out = tmp_path / "in.log", tmp_path / "out.log"
    src_file.write_bytes(log_bytes)
    src = TcpSource("127.0.0.1:0", listen=True, timeout=20)
    sink = TcpSink("127.0.0.1:0", listen=True, timeout=20)
    sport, kport = src.bind().rsplit(":", 1)[1], sink.bind().rsplit(":", 1)[1]
    with open(src_file, "rb") as fin, open(out, "wb") as fout:
        # -N: shut the connection down at end of input, so we read end of stream
        sender = subprocess.Popen([nc, "-N", "127.0.0.1", sport], stdin=fin,
                                  stdout=subprocess.DEVNULL)
        receiver = subprocess.Popen([nc, "127.0.0.1", kport], stdin=subprocess.DEVNULL,
                                    stdout=fout)
        try:
            dataflow.pipeline(src, dataflow.Passthrough(), sink, workers=2,
                              memory_limit="256MiB", chunk_size="256KiB")
            assert sender.wait(10) == 0 and receiver.wait(10) == 0
        finally:
            for p in (sender, receiver):
                if p.poll() is None:
                    p.kill()
                    p.wait()
    assert subprocess.run(["cmp", str(src_file), str(out)]).returncode == 0


def test_ipv6_loopback():
    try:
        socket.socket(socket.AF_INET6).close()
        src = TcpSource("[::1]:0", listen=True, timeout=10)
        address = src.bind()
    except (OSError, SourceError):
        pytest.skip("no IPv6 loopback here")
    assert address.startswith("[::1]:")
    data = b"".join(b"%d\n" % i for i in range(10000))
    tx = Sender(address, data)
    src.open()
    got = bytearray()
    buf = bytearray(4096)
    try:
        while n := src.readinto(memoryview(buf)):
            got += buf[:n]
    finally:
        src.close()
    assert tx.finish() is None
    assert bytes(got) == data


def test_parse_address():
    assert parse_address("example.com:80") == ("example.com", 80)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    assert parse_address("0.0.0.0:0", listen=True) == ("0.0.0.0", 0)
    for bad, what in [("localhost", "host:port"), ("::1:80", "brackets"),
                      ("[::1]9000", "IPv6 address as"), ("h:x", "port must be"),
                      ("h:70000", "port must be"), (":80", "no host"),
                      ("h:0", "port 0")]:
        with pytest.raises(ValueError, match=what):
            parse_address(bad)


# ----------------------------------------------------------------------------- failures
def test_connection_refused():
    port = free_port()
    src = TcpSource(f"127.0.0.1:{port}", timeout=5)
    with pytest.raises(SourceError, match=rf"connection to 127.0.0.1:{port} refused"):
        src.open()
    src.close()
    sink = TcpSink(f"127.0.0.1:{port}", timeout=5)
    with pytest.raises(SinkError, match=rf"connection to 127.0.0.1:{port} refused"):
        sink.open()
    sink.abort()


def test_unresolvable_host():
    src = TcpSource("no-such-host.invalid:9000", timeout=5)
    with pytest.raises(SourceError, match="cannot resolve the host of no-such-host.invalid"):
        src.open()
    src.close()
    with pytest.raises(SinkError, match="cannot resolve the host of no-such-host.invalid"):
        TcpSink("no-such-host.invalid:9000").check([])    # before the job starts


def test_accept_timeout():
    src = TcpSource("127.0.0.1:0", listen=True, timeout=0.2)
    address = src.bind()
    with pytest.raises(SourceError, match=rf"no peer connected to {address} within 0.2 s"):
        src.open()
    src.close()


def test_a_listening_endpoint_takes_one_peer():
    src = TcpSource("127.0.0.1:0", listen=True, timeout=5)
    address = src.bind()
    tx = Sender(address, b"one\n")
    src.open()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(parse_address(address), timeout=5).close()
    src.close()
    tx.finish()   # reset: we closed without reading


def test_a_sender_that_resets_is_an_error_and_leaves_no_output(tmp_path, log_bytes):
    src = TcpSource("127.0.0.1:0", listen=True, timeout=20)
    tx = Sender(src.bind(), log_bytes, reset_after=300_000)
    out = tmp_path / "out.log"
    with pytest.raises(SourceError, match=r"the peer reset the connection; the data may be "
                                          r"incomplete") as e:
        dataflow.pipeline(src, dataflow.Passthrough(), FileSink(out), workers=2,
                          memory_limit="256MiB", chunk_size="256KiB")
    tx.finish()
    assert e.value.offset is not None and e.value.offset <= 300_000
    assert f"byte {e.value.offset:,}" in str(e.value) and src.bound_address in str(e.value)
    assert not out.exists() and os.listdir(tmp_path) == []


def test_a_receiver_that_closes_early_is_a_broken_pipe():
    rx = Receiver(limit=100_000)          # reads 100 KB, then closes with data unread: RST
    sink = TcpSink(rx.address, timeout=20)
    with pytest.raises(BrokenPipe) as e:
        dataflow.pipeline(dataflow.GenerateSource(32 << 20), dataflow.Passthrough(), sink,
                          workers=2, memory_limit="256MiB", chunk_size="1MiB")
    rx.join()
    msg = str(e.value)
    assert f"tcp://{rx.address}" in msg and "bytes" in msg
    assert f"{sink.bytes:,} bytes" in msg and sink.bytes < 32 << 20


def test_close_notices_a_reset_after_the_last_byte():
    # everything fits in the socket buffers, so every send succeeds; the peer reads only
    # part of it and closes: close() sees the reset
    rx = Receiver(limit=1000)
    sink = TcpSink(rx.address, timeout=10)
    sink.open()
    sink.write(memoryview(b"x" * 200_000))
    rx.thread.join(10)
    with pytest.raises(BrokenPipe, match=r"reset the connection .* after 200,000 bytes were "
                                         r"sent: it may not have read them all"):
        sink.close()
    rx.join()


def test_close_waits_for_the_peer_to_close():
    rx = Receiver(hold=True)              # reads everything, then keeps the connection open
    sink = TcpSink(rx.address, timeout=10, close_timeout=0.3)
    sink.open()
    sink.write(memoryview(b"y" * 1000))
    t = time.monotonic()
    with pytest.raises(SinkError, match=r"did not close the connection within 0.3 s after the "
                                        r"last of 1,000 bytes"):
        sink.close()
    assert time.monotonic() - t < 2
    assert rx.join() == b"y" * 1000


def test_abort_resets_so_the_peer_sees_an_error():
    listener = socket.create_server(("127.0.0.1", 0))
    sink = TcpSink(f"127.0.0.1:{listener.getsockname()[1]}", timeout=10)
    sink.open()
    conn, _ = listener.accept()
    listener.close()
    with conn:
        sink.write(memoryview(b"partial"))
        time.sleep(0.05)
        sink.abort()
        sink.abort()                      # idempotent
        conn.settimeout(5)
        with pytest.raises(ConnectionResetError):
            while conn.recv(100):         # not a clean end of stream
                pass


def test_source_read_timeout():
    src = TcpSource("127.0.0.1:0", listen=True, timeout=0.3)
    address = src.bind()
    s = socket.create_connection(parse_address(address), timeout=5)
    try:
        src.open()
        s.sendall(b"abc")
        buf = bytearray(10)
        assert src.readinto(memoryview(buf)) == 3
        with pytest.raises(SourceError, match=r"no data from 127.0.0.1:\d+ for 0.3 s at byte 3"):
            src.readinto(memoryview(buf))
    finally:
        s.close()
        src.close()
