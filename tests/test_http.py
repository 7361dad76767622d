"""HttpSource against a local HTTP server on 127.0.0.1 (a thread): with and without Range
support, servers that drop the connection mid-body, fail a part once, answer 404 or 503,
change the file under us; outputs compared with the served bytes, GNU grep and curl."""
from __future__ import annotations

import gzip
import os
import re
import socket
import struct
import subprocess
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import dataflow
from dataflow.errors import SourceError
from dataflow.http import HttpSource
from dataflow.sinks import FileSink

from conftest import require_tool

pytestmark = pytest.mark.timeout(60)


# ----------------------------------------------------------------------------- the server
class Site:
    """What the test server serves, and how it misbehaves."""

    def __init__(self, files: dict[str, bytes], *, ranges: bool = True):
        self.files = dict(files)
        self.ranges = ranges
        self.etag = '"v1"'
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str | None]] = []   # (path, Range header)
        self.fail_once: set[int] = set()    # a request starting at this byte: 503, once
        self.drop_once: set[int] = set()    # a body covering this byte: dropped there, once
        self.drop_at: int | None = None     # every body covering this byte is dropped there
        self.reset = False                  # drop with a reset (RST) instead of a close (FIN)
        self.change_after: int | None = None  # requests after this many: a new ETag
        self.trickle = 0.0                  # seconds between 16 KiB pieces of a body
        self.headers: dict[str, str] = {}   # extra headers on every answer
        self.redirects: dict[str, str] = {}
        self.active = 0
        self.max_active = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        site: Site = self.server.site
        rng = self.headers.get("Range")
        with site.lock:
            site.requests.append((self.path, rng))
            n_requests = len(site.requests)
            site.active += 1
            site.max_active = max(site.max_active, site.active)
        try:
            self._answer(site, rng, n_requests)
        finally:
            with site.lock:
                site.active -= 1

    def _answer(self, site: Site, rng: str | None, n_requests: int) -> None:
        if self.path in site.redirects:
            self.send_response(302)
            self.send_header("Location", site.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = site.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        size = len(data)
        start, end, status = 0, size, 200
        if rng and site.ranges:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng)
            assert m, rng
            start = int(m[1])
            end = min(size, int(m[2]) + 1) if m[2] else size
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        with site.lock:
            if start in site.fail_once:
                site.fail_once.discard(start)
                self.send_error(503)
                return
            drop = next((d for d in sorted(site.drop_once) if start <= d < end), None)
            if drop is not None:
                site.drop_once.discard(drop)
            elif site.drop_at is not None and start <= site.drop_at < end:
                drop = site.drop_at
            changed = site.change_after is not None and n_requests > site.change_after
        self.send_response(status)
        if site.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.send_header("Content-Length", str(end - start))
        self.send_header("ETag", '"v2"' if changed else site.etag)
        for k, v in site.headers.items():
            self.send_header(k, v)
        self.end_headers()
        body = memoryview(data)[start:drop if drop is not None else end]
        step = 16 << 10 if site.trickle else len(body) or 1
        try:
            for i in range(0, len(body), step):
                self.wfile.write(body[i:i + step])
                if site.trickle:
                    self.wfile.flush()
                    time.sleep(site.trickle)
            self.wfile.flush()
        except OSError:   # the client went away (a test that closes early)
            self.close_connection = True
            return
        if drop is not None:
            self.close_connection = True
            if site.reset:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
            self.connection.close()


@contextmanager
def serve(site: Site):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.site = site
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)


def lines(n: int, seed: int = 0) -> bytes:
    """n distinct text lines, some with ERROR (to grep for)."""
    return b"".join(b"%d %08x %s\n" % (i, (i * 2654435761 + seed) & 0xFFFFFFFF,
                                        b"ERROR" if i % 13 == 0 else b"ok") for i in range(n))


def read_all(src: HttpSource, bufsize: int = 100_003) -> bytes:
    out = bytearray()
    buf = bytearray(bufsize)
    src.open()
    try:
        while True:
            n = src.readinto(memoryview(buf))
            if not n:
                return bytes(out)
            out += buf[:n]
    finally:
        src.close()


def http_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("dataflow-http")]


# ----------------------------------------------------------------------------- reading
def test_single_stream_when_the_server_ignores_ranges():
    data = lines(60_000)                                     # ~1.4 MB
    site = Site({"/f": data}, ranges=False)
    with serve(site) as base:
        src = HttpSource(base + "/f", part_size=64 << 10)
        assert src.size() is None                            # nothing asked yet
        assert read_all(src) == data
        assert src.mode == "single" and src.size() == len(data)
        assert src.buffer_bytes() < 1 << 20
    assert site.requests == [("/f", f"bytes=0-{(64 << 10) - 1}")]   # one request, answered 200


