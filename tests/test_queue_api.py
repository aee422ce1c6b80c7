"""`Queue` behaves as `asyncio.Queue` does, and closes as a resource does."""

from __future__ import annotations

import asyncio
import gc
import logging
import pickle
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from aiodiskqueue import (
    AioDiskQueueError,
    Queue,
    QueueClosedError,
    QueueEmpty,
    QueueFull,
    QueueShutDown,
)
from aiodiskqueue.engines import DbmEngine, OpenOptions, Record, SqliteEngine, StorageEngine

from .helpers import drain, started, within

Engine = Callable[[Path], StorageEngine]


def forget(objects: list[Any]) -> None:
    """Drop the only references to `objects`, and collect them."""
    objects.clear()
    gc.collect()


# Creating


def test_calling_queue_directly_raises_type_error_naming_create(path: Path) -> None:
    with pytest.raises(TypeError, match=r"Queue\.create"):
        Queue(path)


@pytest.mark.parametrize("readahead", [0, -1])
async def test_create_with_readahead_below_one_raises_value_error(
    path: Path, readahead: int
) -> None:
    with pytest.raises(ValueError, match="readahead"):
        await Queue.create(path, cls_storage_engine=SqliteEngine, readahead=readahead)


async def test_queue_subscripted_with_an_item_type_creates_a_queue(path: Path) -> None:
    async with await Queue[str].create(path, cls_storage_engine=SqliteEngine) as queue:
        await queue.put("text")
        assert isinstance(queue, Queue)
        assert await within(queue.get()) == "text"


# Order and size


