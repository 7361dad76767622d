"""Control messages between the coordinator and its workers (msgspec Structs, msgpack on a pipe).

Rules:
- Only these small messages cross the pipes; payload bytes stay in shared-memory slots.
- Each worker has its own pipe; nothing is shared between workers (no locks, no queues).
- A failure travels as data (type name, message, traceback text), never as a pickled object.
"""
from __future__ import annotations

from typing import Any

import msgspec


class Task(msgspec.Struct, tag="task", frozen=True, array_like=True):
    """Transform the `length` bytes at the start of `slot` (they begin at source `offset`) and
    write the result into `out_slot`, or report `slot` itself when the input is the output."""

    seq: int
    slot: int
    out_slot: int
    length: int
    offset: int
    attempt: int = 1


class Flush(msgspec.Struct, tag="flush", frozen=True, array_like=True):
    """End of stream: run every stage's flush() and write what comes out into `slot` as `seq`."""

    seq: int
    slot: int


class Ack(msgspec.Struct, tag="ack", frozen=True, array_like=True):
    """The piece of `seq` sitting in its slot was consumed; the slot may be reused."""

    seq: int


class Stop(msgspec.Struct, tag="stop", frozen=True, array_like=True):
    """Finish: the worker exits after this."""


class Ready(msgspec.Struct, tag="ready", frozen=True, array_like=True):
    pid: int


class Piece(msgspec.Struct, tag="piece", frozen=True, array_like=True):
    """Part of `seq`'s output is in its slot; more follows after an Ack."""

    seq: int
    slot: int
    length: int


class Done(msgspec.Struct, tag="done", frozen=True, array_like=True):
    """`seq` is finished: its (last) `length` output bytes are in `slot`."""

    seq: int
    slot: int
    length: int
    summaries: list[Any] = []     # one entry per stage: what that stage's fold will combine
    seconds: list[float] = []     # time spent in each stage on this chunk


class Failed(msgspec.Struct, tag="failed", frozen=True, array_like=True):
    """A stage raised on `seq` (or in setup when seq is -1)."""

    seq: int
    stage_index: int
    stage: str
    error_type: str
    message: str
    traceback: str
    record_offset: int = -1   # stream offset of the record that failed (a RecordError), or -1


ToWorker = Task | Flush | Ack | Stop
FromWorker = Ready | Piece | Done | Failed

to_worker_encoder = msgspec.msgpack.Encoder()
from_worker_encoder = msgspec.msgpack.Encoder()
to_worker_decoder = msgspec.msgpack.Decoder(ToWorker)
from_worker_decoder = msgspec.msgpack.Decoder(FromWorker)
