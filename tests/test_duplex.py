"""Duplex: the tcp stage against loopback services run in threads (an upper-casing echo, one
that resets, one that answers eight times what it got, one that never answers, nothing
listening), a user's own Duplex over a Unix socket, and the tcp stage's YAML options."""
from __future__ import annotations

import os
import random
import re
import socket
import socketserver
import threading

import pytest

from dataflow import FileSource, stream
from dataflow.duplex import Duplex, DuplexError, Peer, SocketPeer, pump
from dataflow.errors import StageError
from dataflow.streams import ChunkInfo
from workers.tcp import TcpService, parse_address

from conftest import SMALL, run_cli, run_job, write_words



# ------------------------------------------------------------------ services
class Upper(socketserver.BaseRequestHandler):
    """Answers as it reads: each piece upper-cased, until EOF; then closes."""

    def handle(self) -> None:
        while piece := self.request.recv(1 << 16):
            self.request.sendall(piece.upper())


class EightTimes(socketserver.BaseRequestHandler):
    """Answers eight times what it reads, while reading: each piece, then seven times its
    length in dashes. It blocks on sendall unless the client reads as it writes."""

    def handle(self) -> None:
        while piece := self.request.recv(1 << 16):
            self.request.sendall(piece)
            self.request.sendall(b"-" * (7 * len(piece)))


class Reset(socketserver.BaseRequestHandler):
    """Reads a little, then drops the connection with a RST (SO_LINGER 0)."""

    def handle(self) -> None:
        self.request.recv(100)
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        self.request.close()   # now, before socketserver's shutdown(SHUT_WR) sends a FIN


class Silent(socketserver.BaseRequestHandler):
    """Reads everything and never answers, keeping the connection open until released."""

    released = threading.Event()

    def handle(self) -> None:
        while self.request.recv(1 << 16):
            pass
        self.released.wait(10)


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = False
    block_on_close = True      # server_close() joins the handler threads: none left running


