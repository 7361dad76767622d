"""Network sources and sinks against the tools a user would reach for, side by side in one run.

    python bench/network.py                        # 512 MiB, 3 rounds: about a minute
    python bench/network.py --size 1GiB --repeat 3

HTTP: a generated access log is served on 127.0.0.1 by a separate process (this script with
`--serve`: a threaded http.server that answers Range requests and sends with sendfile(2);
plain `python -m http.server` does not do ranges). Timed, each as a whole command:
`curl -o`, and `dataflow.pipeline(HttpSource(url), Passthrough(), sink)` in one stream
(`ranges=False`) and in concurrent ranges (`connections` x `part_size`), to /dev/null
(NullSink) and to a file (FileSink with sync=False: curl does not fsync either).

TCP: a sender process connects to a relay and sends the file with sendfile(2); the relay
passes it on to a receiver process that writes it to a file. Relays: `socat -u`,
`nc -l | nc -N`, and `dataflow.pipeline(TcpSource(listen), Passthrough(), TcpSink)`. The time
runs from starting the relay to the receiver's exit; the sender and receiver are the same
for every relay, and their CPU is not counted.

Each round runs every contender once, starting at a different one each round; medians are
reported. Correctness is checked in round 1: every output file is `cmp`ed with the input,
and every /dev/null run's byte count compared with the input's size. Ratio = the
reference's median / dataflow's median: above 1, dataflow is faster.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCRIPT = Path(__file__).resolve()
RUN_TIMEOUT = 600.0      # seconds one run may take before it is killed
CONNECT_WAIT = 20.0      # seconds the sender keeps trying to reach a relay that starts up
THROTTLE_BLOCK = 256 << 10  # a throttled server sends this much, then sleeps to keep its rate

# ----------------------------------------------------------------------------- helpers
# (run as separate processes: `network.py --serve FILE`, `--receive OUT`, `--send FILE PORT`)


def serve(path: str, rate: float = 0.0) -> None:
    """HTTP/1.1 server for one file (any URL path), with single-range Range requests; with
    `rate` > 0 each connection is held to that many bytes per second (a remote server's
    per-connection limit, which concurrent ranges are for)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    size = os.path.getsize(path)
    st = os.stat(path)
    etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
    modified = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(st.st_mtime))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            start, end, status = 0, size, 200
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if m:
                start = int(m[1])
                end = min(size, int(m[2]) + 1) if m[2] else size
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            self.send_response(status)
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.send_header("Content-Length", str(end - start))
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
            self.end_headers()
            try:
                with open(path, "rb") as f:
                    if not rate:
                        self.connection.sendfile(f, start, end - start)
                        return
                    t0, at = time.monotonic(), start
                    while at < end:
                        n = min(THROTTLE_BLOCK, end - at)
                        self.connection.sendfile(f, at, n)
                        at += n
                        ahead = t0 + (at - start) / rate - time.monotonic()
                        if ahead > 0:
                            time.sleep(ahead)
            except OSError:
                self.close_connection = True

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass     # a client that closed early (curl -o /dev/null at the end): not news

    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    server.serve_forever()


