"""`Queue`: the API of `asyncio.Queue`, with items kept by a storage engine."""

from __future__ import annotations

import asyncio
import logging
import os
import warnings
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, cast, get_args

from .acknowledgements import Acknowledgements, Receipt
from .backends import Backend, LocalBackend, SharedBackend
from .call_site import result_is_awaited
from .engines import DbmEngine, OpenOptions, SharedStorageEngine, StorageEngine
from .exceptions import (
    QueueClosedError,
    QueueEmpty,
    QueueFull,
    QueueShutDown,
    QueueUsageError,
    SerializerMismatchError,
)
from .serializers import PickleSerializer, Serializer, check_serializer
from .waiting import Tasks, Waiters

__all__ = ["Delivery", "Durability", "OnCorruption", "Queue", "Receipt", "SharedQueue"]

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
    """A FIFO queue whose items survive the process: `asyncio.Queue`'s API, kept by an engine.

    Create it with ``await Queue.create(path)``; then use it as an `asyncio.Queue`. The
    engine (`DbmEngine` unless another is given) is the source of truth; the queue waits as
    `asyncio.Queue` does and leaves the items to a backend: for a local engine, a read-ahead
    window of the first items in memory and batches of changes stored together (group
    commit); for a shared engine, one operation on the store per put and get.

    Durability. When ``await put(item)`` returns, the item is stored: killing the process
    afterwards does not lose it. When ``await get()`` returns an item, its removal is stored
    the same way: after a restart the item is not delivered again (with
    ``delivery="at-least-once"``, the item is removed only once `task_done()` marks it
    done). `put_nowait()` and `get_nowait()` change the queue at once and store the change in
    the background; ``await q.put_nowait(item)`` waits until it is stored.

    Reopening a path restores its items in FIFO order; they count as unfinished tasks, so
    `join()` waits for them to be marked done with `task_done()`.

    Cancellation never loses or duplicates an item: a cancelled `put()` or `get()` raises
    `CancelledError` and leaves the queue as it was (a put takes its item out again, a get
    puts its item back at the head), on every Python, so ``asyncio.wait_for`` and
    ``asyncio.timeout`` are safe around them. Two cases complete instead, the cancellation
    being delivered at the task's next ``await``: a put whose item a getter has already
    taken, and, on a shared engine, a put already sent to the store.
    """

    _backend: Backend[T]
    _serializer: Serializer[T]
    _maxsize: int
    _getters: Waiters
    _putters: Waiters
    _tasks: Tasks
    _acks: Acknowledgements
    _is_shutdown: bool
    _is_shutdown_immediately: bool
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
        readahead: int | None = None,
        readahead_bytes: int = 64 * 2**20,
        durability: Durability = "process-crash",
        delivery: Delivery = "at-most-once",
        on_corruption: OnCorruption = "recover",
    ) -> Queue[T]:
        """Open the queue stored at `path`, creating it if there is none.

        `maxsize` bounds the queue (0 or less: unbounded); a reopened queue keeps all its
        items even if they are more, and `put()` waits until fewer remain.
        `cls_storage_engine` makes the engine for `path` (default: `DbmEngine`); pass an
        engine class, or e.g. ``functools.partial(DbmEngine, backend="dbm.dumb")``. With a
        shared engine (`SharedSqliteEngine`, `RedisEngine`, `PostgresEngine`), `path` is its
        address, and several queues, in several processes, use the queue at once.
        `serializer` turns items into bytes (default: `PickleSerializer`); a queue keeps
        the name of its serializer and refuses to be opened with another. `readahead` and
        `readahead_bytes` bound the items from the head of the queue that a local engine's
        queue keeps in memory: at most `readahead` of them (None: no limit), taking at most
        about `readahead_bytes` of memory (their data, and 64 bytes each); an engine that
        commits in place (`LogEngine`) is read at once as items are taken, and keeps at most
        1 MiB of them.
        `durability`, `delivery` and `on_corruption`: see `Durability`, `Delivery` and
        `OnCorruption`.
        """
        _check_int("maxsize", maxsize, minimum=None)
        if readahead is not None:
            _check_int("readahead", readahead, minimum=1)
        _check_int("readahead_bytes", readahead_bytes, minimum=1)
        _check_choice("durability", durability, Durability)
        _check_choice("delivery", delivery, Delivery)
        _check_choice("on_corruption", on_corruption, OnCorruption)
        serializer = check_serializer(serializer or cast(Serializer[T], PickleSerializer()))
        options = OpenOptions(
            fsync=durability == "power-loss",
            on_corruption=on_corruption,
            meta={"serializer": serializer.name},
        )
        engine = (cls_storage_engine or DbmEngine)(path)
        queue: Queue[T] = object.__new__(cls)
        queue._serializer = serializer
        queue._maxsize = maxsize
        queue._getters, queue._putters = Waiters(), Waiters()
        queue._acks = Acknowledgements(tracking=delivery == "at-least-once")
        queue._is_shutdown = queue._is_shutdown_immediately = False
        if isinstance(engine, SharedStorageEngine):
            if delivery != "at-most-once":
                raise ValueError(f"{engine!r} is shared, and supports only delivery='at-most-once'")
            meta = await engine.open(options)
            queue._tasks = Tasks()
            queue._backend = SharedBackend(
                engine,
                serializer=serializer,
                maxsize=maxsize,
                getters=queue._getters,
                putters=queue._putters,
                tasks=queue._tasks,
            )
        else:
            stored = await engine.open(options)
            meta = stored.meta
            queue._tasks = Tasks(stored.size)
            local = LocalBackend(
                engine,
                stored,
                serializer=serializer,
                readahead=readahead,
                readahead_bytes=readahead_bytes,
                at_least_once=delivery == "at-least-once",
                fsync=options.fsync,
                getters=queue._getters,
                putters=queue._putters,
                tasks=queue._tasks,
            )
            queue._backend = local
            if _same(meta, serializer):
                try:
                    await local.fill()
                except BaseException:
                    await engine.close()
                    raise
        if not _same(meta, serializer):
            await engine.close()
            stored_with = meta["serializer"]
            known = _SERIALIZERS.get(stored_with, "the serializer it was created with")
            raise SerializerMismatchError(
                f"{engine!r} holds items stored with the {stored_with!r} serializer, not "
                f"{serializer.name!r}: pass serializer={known}"
            )
        queue._closed = False
        logger.debug("opened %r holding %d item(s)", engine, queue.qsize())
        return queue

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"qsize={self.qsize()}"
        return f"<{type(self).__name__} {self._backend!r} maxsize={self._maxsize} {state}>"

    # Size

    @property
    def maxsize(self) -> int:
        """The most items the queue holds before `put()` waits (0 or less: no limit)."""
        return self._maxsize

    def qsize(self) -> int:
        """Return the number of items in the queue (for a shared engine, as last heard)."""
        return self._backend.size()

    def empty(self) -> bool:
        """Return True if no item can be got at once: `get_nowait()` would raise `QueueEmpty`.

        That is, the queue holds no item, except after more than `readahead_bytes` of items
        were taken without yielding to the event loop from an engine that reads in its
        thread: the items still stored (which `qsize()` counts) are then being read. On a
        shared engine: no item as last heard.
        """
        return not self._backend.ready()

    def full(self) -> bool:
        """Return True if the queue holds `maxsize` items or more."""
        return 0 < self._maxsize <= self.qsize()

    # Putting

    async def put(self, item: T) -> None:
        """Put `item` at the tail, waiting while the queue is full; return once it is stored.

        Raises `QueueShutDown` after `shutdown()`, `SerializationError` (a `TypeError`) if
        the item cannot be serialised, or the storage error if storing failed.
        """
        data = self._serializer.dumps(item)
        while True:
            self._check_can_put()
            if not self.full() and await self._backend.put(data):
                return
            self._backend.expect_room()
            await self._putters.wait(lambda: not self.full())

    def put_nowait(self, item: T) -> Awaitable[None]:
        """Put `item` at the tail at once; return an awaitable that completes once it is stored.

        Raises `QueueFull` if the queue is full, `QueueShutDown` after `shutdown()`, and
        `SerializationError` (a `TypeError`) if the item cannot be serialised; the queue is
        unchanged then. Not awaiting the result is fine: the item is stored in the
        background, and a failure is logged.
        """
        self._check_can_put()
        if self.full():
            raise QueueFull
        return self._backend.put_nowait(self._serializer.dumps(item))

    def _check_can_put(self) -> None:
        if self._closed or self._is_shutdown:
            self._check_open()
            raise QueueShutDown

    # Getting

    async def get(self) -> T:
        """Remove and return the item at the head, waiting until there is one.

        Returns once the removal is stored. Raises `QueueShutDown` after `shutdown()` once
        the queue is empty (at once after ``shutdown(immediate=True)``), or the storage
        error if storing failed; the item then stays in the queue.
        """
        return (await self._get(claim=True))[0]

    async def get_with_receipt(self) -> tuple[T, Receipt]:
        """As `get()`, and return a receipt beside the item: ``task_done(receipt)`` marks
        exactly that item done (with at-least-once delivery, it then leaves storage)."""
        return await self._get(claim=False)

    async def _get(self, *, claim: bool) -> tuple[T, Receipt]:
        while True:
            self._check_can_get()
            if self._backend.ready() and (got := await self._backend.get()) is not None:
                break
            self._backend.expect_items()
            await self._getters.wait(self._backend.ready)
        return self._delivered(*got, claim=claim)

    def get_nowait(self) -> T:
        """Remove and return the item at the head at once; its removal is stored in the background.

        If the process dies before the removal is stored, the item is delivered again after
        the restart. Raises `QueueEmpty` if no item is ready (see `empty()`). Raises
        `QueueShutDown` after `shutdown()` once the queue is empty, and `NotImplementedError`
        on a shared engine, which cannot take an item without waiting: use ``await get()``.
        """
        if result_is_awaited():
            raise QueueUsageError(
                "get_nowait() returns the item itself since aiodiskqueue 0.2: write "
                "`item = queue.get_nowait()`, without await (nothing was taken from the queue)"
            )
        self._check_can_get()
        if not self._backend.can_get_nowait:
            self._backend.get_nowait()  # raises, saying why
        if not self._backend.ready():
            raise QueueEmpty
        return self._delivered(*self._backend.get_nowait(), claim=True)[0]

    def _delivered(self, item: T, key: int, *, claim: bool) -> tuple[T, Receipt]:
        if self._backend.ready():
            self._getters.wake_one()
        return item, self._acks.delivered(key, claim=claim)

    def _check_can_get(self) -> None:
        if self._closed or self._is_shutdown:
            self._check_open()
            if self._is_shutdown_immediately or self.qsize() == 0:
                raise QueueShutDown

    # Tasks

    def task_done(self, receipt: Receipt | None = None) -> Awaitable[None]:
        """Mark an item got from the queue as processed.

        Returns an awaitable that completes once that is stored. With at-most-once
        delivery there is nothing to store. With at-least-once delivery the item leaves
        storage: the item of `receipt`, or without one, the item that the calling task got
        (or that its creator got just before creating it); where that is ambiguous, items
        stay stored until they are proven done (see `aiodiskqueue.acknowledgements`).
        Raises `ValueError` if called more times than there were items, or with a receipt
        of another queue or one already used.
        """
        self._check_open()
        if self._tasks.unfinished <= 0:
            raise ValueError("task_done() called too many times")
        done = self._acks.finish(receipt)
        self._tasks.finish()
        return self._backend.finish(done)

    async def join(self) -> None:
        """Wait until every item put into the queue, or restored on open, is marked done."""
        await self._tasks.join()

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
            self._tasks.forget_waiting()
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
            self._closing = asyncio.get_running_loop().create_task(self._backend.close())
        await asyncio.shield(self._closing)
        logger.debug("closed %r", self._backend)

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

    def _wake_all(self) -> None:
        self._getters.wake_all()
        self._putters.wake_all()


SharedQueue = Queue
"""The name of a queue on a shared engine in aiodiskqueue 0.2.0, where it was a subclass of
`Queue`; every queue is a `Queue` now."""


_SERIALIZERS = {"pickle": "PickleSerializer()", "json": "JsonSerializer()"}
"""What to pass for the serializers of this package, by the name a queue keeps."""


def _same(meta: Any, serializer: Serializer[Any]) -> bool:
    return bool(meta.get("serializer", serializer.name) == serializer.name)


def _check_int(name: str, value: object, *, minimum: int | None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")


def _check_choice(name: str, value: object, choices: object) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        names = " or ".join(map(repr, allowed))
        raise ValueError(f"{name} must be {names}, not {value!r}")
