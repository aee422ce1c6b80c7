"""`Queue` on a shared engine: several queues, as in several processes, use one store at once.

Each test runs on every shared engine whose server is at hand (see `shared` in conftest),
with several `Queue` objects on the same address, each with its own engine and connections,
as separate processes would have.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from aiodiskqueue import (
    JsonSerializer,
    Queue,
    QueueClosedError,
    QueueShutDown,
    SerializationError,
)
from aiodiskqueue.engines import SharedStorageEngine

from .conftest import SharedStore
from .helpers import within

Opener = Callable[..., Any]


class Probe:
    """Tells a test when a queue's engine has begun to wait for items or for room."""

    def __init__(self) -> None:
        self.waiting_for_items = asyncio.Event()
        self.waiting_for_room = asyncio.Event()
        self.getting = asyncio.Event()

    def engine(self, engine_class: type[SharedStorageEngine]) -> type[SharedStorageEngine]:
        probe = self

        class Probed(engine_class):  # type: ignore[valid-type,misc]
            async def get(self) -> bytes | None:
                probe.getting.set()
                return await super().get()

            async def wait_for_items(self, timeout: float) -> None:
                probe.waiting_for_items.set()
                await super().wait_for_items(timeout)

            async def wait_for_room(self, maxsize: int, timeout: float) -> None:
                probe.waiting_for_room.set()
                await super().wait_for_room(maxsize, timeout)

        return Probed


async def start_waiting_get(
    open_queue: Opener, shared: SharedStore
) -> tuple[Queue[Any], asyncio.Task[Any]]:
    """Open a queue, and start a `get()` that waits for an item in it."""
    probe = Probe()
    queue = await open_queue(engine=probe.engine(shared.engine))
    getting = asyncio.create_task(queue.get())
    await within(probe.waiting_for_items.wait())
    return queue, getting


@pytest.fixture
async def open_queue(shared: SharedStore) -> AsyncIterator[Opener]:
    """Opens queues on the test's shared store, and closes them after the test."""
    queues: list[Queue[Any]] = []

    async def opener(*args: Any, engine: type[SharedStorageEngine] | None = None, **kwargs: Any):
        queue: Queue[Any] = await within(
            Queue.create(
                shared.address, *args, cls_storage_engine=engine or shared.engine, **kwargs
            )
        )
        queues.append(queue)
        return queue

    yield opener
    for queue in queues:
        await within(queue.close())


async def test_items_put_by_one_queue_are_got_by_another_in_order(open_queue: Opener) -> None:
    producer, consumer = await open_queue(), await open_queue()
    for number in range(10):
        await within(producer.put(number))
    assert [await within(consumer.get()) for _ in range(10)] == list(range(10))


async def test_a_waiting_get_wakes_when_another_queue_puts(
    open_queue: Opener, shared: SharedStore
) -> None:
    probe = Probe()
    producer, consumer = await open_queue(), await open_queue(engine=probe.engine(shared.engine))
    getting = asyncio.create_task(consumer.get())
    await within(probe.waiting_for_items.wait())
    assert not getting.done()
    await within(producer.put("wake up"))
    assert await within(getting) == "wake up"


async def test_a_put_into_a_full_queue_waits_until_another_queue_gets(
    open_queue: Opener, shared: SharedStore
) -> None:
    probe = Probe()
    consumer = await open_queue()
    producer = await open_queue(2, engine=probe.engine(shared.engine))
    await within(producer.put("first"))
    await within(producer.put("second"))
    assert producer.full()
    putting = asyncio.create_task(producer.put("third"))
    await within(probe.waiting_for_room.wait())
    assert not putting.done()
    assert await within(consumer.get()) == "first"
    await within(putting)
    assert [await within(consumer.get()) for _ in range(2)] == ["second", "third"]