def receive(out: str) -> None:
    """Listen on a free port (printed), accept one connection, write what comes to `out`."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    conn, _ = listener.accept()
    listener.close()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with conn, open(out, "wb", buffering=0) as f:
        while n := conn.recv_into(view):
            f.write(view[:n])


def send(path: str, port: int) -> None:
    """Connect to 127.0.0.1:port (retrying while the relay starts), send the file with
    sendfile(2), end our side and wait for the relay to close."""
    deadline = time.monotonic() + CONNECT_WAIT
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port))
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.002)
    with sock, open(path, "rb") as f:
        sock.sendfile(f)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)


HTTP_JOB = r'''
import json, sys
import dataflow
from dataflow.sinks import FileSink, NullSink

HttpSource = getattr(dataflow, "HttpSource", None)
if HttpSource is None:
    from dataflow.http import HttpSource


def main():
    url, ranges, connections, part, out, workers, memory, stats = sys.argv[1:9]
    src = HttpSource(url, ranges={"auto": "auto", "false": False, "true": True}[ranges],
                     connections=int(connections), part_size=int(part))
    sink = NullSink() if out == "-" else FileSink(out, sync=False)
    st = dataflow.pipeline(src, dataflow.Passthrough(), sink, workers=int(workers),
                           memory_limit=memory, chunk_size="4MiB")
    with open(stats, "w") as f:
        json.dump({"bytes_out": st.bytes_out, "wall_seconds": st.wall_seconds,
                   "peak_memory": st.peak_memory, "mode": src.mode, "retried": src.retried,
                   "buffer_bytes": src.buffer_bytes(), "slots": st.slots,
                   "slot_size": st.slot_size}, f)


if __name__ == "__main__":     # spawned workers import this file again
    main()
'''

SOURCE_ONLY = r'''
import json, sys

from dataflow.http import HttpSource


def main():
    url, ranges, connections, part, stats = sys.argv[1:6]
    src = HttpSource(url, ranges={"auto": "auto", "false": False}[ranges],
                     connections=int(connections), part_size=int(part))
    buf = memoryview(bytearray(4 << 20))
    n = 0
    src.open()
    try:
        while k := src.readinto(buf):
            n += k
    finally:
        src.close()
    with open(stats, "w") as f:
        json.dump({"bytes_out": n, "mode": src.mode, "retried": src.retried}, f)


if __name__ == "__main__":
    main()
'''

TCP_JOB = r'''
import json, sys
import dataflow

TcpSource = getattr(dataflow, "TcpSource", None)
TcpSink = getattr(dataflow, "TcpSink", None)
if TcpSource is None or TcpSink is None:
    from dataflow.tcp import TcpSink, TcpSource


def main():
    listen, forward, workers, memory, stats = sys.argv[1:6]
    src = TcpSource(listen, listen=True, timeout=60)
    src.bind()
    sink = TcpSink(forward, timeout=60)
    st = dataflow.pipeline(src, dataflow.Passthrough(), sink, workers=int(workers),
                           memory_limit=memory, chunk_size="4MiB")
    with open(stats, "w") as f:
        json.dump({"bytes_out": st.bytes_out, "wall_seconds": st.wall_seconds,
                   "peak_memory": st.peak_memory, "slots": st.slots,
                   "slot_size": st.slot_size}, f)


if __name__ == "__main__":     # spawned workers import this file again
    main()
'''


# ----------------------------------------------------------------------------- contenders
@dataclass
class Contender:
    key: str
    family: str            # "http-null" | "http-file" | "tcp"
    label: str
    argv: list[str]        # {url} {out} {listen} {forward} {stats} are filled in per run
    shell: str             # the command, for the report
    reference: bool = False
    missing: str = ""
    error: str = ""
    verified: str = ""
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    foreign: list[float] = field(default_factory=list)   # other programs' CPU during the run
    steal: list[float] = field(default_factory=list)     # hypervisor steal during the run
    stats: list[dict[str, Any]] = field(default_factory=list)

    @property
    def dataflow(self) -> bool:
        return self.key.startswith("df-")

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None


FAMILIES = {
    "http-null": "HTTP GET of the file from 127.0.0.1, output discarded",
    "http-slow": "HTTP GET from a server that sends each connection at most {rate}/s "
                 "({size}), output discarded",
    "http-file": "HTTP GET of the file from 127.0.0.1, to a file (no fsync)",
    "tcp": "TCP relay on 127.0.0.1: sender -> relay -> receiver (writes a file)",
}


def make_contenders(a: argparse.Namespace, tmp: Path) -> list[Contender]:
    py = sys.executable
    (tmp / "http_job.py").write_text(HTTP_JOB)
    (tmp / "tcp_job.py").write_text(TCP_JOB)
    (tmp / "source_only.py").write_text(SOURCE_ONLY)
    curl = shutil.which("curl")
    socat = shutil.which("socat")
    nc = shutil.which("nc")
    out: list[Contender] = []
    n, mem = str(a.workers), a.memory_limit
    conns, part = str(a.connections), str(a.part_size_bytes)

    def df_http(key: str, family: str, label: str, ranges: str, dst: str) -> Contender:
        url = "{slow_url}" if family == "http-slow" else "{url}"
        return Contender(key, family, label,
                         [py, str(tmp / "http_job.py"), url, ranges, conns, part, dst, n,
                          mem, "{stats}"],
                         f"pipeline(HttpSource(URL, ranges={ranges}"
                         + (f", connections={conns}, part_size={a.part_size}" if ranges != "false"
                            else "") + "), Passthrough(), "
                         + ("NullSink()" if dst == "-" else "FileSink(OUT, sync=False)")
                         + f", workers={n}, memory_limit={mem}, chunk_size=4MiB)")

    no_curl = "" if curl else "curl not installed (apt-get install curl)"
    out += [
        Contender("curl-null", "http-null", "curl -o /dev/null",
                  [curl or "curl", "-sSf", "-o", "/dev/null", "-w", "%{size_download}", "{url}"],
                  "curl -sSf -o /dev/null URL", reference=True, missing=no_curl),
        df_http("df-http-single-null", "http-null", "dataflow HttpSource, one stream", "false",
                "-"),
        df_http("df-http-ranges-null", "http-null",
                f"dataflow HttpSource, {a.connections} ranges", "auto", "-"),
        Contender("src-single-null", "http-null", "(info) HttpSource alone, one stream",
                  [py, str(tmp / "source_only.py"), "{url}", "false", conns, part, "{stats}"],
                  "HttpSource(URL, ranges=False): open, readinto a 4 MiB buffer until 0, "
                  "close (no engine)"),
        Contender("src-ranges-null", "http-null",
                  f"(info) HttpSource alone, {a.connections} ranges",
                  [py, str(tmp / "source_only.py"), "{url}", "auto", conns, part, "{stats}"],
                  f"HttpSource(URL, connections={conns}, part_size={a.part_size}): the same"),
        Contender("curl-slow", "http-slow", "curl -o /dev/null",
                  [curl or "curl", "-sSf", "-o", "/dev/null", "-w", "%{size_download}",
                   "{slow_url}"],
                  "curl -sSf -o /dev/null SLOW_URL", reference=True, missing=no_curl),
        df_http("df-http-single-slow", "http-slow", "dataflow HttpSource, one stream", "false",
                "-"),
        df_http("df-http-ranges-slow", "http-slow",
                f"dataflow HttpSource, {a.connections} ranges", "auto", "-"),
        Contender("curl-file", "http-file", "curl -o OUT",
                  [curl or "curl", "-sSf", "-o", "{out}", "{url}"], "curl -sSf -o OUT URL",
                  reference=True, missing=no_curl),
        df_http("df-http-single-file", "http-file", "dataflow HttpSource, one stream", "false",
                "{out}"),
        df_http("df-http-ranges-file", "http-file",
                f"dataflow HttpSource, {a.connections} ranges", "auto", "{out}"),
        Contender("socat", "tcp", "socat -u",
                  [socat or "socat", "-u", "TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr",
                   "TCP:{forward}"],
                  "socat -u TCP-LISTEN:PORT,bind=127.0.0.1,reuseaddr TCP:127.0.0.1:PORT2",
                  reference=True,
                  missing="" if socat else "socat not installed (apt-get install socat)"),
        Contender("socat-b", "tcp", "(info) socat -u -b 4194304",
                  [socat or "socat", "-u", "-b", "4194304",
                   "TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr", "TCP:{forward}"],
                  "socat -u -b 4194304 TCP-LISTEN:PORT,bind=127.0.0.1,reuseaddr "
                  "TCP:127.0.0.1:PORT2   # 4 MiB buffer, as dataflow's chunks (default 8 KiB)",
                  reference=True,
                  missing="" if socat else "socat not installed (apt-get install socat)"),
        Contender("nc", "tcp", "nc -l | nc -N",
                  ["sh", "-c", f"{nc or 'nc'} -l 127.0.0.1 {{port}} </dev/null | "
                               f"{nc or 'nc'} -N {{forward_host}} {{forward_port}}"],
                  "nc -l 127.0.0.1 PORT </dev/null | nc -N 127.0.0.1 PORT2   # OpenBSD nc",
                  reference=True,
                  missing="" if nc else "nc not installed (apt-get install netcat-openbsd)"),
        Contender("df-tcp", "tcp", "dataflow TcpSource -> TcpSink",
                  [py, str(tmp / "tcp_job.py"), "{listen}", "{forward}", n, mem, "{stats}"],
                  f"pipeline(TcpSource('127.0.0.1:PORT', listen=True), Passthrough(), "
                  f"TcpSink('127.0.0.1:PORT2'), workers={n}, memory_limit={mem}, "
                  f"chunk_size=4MiB)"),
    ]
    return out


# ----------------------------------------------------------------------------- running
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_helper(*args: str) -> tuple[subprocess.Popen, int | None]:
    """Start `network.py ARGS` in its own session; return it and the port it printed."""
    p = subprocess.Popen([sys.executable, str(SCRIPT), *args], stdout=subprocess.PIPE,
                         start_new_session=True)
    if args[0] in ("--serve", "--receive"):
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line.strip():
            stop(p)
            raise RuntimeError(f"helper {' '.join(args)} did not start")
        return p, int(line)
    return p, None


def stop(p: subprocess.Popen) -> None:
    """End a process we started, and its session."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait()
    if p.stdout is not None:
        p.stdout.close()


