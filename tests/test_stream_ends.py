"""The network, process and remote Readables/Writables as YAML jobs run by the CLI:
`source: {url | tcp | command}`, `sink: {url | tcp | command}`."""
from __future__ import annotations

import socket
import subprocess
import threading

import pytest

from dataflow.config import load_job
from dataflow.errors import ConfigError

from conftest import require_tool, run_cli
from test_http import Site, serve


def job(tmp_path, text: str) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(text + "\nworkers: 2\nmemory_limit: 256MiB\nchunk_size: 256KiB\n")
    return str(path)


def test_a_command_source_through_grep_equals_seq_piped_to_grep(tmp_path):
    grep = require_tool("grep")
    out = tmp_path / "out.txt"
    r = run_cli("run", job(tmp_path, f"source: {{command: [seq, '1', '300000']}}\n"
                                     f"stages: [{{grep: {{pattern: '^1.*7$'}}}}]\n"
                                     f"sink: {{file: {out}}}"), "--quiet")
    assert r.returncode == 0, r.stderr
    seq = subprocess.run(["seq", "1", "300000"], capture_output=True, check=True).stdout
    expect = subprocess.run([grep, "^1.*7$"], input=seq, capture_output=True).stdout
    assert out.read_bytes() == expect and len(expect) > 10_000


def test_a_sink_command_that_exits_early_ends_the_job_quietly(tmp_path):
    r = run_cli("run", job(tmp_path, "source: {generate: {size: 64MiB}}\n"
                                     "sink: {command: [head, -n, '3']}"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(b"\n") == 3 and r.stderr == b""


def test_a_failing_source_command_names_the_command_and_its_stderr(tmp_path):
    r = run_cli("run", job(tmp_path, "source: {command: ['echo 1; echo oops >&2; exit 3'], "
                                     "shell: true}\nsink: {null: true}"), "--quiet")
    assert r.returncode == 1
    assert b"exited with code 3" in r.stderr and b"oops" in r.stderr


def test_an_http_url_source_in_yaml(tmp_path):
    data = b"".join(b"%d GET /x %d\n" % (i, i % 7) for i in range(200_000))
    out = tmp_path / "out.txt"
    with serve(Site({"/log": data})) as base:
        r = run_cli("run", job(tmp_path, f"source: {{url: '{base}/log', connections: 2, "
                                         f"part_size: 1MiB}}\n"
                                         f"stages: [{{grep: {{pattern: ' 3$'}}}}]\n"
                                         f"sink: {{file: {out}}}"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == b"".join(l for l in data.splitlines(keepends=True)
                                        if l.endswith(b" 3\n"))


def test_an_http_404_fails_and_leaves_no_output(tmp_path):
    out = tmp_path / "out.txt"
    with serve(Site({})) as base:
        r = run_cli("run", job(tmp_path, f"source: {{url: '{base}/missing'}}\n"
                                         f"sink: {{file: {out}}}"), "--quiet")
    assert r.returncode == 1 and b"404" in r.stderr and b"/missing" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]


def test_a_listening_tcp_source_prints_its_port_and_takes_one_connection(tmp_path):
    data = b"".join(b"line %d\n" % i for i in range(100_000))
    out = tmp_path / "out.txt"
    proc = subprocess.Popen(
        ["python", "-m", "dataflow", "run",
         job(tmp_path, f"source: {{tcp: '127.0.0.1:0', listen: true, timeout: 20}}\n"
                       f"sink: {{file: {out}}}")],
        stderr=subprocess.PIPE, start_new_session=True)
    try:
        line = proc.stderr.readline().decode()
        assert line.startswith("dataflow: source listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(data)
        assert proc.wait(60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert out.read_bytes() == data


def test_a_tcp_sink_sends_the_output_to_a_listener(tmp_path):
    received = bytearray()
    server = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        conn, _ = server.accept()
        with conn:
            while chunk := conn.recv(1 << 16):
                received.extend(chunk)

    t = threading.Thread(target=accept)
    t.start()
    try:
        port = server.getsockname()[1]
        r = run_cli("run", job(tmp_path, f"source: {{generate: {{size: 4MiB, seed: 2}}}}\n"
                                         f"sink: {{tcp: '127.0.0.1:{port}'}}"), "--quiet")
    finally:
        t.join(30)
        server.close()
    assert r.returncode == 0, r.stderr
    from dataflow.generate import generate_blocks
    assert bytes(received) == b"".join(generate_blocks(4 << 20, 2))


@pytest.mark.parametrize("text,message", [
    ("source: {url: 'memory://x/*.log', connections: 8}",
     "job.yaml:1: source.connections: connections goes with an http(s) URL"),
    ("source: {url: 'http://h/x', storage_options: {a: 1}}",
     "job.yaml:1: source.storage_options: storage_options goes with an fsspec URL"),
    ("source: {file: x, listen: true}", "job.yaml:1: source.listen: listen goes with a tcp"),
    ("source: {command: [no-such-program-here]}",
     "job.yaml:1: source.command: program 'no-such-program-here' not found on the PATH"),
    ("source: {tcp: nohostport}", "job.yaml:1: source.tcp: bad TCP address 'nohostport'"),
    ("source: {generate: {size: 10}}\nsink: {url: 'https://x/y'}",
     "job.yaml:2: sink.url: there is no HTTP sink"),
    ("source: {generate: {size: 10}}\nsink: {file: x, shell: true}",
     "job.yaml:2: sink.shell: shell goes with a command sink, not file"),
    ("source: {generate: {size: 10}}\nsink: {command: [sort], cwd: /nonexistent}",
     "job.yaml:2: sink.cwd: cwd '/nonexistent' does not exist"),
    ("source: {url: 'http://h/x', ranges: maybe}", "job.yaml:1: source.ranges: "),
])
def test_config_errors_name_the_key(text, message):
    with pytest.raises(ConfigError) as info:
        load_job("job.yaml", text=text)
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize("text,override,kind", [
    ("source: {generate: {size: 10}}\nsink: {file: o, sync: false}", "sink.stdout=true",
     "StdoutSink"),
    ("source: {generate: {size: 10}}\nsink: {command: [sort], stderr: capture}",
     "sink.file=out.txt", "FileSink"),
    ("source: {url: 'http://h/x', connections: 8}", "source.file=a.log", "FileSource"),
])
def test_set_switching_the_kind_drops_the_old_kinds_options(text, override, kind):
    j = load_job("job.yaml", [override], text=text)
    assert type(j.sink if override.startswith("sink") else j.source).__name__ == kind
