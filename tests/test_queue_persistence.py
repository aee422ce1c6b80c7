"""A queue's items outlive it: they come back, in order, when its path is opened again."""

from __future__ import annotations

import asyncio
import pickle
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aiodiskqueue import Queue, QueueFull
from aiodiskqueue.engines import Record, StorageEngine

from .helpers import drain, started, within

Engine = Callable[[Path], StorageEngine]


@dataclass(frozen=True)
class Job:
    """An item of a user-defined class."""

    name: str
    attempts: int = 0


async def reopened(path: Path, engine: Engine, **options: Any) -> list[Any]:
    """Reopen the queue at `path` and get all its items."""
    async with await Queue.create(path, cls_storage_engine=engine, **options) as queue:
        return await drain(queue)


class Recording:
    """Makes engines of the given kind that log, for the test, every commit that returned."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.commits: list[tuple[list[Any], list[int]]] = []  # (items stored, keys removed)

    @property
    def stored(self) -> list[Any]:
        return [item for items, _ in self.commits for item in items]

    @property
    def removed(self) -> list[int]:
        return [key for _, keys in self.commits for key in keys]

    def __call__(self, path: Path) -> StorageEngine:
        engine = self.engine(path)
        commit = engine.commit

        async def commit_and_log(appends: Sequence[Record], removals: Sequence[int]) -> None:
            await commit(appends, removals)
            self.commits.append(([pickle.loads(record.data) for record in appends], [*removals]))

        engine.commit = commit_and_log  # type: ignore[method-assign]
        if engine.commits_in_place:  # stored when commit_now returns
            commit_now = engine.commit_now

            def commit_now_and_log(
                appends: Sequence[Record], removals: Sequence[int]
            ) -> Awaitable[None] | None:
                flushed = commit_now(appends, removals)
                self.commits.append(([pickle.loads(r.data) for r in appends], [*removals]))
                return flushed

            engine.commit_now = commit_now_and_log  # type: ignore[method-assign]
        return engine


# Reopening


async def test_items_put_are_got_in_order_after_reopen(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        for item in range(10):
            await queue.put(item)
    assert await reopened(path, engine) == list(range(10))


async def test_items_put_with_put_nowait_are_got_in_order_after_reopen(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        for item in range(10):
            queue.put_nowait(item)
    assert await reopened(path, engine) == list(range(10))


async def test_items_got_are_not_delivered_again_after_reopen(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        for item in range(10):
            await queue.put(item)
        for _ in range(4):
            await within(queue.get())
        queue.get_nowait()
    assert await reopened(path, engine) == [5, 6, 7, 8, 9]


async def test_a_queue_reopened_with_a_smaller_readahead_delivers_every_item_in_order(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        for item in range(20):
            queue.put_nowait(item)
    async with await Queue.create(path, cls_storage_engine=engine, readahead=3) as queue:
        assert [await within(queue.get()) for _ in range(20)] == list(range(20))


async def test_a_queue_reopened_many_times_holds_what_a_list_would(
    engine: Engine, path: Path
) -> None:
    model: list[int] = []
    rng = random.Random(1)
    next_item = 0
    for _ in range(5):
        async with await Queue.create(path, cls_storage_engine=engine, readahead=4) as queue:
            assert queue.qsize() == len(model)
            for _ in range(20):
                if model and rng.random() < 0.4:
                    assert await within(queue.get()) == model.pop(0)
                else:
                    await queue.put(next_item)
                    model.append(next_item)
                    next_item += 1
    assert await reopened(path, engine) == model


# Durability: what a returned call has stored


async def test_put_returns_once_its_item_is_stored(engine: Engine, path: Path) -> None:
    recording = Recording(engine)
    async with await Queue.create(path, cls_storage_engine=recording) as queue:
        await queue.put("item")
        assert recording.stored == ["item"]


async def test_awaiting_put_nowait_returns_once_its_item_is_stored(
    engine: Engine, path: Path
) -> None:
    recording = Recording(engine)
    async with await Queue.create(path, cls_storage_engine=recording) as queue:
        await within(queue.put_nowait("item"))
        assert recording.stored == ["item"]


async def test_get_returns_once_the_removal_of_its_item_is_stored(
    engine: Engine, path: Path
) -> None:
    recording = Recording(engine)
    async with await Queue.create(path, cls_storage_engine=recording) as queue:
        await queue.put("item")
        await within(queue.get())
        assert len(recording.removed) == 1


async def test_puts_waiting_at_the_same_moment_are_stored_in_one_commit(
    batching_engine: Engine, path: Path
) -> None:
    recording = Recording(batching_engine)
    async with await Queue.create(path, cls_storage_engine=recording) as queue:
        await within(asyncio.gather(*(queue.put(item) for item in range(10))))
        assert recording.commits == [(list(range(10)), [])]


# Tasks and size limits across reopening


async def test_restored_items_count_as_unfinished_tasks(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        for item in range(3):
            await queue.put(item)
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        joiner = await started(asyncio.create_task(queue.join()))
        for _ in range(3):
            await within(queue.get())
        await started(joiner)
        queue.task_done()
        queue.task_done()
        await started(joiner)
        queue.task_done()
        await within(joiner)


async def test_task_done_may_be_called_once_per_restored_item(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        await queue.put("item")
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        await within(queue.get())
        queue.task_done()
        with pytest.raises(ValueError, match="too many"):
            queue.task_done()


async def test_a_queue_reopened_with_more_items_than_maxsize_is_full(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        for item in range(5):
            await queue.put(item)
    async with await Queue.create(path, maxsize=2, cls_storage_engine=engine) as queue:
        assert (queue.full(), queue.qsize()) == (True, 5)


async def test_put_nowait_raises_queue_full_on_a_queue_reopened_with_more_items_than_maxsize(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        for item in range(5):
            await queue.put(item)
    async with await Queue.create(path, maxsize=2, cls_storage_engine=engine) as queue:
        with pytest.raises(QueueFull):
            queue.put_nowait("one too many")
        assert await drain(queue) == list(range(5))


async def test_put_waits_on_a_reopened_queue_until_fewer_than_maxsize_items_remain(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        for item in range(4):
            await queue.put(item)
    async with await Queue.create(path, maxsize=2, cls_storage_engine=engine) as queue:
        putter = await started(asyncio.create_task(queue.put("last")))
        await within(queue.get())
        await within(queue.get())
        await started(putter)
        await within(queue.get())
        await within(putter)
        assert await drain(queue) == [3, "last"]


# Items


async def test_a_large_item_round_trips(engine: Engine, path: Path) -> None:
    item = random.Random(2).randbytes(1024 * 1024)
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        await queue.put(item)
        await queue.put("after")
    assert await reopened(path, engine) == [item, "after"]


async def test_an_empty_bytes_item_round_trips(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        await queue.put(b"")
        await queue.put(b"")
        await queue.put("after")
    assert await reopened(path, engine) == [b"", b"", "after"]


async def test_many_small_items_round_trip_with_a_small_readahead(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine, readahead=100) as queue:
        for item in range(5000):
            queue.put_nowait(item)
    assert await reopened(path, engine, readahead=100) == list(range(5000))


ITEMS: list[Any] = [
    None,
    0,
    -1,
    2**100,
    1.5,
    "text",
    "ünïcødé",
    b"\x00bytes\xff",
    [1, [2, 3]],
    {"key": {"nested": [None]}},
    (1, "two", 3.0),
    {1, 2, 3},
    frozenset({"a"}),
    True,
    Job("build", attempts=2),
]


async def test_items_of_many_types_round_trip(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        for item in ITEMS:
            await queue.put(item)
    assert await reopened(path, engine) == ITEMS