async def test_get_returns_items_in_the_order_they_were_put(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        for item in range(10):
            await queue.put(item)
        assert [await within(queue.get()) for _ in range(10)] == list(range(10))


async def test_get_nowait_returns_items_in_the_order_put_nowait_put_them(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        for item in range(10):
            queue.put_nowait(item)
        assert [queue.get_nowait() for _ in range(10)] == list(range(10))


async def test_qsize_counts_the_items_put_and_not_yet_got(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        sizes = [queue.qsize()]
        for item in range(3):
            await queue.put(item)
            sizes.append(queue.qsize())
        await within(queue.get())
        sizes.append(queue.qsize())
        assert sizes == [0, 1, 2, 3, 2]


async def test_empty_is_true_only_while_the_queue_holds_no_item(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        before = queue.empty()
        await queue.put("item")
        holding = queue.empty()
        await within(queue.get())
        assert (before, holding, queue.empty()) == (True, False, True)


async def test_full_is_true_once_the_queue_holds_maxsize_items(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, maxsize=2, cls_storage_engine=engine) as queue:
        fullness = [queue.full()]
        for item in range(2):
            await queue.put(item)
            fullness.append(queue.full())
        await within(queue.get())
        fullness.append(queue.full())
        assert fullness == [False, False, True, False]


@pytest.mark.parametrize("maxsize", [0, 3, -1])
async def test_maxsize_is_the_bound_given_at_create(path: Path, maxsize: int) -> None:
    async with await Queue.create(path, maxsize, cls_storage_engine=SqliteEngine) as queue:
        assert queue.maxsize == maxsize


@pytest.mark.parametrize("maxsize", [0, -1])
async def test_queue_with_maxsize_zero_or_below_is_never_full(
    engine: Engine, path: Path, maxsize: int
) -> None:
    async with await Queue.create(path, maxsize, cls_storage_engine=engine) as queue:
        for item in range(100):
            queue.put_nowait(item)
        assert (queue.full(), queue.qsize()) == (False, 100)


async def test_put_nowait_raises_queue_full_when_the_queue_is_full(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, maxsize=1, cls_storage_engine=engine) as queue:
        queue.put_nowait("first")
        with pytest.raises(QueueFull):
            queue.put_nowait("second")
        assert await drain(queue) == ["first"]


async def test_queue_full_is_an_asyncio_queue_full_and_an_aiodiskqueue_error(
    path: Path,
) -> None:
    async with await Queue.create(path, maxsize=1, cls_storage_engine=SqliteEngine) as queue:
        queue.put_nowait("first")
        with pytest.raises(asyncio.QueueFull) as raised:
            queue.put_nowait("second")
        assert isinstance(raised.value, AioDiskQueueError)


async def test_get_nowait_raises_queue_empty_when_the_queue_is_empty(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        with pytest.raises(QueueEmpty):
            queue.get_nowait()


async def test_queue_empty_is_an_asyncio_queue_empty_and_an_aiodiskqueue_error(
    path: Path,
) -> None:
    async with await Queue.create(path, cls_storage_engine=SqliteEngine) as queue:
        with pytest.raises(asyncio.QueueEmpty) as raised:
            queue.get_nowait()
        assert isinstance(raised.value, AioDiskQueueError)


async def test_awaiting_put_nowait_waits_for_the_put_and_returns_none(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        assert await within(queue.put_nowait("item")) is None
        assert queue.get_nowait() == "item"


async def test_task_done_returns_an_awaitable(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        await queue.put("item")
        await within(queue.get())
        assert await within(queue.task_done()) is None


# Waiting


async def test_get_waits_until_an_item_is_put(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        getter = await started(asyncio.create_task(queue.get()))
        await queue.put("item")
        assert await within(getter) == "item"


async def test_put_waits_while_the_queue_is_full_and_proceeds_after_a_get(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, maxsize=1, cls_storage_engine=engine) as queue:
        await queue.put("first")
        putter = await started(asyncio.create_task(queue.put("second")))
        assert queue.qsize() == 1
        assert await within(queue.get()) == "first"
        await within(putter)
        assert await drain(queue) == ["second"]


async def test_waiting_getters_are_served_in_the_order_they_began_waiting(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        getters = [await started(asyncio.create_task(queue.get())) for _ in range(3)]
        for item in ("a", "b", "c"):
            queue.put_nowait(item)
        assert [await within(getter) for getter in getters] == ["a", "b", "c"]


async def test_waiting_putters_put_in_the_order_they_began_waiting(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, maxsize=1, cls_storage_engine=engine) as queue:
        await queue.put("first")
        putters = [await started(asyncio.create_task(queue.put(item))) for item in "abc"]
        got = [await within(queue.get()) for _ in range(4)]
        await within(asyncio.gather(*putters))
        assert got == ["first", "a", "b", "c"]


# Tasks


async def test_join_returns_at_once_on_a_new_queue(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        assert await within(queue.join()) is None


async def test_join_waits_until_every_item_put_is_marked_done(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        for item in range(3):
            await queue.put(item)
        joiner = await started(asyncio.create_task(queue.join()))
        for _ in range(3):
            await within(queue.get())
        queue.task_done()
        queue.task_done()
        await started(joiner)
        queue.task_done()
        await within(joiner)


async def test_task_done_called_more_times_than_items_put_raises_value_error(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        await queue.put("item")
        await within(queue.get())
        queue.task_done()
        with pytest.raises(ValueError, match="too many"):
            queue.task_done()


# Shutdown


async def test_put_after_shutdown_raises_queue_shut_down(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        queue.shutdown()
        with pytest.raises(QueueShutDown):
            await within(queue.put("item"))


async def test_put_nowait_after_shutdown_raises_queue_shut_down(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        queue.shutdown()
        with pytest.raises(QueueShutDown):
            queue.put_nowait("item")


async def test_queue_shut_down_is_an_aiodiskqueue_error(path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=SqliteEngine) as queue:
        queue.shutdown()
        with pytest.raises(AioDiskQueueError):
            queue.put_nowait("item")


async def test_get_after_shutdown_returns_the_items_left_then_raises_queue_shut_down(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        for item in range(3):
            await queue.put(item)
        queue.shutdown()
        assert [await within(queue.get()) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(QueueShutDown):
            await within(queue.get())


async def test_get_nowait_on_an_empty_queue_after_shutdown_raises_queue_shut_down(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        queue.shutdown()
        with pytest.raises(QueueShutDown):
            queue.get_nowait()


async def test_shutdown_makes_getters_waiting_on_an_empty_queue_raise_queue_shut_down(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        getters = [await started(asyncio.create_task(queue.get())) for _ in range(2)]
        queue.shutdown()
        results = await within(asyncio.gather(*getters, return_exceptions=True))
        assert [type(result) for result in results] == [QueueShutDown, QueueShutDown]


async def test_shutdown_makes_waiting_putters_raise_queue_shut_down(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, maxsize=1, cls_storage_engine=engine) as queue:
        await queue.put("first")
        putters = [await started(asyncio.create_task(queue.put(item))) for item in "ab"]
        queue.shutdown()
        results = await within(asyncio.gather(*putters, return_exceptions=True))
        assert [type(result) for result in results] == [QueueShutDown, QueueShutDown]
        assert await drain(queue) == ["first"]


async def test_get_after_immediate_shutdown_raises_queue_shut_down_with_items_left(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        await queue.put("item")
        queue.shutdown(immediate=True)
        with pytest.raises(QueueShutDown):
            await within(queue.get())


async def test_get_nowait_after_immediate_shutdown_raises_queue_shut_down_with_items_left(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        await queue.put("item")
        queue.shutdown(immediate=True)
        with pytest.raises(QueueShutDown):
            queue.get_nowait()


async def test_join_returns_after_immediate_shutdown_with_items_left(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        for item in range(3):
            await queue.put(item)
        joiner = await started(asyncio.create_task(queue.join()))
        queue.shutdown(immediate=True)
        await within(joiner)


async def test_join_after_immediate_shutdown_still_waits_for_items_got_and_not_done(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        for item in range(3):
            await queue.put(item)
        await within(queue.get())
        queue.shutdown(immediate=True)
        joiner = await started(asyncio.create_task(queue.join()))
        queue.task_done()
        await within(joiner)


async def test_items_left_at_immediate_shutdown_are_there_after_reopen(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        for item in range(3):
            await queue.put(item)
        await within(queue.get())
        queue.shutdown(immediate=True)
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        assert await drain(queue) == [1, 2]


# Closing


async def test_close_twice_does_nothing_the_second_time(engine: Engine, path: Path) -> None:
    queue = await Queue.create(path, cls_storage_engine=engine)
    await queue.put("item")
    await within(queue.close())
    assert await within(queue.close()) is None
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        assert await drain(queue) == ["item"]


async def _put(queue: Queue[Any]) -> None:
    await within(queue.put("item"))


async def _put_nowait(queue: Queue[Any]) -> None:
    queue.put_nowait("item")


async def _get(queue: Queue[Any]) -> None:
    await within(queue.get())


async def _get_nowait(queue: Queue[Any]) -> None:
    queue.get_nowait()


async def _task_done(queue: Queue[Any]) -> None:
    queue.task_done()


CALLS_AFTER_CLOSE: dict[str, Callable[[Queue[Any]], Awaitable[None]]] = {
    "put": _put,
    "put_nowait": _put_nowait,
    "get": _get,
    "get_nowait": _get_nowait,
    "task_done": _task_done,
}


@pytest.mark.parametrize("call", list(CALLS_AFTER_CLOSE))
async def test_a_call_after_close_raises_queue_closed_error(
    engine: Engine, path: Path, call: str
) -> None:
    queue = await Queue.create(path, cls_storage_engine=engine)
    await queue.put("item")
    await within(queue.get())  # so that task_done() would be allowed
    await queue.put("item")  # so that get() would not wait
    await queue.close()
    with pytest.raises(QueueClosedError):
        await CALLS_AFTER_CLOSE[call](queue)


async def test_close_makes_waiting_getters_raise_queue_closed_error(
    engine: Engine, path: Path
) -> None:
    queue = await Queue.create(path, cls_storage_engine=engine)
    getters = [await started(asyncio.create_task(queue.get())) for _ in range(2)]
    await within(queue.close())
    results = await within(asyncio.gather(*getters, return_exceptions=True))
    assert [type(result) for result in results] == [QueueClosedError, QueueClosedError]


async def test_close_makes_waiting_putters_raise_queue_closed_error(
    engine: Engine, path: Path
) -> None:
    queue = await Queue.create(path, maxsize=1, cls_storage_engine=engine)
    await queue.put("first")
    putters = [await started(asyncio.create_task(queue.put(item))) for item in "ab"]
    await within(queue.close())
    results = await within(asyncio.gather(*putters, return_exceptions=True))
    assert [type(result) for result in results] == [QueueClosedError, QueueClosedError]


async def test_leaving_async_with_closes_the_queue(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        await queue.put("item")
    with pytest.raises(QueueClosedError):
        queue.get_nowait()


async def test_a_queue_collected_while_open_warns_with_resource_warning(
    engine: Engine, path: Path
) -> None:
    queues = [await Queue.create(path, cls_storage_engine=engine)]
    with pytest.warns(ResourceWarning, match="was not closed"):
        forget(queues)


async def test_a_queue_dropped_without_close_is_freed_at_once_without_the_garbage_collector(
    engine: Engine, path: Path
) -> None:
    queue = await Queue.create(path, cls_storage_engine=engine)
    await queue.put("item")
    freed = weakref.ref(queue)
    gc.disable()
    try:
        with pytest.warns(ResourceWarning, match="was not closed"):
            del queue
        assert freed() is None, "a reference cycle keeps the queue (and its files) alive"
    finally:
        gc.enable()


# Read-ahead


async def test_get_delivers_every_item_in_order_with_a_readahead_smaller_than_the_queue(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine, readahead=3) as queue:
        for item in range(20):
            await queue.put(item)
        assert [await within(queue.get()) for _ in range(20)] == list(range(20))


async def test_get_nowait_delivers_the_items_within_readahead_without_waiting(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine, readahead=3) as queue:
        for item in range(20):
            queue.put_nowait(item)
        assert [queue.get_nowait() for _ in range(3)] == [0, 1, 2]


def reads_in_place(queue: Queue[Any]) -> bool:
    """True if the queue's engine reads on the event loop, at once (`commits_in_place`)."""
    return bool(queue._backend.engine.commits_in_place)  # type: ignore[attr-defined]


async def test_get_nowait_raises_queue_empty_once_readahead_items_are_taken_without_yielding(
    engine: Engine, path: Path
) -> None:
    """...unless the engine reads in place: then the window is read again at once."""
    async with await Queue.create(path, cls_storage_engine=engine, readahead=3) as queue:
        for item in range(20):
            queue.put_nowait(item)
        for _ in range(3):
            queue.get_nowait()
        if reads_in_place(queue):
            assert [queue.get_nowait() for _ in range(17)] == list(range(3, 20))
            return
        with pytest.raises(QueueEmpty):
            queue.get_nowait()
        assert queue.qsize() == 17
        assert await drain(queue) == list(range(3, 20))


async def test_empty_agrees_with_get_nowait_once_readahead_items_are_taken_without_yielding(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine, readahead=3) as queue:
        for item in range(5):
            queue.put_nowait(item)
        taken = []
        while not queue.empty():
            taken.append(queue.get_nowait())
        left = [] if reads_in_place(queue) else [3, 4]
        assert (taken, queue.qsize()) == ([0, 1, 2, 3, 4][: 5 - len(left)], len(left))
        assert [await within(queue.get()) for _ in left] == left


async def test_a_reopened_queue_of_100000_items_drains_with_get_nowait_by_default(
    path: Path,
) -> None:
    engine = DbmEngine(path)
    await engine.open(OpenOptions(meta={"serializer": "pickle"}))
    item = "x" * 256
    await engine.commit([Record(key, pickle.dumps(item)) for key in range(1, 100_001)], [])
    await engine.close()
    async with await Queue.create(path) as queue:
        count = 0
        while not queue.empty():
            assert queue.get_nowait() == item
            count += 1
        assert (count, queue.qsize()) == (100_000, 0)


async def test_puts_and_gets_log_nothing_above_debug(
    engine: Engine, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        with caplog.at_level(logging.DEBUG, logger="aiodiskqueue"):
            for item in range(3):
                await within(queue.put(item))
            queue.put_nowait(3)
            assert [await within(queue.get()) for _ in range(3)] == [0, 1, 2]
            assert queue.get_nowait() == 3
            queue.task_done()
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG] == []