def test_ranges_fetched_concurrently_and_handed_over_in_order():
    data = lines(60_000)
    site = Site({"/f": data})
    site.trickle = 0.001          # slow enough that parts overlap
    with serve(site) as base:
        src = HttpSource(base + "/f", connections=4, part_size=100_000)
        assert src.buffer_bytes() == 4 * 100_000             # the bound, before open
        assert read_all(src, 65_536) == data
        assert src.mode == "ranges" and src.buffer_bytes() == 4 * 100_000
    nparts = -(-len(data) // 100_000)
    asked = sorted(int(r.split("=")[1].split("-")[0]) for _, r in site.requests)
    assert asked == [i * 100_000 for i in range(nparts)]
    assert site.max_active > 1, "parts were not fetched concurrently"
    assert src.retried == 0 and not http_threads()


def test_memory_is_bounded_by_connections_parts():
    # a reader that takes nothing: only `connections` parts may be started
    data = lines(60_000)
    site = Site({"/f": data})
    with serve(site) as base:
        src = HttpSource(base + "/f", connections=3, part_size=50_000)
        src.open()
        try:
            deadline = time.monotonic() + 5
            while len(site.requests) < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)                                  # time to (wrongly) start more
            assert len(site.requests) == 3
            assert src._allocated == 3
            buf = bytearray(50_000)                          # take one part: one more starts
            got = 0
            while got < 50_000:
                got += src.readinto(memoryview(buf)[got:])
            deadline = time.monotonic() + 5
            while len(site.requests) < 4 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)
            assert len(site.requests) == 4 and src._allocated == 3
        finally:
            src.close()
    assert not http_threads()


def test_small_file_with_ranges_is_one_stream():
    data = lines(100)
    with serve(Site({"/f": data})) as base:
        src = HttpSource(base + "/f", part_size=1 << 20)
        assert read_all(src) == data
        assert src.mode == "single" and src.resumable


def test_empty_file():
    with serve(Site({"/empty": b""})) as base:
        for ranges in ("auto", False):
            src = HttpSource(base + "/empty", ranges=ranges)
            assert read_all(src) == b""
            assert src.size() == 0


def test_redirect_is_followed_and_parts_go_to_the_final_url():
    data = lines(20_000)
    site = Site({"/real": data})
    site.redirects["/old"] = "/real"
    with serve(site) as base:
        src = HttpSource(base + "/old", part_size=100_000)
        assert read_all(src) == data
        assert src.mode == "ranges"
    assert [p for p, _ in site.requests].count("/old") == 1


def test_gzip_content_encoding_is_passed_through_as_served():
    raw = lines(5000)
    packed = gzip.compress(raw)
    site = Site({"/f.log": packed})
    site.headers["Content-Encoding"] = "gzip"
    with serve(site) as base:
        for ranges in ("auto", False):
            got = read_all(HttpSource(base + "/f.log", ranges=ranges, part_size=10_000))
            assert got == packed and gzip.decompress(got) == raw
        # decoding is a stage of its own
        out = b"".join(dataflow.stream(HttpSource(base + "/f.log", part_size=10_000),
                                       dataflow.Decompress(), workers=2))
    assert out == raw


def test_headers_are_sent():
    seen = []
    site = Site({"/f": b"x\n"})
    with serve(site) as base:
        orig = Handler._answer

        def spy(self, s, rng, n):
            seen.append(self.headers.get("Authorization"))
            return orig(self, s, rng, n)

        Handler._answer = spy
        try:
            read_all(HttpSource(base + "/f", headers={"Authorization": "Bearer t0k"}))
        finally:
            Handler._answer = orig
    assert seen == ["Bearer t0k"]


def test_the_copying_reader_gives_the_same_bytes(monkeypatch):
    # where urllib3's response does not expose http.client's readinto, read() is used
    import dataflow.http as H

    real = H._reader

    def copy_only(resp):
        fp, resp._fp = resp._fp, None
        try:
            return real(resp)
        finally:
            resp._fp = fp

    monkeypatch.setattr(H, "_reader", copy_only)
    data = lines(30_000)
    with serve(Site({"/f": data})) as base:
        assert read_all(HttpSource(base + "/f", part_size=77_777)) == data
        assert read_all(HttpSource(base + "/f", ranges=False)) == data


