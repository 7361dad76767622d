"""The asyncio API: `async for piece in astream(...)` and `await apipeline(...)`.

Rules:
- The job runs as usual (coordinator loop plus worker processes) in a thread of its own; the
  event loop is never blocked by it. Each job gets its own thread, not one of the loop's
  default executor's, so long jobs do not starve `to_thread` users.
- Backpressure: `astream` hands pieces over through a window of `high_water_mark` pieces
  (default 1). The job's thread waits for the consumer to take a piece before it asks the
  job for the next one, so a slow `async for` body stalls the job itself: no slot is freed,
  reading stops, memory stays flat, as with the synchronous `stream()`.
- Leaving the `async for` early (break, an exception, the task cancelled) cancels the job
  through its CancelToken and waits, without blocking the loop, until the teardown is done
  (workers gone, shared memory unlinked): Node's `destroyOnReturn`.
- Cancelling the task awaiting `apipeline()` cancels the job the same way; the task sees
  CancelledError once the job is torn down (the sink aborted: no output left behind).
- An error in the job is raised in the consumer, as it would be by `pipeline()`/`stream()`.
- A `CallableSink` with a coroutine function runs that coroutine on the caller's loop, one
  piece at a time: an async sink applies backpressure too.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator

from . import api
from .cancel import CancelToken
from .iterables import CallableSink

_END = object()


async def astream(source: Any, *stages: Any, high_water_mark: int = 1,
                  **options: Any) -> AsyncIterator[bytes]:
    """`stream()` for asyncio: yields the output as bytes, in order."""
    if high_water_mark < 1:
        raise ValueError(f"high_water_mark must be at least 1, got {high_water_mark}")
    loop = asyncio.get_running_loop()
    given = options.pop("cancel", None)
    token = given or CancelToken()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    window = threading.Semaphore(high_water_mark)   # pieces handed over, not yet taken

    def hand_over(item: Any) -> bool:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
            return True
        except RuntimeError:   # the loop is closed: nobody will take it
            return False

    def produce() -> None:
        try:
            pieces = api.stream(source, *stages, cancel=token, **options)
            try:
                for piece in pieces:
                    window.acquire()          # wait until the consumer has room for it
                    if token.cancelled or not hand_over(piece):
                        return
            finally:
                pieces.close()                # teardown here, in the job's own thread
        except BaseException as e:            # noqa: BLE001 - handed to the consumer
            hand_over(e)
        else:
            hand_over(_END)

    thread = threading.Thread(target=produce, name="dataflow-astream", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            window.release()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if thread.is_alive():
            token.cancel("the async consumer left the stream")
            window.release()                  # wake the job's thread if it waits for room
            await asyncio.shield(_join(thread))
        if given is None:
            token.close()


async def _join(thread: threading.Thread) -> None:
    """Wait for a thread to end without blocking the loop."""
    while thread.is_alive():
        await asyncio.sleep(0.01)


async def apipeline(source: Any, *stages_and_sink: Any, **options: Any) -> Any:
    """`pipeline()` for asyncio: runs the job in its own thread and returns its Stats."""
    loop = asyncio.get_running_loop()
    token = options.pop("cancel", None) or CancelToken()
    sink = stages_and_sink[-1] if stages_and_sink else None
    if isinstance(sink, CallableSink) and sink.is_async:
        sink.runner = lambda coro: asyncio.run_coroutine_threadsafe(coro, loop).result()
    done: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not done.done():
            (done.set_result if ok else done.set_exception)(value)

    def run() -> None:
        try:
            result = api.pipeline(source, *stages_and_sink, cancel=token, **options)
        except BaseException as e:   # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(settle, False, e)
        else:
            loop.call_soon_threadsafe(settle, True, result)

    thread = threading.Thread(target=run, name="dataflow-apipeline", daemon=True)
    thread.start()
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        token.cancel("the awaiting task was cancelled")
        await asyncio.shield(_join(thread))
        if done.done() and not done.cancelled():
            done.exception()   # retrieved: no "exception was never retrieved" warning
        raise
