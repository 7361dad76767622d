"""FsspecSource and FsspecSink (dataflow/remote.py) on the `memory://` filesystem and on S3
served by moto on 127.0.0.1 (a thread of this process). Outputs are compared with GNU grep
and with the bytes uploaded; a failed job must leave no object and no pending multipart
upload (checked with boto3's list_multipart_uploads).

Skipped when fsspec (memory tests) or s3fs/moto/boto3 (S3 tests) are missing, unless CI is
set: then a missing package is a failure, like a missing tool in conftest."""
from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
import threading
import uuid

import pytest

import dataflow
from dataflow.errors import SinkError, SourceError, StageError
from dataflow.sinks import OutputExistsError

from conftest import require_tool
from helper_transforms import RaiseOn

PATTERN = r'" 5[0-9][0-9] '     # the server errors of the generated access log
MiB = 1 << 20
pytestmark = pytest.mark.timeout(60)


def require_modules(*names: str) -> None:
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{', '.join(missing)} required in CI (pip install -e '.[test]')")
        pytest.skip(f"not installed: {', '.join(missing)}")


def fsspec_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "dataflow-fsspec"]


@pytest.fixture
def memfs():
    """The memory filesystem and a fresh directory in it (removed afterwards)."""
    require_modules("fsspec")
    import fsspec

    fs = fsspec.filesystem("memory")
    root = f"/t{uuid.uuid4().hex[:12]}"
    fs.mkdir(root)
    yield fs, root
    fs.rm(root, recursive=True)


def gnu_grep(path: str) -> bytes:
    grep = require_tool("grep")
    out = subprocess.run([grep, "-E", PATTERN, path], capture_output=True,
                         env={"LC_ALL": "C"}).stdout
    assert out.count(b"\n") > 100
    return out


# ------------------------------------------------------------------ memory://
def test_memory_glob_reads_in_order_as_one_stream(memfs):
    from dataflow.remote import FsspecSource

    fs, root = memfs
    parts = {name: b"".join(b"%s line %d\n" % (name.encode(), i) for i in range(3000))
             for name in ("b.log", "a.log", "c.log")}
    for name, data in parts.items():
        fs.pipe(f"{root}/{name}", data)
    fs.pipe(f"{root}/skip.txt", b"not matched\n")
    src = FsspecSource(f"memory://{root}/*.log")
    whole = parts["a.log"] + parts["b.log"] + parts["c.log"]
    assert src.size() == len(whole)
    assert src.urls == [f"memory://{root}/{n}" for n in ("a.log", "b.log", "c.log")]
    out = b"".join(dataflow.stream(src, dataflow.Passthrough(), workers=2,
                                   memory_limit="256MiB", chunk_size="16KiB"))
    assert out == whole
    first = len(parts["a.log"])
    assert src.where(first + 5) == f"memory://{root}/b.log: byte 5"
    assert fsspec_threads() == []


def test_memory_pipeline_equals_gnu_grep(memfs, sample_log):
    from dataflow.remote import FsspecSink, FsspecSource

    fs, root = memfs
    with open(sample_log, "rb") as f:
        fs.pipe(f"{root}/access.log", f.read())
    sink = FsspecSink(f"memory://{root}/out/errors.log")
    fs.mkdir(f"{root}/out")
    dataflow.pipeline(FsspecSource(f"memory://{root}/access.log"), dataflow.Grep(PATTERN),
                      sink, workers=2, memory_limit="256MiB")
    assert fs.cat(f"{root}/out/errors.log") == gnu_grep(sample_log)
    assert fs.ls(f"{root}/out", detail=False) == [f"{root}/out/errors.log"]  # no temp left
    assert sink.bytes == len(gnu_grep(sample_log))


def test_memory_missing_object_glob_and_directory_errors_name_the_url(memfs):
    from dataflow.remote import FsspecSource

    fs, root = memfs
    fs.pipe(f"{root}/d/x.log", b"x\n")
    with pytest.raises(SourceError, match=rf"memory://{root}/nope\.log: no such object") as e:
        FsspecSource(f"memory://{root}/nope.log").size()
    assert e.value.file == f"memory://{root}/nope.log"
    with pytest.raises(SourceError, match=r"no object matches .*\*\.gz"):
        FsspecSource(f"memory://{root}/*.gz").size()
    with pytest.raises(SourceError, match=r"it is a directory"):
        FsspecSource(f"memory://{root}/d").size()
    # through the pipeline: a clean SourceError, no worker or thread left
    with pytest.raises(SourceError, match="no such object"):
        dataflow.pipeline(FsspecSource(f"memory://{root}/nope.log"), dataflow.Passthrough(),
                          dataflow.NullSink(), workers=2, memory_limit="256MiB")
    assert fsspec_threads() == []