def test_where_and_arguments():
    src = HttpSource("http://127.0.0.1:9/x.log")
    assert src.where(1234) == "http://127.0.0.1:9/x.log: byte 1234"
    assert src.identities() == []
    for bad in (dict(url="ftp://h/x"), dict(url="http://h/x", connections=0),
                dict(url="http://h/x", ranges="yes"), dict(url="http://h/x", retries=-1),
                dict(url="http://h/x", part_size=0)):
        with pytest.raises(ValueError):
            HttpSource(**bad)


# ----------------------------------------------------------------------------- failures
def test_404_names_the_url_and_status():
    with serve(Site({})) as base:
        src = HttpSource(base + "/missing.log")
        with pytest.raises(SourceError) as e:
            src.open()
        src.close()
    msg = str(e.value)
    assert f"{base}/missing.log" in msg and "404" in msg and "Not Found" in msg
    assert "check the URL" in msg and e.value.file == f"{base}/missing.log"


def test_server_error_is_retried_then_reported():
    site = Site({"/f": b"x\n"})
    with serve(site) as base:
        orig = Handler._answer

        def always_503(self, s, rng, n):
            self.send_error(503)

        Handler._answer = always_503
        try:
            src = HttpSource(base + "/f", retries=2)
            t = time.monotonic()
            with pytest.raises(SourceError) as e:
                src.open()
            src.close()
        finally:
            Handler._answer = orig
    assert "503" in str(e.value) and "after 2 retries" in str(e.value)
    assert len(site.requests) == 3 and time.monotonic() - t >= 0.7   # backoff 0.25 + 0.5


def test_ranges_true_needs_a_server_that_takes_them():
    with serve(Site({"/f": lines(1000)}, ranges=False)) as base:
        src = HttpSource(base + "/f", ranges=True)
        with pytest.raises(SourceError, match="does not support Range requests"):
            src.open()
        src.close()


def test_a_part_failing_once_is_retried():
    data = lines(60_000)
    site = Site({"/f": data})
    site.fail_once = {300_000}              # part 3 answers 503 once
    site.drop_once = {512_345}              # part 5 is dropped mid-body once
    with serve(site) as base:
        src = HttpSource(base + "/f", connections=3, part_size=100_000)
        assert read_all(src) == data
    assert src.retried == 2
    # the dropped part resumed from the byte it reached, not from its start
    assert ("/f", "bytes=512345-599999") in site.requests


def test_a_dropped_single_stream_resumes_when_the_server_takes_ranges():
    data = lines(20_000)
    site = Site({"/f": data})
    site.drop_once = {123_456}
    with serve(site) as base:
        src = HttpSource(base + "/f", part_size=10 << 20)   # one part: a single stream
        assert read_all(src) == data
    assert src.mode == "single" and src.retried == 1
    assert site.requests[-1] == ("/f", f"bytes=123456-{len(data) - 1}")


def test_a_part_failing_for_good_is_an_error_naming_the_offset():
    data = lines(60_000)
    site = Site({"/f": data})
    site.drop_at = 412_345
    with serve(site) as base:
        src = HttpSource(base + "/f", connections=2, part_size=100_000, retries=1)
        with pytest.raises(SourceError) as e:
            read_all(src)
    assert e.value.offset == 412_345
    assert "412,345" in str(e.value) and "after 1 retries" in str(e.value)
    assert not http_threads()


def test_a_file_that_changes_while_read_is_an_error():
    data = lines(60_000)
    site = Site({"/f": data})
    site.change_after = 2
    with serve(site) as base:
        src = HttpSource(base + "/f", connections=2, part_size=100_000)
        with pytest.raises(SourceError, match=r"changed while it was being read \(ETag "
                                              r"'\"v1\"' -> '\"v2\"'\)"):
            read_all(src)
    assert not http_threads()


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
def test_a_server_dropping_mid_body_leaves_no_output(tmp_path, reset):
    """No range support: the body cannot be resumed. The job fails naming the offset and the
    expected length, and the file sink leaves neither the target nor a temp file."""
    data = lines(100_000)
    site = Site({"/f": data}, ranges=False)
    site.drop_at = 1_000_000
    site.reset = reset
    out = tmp_path / "out.log"
    with serve(site) as base:
        with pytest.raises(SourceError) as e:
            dataflow.pipeline(HttpSource(base + "/f"), dataflow.Passthrough(), FileSink(out),
                              workers=2, memory_limit="256MiB", chunk_size="256KiB")
    msg = str(e.value)
    assert f"{base}/f" in msg and f"of {len(data):,} bytes" in msg
    # a reset makes the kernel drop what it had received and not yet handed over
    assert e.value.offset == 1_000_000 if not reset else e.value.offset <= 1_000_000
    assert f"at byte {e.value.offset:,}" in msg and f"got {e.value.offset:,} of" in msg
    assert not out.exists() and os.listdir(tmp_path) == []


