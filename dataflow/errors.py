"""The one exception tree of dataflow.

Rules:
- Every error dataflow raises on purpose is a `DataflowError`; anything else escaping is a bug.
- An error says what failed and where: the config path and line, the stage and chunk index,
  the source file and byte offset. Those facts are attributes as well as text, so callers and
  tests can check them without parsing messages.
- `exit_code` is what the CLI exits with: 1 a job failed, 2 usage or config, 130/143 a signal.
"""
from __future__ import annotations


class DataflowError(Exception):
    """Base of every error dataflow raises on purpose."""

    exit_code = 1


class ConfigError(DataflowError):
    """A job description is invalid. Nothing was started."""

    exit_code = 2

    def __init__(self, message: str, *, path: str = "", file: str = "", line: int | None = None):
        self.path = path
        self.file = file
        self.line = line
        where = ""
        if file:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        if path:
            where += f"{path}: "
        super().__init__(where + message)
        self.message = message


class UsageError(DataflowError):
    """The command line or an API call was used wrongly."""

    exit_code = 2


class SourceError(DataflowError):
    """Reading the input failed (missing file, I/O error, a record too long...)."""

    def __init__(self, message: str, *, file: str = "", offset: int | None = None):
        self.file = file
        self.offset = offset
        super().__init__(message)


class RecordTooLongError(SourceError):
    """A record does not fit in `max_record_size` bytes."""


class SinkError(DataflowError):
    """Writing the output failed; any partial output was removed."""


class ResourceError(DataflowError):
    """The job cannot fit the machine: memory limit, /dev/shm space, descriptors."""


class StageError(DataflowError):
    """A transform raised on a chunk. The worker's traceback is kept in `worker_traceback`."""

    def __init__(self, message: str, *, stage: str, stage_index: int, seq: int, offset: int,
                 error_type: str = "", worker_traceback: str = ""):
        self.stage = stage
        self.stage_index = stage_index
        self.seq = seq
        self.offset = offset
        self.error_type = error_type
        self.worker_traceback = worker_traceback
        super().__init__(message)


class WorkerCrashedError(DataflowError):
    """A worker process died and the chunk ran out of attempts (or could not be retried)."""

    def __init__(self, message: str, *, seq: int | None = None, exitcode: int | None = None):
        self.seq = seq
        self.exitcode = exitcode
        super().__init__(message)


class RemoteTraceback(Exception):
    """Carries a worker's formatted traceback as the `__cause__` of a StageError."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class Cancelled(DataflowError):
    """The job was cancelled through its CancelToken (or its consumer left); all cleaned up."""

    def __init__(self, reason: str = ""):
        self.reason = reason
        super().__init__(f"the job was cancelled{': ' + reason if reason else ''}")


class JobTimeout(Cancelled):
    """The job ran past its `timeout`; all cleaned up. Exits 124, as GNU timeout does."""

    exit_code = 124

    def __init__(self, seconds: float):
        self.seconds = seconds
        DataflowError.__init__(self, f"the job ran past its timeout of {seconds:g} s and was "
                                     f"stopped")
        self.reason = "timeout"


class Interrupted(DataflowError):
    """The job was stopped by a signal (SIGINT or SIGTERM); everything was cleaned up."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