def test_memory_failed_job_leaves_nothing_at_the_target(memfs):
    from dataflow.remote import FsspecSink, FsspecSource

    fs, root = memfs
    fs.pipe(f"{root}/in.log", b"".join(b"line %d\n" % i for i in range(200_000)))
    sink = FsspecSink(f"memory://{root}/out.log")
    with pytest.raises(StageError, match="bad chunk 3"):
        dataflow.pipeline(FsspecSource(f"memory://{root}/in.log"), RaiseOn(3), sink,
                          workers=2, memory_limit="256MiB", chunk_size="64KiB")
    assert fs.ls(root, detail=False) == [f"{root}/in.log"]   # no output, no temp object
    assert sink.abort_error is None
    sink.abort()   # idempotent
    assert fsspec_threads() == []


def test_memory_sink_check_overwrite_and_missing_directory(memfs):
    from dataflow.remote import FsspecSink, FsspecSource

    fs, root = memfs
    fs.pipe(f"{root}/in.log", b"new\n")
    fs.pipe(f"{root}/out.log", b"old\n")
    src = f"memory://{root}/in.log"
    with pytest.raises(OutputExistsError, match=rf"memory://{root}/out.log already exists"):
        dataflow.pipeline(FsspecSource(src), dataflow.Passthrough(),
                          FsspecSink(f"memory://{root}/out.log", overwrite=False), workers=1)
    assert fs.cat(f"{root}/out.log") == b"old\n"
    dataflow.pipeline(FsspecSource(src), dataflow.Passthrough(),
                      FsspecSink(f"memory://{root}/out.log"), workers=1)
    assert fs.cat(f"{root}/out.log") == b"new\n"
    with pytest.raises(SinkError, match=rf"directory {root}/nodir does not exist"):
        FsspecSink(f"memory://{root}/nodir/out.log").check([])
    with pytest.raises(SinkError, match="it is a directory"):
        fs.pipe(f"{root}/dir/x", b"")
        FsspecSink(f"memory://{root}/dir").check([])


def test_file_url_sink_moves_its_temp_into_place(tmp_path, sample_log):
    require_modules("fsspec")
    from dataflow.remote import FsspecSink, FsspecSource

    out = tmp_path / "errors.log"
    dataflow.pipeline(FsspecSource(f"file://{sample_log}"), dataflow.Grep(PATTERN),
                      FsspecSink(f"file://{out}"), workers=2, memory_limit="256MiB")
    assert out.read_bytes() == gnu_grep(sample_log)
    assert os.listdir(tmp_path) == ["errors.log"]


def test_missing_packages_say_what_to_install(monkeypatch):
    from dataflow import remote

    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(SourceError, match=r"s3://b/k: .*fsspec: pip install dataflow\[remote\]"
                                          r" \(s3:// needs s3fs"):
        remote.FsspecSource("s3://b/k")
    with pytest.raises(SinkError, match=r"pip install dataflow\[remote\]"):
        remote.FsspecSink("memory://x")
    monkeypatch.undo()
    require_modules("fsspec")
    registry = importlib.import_module("fsspec.registry")
    monkeypatch.delitem(registry._registry, "s3", raising=False)
    monkeypatch.setitem(sys.modules, "s3fs", None)
    with pytest.raises(SourceError, match=r"s3://b/k: s3:// URLs need an optional package: "
                                          r"pip install dataflow\[remote\] \(s3:// needs s3fs"):
        remote.FsspecSource("s3://b/k")
    with pytest.raises(SinkError, match=r"s3://b/k: .*s3fs"):
        remote.FsspecSink("s3://b/k")
    with pytest.raises(SourceError, match=r"unknown URL scheme nosuch://"):
        remote.FsspecSource("nosuch://b/k")


def test_part_size_below_the_s3_minimum_is_refused():
    require_modules("fsspec", "s3fs")
    from dataflow.remote import FsspecSink

    with pytest.raises(ValueError, match="part_size must be at least 5 MiB"):
        FsspecSink("s3://bucket/key", part_size=1 << 20)