def wait_tree(p: subprocess.Popen, timeout: float) -> tuple[int, float]:
    """Wait for `p`; return (exit code, CPU seconds of it and the children it waited for)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return p.returncode, ru.ru_utime + ru.ru_stime
        if time.monotonic() > deadline:
            stop(p)
            return -9, 0.0
        time.sleep(0.002)


def process_cpu(pids: list[int]) -> float:
    """User+sys seconds so far of live processes (our HTTP servers)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def run_once(c: Contender, a: argparse.Namespace, urls: dict[str, str], inp: Path, size: int,
             data: Path, tmp: Path, check: bool, servers: list[int]) -> None:
    out = data / f"out-net-{c.key}"
    stats = tmp / f"stats-{c.key}.json"
    stats.unlink(missing_ok=True)
    fill = {"{url}": urls["url"], "{slow_url}": urls["slow_url"], "{out}": str(out),
            "{stats}": str(stats)}
    receiver = sender = None
    try:
        if c.family == "tcp":
            receiver, rport = start_helper("--receive", str(out))
            port = free_port()
            fill.update({"{port}": str(port), "{listen}": f"127.0.0.1:{port}",
                         "{forward}": f"127.0.0.1:{rport}", "{forward_host}": "127.0.0.1",
                         "{forward_port}": str(rport)})
        argv = [_fill(x, fill) for x in c.argv]
        from run import _machine_cpu   # the main process only (main() puts bench/ on the path)
        busy0, steal0 = _machine_cpu()
        server0 = process_cpu(servers)
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
        if c.family == "tcp":
            sender, _ = start_helper("--send", str(inp), fill["{port}"])
        code, cpu = wait_tree(p, RUN_TIMEOUT)
        helpers = wait_tree(receiver, RUN_TIMEOUT)[1] if receiver is not None else 0.0
        seconds = time.perf_counter() - t0
        if sender is not None:
            helpers += wait_tree(sender, 30)[1]
        busy1, steal1 = _machine_cpu()
        # CPU of other programs on the machine meanwhile: everything busy, minus ours
        foreign = max(0.0, busy1 - busy0 - cpu - helpers - (process_cpu(servers) - server0))
        assert p.stdout is not None and p.stderr is not None
        stdout, err = p.stdout.read(), p.stderr.read()
        p.stdout.close()
        p.stderr.close()
        if code != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            c.error = f"exit {code}: " + (" | ".join(lines[-3:]) if lines else "(no stderr)")
            return
        c.times.append(seconds)
        c.cpu.append(cpu)
        c.foreign.append(foreign)
        c.steal.append(steal1 - steal0)
        st = json.loads(stats.read_text()) if stats.exists() else None
        if st is not None:
            c.stats.append(st)
        if check:
            c.verified = verify(c, out, inp, size, stdout, st)
    finally:
        for h in (sender, receiver):
            if h is not None:
                stop(h)
        out.unlink(missing_ok=True)
        os.sync()       # untimed: no run pays for another's writeback