def test_connection_refused():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                      # nothing listens there now
    src = HttpSource(f"http://127.0.0.1:{port}/x", retries=0)
    with pytest.raises(SourceError, match="connection refused"):
        src.open()
    src.close()


def test_unresolvable_host():
    src = HttpSource("http://no-such-host.invalid/x")
    t = time.monotonic()
    with pytest.raises(SourceError, match="cannot resolve the host name"):
        src.open()
    src.close()
    assert time.monotonic() - t < 5       # not retried


def test_read_timeout():
    site = Site({"/f": lines(20_000)}, ranges=False)
    site.trickle = 2.0                    # 16 KiB, then nothing for 2 s
    with serve(site) as base:
        src = HttpSource(base + "/f", timeout=0.3, retries=0)
        with pytest.raises(SourceError, match=r"no data for 0.3 s"):
            read_all(src)


# ----------------------------------------------------------------------------- teardown
def test_close_stops_threads_at_once_when_the_reader_stops_early():
    data = lines(200_000)                 # ~5 MB, served slowly: threads sit in recv
    site = Site({"/f": data})
    site.trickle = 0.05
    with serve(site) as base:
        src = HttpSource(base + "/f", connections=4, part_size=256 << 10)
        src.open()
        buf = bytearray(1000)
        assert src.readinto(memoryview(buf)) > 0
        time.sleep(0.2)
        assert len(http_threads()) == 4
        t = time.monotonic()
        src.close()
        assert time.monotonic() - t < 1.0
        assert not http_threads()
        src.close()                       # idempotent


def test_stream_consumer_stopping_early_tears_down():
    data = lines(200_000)
    with serve(Site({"/f": data})) as base:
        it = dataflow.stream(HttpSource(base + "/f", part_size=256 << 10),
                             dataflow.Passthrough(), workers=2, chunk_size="64KiB")
        first = next(it)
        it.close()
        assert data.startswith(first)
    assert not http_threads()


# ----------------------------------------------------------------------------- reference tools
@pytest.fixture(scope="module")
def served_log(tmp_path_factory):
    from dataflow.generate import write_sample

    path = tmp_path_factory.mktemp("http") / "access.log"
    write_sample(str(path), 6 << 20, seed=11)
    return path


@pytest.mark.parametrize("ranges", ["auto", False], ids=["ranges", "single"])
def test_pipeline_grep_matches_gnu_grep(tmp_path, served_log, ranges):
    grep = require_tool("grep")
    data = served_log.read_bytes()
    pattern = '" 5[0-9][0-9] '
    with serve(Site({"/access.log": data})) as base:
        url = base + "/access.log"
        out = tmp_path / "copy.log"
        dataflow.pipeline(HttpSource(url, ranges=ranges, part_size=1 << 20, connections=3),
                          dataflow.Passthrough(), FileSink(out), workers=2,
                          memory_limit="256MiB", chunk_size="512KiB")
        assert subprocess.run(["cmp", str(served_log), str(out)]).returncode == 0
        got = tmp_path / "grep.log"
        dataflow.pipeline(HttpSource(url, ranges=ranges, part_size=1 << 20),
                          dataflow.Grep(pattern), FileSink(got), workers=2,
                          memory_limit="256MiB", chunk_size="512KiB")
    ref = subprocess.run([grep, pattern, str(served_log)], capture_output=True,
                         env={**os.environ, "LC_ALL": "C"}, check=True).stdout
    assert ref and got.read_bytes() == ref


def test_single_stream_bytes_match_curl(tmp_path, served_log):
    curl = require_tool("curl")
    data = served_log.read_bytes()
    with serve(Site({"/access.log": data})) as base:
        url = base + "/access.log"
        ref = tmp_path / "curl.log"
        subprocess.run([curl, "-sSf", "-o", str(ref), url], check=True, timeout=30)
        ours = read_all(HttpSource(url, ranges=False))
        site = Site({"/access.log": data}, ranges=False)
        site.drop_at = 1 << 20
    assert ours == ref.read_bytes() == data
    # curl, like us, refuses a body that stops before its Content-Length
    with serve(site) as base:
        r = subprocess.run([curl, "-sS", "-o", str(tmp_path / "short"), base + "/access.log"],
                           capture_output=True, timeout=30)
        assert r.returncode == 18    # CURLE_PARTIAL_FILE
        with pytest.raises(SourceError, match="before the end of the body"):
            read_all(HttpSource(base + "/access.log"))
