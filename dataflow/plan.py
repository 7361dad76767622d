"""The slot plan: how many shared-memory slots of what size fit under `memory_limit`. Pure.

The memory of a job's process tree is (PSS, so the shared arena counts once):

    total = COORDINATOR + workers * WORKER            interpreters, measured on this stack
          + workers * stage_memory                    what the stages declare they hold
                                                      (Transform.worker_memory: an xz
                                                      encoder's tables, a model), and the
                                                      Python objects a chunk becomes, kept
                                                      mapped (Transform.object_memory:
                                                      lines, records; object_reserve)
          + slots * slot_size                         the shared arena
          + workers * SCRATCH * slot_size             transient output a transform builds
                                                      in its own heap before it is copied
                                                      into its output slot

Solved for `slots`:  slots = (limit - COORDINATOR - workers * (WORKER + stage_memory
                                                          + SCRATCH * slot_size))
                             // slot_size,  capped at `workers * (2 * prefetch + 2) + 2`
(more slots than that buy no throughput: each worker holds 2 slots per queued task, plus read
ahead and reorder room). If fewer than `min_slots` fit, the slot size is halved (never below
the largest record, `max_record_size`) until they do; if they never do, the limit is too small
and the error says how much is needed. `dataflow run --explain` prints this derivation.

A source that buffers data in the coordinator (an HTTP source fetching ranges concurrently
holds up to `connections x part_size`) declares it with `buffer_bytes()`; that much is set
aside from the limit first (`source_buffer`).

A first stage that asks for `context` (pigz-style gzip primes each chunk with the 32 KiB
before it) gets that many bytes more per slot: the source copies them behind the chunk.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .errors import ResourceError
from .sizes import format_size

COORDINATOR = 40 << 20  # coordinator interpreter + psutil + msgspec + yaml (PSS, measured)
WORKER = 20 << 20       # a spawned worker interpreter with the built-in stages (PSS, measured)
SCRATCH = 2             # output object + a copy on its way into the slot
MIN_SLOT = 64 << 10     # below this, per-chunk overhead dominates


@dataclass(frozen=True)
class Plan:
    workers: int
    slot_size: int
    slots: int
    memory_limit: int
    prefetch: int
    context: int = 0  # bytes at the end of each slot for the preceding stream bytes
    source_buffer: int = 0  # bytes the source holds in the coordinator (HTTP range parts)
    stage_memory: int = 0   # bytes each worker's stages declare (Transform.worker_memory)

    @property
    def capacity(self) -> int:
        """The largest chunk a slot holds."""
        return self.slot_size - self.context

    @property
    def arena_size(self) -> int:
        return self.slots * self.slot_size

    def estimate(self) -> int:
        return (estimate(self.workers, self.slot_size, self.slots) + self.source_buffer
                + self.workers * self.stage_memory)

    def explain(self) -> str:
        fixed = COORDINATOR + self.workers * WORKER
        scratch = self.workers * SCRATCH * self.slot_size
        declared = ([f"  stages' own memory   {format_size(self.workers * self.stage_memory):>12}"
                     f"   {self.workers} workers x {format_size(self.stage_memory)} (declared by "
                     f"the stages: their own, and the Python objects a chunk becomes)"]
                    if self.stage_memory else [])
        buffered = ([f"  set aside            {format_size(self.source_buffer):>12}   held by "
                     f"the source or sink (HTTP parts, tee branches' own jobs)"]
                    if self.source_buffer else [])
        return "\n".join([
            f"memory_limit           {format_size(self.memory_limit):>12}",
            f"  interpreters         {format_size(fixed):>12}   coordinator {format_size(COORDINATOR)}"
            f" + {self.workers} workers x {format_size(WORKER)}",
            f"  worker scratch       {format_size(scratch):>12}   {self.workers} workers x "
            f"{SCRATCH} x slot size",
            *declared,
            *buffered,
            f"  shared arena         {format_size(self.arena_size):>12}   {self.slots} slots x "
            f"{format_size(self.slot_size)}",
            f"  planned total        {format_size(self.estimate()):>12}",
            f"workers {self.workers}, prefetch {self.prefetch} tasks per worker, "
            f"chunks of up to {format_size(self.capacity)}"
            + (f" (+ {format_size(self.context)} of context)" if self.context else ""),
        ])


def object_reserve(stages: Any, chunk_size: int) -> int:
    """The small-object memory a worker keeps mapped for chunks of `chunk_size`: the most any
    one stage declares (`Transform.object_memory`; a chain of record stages shares one decode,
    so their objects are mostly the same ones)."""
    return max((max(0, int(s.object_memory(chunk_size))) for s in stages
                if hasattr(s, "object_memory")), default=0)


def estimate(workers: int, slot_size: int, slots: int) -> int:
    return COORDINATOR + workers * (WORKER + SCRATCH * slot_size) + slots * slot_size


def make_plan(*, workers: int, chunk_size: int, memory_limit: int, max_record_size: int = 0,
              prefetch: int = 2, context: int = 0, source_buffer: int = 0,
              stage_memory: Callable[[int], int] | int = 0) -> Plan:
    """Choose slot size and count; raise ResourceError when the limit cannot hold the job.
    `stage_memory(capacity)`: what each worker's stages hold for chunks of that size."""
    declared = stage_memory if callable(stage_memory) else (lambda capacity: stage_memory)
    if workers < 1:
        raise ResourceError("at least one worker is needed")
    capacity = max(chunk_size, max_record_size, 1)
    floor = max(max_record_size, min(MIN_SLOT, capacity))
    useful = workers * (2 * prefetch + 2) + 2
    min_slots = min(useful, 2 * workers + 2)
    while True:
        slot_size = capacity + context
        stage_memory = declared(capacity)
        room = (memory_limit - source_buffer - COORDINATOR
                - workers * (WORKER + stage_memory + SCRATCH * slot_size))
        slots = min(useful, room // slot_size) if room > 0 else 0
        if slots >= min_slots:
            return Plan(workers, slot_size, slots, memory_limit, prefetch, context,
                        source_buffer, stage_memory)
        if capacity <= floor:
            need = estimate(workers, slot_size, min_slots) + source_buffer + \
                workers * stage_memory
            raise ResourceError(
                f"memory_limit {format_size(memory_limit)} is too small for {workers} "
                f"worker{'s' if workers != 1 else ''}: at least {need} bytes "
                f"({format_size(need)}) are needed ({min_slots} slots of "
                f"{format_size(slot_size)} plus interpreters"
                + (f" and {format_size(source_buffer)} set aside for the source and sink"
                   if source_buffer else "")
                + (f" and {format_size(stage_memory)} per worker that the stages declare"
                   if stage_memory else "")
                + "); raise memory_limit, lower workers or max_record_size")
        capacity = max(capacity // 2, floor)