def _fill(arg: str, values: dict[str, str]) -> str:
    for k, v in values.items():
        arg = arg.replace(k, v)
    return arg


def verify(c: Contender, out: Path, inp: Path, size: int, stdout: bytes,
           st: dict[str, Any] | None) -> str:
    if c.family in ("http-null", "http-slow"):
        got = int(stdout or 0) if c.key.startswith("curl") else (st or {}).get("bytes_out")
        return f"{got:,} bytes == input" if got == size else f"WRONG: {got} bytes, not {size:,}"
    r = subprocess.run(["cmp", str(inp), str(out)], capture_output=True, text=True)
    return "output == input (cmp)" if r.returncode == 0 else \
        f"DIFFERS: {(r.stdout + r.stderr).strip()}"


# ----------------------------------------------------------------------------- report
RATIOS = [("df-http-single-null", "curl-null"), ("df-http-ranges-null", "curl-null"),
          ("src-single-null", "curl-null"), ("src-ranges-null", "curl-null"),
          ("df-http-single-file", "curl-file"), ("df-http-ranges-file", "curl-file"),
          ("df-http-single-slow", "curl-slow"), ("df-http-ranges-slow", "curl-slow"),
          ("df-tcp", "socat"), ("df-tcp", "socat-b"), ("df-tcp", "nc")]