async def test_maxsize_holds_for_puts_from_several_queues_at_once(open_queue: Opener) -> None:
    producers = [await open_queue(3) for _ in range(3)]
    puts = [asyncio.create_task(producer.put(n)) for n, producer in enumerate(producers * 2)]
    done, pending = await asyncio.wait(puts, timeout=1.0)
    assert len(done) == 3, "only maxsize puts can complete while nobody gets"
    consumer = await open_queue()
    got = [await within(consumer.get()) for _ in range(6)]
    await within(asyncio.gather(*pending))
    assert sorted(got) == list(range(6))


async def test_concurrent_getters_of_several_queues_get_each_item_exactly_once(
    open_queue: Opener,
) -> None:
    producer = await open_queue()
    consumers = [await open_queue() for _ in range(3)]
    for number in range(60):
        await within(producer.put(number))
    got = await within(
        asyncio.gather(*(consumer.get() for consumer in consumers * 20)),
    )
    assert sorted(got) == list(range(60))


async def test_qsize_counts_the_items_of_every_queue(open_queue: Opener) -> None:
    first, second = await open_queue(), await open_queue()
    await within(first.put("a"))
    await within(first.put("b"))
    assert first.qsize() == 2
    await within(second._backend.engine.wait_for_items(5.0))
    assert second.qsize() >= 1, "the engine has heard of the first put, maybe not yet the second"
    assert await within(second.get()) == "a"
    assert second.qsize() == 1, "the store's count, as the get's reply brought it"
    assert not second.empty()


async def test_items_are_kept_when_every_queue_is_closed(open_queue: Opener) -> None:
    first = await open_queue()
    await within(first.put({"job": 1}))
    await within(first.close())
    again = await open_queue()
    assert again.qsize() == 1
    assert await within(again.get()) == {"job": 1}


async def test_a_get_cancelled_while_waiting_takes_no_item(
    open_queue: Opener, shared: SharedStore
) -> None:
    queue, getting = await start_waiting_get(open_queue, shared)
    getting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await within(getting)
    await within(queue.put("kept"))
    assert await within(queue.get()) == "kept"


async def test_a_get_cancelled_while_its_removal_is_sent_puts_the_item_back(
    open_queue: Opener, shared: SharedStore
) -> None:
    probe = Probe()
    queue = await open_queue(engine=probe.engine(shared.engine))
    await within(queue.put("taken"))
    getting = asyncio.create_task(queue.get())
    await within(probe.getting.wait())
    getting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await within(getting)
    assert await within(queue.get()) == "taken"


async def test_a_timeout_on_a_waiting_get_loses_nothing(open_queue: Opener) -> None:
    queue = await open_queue()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(queue.get(), 0.05)
    await within(queue.put("after"))
    assert await within(queue.get()) == "after"


async def test_shutdown_wakes_a_waiting_getter_of_an_empty_queue(
    open_queue: Opener, shared: SharedStore
) -> None:
    queue, getting = await start_waiting_get(open_queue, shared)
    queue.shutdown()
    with pytest.raises(QueueShutDown):
        await within(getting)
    with pytest.raises(QueueShutDown):
        await within(queue.put("late"))


async def test_after_shutdown_gets_go_on_until_the_store_is_empty(open_queue: Opener) -> None:
    queue = await open_queue()
    await within(queue.put("left"))
    queue.shutdown()
    assert await within(queue.get()) == "left"
    with pytest.raises(QueueShutDown):
        await within(queue.get())


async def test_an_immediate_shutdown_keeps_the_items_in_the_store(open_queue: Opener) -> None:
    queue, other = await open_queue(), await open_queue()
    await within(queue.put("kept"))
    queue.shutdown(immediate=True)
    with pytest.raises(QueueShutDown):
        await within(queue.get())
    await within(queue.join())  # the item it put counts as done
    assert await within(other.get()) == "kept"


async def test_close_wakes_a_waiting_getter(open_queue: Opener, shared: SharedStore) -> None:
    queue, getting = await start_waiting_get(open_queue, shared)
    await within(queue.close())
    with pytest.raises(QueueClosedError):
        await within(getting)
    with pytest.raises(QueueClosedError):
        await within(queue.put("late"))


async def test_get_nowait_says_to_await_get_instead(open_queue: Opener) -> None:
    queue = await open_queue()
    with pytest.raises(NotImplementedError, match="await get"):
        queue.get_nowait()


