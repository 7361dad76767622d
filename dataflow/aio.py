"""The asyncio API: `async for piece in astream(...)` and `await apipeline(...)`.

Rules:
- The job runs as usual (coordinator loop plus worker processes) in a thread of its own; the
  event loop is never blocked by it. Each job gets its own thread, not one of the loop's
  default executor's, so long jobs do not starve `to_thread` users.
- Backpressure: `astream` hands pieces over through a window of `high_water_mark` pieces
  (default 1). The job's thread waits for room in the window before it asks the job for the
  next piece, so a slow `async for` body stalls the job itself: no slot is freed, reading
  stops, memory stays flat, as with the synchronous `stream()`. If the loop is closed without
  closing the stream, the job's thread notices within 0.1 s and tears the job down.
- Leaving the `async for` early (break, an exception, the task cancelled) cancels the job
  through its CancelToken and waits, without blocking the loop, until the teardown is done
  (workers gone, shared memory unlinked): Node's `destroyOnReturn`.
- Cancelling the task awaiting `apipeline()` cancels the job the same way; the task sees
  CancelledError once the job is torn down (the sink aborted: no output left behind).
- An error in the job is raised in the consumer, as it would be by `pipeline()`/`stream()`.
- A `CallableSink` (also a Tee's branch) with a coroutine function, or coroutine hooks, runs
  them on the caller's loop, one piece at a time: an async sink applies backpressure too. A
  cancel also cancels the coroutine under way.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, AsyncIterator

from . import api
from .cancel import CancelToken
from .errors import Cancelled
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

    def room() -> bool:
        """Wait until the consumer has room for one more piece; False when it never will
        (it left: the token is cancelled, or its loop is closed without closing us)."""
        while not window.acquire(timeout=0.1):
            if token.cancelled or loop.is_closed():
                return False
        return not token.cancelled

    def produce() -> None:
        try:
            pieces = api.stream(source, *stages, cancel=token, **options)
            try:
                # room first, then the next piece: the job never runs ahead of the window
                while room():
                    piece = next(pieces, _END)
                    if piece is _END:
                        break
                    if not hand_over(piece):
                        return
                else:
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

    def runner(coro: Any) -> Any:
        """Run a sink's coroutine on the caller's loop and wait for it, or for a cancel."""
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        while True:
            try:
                return future.result(timeout=0.1)
            except concurrent.futures.TimeoutError:
                if token.cancelled:
                    future.cancel()
                    raise Cancelled(token.reason or "") from None

    for end in getattr(sink, "sinks", [sink]):     # the sink, or a tee's branches
        if isinstance(end, CallableSink):
            end.runner = runner
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