def report(a: argparse.Namespace, contenders: list[Contender], sizes: dict[str, int],
           fixed: float | None, elapsed: float) -> str:
    size = sizes["input"]
    by = {c.key: c for c in contenders}
    head = ("contender", "median s", "range s", "MB/s", "CPU s")
    rows = []
    for c in contenders:
        if c.median is None:
            cells = [c.label, "-", "-", "-", "-"]
            notes = [c.missing or f"FAILED: {c.error}"[:110]]
        else:
            nbytes = sizes["slow"] if c.family == "http-slow" else size
            cells = [c.label, f"{c.median:.3f}", f"{min(c.times):.2f}-{max(c.times):.2f}",
                     f"{nbytes / c.median / 1e6:,.0f}", f"{statistics.median(c.cpu):.2f}"]
            notes = []
            for dfk, ref in RATIOS:
                r = by.get(ref)
                if dfk == c.key and r is not None:
                    notes.append(f"{r.median / c.median:.2f}x vs {r.label}" if r.median
                                 else f"vs {r.label}: n/a ({r.missing or r.error})"[:80])
        rows.append((c, cells, notes))
    w = [max([len(head[i])] + [len(r[1][i]) for r in rows]) for i in range(5)]

    def line(cells, note: str) -> str:
        return (f"{cells[0]:<{w[0]}}  {cells[1]:>{w[1]}}  {cells[2]:>{w[2]}}  "
                f"{cells[3]:>{w[3]}}  {cells[4]:>{w[4]}}  {note}").rstrip()

    out = [f"input {size:,} bytes ({size / (1 << 20):.1f} MiB), workers {a.workers}, "
           f"memory_limit {a.memory_limit}, ranges: {a.connections} connections x "
           f"{a.part_size} parts; median of {a.repeat} interleaved rounds; MB/s = input bytes / "
           f"median s / 1e6; CPU s = user+sys of the contender's process tree (median); "
           f"ratio = reference's median s / dataflow's (>1: dataflow faster)",
           line(head, "ratio"), "-" * (sum(w) + 40)]
    fam = None
    for c, cells, notes in rows:
        if c.family != fam:
            fam = c.family
            out.append("[" + FAMILIES[fam].format(
                rate=f"{a.rate_bytes / 1e6:g} MB", size=f"{sizes['slow']:,} bytes") + "]")
        out.append(line(cells, notes[0] if notes else ""))
        out.extend(line(("",) * 5, n) for n in notes[1:])
    out.append("[dataflow details]")
    if fixed is not None:
        out.append(f"fixed cost of a dataflow pipeline() script on a 1-byte HTTP body "
                   f"(interpreter, imports, spawning {a.workers} workers, teardown): "
                   f"{fixed:.3f} s")
    for c in contenders:
        if c.dataflow and c.stats:
            wall = statistics.median(s["wall_seconds"] for s in c.stats)
            peak = max(s["peak_memory"] for s in c.stats)
            extra = ""
            if "mode" in c.stats[0]:
                extra = (f", source mode {c.stats[0]['mode']}, source buffers "
                         f"{c.stats[0]['buffer_bytes'] / (1 << 20):.1f} MiB, retries "
                         f"{sum(s['retried'] for s in c.stats)}")
            out.append(f"{c.label} ({c.family}): engine wall_seconds {wall:.3f} of "
                       f"{c.median:.3f} s measured; peak PSS {peak / (1 << 20):.1f} MiB; "
                       f"{c.stats[0]['slots']} slots x "
                       f"{c.stats[0]['slot_size'] / (1 << 20):.1f} MiB{extra}")
    foreign = [x for c in contenders for x in c.foreign]
    steal = [x for c in contenders for x in c.steal]
    wall = sum(x for c in contenders for x in c.times)
    if foreign:
        worst = max((x / t, c.label, x) for c in contenders for x, t in zip(c.foreign, c.times))
        out.append(f"noise: over all timed runs ({wall:.1f} s), other programs' busy CPU "
                   f"{sum(foreign):.1f} s (max {worst[0]:.2f} core during a run of {worst[1]}), "
                   f"hypervisor steal {sum(steal):.2f} s")
    out.append("[verification, round 1]")
    for c in contenders:
        out.append(f"{c.label} ({c.family}): {c.verified or c.missing or c.error or '-'}")
    out.append("[commands]")
    for c in contenders:
        out.append(f"{c.key}: {c.shell}")
    out.append(f"total {elapsed:.0f} s; {platform.python_version()}, {_tool('curl')}, "
               f"{_tool('socat')}, {_tool('nc')}")
    return "\n".join(out)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        return f"{name}: not installed"
    flag = {"curl": ["--version"], "socat": ["-V"], "nc": ["-h"]}[name]
    r = subprocess.run([path, *flag], capture_output=True, text=True)
    text = (r.stdout + r.stderr).strip().splitlines()
    first = next((t for t in text if "version" in t.lower() or "netcat" in t.lower()),
                 text[0] if text else "?")
    return first.strip()[:60]


