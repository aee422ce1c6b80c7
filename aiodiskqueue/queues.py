"""`Queue`: the API of `asyncio.Queue`, with items kept by a storage engine."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from contextlib import suppress
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, cast, get_args

from .engines import DbmEngine, OpenOptions, Record, SharedStorageEngine, StorageEngine
from .exceptions import QueueClosedError, QueueEmpty, QueueFull, QueueShutDown
from .serializers import PickleSerializer, Serializer

__all__ = ["Delivery", "Durability", "OnCorruption", "Queue"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

EngineFactory = Callable[[str | os.PathLike[str]], StorageEngine | SharedStorageEngine]
"""An engine class, or any callable that makes an engine for a path or address."""

Durability = Literal["process-crash", "power-loss"]
"""What a returned `put()` or `get()` survives: the process being killed (the default), or
also an operating-system crash or a power loss (each batch is flushed to the disk)."""

Delivery = Literal["at-most-once", "at-least-once"]
"""When a got item leaves storage: when `get()` returns it (the default), or when
`task_done()` marks it done, so that an item in a consumer's hands when the process dies
is delivered again after the restart."""

OnCorruption = Literal["recover", "raise"]
"""What opening a damaged queue does: keep a backup, log it and go on with every item that
could be read; or raise `QueueCorruptedError` and change nothing."""


class Queue(Generic[T]):
    """A FIFO queue whose items survive the process: `asyncio.Queue`'s API, kept on disk.

    Create it with ``await Queue.create(path)``; then use it as an `asyncio.Queue`. The
    items are kept by a storage engine (`DbmEngine` unless another is given), which is the
    source of truth: the queue holds in memory only a read-ahead window of the first
    items, so its memory does not grow with its length.

    Durability. When ``await put(item)`` returns, the item has been handed to the operating
    system: killing the process afterwards does not lose it. When ``await get()`` returns
    an item, its removal is stored the same way: after a restart the item is not delivered
    again. `put_nowait()` and `get_nowait()` change the queue at once and store the change
    in the background; ``await q.put_nowait(item)`` waits until it is stored. Puts and gets
    that wait at the same moment are stored together, in one batch (group commit). If
    storing a batch fails, every put and get waiting for it raises the error, the queue
    returns to what the engine holds, and items taken by `get_nowait()` since the last
    stored batch are delivered again.

    Reopening a path restores its items in FIFO order; they count as unfinished tasks, so
    `join()` waits for them to be marked done with `task_done()`.

    Cancellation never loses, duplicates or reorders an item. A `put()` or `get()`
    cancelled while it waits for room or for an item raises `CancelledError`, as in
    `asyncio.Queue`; so does a `get()` cancelled before its removal went to storage: its
    item goes back to the head. Once a `put()` has placed its item, or a `get()`'s removal
    is being stored, the call completes and returns normally: the cancellation is delivered
    at the task's next ``await`` instead (a `get()` whose result nobody would receive could
    lose its item, and a put that raised after storing its item would invite a duplicate).
    """

    _engine: StorageEngine
    _serializer: Serializer[T]
    _maxsize: int
    _readahead: int
    _loop: asyncio.AbstractEventLoop
    _count: int  # items in the queue, as callers see it
    _last_key: int  # key of the newest item
    _stored_count: int  # items in the queue as the engine holds it
    _stored_last_key: int  # key of the newest item the engine holds
    _window: deque[Record]  # the first items of the queue
    _window_end: int  # every item with a key up to this is in the window or was taken
    _at_least_once: bool
    _unfinished_items: dict[int, asyncio.Task[Any] | None]  # got, not done: key -> getter
    _getters: deque[asyncio.Future[None]]
    _putters: deque[asyncio.Future[None]]
    _unfinished_tasks: int
    _finished: asyncio.Event
    _is_shutdown: bool
    _is_shutdown_immediately: bool
    _batch: _Batch
    _storage_task: asyncio.Task[None] | None
    _closed: bool
    _closing: asyncio.Task[None]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "Queue() cannot be called directly: create a queue with `await Queue.create(path)`"
        )

    @classmethod
    async def create(
        cls,
        path: str | os.PathLike[str],
        maxsize: int = 0,
        cls_storage_engine: EngineFactory | None = None,
        *,
        serializer: Serializer[T] | None = None,
        readahead: int = 1000,
        durability: Durability = "process-crash",
        delivery: Delivery = "at-most-once",
        on_corruption: OnCorruption = "recover",
    ) -> Queue[T]:
        """Open the queue stored at `path`, creating it if there is none.

        `maxsize` bounds the queue (0 or less: unbounded); a reopened queue keeps all its
        items even if they are more, and `put()` waits until fewer remain.
        `cls_storage_engine` makes the engine for `path` (default: `DbmEngine`); pass an
        engine class, or e.g. ``functools.partial(DbmEngine, backend="dbm.dumb")``. With a
        shared engine (`SqliteEngine`, `RedisEngine`, `PostgresEngine`), `path` is its
        address, and the queue returned is a `SharedQueue`, which several queues, in
        several processes, use at once; see there what differs.
        `serializer` turns items into bytes (default: `PickleSerializer`); a queue keeps
        the name of its serializer and refuses to be opened with another. `readahead` is
        how many items from the head of the queue are kept in memory. `durability` and
        `delivery` and `on_corruption`: see `Durability`, `Delivery` and `OnCorruption`.
        """
        if readahead < 1:
            raise ValueError(f"readahead must be at least 1, not {readahead}")
        _check_choice("durability", durability, Durability)
        _check_choice("delivery", delivery, Delivery)
        _check_choice("on_corruption", on_corruption, OnCorruption)
        serializer = serializer or cast(Serializer[T], PickleSerializer())
        options = OpenOptions(
            fsync=durability == "power-loss",
            on_corruption=on_corruption,
            meta={"serializer": serializer.name},
        )
        engine = (cls_storage_engine or DbmEngine)(path)
        if isinstance(engine, SharedStorageEngine):
            return await _open_shared(engine, options, maxsize, serializer, delivery)
        stored = await engine.open(options)
        try:
            if stored.meta.get("serializer", serializer.name) != serializer.name:
                raise ValueError(
                    f"{path} holds items stored with the {stored.meta['serializer']!r} "
                    f"serializer, not {serializer.name!r}"
                )
            window = await engine.read(0, readahead)
        except BaseException:
            await engine.close()
            raise
        queue: Queue[T] = object.__new__(cls)
        queue._engine = engine
        queue._serializer = serializer
        queue._at_least_once = delivery == "at-least-once"
        queue._unfinished_items = {}
        queue._maxsize = maxsize
        queue._readahead = readahead
        queue._loop = asyncio.get_running_loop()
        queue._count = queue._stored_count = stored.size
        queue._last_key = queue._stored_last_key = stored.last_key
        queue._window = deque(window)
        queue._window_end = window[-1].key if len(window) == readahead else stored.last_key
        queue._getters = deque()
        queue._putters = deque()
        queue._unfinished_tasks = stored.size
        queue._finished = asyncio.Event()
        if stored.size == 0:
            queue._finished.set()
        queue._is_shutdown = queue._is_shutdown_immediately = False
        queue._batch = _Batch(queue._loop)
        queue._storage_task = None
        queue._closed = False
        logger.debug("opened %r holding %d item(s)", engine, stored.size)
        return queue

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"qsize={self._count}"
        return f"<{type(self).__name__} {self._engine!r} maxsize={self._maxsize} {state}>"

    # Size

    @property
    def maxsize(self) -> int:
        """The most items the queue holds before `put()` waits (0 or less: no limit)."""
        return self._maxsize

    def qsize(self) -> int:
        """Return the number of items in the queue."""
        return self._count

    def empty(self) -> bool:
        """Return True if the queue holds no item."""
        return self._count == 0

    def full(self) -> bool:
        """Return True if the queue holds `maxsize` items or more."""
        return 0 < self._maxsize <= self._count

    # Putting

    async def put(self, item: T) -> None:
        """Put `item` at the tail, waiting while the queue is full; return once it is stored.

        Raises `QueueShutDown` after `shutdown()`, `SerializationError` (a `TypeError`) if
        the item cannot be serialised, or the storage error if storing failed.
        """
        while self.full():
            self._check_can_put()
            putter = self._loop.create_future()
            self._putters.append(putter)
            try:
                await putter
            except:
                putter.cancel()  # in case it was not done yet
                with suppress(ValueError):
                    self._putters.remove(putter)
                if not self.full() and not putter.cancelled():
                    self._wakeup_next(self._putters)
                raise
        batch = self._put(item)
        try:
            await batch.stored()
        except asyncio.CancelledError:
            await _complete_despite_cancellation(batch)

    def put_nowait(self, item: T) -> Awaitable[None]:
        """Put `item` at the tail at once; return an awaitable that completes once it is stored.

        Raises `QueueFull` if the queue is full, `QueueShutDown` after `shutdown()`, and
        `SerializationError` (a `TypeError`) if the item cannot be serialised; the queue is
        unchanged then. Not awaiting the result is fine: the item is stored in the
        background, and a failure is logged.
        """
        if self.full():
            self._check_can_put()
            raise QueueFull
        return _Stored(self._put(item))

    def _put(self, item: T) -> _Batch:
        self._check_can_put()
        record = Record(self._last_key + 1, self._serializer.dumps(item))
        if self._window_end == self._last_key and len(self._window) < self._readahead:
            self._window.append(record)
            self._window_end = record.key
            self._wakeup_next(self._getters)
        self._last_key = record.key
        self._count += 1
        self._unfinished_tasks += 1
        self._finished.clear()
        return self._change(append=record)

    def _check_can_put(self) -> None:
        self._check_open()
        if self._is_shutdown:
            raise QueueShutDown

    # Getting

    async def get(self) -> T:
        """Remove and return the item at the head, waiting until there is one.

        Returns once the removal is stored. Raises `QueueShutDown` after `shutdown()` once
        the queue is empty (at once after ``shutdown(immediate=True)``), or the storage
        error if storing failed; the item then stays in the queue.
        """
        while not self._window:
            self._check_can_get()
            if self._count:  # the next items are in storage: make sure they are being read
                self._run_storage()
            getter = self._loop.create_future()
            self._getters.append(getter)
            try:
                await getter
            except:
                getter.cancel()  # in case it was not done yet
                with suppress(ValueError):
                    self._getters.remove(getter)
                if self._window and not getter.cancelled():
                    self._wakeup_next(self._getters)
                raise
        item, record, batch = self._get()
        if batch is None:  # at-least-once: the item stays stored until it is done
            return item
        batch.awaited_gets += 1
        try:
            await batch.stored()
        except asyncio.CancelledError:
            if batch.sent:
                await _complete_despite_cancellation(batch)
            else:
                self._give_back(record, batch)
                raise
        return item

    def get_nowait(self) -> T:
        """Remove and return the item at the head at once; its removal is stored in the background.

        If the process dies before the removal is stored, the item is delivered again after
        the restart. Raises `QueueEmpty` if no item is ready: the queue is empty, or its
        next items are still being read from storage (which happens only when more than
        `readahead` items are taken without yielding to the event loop). Raises
        `QueueShutDown` after `shutdown()` once the queue is empty.
        """
        if not self._window:
            self._check_can_get()
            raise QueueEmpty
        return self._get()[0]

    def _get(self) -> tuple[T, Record, _Batch | None]:
        """Take the head item; return it, its record, and the batch storing its removal."""
        self._check_can_get()
        record = self._window[0]
        item = self._serializer.loads(record.data)  # before any change: a failure loses nothing
        self._window.popleft()
        self._count -= 1
        self._wakeup_next(self._putters)
        if self._at_least_once:
            self._unfinished_items[record.key] = asyncio.current_task()
            return item, record, None
        return item, record, self._change(removal=record.key)

    def _give_back(self, record: Record, batch: _Batch) -> None:
        """Put the item of a get cancelled before its removal was sent back at the head."""
        batch.removals.remove(record.key)
        batch.awaited_gets -= 1
        self._window.appendleft(record)
        self._count += 1
        self._wakeup_next(self._getters)

    def _check_can_get(self) -> None:
        self._check_open()
        if self._is_shutdown and (self._is_shutdown_immediately or self._count == 0):
            raise QueueShutDown

    # Tasks

    def task_done(self) -> Awaitable[None]:
        """Mark an item got from the queue as processed.

        Returns an awaitable that completes once that is stored. With at-most-once
        delivery there is nothing to store, so it is complete at once. With at-least-once
        delivery, the item leaves storage now: the oldest item that the calling task got
        and has not marked done, or, if it has none, the oldest such item of any task.
        Raises `ValueError` if called more times than there were items in the queue.
        """
        self._check_open()
        if self._unfinished_tasks <= 0:
            raise ValueError("task_done() called too many times")
        self._task_finished()
        if self._unfinished_items:
            return _Stored(self._change(removal=self._take_unfinished_item()))
        done = self._loop.create_future()
        done.set_result(None)
        return done

    def _take_unfinished_item(self) -> int:
        """Forget and return the key of the item that a `task_done()` call finishes."""
        task = asyncio.current_task()
        key = next(
            (key for key, getter in self._unfinished_items.items() if getter is task),
            next(iter(self._unfinished_items)),
        )
        del self._unfinished_items[key]
        return key

    def _task_finished(self) -> None:
        self._unfinished_tasks -= 1
        if self._unfinished_tasks == 0:
            self._finished.set()

    async def join(self) -> None:
        """Wait until every item put into the queue, or restored on open, is marked done."""
        if self._unfinished_tasks > 0:
            await self._finished.wait()

    def shutdown(self, immediate: bool = False) -> None:
        """Stop the queue from taking items: `put()` and `put_nowait()` raise `QueueShutDown`.

        Waiting putters raise `QueueShutDown`; getters do once the queue is empty. With
        `immediate`, getters raise at once and the items left count as done for `join()`;
        they stay stored for the next time the queue is opened, and `qsize()` still counts
        them (where `asyncio.Queue` would drop them and report 0).
        """
        self._is_shutdown = True
        if immediate:
            self._is_shutdown_immediately = True
            self._unfinished_tasks = max(0, self._unfinished_tasks - self._count)
            if self._unfinished_tasks == 0:
                self._finished.set()
        self._wake_all()

    # Lifecycle

    async def close(self) -> None:
        """Store the pending changes, then close the engine; later use raises `QueueClosedError`.

        Waiting getters and putters raise `QueueClosedError`. Calling it again waits for the
        first call's closing; cancelling it does not stop the closing.
        """
        if not self._closed:
            self._closed = True
            self._wake_all()
            # A task of its own, so that a cancelled close() still closes the engine.
            self._closing = self._loop.create_task(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        while self._storage_task is not None:
            with suppress(Exception):
                await asyncio.shield(self._storage_task)
        await self._engine.close()
        logger.debug("closed %r", self._engine)

    async def __aenter__(self) -> Queue[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"{self!r} was not closed", ResourceWarning, stacklevel=1)

    def _check_open(self) -> None:
        if self._closed:
            raise QueueClosedError(f"{self!r} is closed")

    # Waiting

    def _wakeup_next(self, waiters: deque[asyncio.Future[None]]) -> None:
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    def _wake_all(self) -> None:
        for waiters in (self._getters, self._putters):
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)

    # Storage: one task at a time writes batches and reads ahead, in order.

    def _change(self, *, append: Record | None = None, removal: int | None = None) -> _Batch:
        """Add a change to the next batch, and make sure a task will store it."""
        if append is not None:
            self._batch.appends.append(append)
        if removal is not None:
            self._batch.removals.append(removal)
        self._run_storage()
        return self._batch

    def _run_storage(self) -> None:
        if self._storage_task is None:
            self._storage_task = self._loop.create_task(self._store())

    async def _store(self) -> None:
        try:
            while True:
                if self._batch:
                    await self._commit()
                elif not (self._needs_readahead() and await self._read_ahead()):
                    return
        finally:
            self._storage_task = None

    async def _commit(self) -> None:
        batch, self._batch = self._batch, _Batch(self._loop)
        batch.sent = True
        try:
            await self._engine.commit(batch.appends, batch.removals)
        except asyncio.CancelledError:
            batch.settle(asyncio.CancelledError())
            raise
        except Exception as exc:
            self._fail(batch, exc)
            return
        if batch.appends:
            self._stored_last_key = max(self._stored_last_key, *(r.key for r in batch.appends))
        self._stored_count += len(batch.appends) - len(batch.removals)
        batch.settle()

    def _fail(self, batch: _Batch, exc: Exception) -> None:
        """Fail `batch` and the changes made since, and return to what the engine holds."""
        logger.error(
            "storing %d put(s) and %d get(s) in %r failed: %r",
            len(batch.appends),
            len(batch.removals),
            self._engine,
            exc,
        )
        failed, self._batch = (batch, self._batch), _Batch(self._loop)
        for each in failed:
            each.sent = True
            each.settle(exc)
        # Failed puts' items are gone; items got with get_nowait() or finished with
        # task_done() come back and will be marked done twice; items of failed get()s come
        # back, never delivered.
        count = self._stored_count - len(self._unfinished_items)
        undelivered = sum(each.awaited_gets for each in failed)
        self._unfinished_tasks = max(0, self._unfinished_tasks + count - self._count - undelivered)
        if self._unfinished_tasks == 0:
            self._finished.set()
        self._count, self._last_key = count, self._stored_last_key
        self._window.clear()
        self._window_end = 0  # read the window again
        self._wake_all()

    def _needs_readahead(self) -> bool:
        return (
            not self._closed
            and self._window_end < self._stored_last_key
            and len(self._window) <= self._readahead // 2
        )

    async def _read_ahead(self) -> bool:
        """Read the next items into the window; False if reading failed."""
        limit = self._readahead - len(self._window)
        try:
            records = await self._engine.read(self._window_end, limit)
        except Exception as exc:
            logger.error("reading from %r failed: %r", self._engine, exc)
            while self._getters:  # let waiting getters raise rather than wait for ever
                getter = self._getters.popleft()
                if not getter.done():
                    getter.set_exception(exc)
            return False
        self._window.extend(
            record for record in records if record.key not in self._unfinished_items
        )
        self._window_end = records[-1].key if len(records) == limit else self._stored_last_key
        for _ in records:
            self._wakeup_next(self._getters)
        return True


class _Batch:
    """Changes that will be stored together, and the callers waiting for them to be."""

    __slots__ = ("appends", "awaited_gets", "done", "removals", "sent", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.appends: list[Record] = []
        self.removals: list[int] = []
        self.awaited_gets = 0  # removals whose item is handed out only once they are stored
        self.sent = False  # handed to the engine: too late to change
        self.done: asyncio.Future[None] = loop.create_future()
        self.waiters: list[asyncio.Future[None]] = []

    def __bool__(self) -> bool:
        return bool(self.appends or self.removals)

    def stored(self) -> asyncio.Future[None]:
        """Return a future of the caller's own that completes when the batch is stored.

        Cancelling it cancels nobody else's wait.
        """
        waiter = self.done.get_loop().create_future()
        if self.done.done():
            _copy_outcome(self.done, waiter)
        else:
            self.waiters.append(waiter)
        return waiter

    def settle(self, exc: BaseException | None = None) -> None:
        """Record that storing the batch succeeded, or failed with `exc`, and tell the waiters."""
        if exc is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(exc)
            self.done.exception()  # nobody need ask: a failure is logged
        for waiter in self.waiters:
            if not waiter.done():
                _copy_outcome(self.done, waiter)


def _copy_outcome(source: asyncio.Future[None], target: asyncio.Future[None]) -> None:
    exc = source.exception()
    if exc is None:
        target.set_result(None)
    else:
        target.set_exception(exc)


class _Stored(Awaitable[None]):
    """What `put_nowait()` returns: awaiting it waits until the item is stored."""

    __slots__ = ("_batch",)

    def __init__(self, batch: _Batch) -> None:
        self._batch = batch

    def __await__(self) -> Generator[Any, None, None]:
        return self._batch.stored().__await__()


async def _complete_despite_cancellation(batch: _Batch) -> None:
    """Wait for `batch` to be stored, then deliver the cancellation at the task's next await.

    Raises the storage error if storing failed.
    """
    while not batch.done.done():
        with suppress(asyncio.CancelledError):
            await batch.stored()
    batch.done.result()
    task = asyncio.current_task()
    if task is not None:
        task.get_loop().call_soon(cancel_again, task)


def cancel_again(task: asyncio.Task[Any]) -> None:
    """Deliver again a cancellation that a task swallowed to complete what it had begun.

    Python 3.11+ counts cancellation requests, and a timeout that fired withdraws its own
    (`uncancel`) when it exits: then there is nothing left to deliver. Otherwise the request
    is still counted, so it is delivered again without counting it twice, which would turn
    the `TimeoutError` of `asyncio.timeout()` into a `CancelledError`.
    """
    if sys.version_info < (3, 11):
        task.cancel()
    elif task.cancelling():
        task.uncancel()
        task.cancel()


async def _open_shared(
    engine: SharedStorageEngine,
    options: OpenOptions,
    maxsize: int,
    serializer: Serializer[T],
    delivery: Delivery,
) -> Queue[T]:
    from .shared_queue import SharedQueue  # it builds on this module

    if delivery != "at-most-once":
        raise ValueError(f"{engine!r} is shared, and supports only delivery='at-most-once'")
    meta = await engine.open(options)
    return await SharedQueue._start(engine, meta, maxsize, serializer)


def _check_choice(name: str, value: object, choices: object) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        names = " or ".join(map(repr, allowed))
        raise ValueError(f"{name} must be {names}, not {value!r}")