async def test_put_nowait_stores_the_item_in_the_background(open_queue: Opener) -> None:
    queue = await open_queue()
    stored = queue.put_nowait("item")
    await within(stored)
    other = await open_queue()
    assert await within(other.get()) == "item"


async def test_put_nowait_and_put_store_items_in_the_order_they_were_made(
    open_queue: Opener,
) -> None:
    queue = await open_queue()
    queue.put_nowait(1)
    queue.put_nowait(2)
    await within(queue.put(3))
    assert [await within(queue.get()) for _ in range(3)] == [1, 2, 3]


async def test_put_nowait_items_are_stored_when_the_queue_closes(open_queue: Opener) -> None:
    queue = await open_queue()
    for item in range(3):
        queue.put_nowait(item)
    await within(queue.close())
    other = await open_queue()
    assert [await within(other.get()) for _ in range(3)] == [0, 1, 2]


async def test_a_consumer_marks_done_the_items_it_got(open_queue: Opener) -> None:
    producer, consumer = await open_queue(), await open_queue()
    await within(producer.put("job"))
    await within(consumer.get())
    joining = asyncio.create_task(consumer.join())
    await asyncio.sleep(0)
    assert not joining.done()
    await within(consumer.task_done())
    await within(joining)
    with pytest.raises(ValueError, match="too many"):
        consumer.task_done()


async def test_join_in_one_queue_that_puts_and_gets_waits_as_in_asyncio(
    open_queue: Opener,
) -> None:
    queue = await open_queue()
    for number in range(3):
        await within(queue.put(number))
    joining = asyncio.create_task(queue.join())
    for _ in range(3):
        await within(queue.get())
        await asyncio.sleep(0)
        assert not joining.done()
        queue.task_done()
    await within(joining)


async def test_at_least_once_delivery_is_refused(shared: SharedStore) -> None:
    with pytest.raises(ValueError, match="at-most-once"):
        await Queue.create(
            shared.address, cls_storage_engine=shared.engine, delivery="at-least-once"
        )


async def test_a_queue_refuses_to_open_with_another_serializer(open_queue: Opener) -> None:
    queue = await open_queue()
    await within(queue.put("pickled"))
    with pytest.raises(ValueError, match="'pickle' serializer"):
        await open_queue(serializer=JsonSerializer())


async def test_an_item_that_cannot_be_read_stays_in_the_store(open_queue: Opener) -> None:
    queue = await open_queue()
    await within(queue._backend.engine.put(pickle.dumps("readable")[:-3], 0))  # cut short
    await within(queue.put("next"))
    with pytest.raises(SerializationError) as raised:
        await within(queue.get())
    assert raised.value.data == pickle.dumps("readable")[:-3]
    assert await within(queue.get()) == "next"
    assert queue.qsize() == 1, "the unreadable item went to the tail"


async def test_puts_gets_and_waits_log_nothing_above_debug(
    open_queue: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    queue = await open_queue(1)  # opening may tell an operator something, at INFO
    with caplog.at_level(logging.DEBUG, logger="aiodiskqueue"):
        for item in range(3):
            await within(queue.put(item))
            assert await within(queue.get()) == item
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(queue.get(), 0.05)
    louder = [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]
    assert louder == []


async def test_an_item_put_back_by_a_cancelled_get_is_got_before_the_items_behind_it(
    open_queue: Opener, shared: SharedStore
) -> None:
    probe = Probe()
    queue = await open_queue(engine=probe.engine(shared.engine))
    for item in ("a", "b", "c"):
        await within(queue.put(item))
    assert await within(queue.get()) == "a"
    probe.getting.clear()
    getting = asyncio.create_task(queue.get())
    await within(probe.getting.wait())
    getting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await within(getting)
    # PostgresEngine puts it back at the tail (the default of the contract).
    expected = ["c", "b"] if shared.engine.__name__ == "PostgresEngine" else ["b", "c"]
    assert [await within(queue.get()) for _ in range(2)] == expected