# ------------------------------------------------------------------ S3 (moto on loopback)
class S3:
    def __init__(self, endpoint: str, client):
        self.endpoint = endpoint
        self.client = client
        self.options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing",
                        "client_kwargs": {"region_name": "us-east-1"}}

    def bucket(self) -> str:
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        return [o["Key"] for o in self.client.list_objects_v2(Bucket=bucket).get("Contents", [])]

    def uploads(self, bucket: str) -> list:
        return self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])

    def get(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.fixture(scope="module")
def s3_server():
    require_modules("fsspec", "s3fs", "boto3", "moto", "flask", "flask_cors")
    import boto3
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in ("AWS_EC2_METADATA_DISABLED",)}
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"  # never ask 169.254.169.254
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    try:
        yield S3(endpoint, client)
    finally:
        client.close()
        server.stop()
        werkzeug.setLevel(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3(s3_server):
    yield s3_server
    assert fsspec_threads() == [], "a source or sink left its event-loop thread running"


def test_s3_pipeline_equals_gnu_grep(s3, sample_log):
    from dataflow.remote import FsspecSink, FsspecSource

    bucket = s3.bucket()
    s3.client.upload_file(sample_log, bucket, "logs/access.log")
    src = FsspecSource(f"s3://{bucket}/logs/access.log", storage_options=s3.options)
    assert src.size() == os.path.getsize(sample_log)
    sink = FsspecSink(f"s3://{bucket}/out/errors.log", storage_options=s3.options)
    dataflow.pipeline(src, dataflow.Grep(PATTERN), sink, workers=2, memory_limit="256MiB")
    assert s3.get(bucket, "out/errors.log") == gnu_grep(sample_log)
    assert s3.uploads(bucket) == []


def test_s3_multipart_upload_larger_than_one_part(s3, tmp_path):
    from dataflow.generate import write_sample
    from dataflow.remote import FsspecSink, FsspecSource

    local = tmp_path / "in.log"
    write_sample(str(local), 12 * MiB, seed=3)
    bucket = s3.bucket()
    s3.client.upload_file(str(local), bucket, "in.log")
    sink = FsspecSink(f"s3://{bucket}/copy.log", storage_options=s3.options,
                      part_size=5 * MiB)
    dataflow.pipeline(FsspecSource(f"s3://{bucket}/in.log", storage_options=s3.options,
                                   block_size=MiB),
                      dataflow.Passthrough(), sink, workers=2, memory_limit="256MiB",
                      chunk_size="1MiB")
    assert s3.get(bucket, "copy.log") == local.read_bytes()
    etag = s3.client.head_object(Bucket=bucket, Key="copy.log")["ETag"].strip('"')
    assert int(etag.rsplit("-", 1)[1]) >= 2, f"not a multipart upload: ETag {etag}"
    assert s3.uploads(bucket) == []
    assert sink.buffer_bytes() <= 2 * (5 * MiB + MiB)


def test_s3_failed_job_leaves_no_object_and_no_pending_upload(s3, tmp_path):
    from dataflow.generate import write_sample
    from dataflow.remote import FsspecSink, FsspecSource

    local = tmp_path / "in.log"
    write_sample(str(local), 16 * MiB, seed=5)
    bucket = s3.bucket()
    s3.client.upload_file(str(local), bucket, "in.log")
    sink = FsspecSink(f"s3://{bucket}/out.log", storage_options=s3.options, part_size=5 * MiB)
    with pytest.raises(StageError, match="bad chunk 14"):
        dataflow.pipeline(FsspecSource(f"s3://{bucket}/in.log", storage_options=s3.options),
                          RaiseOn(14), sink, workers=2, memory_limit="256MiB",
                          chunk_size="1MiB")
    assert sink.bytes >= 5 * MiB, "the job failed before the first part: nothing was tested"
    assert s3.keys(bucket) == ["in.log"]
    assert s3.uploads(bucket) == []
    assert sink.abort_error is None


def test_s3_abort_after_parts_were_uploaded(s3):
    from dataflow.remote import FsspecSink

    bucket = s3.bucket()
    sink = FsspecSink(f"s3://{bucket}/out.bin", storage_options=s3.options, part_size=5 * MiB)
    sink.check([])
    sink.open()
    sink.write(memoryview(b"x" * (6 * MiB)))
    assert len(s3.uploads(bucket)) == 1          # a part is up, the upload is pending
    sink.abort()
    sink.abort()
    assert s3.uploads(bucket) == []
    assert s3.keys(bucket) == []


def test_s3_empty_output_and_overwrite(s3):
    from dataflow.remote import FsspecSink

    bucket = s3.bucket()
    s3.client.put_object(Bucket=bucket, Key="old.log", Body=b"old\n")
    url = f"s3://{bucket}/old.log"
    with pytest.raises(OutputExistsError, match=rf"s3://{bucket}/old.log already exists"):
        FsspecSink(url, storage_options=s3.options, overwrite=False).check([])
    sink = FsspecSink(url, storage_options=s3.options)
    sink.check([])
    sink.open()
    sink.close()
    assert s3.get(bucket, "old.log") == b""
    # overwrite=False and the object appears while the job runs: not replaced
    sink = FsspecSink(f"s3://{bucket}/late.log", storage_options=s3.options, overwrite=False)
    sink.check([])
    sink.open()
    sink.write(memoryview(b"mine\n"))
    s3.client.put_object(Bucket=bucket, Key="late.log", Body=b"theirs\n")
    with pytest.raises(SinkError, match="appeared while the job ran; not replaced"):
        sink.close()
    assert s3.get(bucket, "late.log") == b"theirs\n"
    assert s3.uploads(bucket) == []


def test_s3_glob_of_several_objects(s3):
    from dataflow.remote import FsspecSource

    bucket = s3.bucket()
    want = b""
    for i in (2, 0, 1):
        s3.client.put_object(Bucket=bucket, Key=f"day/{i}.log", Body=b"%d\n" % i * 1000)
    for i in (0, 1, 2):
        want += b"%d\n" % i * 1000
    s3.client.put_object(Bucket=bucket, Key="day/readme.txt", Body=b"no\n")
    src = FsspecSource(f"s3://{bucket}/day/*.log", storage_options=s3.options)
    out = b"".join(dataflow.stream(src, dataflow.Passthrough(), workers=2,
                                   memory_limit="256MiB"))
    assert out == want
    assert src.where(2001) == f"s3://{bucket}/day/1.log: byte 1"


def test_s3_errors_name_the_url_and_the_cause(s3, monkeypatch, tmp_path):
    from dataflow.remote import FsspecSink, FsspecSource

    bucket = s3.bucket()
    with pytest.raises(SourceError, match=rf"s3://{bucket}/nope.log: no such object"):
        FsspecSource(f"s3://{bucket}/nope.log", storage_options=s3.options).size()
    with pytest.raises(SinkError, match=r"bucket no-such-bucket does not exist"):
        FsspecSink("s3://no-such-bucket/out.log", storage_options=s3.options).check([])
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    anonymous = {k: v for k, v in s3.options.items() if k not in ("key", "secret")}
    with pytest.raises(SourceError, match=rf"s3://{bucket}/x.log: no credentials"):
        FsspecSource(f"s3://{bucket}/x.log", storage_options=anonymous).size()
    with pytest.raises(SinkError, match=rf"s3://{bucket}/x.log: no credentials"):
        FsspecSink(f"s3://{bucket}/x.log", storage_options=anonymous).check([])


def test_s3_unreachable_endpoint_is_named():
    require_modules("fsspec", "s3fs")
    import socket

    from dataflow.remote import FsspecSource

    with socket.socket() as s:     # a free port on loopback: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "k", "secret": "s",
               "client_kwargs": {"region_name": "us-east-1"},
               "config_kwargs": {"retries": {"max_attempts": 1}}}
    with pytest.raises(SourceError, match=rf"s3://bkt/x.log: cannot connect to the endpoint "
                                          rf".*127.0.0.1:{port}.*check endpoint_url"):
        FsspecSource("s3://bkt/x.log", storage_options=options).size()
    assert fsspec_threads() == []


def test_s3_object_changed_while_read_is_an_error(s3):
    from dataflow.remote import FsspecSource

    bucket = s3.bucket()
    s3.client.put_object(Bucket=bucket, Key="x.log", Body=b"a" * 10000)
    src = FsspecSource(f"s3://{bucket}/x.log", storage_options=s3.options, block_size=4096)
    src.open()
    try:
        buf = bytearray(8192)
        assert src.readinto(memoryview(buf)) == 4096
        s3.client.put_object(Bucket=bucket, Key="x.log", Body=b"b" * 10000)
        with pytest.raises(SourceError, match=rf"s3://{bucket}/x.log at byte 4096: the object "
                                              r"changed while it was read"):
            src.readinto(memoryview(buf))
    finally:
        src.close()
