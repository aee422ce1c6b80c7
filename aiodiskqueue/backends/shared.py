"""`SharedBackend`: a queue kept by a store that several queues use at once (`SharedStorageEngine`).

The store orders the items and hands each to exactly one getter, so the backend keeps no item
in memory: a get is one atomic operation on the store. Puts leave in the order they were
made, one at a time, from an outbox that a sender task empties, so `put_nowait()` can return
at once and store its item in the background, as on a local engine; a put that finds the
store full waits there for room. Waiting for items or room is the engine's wait, which the
store wakes; one watching task at a time runs it, and wakes the queue's waiters.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from contextlib import suppress
from typing import Any, Generic, TypeVar

from ..engines import SharedStorageEngine
from ..exceptions import SerializationError
from ..serializers import Serializer
from ..waiting import Completion, Tasks, Waiters, cancel_at_next_await, despite_cancellation

__all__ = ["SharedBackend"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

WAIT_SLICE = 5.0
"""The longest an engine's wait lasts before it is made again (a safety net for a wake-up
lost with a connection; engines wake waiters far sooner)."""


class SharedBackend(Generic[T]):
    """The items of a queue kept by a shared store: every put and get is one operation on it."""

    can_get_nowait = False
    can_deliver_at_least_once = False

    def __init__(
        self,
        engine: SharedStorageEngine,
        *,
        serializer: Serializer[T],
        maxsize: int,
        getters: Waiters,
        putters: Waiters,
        tasks: Tasks,
    ) -> None:
        self.engine = engine
        self._tasks = tasks
        self._serializer = serializer
        self._maxsize = maxsize
        self._getters = getters
        self._putters = putters
        self._outbox: deque[_Put] = deque()
        self._sender: asyncio.Task[None] | None = None
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._operations: set[asyncio.Future[Any]] = set()  # gets and give-backs under way
        self._gets = 0
        self._closing = asyncio.Event()

    def __repr__(self) -> str:
        return repr(self.engine)

    # What the queue asks

    def size(self) -> int:
        """The size of the queue as the engine last heard it from the store."""
        return self.engine.size()

    def ready(self) -> bool:
        """True if the store held an item when last heard of (a get may still find none)."""
        return self.size() > 0

    def expect_items(self) -> None:
        """A getter waits: watch the store for items."""
        self._watch("items", self.engine.wait_for_items(WAIT_SLICE), self._getters)

    def expect_room(self) -> None:
        """A putter waits: watch the store for room."""
        self._watch("room", self.engine.wait_for_room(self._maxsize, WAIT_SLICE), self._putters)

    def _watch(self, what: str, wait: Coroutine[Any, Any, None], waiters: Waiters) -> None:
        if what in self._watchers or self._closing.is_set():
            wait.close()
            return
        watcher = asyncio.get_running_loop().create_task(wait)
        self._watchers[what] = watcher

        def woken(task: asyncio.Task[None]) -> None:
            del self._watchers[what]
            if not task.cancelled() and task.exception() is not None:
                waiters.fail_all(task.exception())  # type: ignore[arg-type]
            else:
                waiters.wake_all()

        watcher.add_done_callback(woken)

    # Putting

    def put_nowait(self, data: bytes) -> Completion:
        """Send an item to the store in the background; return an awaitable of its storing."""
        return Completion(self._post(data).stored)

    async def put(self, data: bytes) -> bool:
        """Send an item to the store and wait until it is stored.

        Cancelled before the item was sent, it takes it out of the outbox and raises
        `CancelledError`; once sent, the put completes, and the cancellation is delivered at
        the task's next ``await`` (the store cannot take back an item that others may have
        seen).
        """
        put = self._post(data)
        try:
            await asyncio.shield(put.stored)
        except asyncio.CancelledError:
            if not put.sent:
                self._outbox.remove(put)
                self._tasks.add(-1)
                put.stored.cancel()
                raise
            await despite_cancellation(put.stored)
            cancel_at_next_await()
        return True

    def _post(self, data: bytes) -> _Put:
        put = _Put(data)
        self._outbox.append(put)
        self._tasks.add()
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())
        return put

    async def _send(self) -> None:
        """Store the outbox's items in order; a full store is waited on, except when closing."""
        try:
            while self._outbox:
                put = self._outbox[0]
                put.sent = True
                try:
                    maxsize = 0 if self._closing.is_set() else self._maxsize
                    stored = await self.engine.put(put.data, maxsize)
                except Exception as exc:
                    self._outbox.popleft()
                    self._tasks.add(-1)
                    put.stored.set_exception(exc)
                    put.stored.exception()  # a failure of put_nowait()'s item is logged below
                    logger.debug("storing an item in %r failed: %r", self.engine, exc)
                    continue
                if stored:
                    self._outbox.popleft()
                    put.stored.set_result(None)
                    self._getters.wake_one()
                else:
                    put.sent = False
                    await self._wait_for_room_unless_closing()
        finally:
            self._sender = None

    async def _wait_for_room_unless_closing(self) -> None:
        room = asyncio.ensure_future(self.engine.wait_for_room(self._maxsize, WAIT_SLICE))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait((room, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            room.cancel()
            closing.cancel()

    # Getting

    def get_nowait(self) -> tuple[T, int]:
        raise NotImplementedError(
            f"get_nowait() cannot reach {self.engine!r} without waiting: use `await get()`"
        )

    async def get(self) -> tuple[T, int] | None:
        """Take the head item from the store; None if the store had none.

        Cancelled once the get was sent, it waits for the store's answer; an item it got
        goes back to the head of the store, and it raises `CancelledError`.
        An item that cannot be deserialised goes back to the head too, and the error is raised.
        """
        operation = self._start(self.engine.get())
        try:
            data = await asyncio.shield(operation)
        except asyncio.CancelledError:
            with suppress(Exception):
                data = await despite_cancellation(operation)
                if data is not None:
                    await self._give_back(data)
            raise
        if data is None:
            return None
        try:
            item = self._serializer.loads(data)
        except Exception as exc:
            # Kept for a consumer that can read it, at the tail, so that it blocks nobody.
            await despite_cancellation(self._start(self.engine.put(data, 0)))
            raise SerializationError(
                f"an item of {self.engine!r} cannot be read by the {self._serializer.name!r} "
                f"serializer ({exc!r}): it was put back at the tail",
                data,
            ) from exc
        self._gets += 1
        self._tasks.take()
        return item, self._gets

    async def _give_back(self, data: bytes) -> None:
        """Return a got item to the head of the store, through any cancellation."""
        await despite_cancellation(self._start(self.engine.put_back(data)))
        self._getters.wake_one()

    def _start(self, operation: Coroutine[Any, Any, R]) -> asyncio.Task[R]:
        """Run an operation on the store in a task of its own, which `close()` waits for."""
        task = asyncio.get_running_loop().create_task(operation)
        self._operations.add(task)
        task.add_done_callback(self._operations.discard)
        return task

    # Acknowledging

    def finish(self, keys: list[int]) -> Completion:
        """Nothing to store: the store removed each item when it was got."""
        return Completion.at_once()

    # Closing

    async def close(self) -> None:
        """Send the items still in the outbox (regardless of `maxsize`), then close the engine."""
        self._closing.set()
        for watcher in list(self._watchers.values()):
            watcher.cancel()
        while self._sender is not None or self._operations:
            # An operation may start another (a get whose caller was cancelled gives back).
            await asyncio.wait({*self._operations, *filter(None, [self._sender])})
        await self.engine.close()


class _Put:
    """An item in the outbox, and the future of its storing."""

    __slots__ = ("data", "sent", "stored")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sent = False
        self.stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