@pytest.fixture
def serve():
    """serve(Handler) -> "127.0.0.1:port"; every server is shut down and joined after."""
    started = []

    def start(handler, family=socket.AF_INET) -> str:
        server = Server(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        started.append((server, thread))
        host, port = server.server_address[:2]
        return f"{host}:{port}"

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join()


# ------------------------------------------------------------------ tcp
def test_an_upper_casing_service_answers_every_chunk_in_order(tmp_path, serve):
    address = serve(Upper)
    src = tmp_path / "in.txt"
    data = write_words(src, 3 << 20)
    out = run_job(tmp_path, src, TcpService(address))
    assert len(data) > 40 * (64 << 10)    # dozens of chunks over 2 workers
    assert out == data.upper()


def test_a_service_that_answers_eight_times_more_than_it_got_never_deadlocks(tmp_path, serve):
    address = serve(EightTimes)
    src = tmp_path / "in.bin"
    data = random.Random(4).randbytes(3 << 20).replace(b"-", b"+")
    src.write_bytes(data)
    chunk = 1 << 20   # 8 MiB of answer per chunk: far more than the socket buffers
    out = run_job(tmp_path, src, TcpService(address, timeout="10s"), chunk_size=chunk,
              source=dict(split="bytes"))
    assert len(out) == 8 * len(data)
    assert out.replace(b"-", b"") == data


def test_a_service_that_resets_fails_the_job_naming_address_chunk_and_cause(tmp_path, serve):
    address = serve(Reset)
    src = tmp_path / "in.txt"
    write_words(src, 300 << 10)
    with pytest.raises(StageError) as e:
        run_job(tmp_path, src, TcpService(address))
    msg = str(e.value)
    assert f"DuplexError: tcp {address}: " in msg, msg
    assert re.search(r"failed on chunk \d+ .*\(chunk \d+: \d+ of \d+ bytes sent, \d+ received",
                     msg), msg
    assert "the connection was reset" in msg, msg
    assert not (tmp_path / "out").exists()


def test_nothing_listening_is_refused_naming_the_address(tmp_path):
    with socket.socket() as s:   # a port that was free a moment ago, now closed
        s.bind(("127.0.0.1", 0))
        address = "127.0.0.1:%d" % s.getsockname()[1]
    src = tmp_path / "in.txt"
    write_words(src, 10 << 10)
    with pytest.raises(StageError, match=re.escape(f"tcp {address}: cannot connect for chunk 0: "
                                                   f"connection refused")):
        run_job(tmp_path, src, TcpService(address), max_attempts=1)


def test_a_service_that_never_answers_times_out(tmp_path, serve):
    address = serve(Silent)
    try:
        with pytest.raises(DuplexError) as e:
            b"".join(TcpService(address, timeout=0.3).transform(memoryview(b"hello\n"),
                                                                ChunkInfo()))
    finally:
        Silent.released.set()
    assert e.value.cause == "timeout" and e.value.peer == address
    assert "nothing was sent or received for 0.3 s (timeout; chunk 0: 6 of 6 bytes sent, " \
           "0 received)" in str(e.value)


def test_an_empty_chunk_is_sent_as_an_empty_request(serve):
    address = serve(Upper)
    assert b"".join(TcpService(address).transform(memoryview(b""), ChunkInfo())) == b""


@pytest.mark.parametrize("address,message", [
    ("localhost", "expected 'host:port'"),
    (":80", "no host"),
    ("host:http", "the port must be a number 0-65535"),
    ("host:0", "port 0 only means 'any free port' when listening"),
    ("::1:80", "an IPv6 address goes in brackets: '[::1]:9000'"),
])
def test_bad_addresses_are_refused_naming_the_field(address, message):
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        TcpService(address).check()
    assert e.value.field == "connect"


def test_addresses_parse():
    assert parse_address("127.0.0.1:7000") == ("127.0.0.1", 7000)
    assert parse_address("[::1]:80") == ("::1", 80)
    assert parse_address("example.org:443") == ("example.org", 443)


def test_the_tcp_stage_in_yaml_validates_and_names_a_bad_option(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("source: {generate: {size: 1MiB}}\nstages:\n"
                   "  - tcp: {connect: 'localhost', timeout: 5s}\n")
    r = run_cli("validate", str(job))
    err = r.stderr.decode()
    assert r.returncode == 2 and "job.yaml:3: stages[0].tcp.connect: " in err, err
    job.write_text("source: {generate: {size: 1MiB}}\nstages:\n"
                   "  - tcp: {connect: '127.0.0.1:9', timeout: 0}\n")
    r = run_cli("validate", str(job))
    assert r.returncode == 2 and "stages[0].tcp.timeout: " in r.stderr.decode()
    job.write_text("source: {generate: {size: 1MiB}}\nstages:\n"
                   "  - tcp: {connect: '127.0.0.1:9', timeout: 2.5}\n")
    r = run_cli("validate", str(job))
    assert r.returncode == 0, r.stderr.decode()


def test_a_yaml_job_through_a_service_equals_the_expected_bytes(tmp_path, serve):
    address = serve(Upper)
    src = tmp_path / "in.txt"
    data = write_words(src, 1 << 20)
    job = tmp_path / "job.yaml"
    job.write_text(f"source: {{file: {src}}}\nstages:\n  - tcp: {{connect: '{address}'}}\n"
                   f"sink: {{file: {tmp_path / 'out'}}}\nworkers: 2\nchunk_size: 64KiB\n"
                   f"memory_limit: 128MiB\n")
    r = run_cli("run", str(job), "-q")
    assert r.returncode == 0, r.stderr.decode()
    assert (tmp_path / "out").read_bytes() == data.upper()


# ------------------------------------------------------------------ a user's own Duplex
class UnixService(Duplex):
    """What a user writes: a service on a Unix socket, one connection per chunk."""

    name = "unix-service"

    def __init__(self, path: str, timeout: float = 10.0):
        self.path = path
        self.timeout = timeout

    def connect(self, chunk: ChunkInfo) -> Peer:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            raise DuplexError(f"{self.path}: cannot connect: {e.strerror}", peer=self.path,
                              cause="refused") from None
        return SocketPeer(sock, name=self.path, what=f"chunk {chunk.seq}",
                          timeout=self.timeout, label="service")


class UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = False
    block_on_close = True


def test_a_users_duplex_over_a_unix_socket(tmp_path):
    path = str(tmp_path / "upper.sock")
    server = UnixServer(path, Upper)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        src = tmp_path / "in.txt"
        data = write_words(src, 1 << 20)
        out = b"".join(stream(FileSource(str(src)), UnixService(path), **SMALL))
        assert out == data.upper()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    with pytest.raises(StageError, match=re.escape(f"DuplexError: {path}: cannot connect")):
        b"".join(stream(FileSource(str(src)), UnixService(path), max_attempts=1, **SMALL))


# ------------------------------------------------------------------ the pump itself
class PipePeer(Peer):
    """A peer made of two pipes and a thread that answers (and closes the thread's ends,
    rin and wout, when it is done): to drive pump() by hand."""

    def __init__(self, answer):
        rin, win = os.pipe()       # we write win, the thread reads rin
        rout, wout = os.pipe()     # the thread writes wout, we read rout
        self.input, self.output = win, rout
        self.ended = self.finished = self.aborted = False
        self.thread = threading.Thread(target=answer, args=(rin, wout))
        self.thread.start()

    def end_input(self) -> None:
        os.close(self.input)
        self.ended = True

    def finish(self) -> None:
        self.finished = True

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        os.close(self.output)      # a thread still writing gets EPIPE and ends
        if not self.ended:
            os.close(self.input)   # a thread still reading gets EOF and ends
        self.thread.join()


class Spy(Duplex):
    """A Duplex over PipePeer that keeps its peers for the test to look at."""

    def __init__(self, answer):
        self.answer = answer
        self.peers = []

    def connect(self, chunk):
        self.peers.append(PipePeer(self.answer))
        return self.peers[-1]


def test_the_pump_reads_while_writing_and_stops_feeding_a_peer_that_stops_reading():
    def reads_ten_then_answers_a_lot(rin: int, wout: int) -> None:
        os.read(rin, 10)
        os.close(rin)                      # stops reading: our writes get EPIPE
        with open(wout, "wb") as f:        # closed at the end: EOF
            f.write(b"z" * (4 << 20))      # far more than a pipe holds

    duplex = Spy(reads_ten_then_answers_a_lot)
    out = b"".join(duplex.transform(memoryview(bytes(3 << 20)), ChunkInfo()))
    assert out == b"z" * (4 << 20)
    [peer] = duplex.peers
    assert peer.ended and peer.finished and not peer.aborted
    assert 10 <= peer.sent < peer.total == 3 << 20 and peer.received == 4 << 20


def test_dropping_the_output_aborts_the_peer():
    def endless(rin: int, wout: int) -> None:
        try:
            while True:
                os.write(wout, b"y" * 65536)
        except BrokenPipeError:
            pass
        finally:
            os.close(wout)
            os.close(rin)

    duplex = Spy(endless)
    it = duplex.transform(memoryview(b"x"), ChunkInfo())
    assert next(it).startswith(b"y")
    it.close()   # the engine dropping the chunk
    [peer] = duplex.peers
    assert peer.aborted and not peer.finished and not peer.thread.is_alive()


def test_pump_yields_nothing_for_a_peer_that_answers_nothing():
    def nothing(rin: int, wout: int) -> None:
        while os.read(rin, 65536):
            pass
        os.close(rin)
        os.close(wout)

    peer = PipePeer(nothing)
    try:
        assert list(pump(peer, memoryview(b"abc" * 100000))) == []
        assert peer.sent == 300000 and peer.ended and peer.received == 0
    finally:
        peer.close()
