"""Checkpoints and resume: a job killed at 90% (SIGKILL, OOM, power loss) continues from its
last committed chunk with `--resume`, and the output is byte-identical to an undisturbed run.

While a file-to-file job runs, the coordinator *commits* each chunk once the sink has written
all of its output; every `checkpoint_interval` (10 s by default) the committed state is saved
in a manifest next to the output, `.NAME.dataflow-resume` (msgspec JSON, written to a temp
file and renamed):

- the job's identity: a hash of everything that decides the output bytes (the source's
  description, the stages and their options, the chunking), so a changed job is refused;
- each input's identity: size, mtime and SHA-256 of its first and last MiB; a changed input
  is refused, naming both identities;
- the temp output file (a dead run's) and how many of its bytes are committed;
- where the source continues (a stream offset on a chunk boundary) and the stages' ordered
  folds at that point: the running CRC-32 and length of a gzip member, BGZF index entries,
  match counts. A stage that primes its chunks with the stream before them (pigz-style gzip's
  32 KiB dictionary) gets those bytes re-read from the input.

Resuming truncates the temp file to the committed length, and the run goes on from there:
chunks are cut the same way from the same offset, so every later chunk, and the output, is
the same. Chunks after the checkpoint are done again; committed ones are not.

Not resumable (checkpoints are then not written, and `--resume` says why): inputs other than
files, `ordered: false`, stages that keep per-worker state for `flush()`, stages that decode
the source (`decompress`), folds that msgspec cannot encode.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

import msgspec

from .errors import UsageError
from .sinks import remove_stale_temps, temp_path

VERSION = 1
HASHED = 1 << 20  # bytes hashed at each end of every input
MANIFEST_SUFFIX = ".dataflow-resume"


class InputIdentity(msgspec.Struct, frozen=True):
    path: str
    size: int
    mtime_ns: int
    head_sha256: str
    tail_sha256: str

    def describe(self) -> str:
        return (f"{self.path}: {self.size} bytes, mtime {self.mtime_ns / 1e9:.3f}, "
                f"sha256 of the first/last MiB {self.head_sha256[:12]}/{self.tail_sha256[:12]}")


class Manifest(msgspec.Struct):
    version: int
    job: str
    inputs: list[InputIdentity]
    temp: str                # the temp output file (a basename, next to the output)
    output_bytes: int        # committed bytes of the temp file
    source_offset: int       # stream offset the next chunk starts at
    chunks: int              # chunks committed
    folds: bytes             # the stages' fold accumulators, msgpack


class Point(msgspec.Struct):
    """Where a resumed run starts."""

    temp: str
    output_bytes: int
    source_offset: int
    chunks: int
    folds: list[Any]


def manifest_path(output: str) -> str:
    directory, base = os.path.split(os.path.abspath(output))
    return os.path.join(directory, f".{base}{MANIFEST_SUFFIX}")


def identify(path: str) -> InputIdentity:
    import hashlib   # here: resumable runs only (OpenSSL's load is 4 ms of every start)

    st = os.stat(path)
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(HASHED)).hexdigest()
        f.seek(max(0, st.st_size - HASHED))
        tail = hashlib.sha256(f.read(HASHED)).hexdigest()
    return InputIdentity(path, st.st_size, st.st_mtime_ns, head, tail)


def unsupported(source: Any, stages: list[Any], ordered: bool) -> str | None:
    """Why this job cannot be resumed, or None when it can."""
    from .sources import FileSource

    for i, stage in enumerate(stages):
        if stage.flushes:
            return (f"stages[{i}] ({stage.name}) keeps per-worker state for flush(), which a "
                    f"killed run loses")
        if stage.reads_source:
            return f"stages[{i}] ({stage.name}) decodes the source; its jobs cannot resume"
        if getattr(stage, "limit", None) is not None:
            return f"stages[{i}] ({stage.name}) counts records across the whole output"
    if type(source) is not FileSource:
        return "only jobs that read files can be resumed"
    if not ordered:
        return "a job with `ordered: false` has no committed prefix to resume from"
    try:
        msgspec.msgpack.encode([s.initial() for s in stages])
    except (TypeError, msgspec.EncodeError):
        return "a stage's fold state cannot be saved (msgspec cannot encode it)"
    return None


def job_key(source: Any, stages: list[Any], *, capacity: int, chunk_size: int,
            context: int) -> str:
    """A hash of everything that decides the output bytes."""
    description = {
        "source": [source.patterns, source.split, source.delimiter.hex(), source.start,
                   source.end, source.record_start, source.record_size, source.header,
                   source.errors],
        "stages": [s.spec() for s in stages],
        "chunking": [capacity, chunk_size, context],
    }
    import hashlib

    return hashlib.sha256(msgspec.msgpack.encode(description)).hexdigest()


class Checkpoints:
    """Saves the committed state of one file-to-file job; see the module docstring."""

    def __init__(self, sink: Any, source: Any, job: str, interval: float = 1.0):
        self.sink = sink
        self.source = source
        self.job = job
        self.interval = interval
        self.path = manifest_path(sink.path)
        self.inputs: list[InputIdentity] | None = None
        self._last = time.monotonic()
        self._encoder = msgspec.msgpack.Encoder()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ resuming
    def load(self) -> Point | None:
        """The point a resumed run starts from, or None when there is nothing to resume.
        Raises UsageError when the manifest is unusable or its job or inputs changed."""
        try:
            with open(self.path, "rb") as f:
                manifest = msgspec.json.decode(f.read(), type=Manifest)
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError) as e:
            raise UsageError(f"cannot resume {self.sink.path}: its checkpoint {self.path} is "
                             f"unreadable ({e}); run without --resume to start over") from None
        if manifest.version != VERSION or manifest.job != self.job:
            raise UsageError(f"cannot resume {self.sink.path}: the job changed since the "
                             f"interrupted run (source, stages, options or chunking); run "
                             f"without --resume to start over")
        now = self._identify()
        if now != manifest.inputs:
            before = "; ".join(i.describe() for i in manifest.inputs)
            after = "; ".join(i.describe() for i in now)
            raise UsageError(f"cannot resume {self.sink.path}: the input changed since the "
                             f"interrupted run (then: {before}; now: {after}); run without "
                             f"--resume to start over")
        temp = os.path.join(os.path.dirname(self.path), manifest.temp)
        try:
            size = os.lstat(temp).st_size
        except OSError:
            raise UsageError(f"cannot resume {self.sink.path}: the interrupted run's output "
                             f"{temp} is gone; run without --resume to start over") from None
        if size < manifest.output_bytes:
            raise UsageError(f"cannot resume {self.sink.path}: {temp} has {size} bytes, fewer "
                             f"than the {manifest.output_bytes} committed; run without "
                             f"--resume to start over")
        return Point(temp, manifest.output_bytes, manifest.source_offset, manifest.chunks,
                     msgspec.msgpack.decode(manifest.folds))

    def _identify(self) -> list[InputIdentity]:
        if not self.source.paths:
            self.source.resolve()
        return [identify(p) for p in self.source.paths]

    # ------------------------------------------------------------------ checkpoints
    def start(self) -> None:
        """A new run of the job: forget an older run's manifest; note the inputs."""
        self.remove()
        self.inputs = self._identify()

    def commit(self, source_offset: int, output_bytes: int, chunks: int,
               folds: list[Any]) -> None:
        """Chunks up to `source_offset` are written: save that about once an interval.

        The save runs in a thread (an fdatasync of a busy file takes a while, and the job
        goes on meanwhile); a commit that comes while one is being saved is skipped."""
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._last = now
        if self.inputs is None:
            self.inputs = self._identify()
        try:
            state = self._encoder.encode(folds)  # now: the folds go on changing
        except (TypeError, msgspec.EncodeError):
            return  # this fold cannot be saved; the job still runs, it just cannot resume
        manifest = Manifest(VERSION, self.job, self.inputs, os.path.basename(self.sink.tmp),
                            output_bytes, source_offset, chunks, state)
        self._thread = threading.Thread(target=self._save, args=(manifest,),
                                        name="dataflow-checkpoint", daemon=True)
        self._thread.start()

    def _save(self, manifest: Manifest) -> None:
        try:
            self.sink.sync_data()  # the committed bytes are on disk before the manifest says so
            tmp = temp_path(self.path)    # named so a later run or `dataflow cleanup`
            try:                          # removes it if we are killed right now
                with open(tmp, "xb") as f:
                    f.write(msgspec.json.encode(manifest))
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except Exception:  # noqa: BLE001 - a missed checkpoint costs a longer resume, no more;
            pass           # a failing disk is reported by the sink's own writes and fsync

    def wait(self) -> None:
        """Let a checkpoint being saved finish (before the sink closes its file)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def remove(self) -> None:
        self.wait()
        self.discard(self.sink.path)

    @staticmethod
    def discard(output: str) -> None:
        """Remove the manifest of `output`, if any, and what killed runs left of theirs."""
        path = manifest_path(output)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        remove_stale_temps(*os.path.split(path))
