"""The options of `Queue.create`: serializers, delivery, durability and their checks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aiodiskqueue import JsonSerializer, Queue, SerializationError
from aiodiskqueue.engines import StorageEngine

from .helpers import drain

Engine = Callable[[Path], StorageEngine]


async def test_json_serializer_round_trips_json_values(engine: Engine, path: Path) -> None:
    items: list[Any] = [{"job": 1, "tags": ["a", "b"]}, "text", 3.5, None, True, [1, [2]]]
    async with await Queue.create(
        path, cls_storage_engine=engine, serializer=JsonSerializer()
    ) as queue:
        for item in items:
            await queue.put(item)
    async with await Queue.create(
        path, cls_storage_engine=engine, serializer=JsonSerializer()
    ) as queue:
        assert await drain(queue) == items


async def test_json_serializer_refuses_what_json_cannot_hold(path: Path) -> None:
    async with await Queue.create(path, serializer=JsonSerializer()) as queue:
        for item in ({1, 2}, float("nan"), object()):
            with pytest.raises(SerializationError, match="JSON"):
                await queue.put(item)
        assert queue.qsize() == 0


def test_json_serializer_stores_utf8_json() -> None:
    assert JsonSerializer().dumps({"name": "Zoë"}) == '{"name": "Zoë"}'.encode()


async def test_a_queue_refuses_to_open_with_another_serializer(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        await queue.put("kept")
    with pytest.raises(ValueError, match=r"'pickle' serializer, not 'json'"):
        await Queue.create(path, cls_storage_engine=engine, serializer=JsonSerializer())
    # The refusal closed the engine and left the queue as it was.
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        assert await drain(queue) == ["kept"]


# Checked choices


@pytest.mark.parametrize(
    ("option", "value"),
    [("durability", "disk"), ("delivery", "exactly-once"), ("on_corruption", "ignore")],
)
async def test_an_unknown_choice_is_refused_with_the_choices_named(
    path: Path, option: str, value: str
) -> None:
    with pytest.raises(ValueError, match=rf"{option} must be .* not '{value}'"):
        await Queue.create(path, **{option: value})
    assert not path.exists()


async def test_the_power_loss_level_stores_and_restores_items(engine: Engine, path: Path) -> None:
    async with await Queue.create(
        path, cls_storage_engine=engine, durability="power-loss"
    ) as queue:
        await queue.put("durable")
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        assert await drain(queue) == ["durable"]


# At-least-once delivery


async def open_at_least_once(path: Path, engine: Engine) -> Queue[Any]:
    return await Queue.create(path, cls_storage_engine=engine, delivery="at-least-once")


async def test_an_item_got_but_not_done_is_delivered_again_after_reopen(
    engine: Engine, path: Path
) -> None:
    async with await open_at_least_once(path, engine) as queue:
        for item in ("a", "b", "c"):
            await queue.put(item)
        assert await queue.get() == "a"
        assert queue.qsize() == 2
    async with await open_at_least_once(path, engine) as queue:
        assert await drain(queue) == ["a", "b", "c"]


async def test_an_item_marked_done_is_not_delivered_again(engine: Engine, path: Path) -> None:
    async with await open_at_least_once(path, engine) as queue:
        for item in ("a", "b"):
            await queue.put(item)
        assert await queue.get() == "a"
        await queue.task_done()
    async with await open_at_least_once(path, engine) as queue:
        assert await drain(queue) == ["b"]


async def test_unfinished_items_come_back_first_in_their_original_order(
    engine: Engine, path: Path
) -> None:
    async with await open_at_least_once(path, engine) as queue:
        for item in range(6):
            await queue.put(item)
        got = [await queue.get() for _ in range(4)]
        assert got == [0, 1, 2, 3]
        item, receipt = await queue.get_with_receipt()
        assert item == 4
        await queue.task_done(receipt)  # finishes 4, and nothing else
    async with await open_at_least_once(path, engine) as queue:
        assert await drain(queue) == [0, 1, 2, 3, 5]


async def test_task_done_in_a_task_holding_several_items_removes_none_until_all_are_done(
    engine: Engine, path: Path
) -> None:
    async with await open_at_least_once(path, engine) as queue:
        for item in range(3):
            await queue.put(item)
        assert [await queue.get(), await queue.get()] == [0, 1]
        await queue.task_done()  # 0 or 1: which one, the queue cannot tell
    async with await open_at_least_once(path, engine) as queue:
        assert [await queue.get(), await queue.get()] == [0, 1]
        for _ in range(2):  # as many calls as items held: both are done
            await queue.task_done()
    async with await open_at_least_once(path, engine) as queue:
        assert await drain(queue) == [2]


async def test_task_done_finishes_the_oldest_item_the_calling_task_got(
    engine: Engine, path: Path
) -> None:
    async with await open_at_least_once(path, engine) as queue:
        for item in ("first", "second"):
            await queue.put(item)
        first_taken = asyncio.Event()

        async def take_first() -> Any:
            item = await queue.get()
            first_taken.set()
            return item

        async def take_second_and_finish_it() -> Any:
            await first_taken.wait()
            item = await queue.get()
            await queue.task_done()
            return item

        results = await asyncio.wait_for(
            asyncio.gather(take_first(), take_second_and_finish_it()), timeout=5
        )
        assert results == ["first", "second"]
    async with await open_at_least_once(path, engine) as queue:
        assert await drain(queue) == ["first"]


async def test_task_done_from_a_task_that_got_nothing_finishes_the_only_item_got(
    engine: Engine, path: Path
) -> None:
    async with await open_at_least_once(path, engine) as queue:
        for item in ("a", "b"):
            await queue.put(item)
        got = await asyncio.wait_for(asyncio.ensure_future(queue.get()), timeout=5)
        assert got == "a"

        async def finish() -> None:
            await queue.task_done()

        await asyncio.wait_for(asyncio.ensure_future(finish()), timeout=5)
    async with await open_at_least_once(path, engine) as queue:
        assert await drain(queue) == ["b"]


async def test_join_waits_for_items_got_at_least_once_until_they_are_done(
    engine: Engine, path: Path
) -> None:
    async with await open_at_least_once(path, engine) as queue:
        await queue.put("job")
        await queue.get()
        joined = asyncio.ensure_future(queue.join())
        await asyncio.sleep(0)
        assert not joined.done()
        await queue.task_done()
        await asyncio.wait_for(joined, timeout=5)