def fixed_cost(a: argparse.Namespace, tmp: Path, data: Path) -> float | None:
    """Seconds of the dataflow HTTP script on a 1-byte file (start-up, spawn, teardown)."""
    one = data / "net-one-byte.txt"
    one.write_bytes(b"\n")
    server, port = start_helper("--serve", str(one))
    try:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            r = subprocess.run([sys.executable, str(tmp / "http_job.py"),
                                f"http://127.0.0.1:{port}/x", "false", "1", "1048576", "-",
                                str(a.workers), a.memory_limit, str(tmp / "fixed.json")],
                               capture_output=True, timeout=120)
            if r.returncode != 0:
                return None
            times.append(time.perf_counter() - t)
        return statistics.median(times)
    finally:
        stop(server)
        one.unlink(missing_ok=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="512MiB", help="input size (default 512MiB)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="256MiB")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--part-size", default="8MiB")
    ap.add_argument("--rate", default="100MB",
                    help="per-connection limit of the throttled server, bytes/s (100MB)")
    ap.add_argument("--slow-size", default="256MiB",
                    help="input size for the throttled server (256MiB)")
    ap.add_argument("--data-dir", default=str(HERE / "data"))
    ap.add_argument("--json", help="also save every time as JSON here")
    ap.add_argument("--idle-wait", type=float, default=5.0,
                    help="before each run, wait up to this many seconds for other programs' "
                         "CPU use to drop under 0.15 core (5)")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--serve-rate", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--receive", help=argparse.SUPPRESS)
    ap.add_argument("--send", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        serve(a.serve, a.serve_rate)
        return 0
    if a.receive:
        receive(a.receive)
        return 0
    if a.send:
        send(a.send[0], int(a.send[1]))
        return 0

    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    from run import ensure_input, precompile  # noqa: E402  (the other benchmarks' inputs)
    from compress import wait_idle  # noqa: E402

    precompile()   # as an installed copy (run.precompile)

    from dataflow.sizes import parse_size

    a.part_size_bytes = parse_size(a.part_size)
    a.rate_bytes = parse_size(a.rate)
    data = Path(a.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    inp, size = ensure_input(data, parse_size(a.size))
    slow_inp, slow_size = ensure_input(data, parse_size(a.slow_size))
    for path in (inp, slow_inp):     # untimed: every contender reads from the page cache
        subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dataflow-bench-net-") as t:
        tmp = Path(t)
        contenders = make_contenders(a, tmp)
        server, port = start_helper("--serve", str(inp))
        slow, slow_port = start_helper("--serve", str(slow_inp), "--serve-rate",
                                        str(a.rate_bytes))
        urls = {"url": f"http://127.0.0.1:{port}/{inp.name}",
                "slow_url": f"http://127.0.0.1:{slow_port}/{slow_inp.name}"}
        try:
            for r in range(a.repeat):
                for fam in FAMILIES:
                    group = [c for c in contenders if c.family == fam and not c.missing]
                    k = r % max(1, len(group))
                    for c in group[k:] + group[:k]:
                        if c.error:
                            continue
                        src, n = (slow_inp, slow_size) if fam == "http-slow" else (inp, size)
                        if a.idle_wait > 0:
                            wait_idle(a.idle_wait)
                        run_once(c, a, urls, src, n, data, tmp, check=(r == 0),
                                 servers=[server.pid, slow.pid])
                        shown = (f"{c.times[-1]:7.3f} s  cpu {c.cpu[-1]:6.2f} s  other "
                                 f"{c.foreign[-1]:5.2f} s  steal {c.steal[-1]:4.2f} s"
                                 if not c.error else f"FAILED: {c.error}")
                        print(f"  round {r + 1}/{a.repeat}  {c.label:<38} {shown}",
                              file=sys.stderr, flush=True)
            fixed = fixed_cost(a, tmp, data)
        finally:
            stop(server)
            stop(slow)
        text = report(a, contenders, {"input": size, "slow": slow_size}, fixed,
                      time.perf_counter() - started)
    print(text)
    if a.json:
        Path(a.json).write_text(json.dumps({
            "size": size, "slow_size": slow_size, "args": {k: v for k, v in vars(a).items()},
            "contenders": [{"key": c.key, "label": c.label, "family": c.family,
                            "times": c.times, "cpu": c.cpu, "stats": c.stats,
                            "verified": c.verified, "missing": c.missing, "error": c.error,
                            "command": c.shell} for c in contenders]}, indent=2) + "\n")
    bad = [c for c in contenders if c.error or c.verified.startswith(("WRONG", "DIFFERS"))]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
