"""`SharedQueue`: the `Queue` that `Queue.create()` returns for a shared engine.

A shared engine (`SharedStorageEngine`) is a queue of its own, which other `Queue` objects,
in this process or others, on this machine or others, use at the same time. So this queue
keeps no item in memory: every `put()` and `get()` is one atomic operation on the store, and
waiting for an item or for room is the engine's wait, which the store wakes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

from .engines import SharedStorageEngine
from .exceptions import QueueShutDown
from .queues import Queue, cancel_again
from .serializers import Serializer

__all__ = ["SharedQueue"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

WAIT_SLICE = 5.0
"""The longest an engine's wait lasts before the queue tries the store again (a safety net
for a wake-up lost with a connection; engines wake waiters far sooner)."""


class SharedQueue(Queue[T]):
    """A `Queue` whose items are kept by a shared engine, which several queues use at once.

    It behaves as `Queue` does, with these differences, which follow from the items being
    somewhere else:

    - `qsize()`, `empty()` and `full()` report the size the engine last heard from the store:
      approximate, as `asyncio.Queue` documents them to be, since other processes change it.
    - `maxsize` is checked by the store, in the same atomic step as the append.
    - `get_nowait()` and `put_nowait()` raise `NotImplementedError`: they cannot reach the
      store without waiting. Use ``await get()`` and ``await put()`` (with
      `asyncio.timeout` to bound a wait).
    - `task_done()` and `join()` count what this queue did: the unfinished tasks are the
      items this queue put or got, whichever are more, less those marked done. A process
      that only consumes marks what it got; one that puts and gets alone behaves as with
      `asyncio.Queue`; `join()` in a process that only puts waits for its own
      `task_done()` calls, which it never makes, so do not call it there.
    - ``delivery="at-least-once"`` is not supported (a `ValueError` at `create()`), and
      `readahead` has no effect.

    Cancellation: a `put()` or `get()` cancelled while it waits for room or an item raises
    `CancelledError`; once its operation has been sent to the store, it completes (a got
    item is returned, not dropped) and the cancellation is delivered at the task's next
    ``await``.
    """

    _shared: SharedStorageEngine
    _puts: int  # items this queue put
    _gets: int  # items this queue got
    _done: int  # task_done() calls
    _stopped: asyncio.Future[None]  # done once the queue is shut down or closed
    _operations: set[asyncio.Task[Any]]  # sent to the store, not yet answered
    _closing: asyncio.Task[None]

    @classmethod
    async def _start(
        cls,
        engine: SharedStorageEngine,
        meta: Mapping[str, str],
        maxsize: int,
        serializer: Serializer[T],
    ) -> SharedQueue[T]:
        """Make the queue for an engine that `Queue.create()` has opened."""
        if meta.get("serializer", serializer.name) != serializer.name:
            await engine.close()
            raise ValueError(
                f"{engine.address} holds items stored with the {meta['serializer']!r} "
                f"serializer, not {serializer.name!r}"
            )
        queue: SharedQueue[T] = object.__new__(cls)
        queue._shared = engine
        queue._serializer = serializer
        queue._maxsize = maxsize
        queue._loop = asyncio.get_running_loop()
        queue._puts = queue._gets = queue._done = 0
        queue._unfinished_tasks = 0
        queue._finished = asyncio.Event()
        queue._finished.set()
        queue._is_shutdown = queue._is_shutdown_immediately = False
        queue._stopped = queue._loop.create_future()
        queue._operations = set()
        queue._closed = False
        logger.debug("opened %r holding about %d item(s)", engine, engine.size())
        return queue

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"qsize={self.qsize()}"
        return f"<{type(self).__name__} {self._shared!r} maxsize={self._maxsize} {state}>"

    # Size

    def qsize(self) -> int:
        """Return the number of items in the queue, as the engine last heard it from the store."""
        return self._shared.size()

    def empty(self) -> bool:
        """Return True if the queue held no item when the engine last heard from the store."""
        return self.qsize() == 0

    def full(self) -> bool:
        """Return True if the queue held `maxsize` items or more when last heard of."""
        return 0 < self._maxsize <= self.qsize()

    # Putting and getting

    async def put(self, item: T) -> None:
        """Put `item` at the tail, waiting while the queue is full; return once it is stored.

        Raises `QueueShutDown` after `shutdown()`, `SerializationError` (a `TypeError`) if
        the item cannot be serialised, and `QueueConnectionError` if the store cannot be
        reached.
        """
        self._check_can_put()
        data = self._serializer.dumps(item)
        while not await self._operate(self._shared.put(data, self._maxsize), bool):
            self._check_can_put()
            await self._wait(self._shared.wait_for_room(self._maxsize, WAIT_SLICE))
            self._check_can_put()
        self._puts += 1
        self._count_tasks()

    def put_nowait(self, item: T) -> Awaitable[None]:
        """Not possible on a shared engine: raises `NotImplementedError`; use ``await put()``."""
        raise NotImplementedError(
            f"put_nowait() cannot reach {self._shared!r} without waiting: use `await put()`"
        )

    async def get(self) -> T:
        """Remove and return the item at the head, waiting until there is one.

        Returns once the removal is stored. Raises `QueueShutDown` after `shutdown()` once
        the queue is empty (at once after ``shutdown(immediate=True)``), and
        `QueueConnectionError` if the store cannot be reached.
        """
        while True:
            self._check_can_get()
            data = await self._operate(self._shared.get(), _is_item)
            if data is not None:
                break
            if self._is_shutdown:
                raise QueueShutDown
            await self._wait(self._shared.wait_for_items(WAIT_SLICE))
        self._gets += 1
        self._count_tasks()
        try:
            return self._serializer.loads(data)
        except Exception:
            # Keep the item for a consumer that can read it, rather than lose it here.
            await self._operate(self._shared.put(data, 0), bool)
            raise

    def get_nowait(self) -> T:
        """Not possible on a shared engine: raises `NotImplementedError`; use ``await get()``."""
        raise NotImplementedError(
            f"get_nowait() cannot reach {self._shared!r} without waiting: use `await get()`"
        )

    def _check_can_get(self) -> None:
        self._check_open()
        if self._is_shutdown_immediately:
            raise QueueShutDown

    # Tasks

    def task_done(self) -> Awaitable[None]:
        """Mark an item that this queue put or got as processed.

        Returns an awaitable that is already complete: nothing is stored. Raises
        `ValueError` if called more times than this queue put or got items.
        """
        self._check_open()
        if self._done >= max(self._puts, self._gets):
            raise ValueError("task_done() called too many times")
        self._done += 1
        self._count_tasks()
        done = self._loop.create_future()
        done.set_result(None)
        return done

    def _count_tasks(self) -> None:
        self._unfinished_tasks = max(self._puts, self._gets) - self._done
        if self._unfinished_tasks == 0:
            self._finished.set()
        else:
            self._finished.clear()

    def shutdown(self, immediate: bool = False) -> None:
        """Stop the queue from taking items: `put()` raises `QueueShutDown`.

        Waiting putters raise `QueueShutDown`; getters do once the store holds no item for
        them. With `immediate`, getters raise at once, and the items this queue put but did
        not get count as done for `join()`; they stay in the store.
        """
        self._is_shutdown = True
        if immediate:
            self._is_shutdown_immediately = True
            self._puts = min(self._puts, self._gets)
            self._count_tasks()
        self._stop_waiting()

    # Lifecycle

    async def close(self) -> None:
        """Let operations sent to the store finish, then close the engine.

        Later use raises `QueueClosedError`, and so do waiting getters and putters. Calling
        it again waits for the first call's closing; cancelling it does not stop the closing.
        """
        if not self._closed:
            self._closed = True
            self._stop_waiting()
            # A task of its own, so that a cancelled close() still closes the engine.
            self._closing = self._loop.create_task(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        while self._operations:  # an operation may start another (giving an item back)
            await asyncio.wait(set(self._operations))
        await self._shared.close()
        logger.debug("closed %r", self._shared)

    # Waiting

    def _stop_waiting(self) -> None:
        if not self._stopped.done():
            self._stopped.set_result(None)

    async def _wait(self, wait: Coroutine[Any, Any, None]) -> None:
        """Run one of the engine's waits until it returns or the queue is shut down or closed.

        A cancelled caller cancels the wait, which the engine contract makes safe.
        """
        waiting = self._loop.create_task(wait)
        try:
            await asyncio.wait((waiting, self._stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not waiting.done():
                waiting.cancel()
                await asyncio.wait((waiting,))  # a cancellation of the caller's goes on
        if not waiting.cancelled():
            waiting.result()  # an error of the engine's

    async def _operate(
        self, operation: Coroutine[Any, Any, R], took_effect: Callable[[R], bool]
    ) -> R:
        """Run an operation on the store to its end, even if the caller is cancelled meanwhile.

        The store may already have applied it: a cancelled caller whose operation
        `took_effect` gets its result all the same, and the cancellation is delivered at
        the task's next ``await``. If it changed nothing, or failed, the caller raises
        `CancelledError` at once.
        """
        running = self._loop.create_task(operation)
        self._operations.add(running)
        running.add_done_callback(self._operations.discard)
        cancelled = False
        while not running.done():
            try:
                await asyncio.shield(running)
            except asyncio.CancelledError:
                cancelled = True
        if not cancelled:
            return running.result()
        if running.cancelled() or running.exception() is not None:
            raise asyncio.CancelledError
        result = running.result()
        if not took_effect(result):
            raise asyncio.CancelledError
        task = asyncio.current_task()
        if task is not None:
            self._loop.call_soon(cancel_again, task)
        return result


def _is_item(data: bytes | None) -> bool:
    return data is not None
