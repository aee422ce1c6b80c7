"""An engine that commits in place: the queue stores each change at once, on the event loop.

`MemoryLogEngine` stands for an engine whose commit is a store into memory that outlives the
process (the seam `LogEngine` plugs into): with it a `put()` or `get()` completes without
yielding to the event loop, and nothing else of the queue changes.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Awaitable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest

from aiodiskqueue import Queue
from aiodiskqueue.engines import DEFAULT_OPTIONS, OpenOptions, Record, StorageEngine, Stored
from aiodiskqueue.waiting import Turns

from .helpers import drain

STORES: dict[Path, dict[int, bytes]] = {}


class MemoryLogEngine(StorageEngine):
    """Keeps the records of each path in a dict of this process, committed in place."""

    commits_in_place = True

    async def open(self, options: OpenOptions = DEFAULT_OPTIONS) -> Stored:
        self.records = STORES.setdefault(self.path, {})
        self.flushes = 0
        self.fsync = options.fsync
        return Stored(len(self.records), max(self.records, default=0), dict(options.meta))

    async def read(self, after: int, limit: int) -> list[Record]:
        return self.read_now(after, limit)

    def read_now(self, after: int, limit: int) -> list[Record]:
        keys = sorted(key for key in self.records if key > after)[:limit]
        return [Record(key, self.records[key]) for key in keys]

    async def commit(self, appends: Sequence[Record], removals: Sequence[int]) -> None:
        raise AssertionError("an engine that commits in place is never sent a batch")

    def commit_now(
        self, appends: Sequence[Record], removals: Sequence[int]
    ) -> Awaitable[None] | None:
        self.records.update(appends)
        for key in removals:
            self.records.pop(key, None)
        if self.fsync:
            return self._flush()
        return None

    async def _flush(self) -> None:
        self.flushes += 1

    async def close(self) -> None:
        pass


def completes_at_once(call: Coroutine[Any, Any, Any]) -> Any:
    """Run `call` one step: it must finish without yielding to the event loop."""
    with pytest.raises(StopIteration) as finished:
        call.send(None)
    return finished.value.value


async def test_put_and_get_complete_without_yielding_to_the_event_loop(tmp_path: Path) -> None:
    async with await Queue.create(tmp_path / "q", cls_storage_engine=MemoryLogEngine) as queue:
        completes_at_once(queue.put("item"))
        assert completes_at_once(queue.get()) == "item"


async def test_each_change_is_stored_when_the_call_returns(tmp_path: Path) -> None:
    path = tmp_path / "q"
    async with await Queue.create(path, cls_storage_engine=MemoryLogEngine) as queue:
        queue.put_nowait("a")
        queue.put_nowait("b")
        assert len(STORES[path]) == 2
        queue.get_nowait()
        assert len(STORES[path]) == 1
    async with await Queue.create(path, cls_storage_engine=MemoryLogEngine) as queue:
        assert await drain(queue) == ["b"]


async def test_with_power_loss_durability_a_put_waits_for_the_flush(tmp_path: Path) -> None:
    async with await Queue.create(
        tmp_path / "q", cls_storage_engine=MemoryLogEngine, durability="power-loss"
    ) as queue:
        await asyncio.wait_for(queue.put("item"), 5)
        assert queue._backend.engine.flushes == 1  # type: ignore[attr-defined]


async def test_at_least_once_items_leave_the_engine_when_done(tmp_path: Path) -> None:
    path = tmp_path / "q"
    async with await Queue.create(
        path, cls_storage_engine=MemoryLogEngine, delivery="at-least-once"
    ) as queue:
        await queue.put("item")
        await queue.get()
        assert len(STORES[path]) == 1
        await queue.task_done()
        assert STORES[path] == {}


async def test_a_task_putting_in_a_tight_loop_lets_other_tasks_run(tmp_path: Path) -> None:
    async with await Queue.create(tmp_path / "q", cls_storage_engine=MemoryLogEngine) as queue:
        other = asyncio.create_task(asyncio.sleep(0))
        for number in range(100_000):  # at least 10 ms at a tenth of a microsecond per put
            await queue.put(number)
            if other.done():
                break
        assert other.done()
        assert number >= Turns.CHECK_EVERY - 1  # a put does not yield for nothing


async def test_a_task_getting_in_a_tight_loop_lets_other_tasks_run(tmp_path: Path) -> None:
    async with await Queue.create(tmp_path / "q", cls_storage_engine=MemoryLogEngine) as queue:
        for number in range(100_000):
            queue.put_nowait(number)
        other = asyncio.create_task(asyncio.sleep(0))
        for _ in range(100_000):
            await queue.get()  # never waits: the items are there
            if other.done():
                break
        assert other.done()
        assert queue.qsize() > 0


async def test_items_are_read_ahead_as_they_are_taken_so_that_a_drain_never_waits(
    tmp_path: Path,
) -> None:
    """An engine that reads in place refills the window at once: a queue reopened with
    more items than the window holds drains with get_nowait(), keeping few in memory."""
    path = tmp_path / "q"
    async with await Queue.create(path, cls_storage_engine=MemoryLogEngine) as queue:
        for number in range(20_000):
            queue.put_nowait(number)
    async with await Queue.create(path, cls_storage_engine=MemoryLogEngine) as queue:
        assert len(queue._backend._window) < 20_000  # type: ignore[attr-defined]
        assert [queue.get_nowait() for _ in range(20_000)] == list(range(20_000))
        assert queue.empty()


def always_yielding(queue: Queue[Any]) -> Queue[Any]:
    for turns in (queue._backend._put_turns, queue._backend._get_turns):  # type: ignore[attr-defined]
        turns.due = lambda: True
    return queue


async def test_a_put_cancelled_while_it_yields_leaves_the_queue_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "q"
    async with await Queue.create(path, cls_storage_engine=MemoryLogEngine) as queue:
        putting = asyncio.create_task(always_yielding(queue).put("item"))
        await asyncio.sleep(0)  # the put is stored, and yields
        putting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(putting, 5)
        assert (queue.qsize(), STORES[path]) == (0, {})


async def test_a_get_cancelled_while_it_yields_gives_its_item_back(tmp_path: Path) -> None:
    path = tmp_path / "q"
    async with await Queue.create(path, cls_storage_engine=MemoryLogEngine) as queue:
        queue.put_nowait("a")
        queue.put_nowait("b")
        getting = asyncio.create_task(always_yielding(queue).get())
        await asyncio.sleep(0)  # the removal is stored, and the get yields
        getting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(getting, 5)
        stored = [pickle.loads(STORES[path][key]) for key in sorted(STORES[path])]
        assert stored == ["b", "a"]  # stored again, behind the stored items
        assert [queue.get_nowait(), queue.get_nowait()] == ["a", "b"]
