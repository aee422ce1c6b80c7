"""The optional operations of the shared engine contract, which the command line uses to look
into, empty and delete a queue: `exists()`, `items()`, `purge()` and `drop()`.

Each test runs on RedisEngine and PostgresEngine, with a queue of its own on the servers at
REDIS_URL and POSTGRES_URL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest

from aiodiskqueue import QueueConnectionError
from aiodiskqueue.engines import DEFAULT_OPTIONS, OpenOptions, SharedStorageEngine

from .conftest import REDIS_URL, unique_name
from .helpers import free_port, started, within
from .servers import postgres_queue, queue_address, redis_queue
from .test_redis_engine import watching

SERVERS = {"RedisEngine": redis_queue, "PostgresEngine": postgres_queue}
META = {"serializer": "pickle"}
LONG = 60.0
"""A wait's own timeout where the test expects something else to end it first."""

Opener = Callable[..., Awaitable[Any]]


@pytest.fixture(params=list(SERVERS))
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine_class(engine_name: str) -> type[SharedStorageEngine]:
    from aiodiskqueue import engines

    cls: type[SharedStorageEngine] = getattr(engines, engine_name)
    return cls


@pytest.fixture
async def address(engine_name: str) -> AsyncIterator[str]:
    async with SERVERS[engine_name]() as address:
        yield address


@pytest.fixture
async def opened(engine_class: type[SharedStorageEngine], address: str) -> AsyncIterator[Opener]:
    """Opens engines on the test's queue, with `META`; closes them after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def open_engine() -> Any:
            engine = engine_class(address)
            await within(engine.open(OpenOptions(meta=META)))
            stack.push_async_callback(engine.close)
            return engine

        yield open_engine


async def listed(engine: Any, limit: int | None = None) -> list[bytes]:
    async with contextlib.aclosing(engine.items(limit)) as items:
        return [data async for data in items]


async def fill(engine: Any, count: int) -> list[bytes]:
    items = [b"item-%d" % n for n in range(count)]
    for data in items:
        assert await engine.put(data, 0)
    return items


# exists()


async def test_exists_is_false_for_a_queue_never_made_and_creates_nothing(
    engine_class: type[SharedStorageEngine], address: str
) -> None:
    assert not await within(engine_class(address).exists())
    assert not await within(engine_class(address).exists())


async def test_exists_is_true_once_a_queue_is_opened_and_false_once_dropped(
    engine_class: type[SharedStorageEngine], address: str, opened: Opener
) -> None:
    engine = await opened()
    assert await within(engine_class(address).exists())
    await engine.drop()
    assert not await within(engine_class(address).exists())


async def test_exists_on_an_unreachable_server_raises_queue_connection_error(
    engine_name: str, engine_class: type[SharedStorageEngine]
) -> None:
    scheme = "redis" if engine_name == "RedisEngine" else "postgresql"
    database = "0" if engine_name == "RedisEngine" else "test"
    port = free_port()
    address = queue_address(f"{scheme}://127.0.0.1:{port}/{database}", unique_name())
    with pytest.raises(QueueConnectionError, match=f"127\\.0\\.0\\.1:{port}"):
        await within(engine_class(address).exists())


# items()


async def test_items_lists_every_item_from_the_head_and_takes_none(opened: Opener) -> None:
    engine = await opened()
    items = await fill(engine, 5)
    assert await within(listed(engine)) == items
    assert await within(listed(engine, 2)) == items[:2]
    assert await within(listed(engine, 0)) == []
    assert engine.size() == 5
    assert [await engine.get() for _ in range(5)] == items


async def test_items_of_an_empty_queue_is_empty(opened: Opener) -> None:
    assert await within(listed(await opened())) == []


async def test_items_lists_the_queue_as_it_stood_when_listing_began(
    opened: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiodiskqueue.engines import postgres

    monkeypatch.setattr(postgres, "READ_PAGE", 2)  # several round trips
    engine, other = await opened(), await opened()
    items = await fill(engine, 7)
    async with contextlib.aclosing(engine.items()) as listing:
        first = await within(anext(listing))
        assert await other.get() == items[0]
        assert await other.get() == items[1]
        assert await other.put(b"later", 0)
        rest = [data async for data in listing]
    assert [first, *rest] == items


async def test_a_listing_stopped_early_lets_go_of_its_connection(opened: Opener) -> None:
    engine = await opened()
    await fill(engine, 3)
    for _ in range(20):  # more than the pool of connections
        async with contextlib.aclosing(engine.items()) as listing:
            await within(anext(listing))
    assert await within(engine.get()) == b"item-0"


# purge()


async def test_purge_removes_every_item_and_keeps_the_meta(
    engine_class: type[SharedStorageEngine], address: str, opened: Opener
) -> None:
    engine, other = await opened(), await opened()
    await fill(engine, 4)
    assert await within(engine.purge()) == 4
    assert engine.size() == 0
    assert await other.get() is None
    assert await other.put(b"after", 0)  # the queue goes on
    assert await engine.get() == b"after"
    again = engine_class(address)
    assert await within(again.open(OpenOptions(meta={"serializer": "json"}))) == META
    await again.close()


async def test_purge_of_an_empty_queue_removes_nothing(opened: Opener) -> None:
    engine = await opened()
    assert await within(engine.purge()) == 0
    assert await within(engine.purge()) == 0


async def test_purge_wakes_a_putter_that_waits_for_room(
    engine_name: str, address: str, opened: Opener
) -> None:
    putter, purger = await opened(), await opened()
    await fill(putter, 2)
    assert not await putter.put(b"full", 2)
    if engine_name == "RedisEngine":  # the wait blocks on the server: see it there
        async with watching(REDIS_URL) as seen:
            waiting = asyncio.create_task(putter.wait_for_room(2, LONG))
            await seen("BLMOVE", f"aiodiskqueue:{{{putter.name}}}:room:2")
    else:  # the wait listens for notifications
        waiting = await started(asyncio.create_task(putter.wait_for_room(2, LONG)))
    assert not waiting.done()
    assert await within(purger.purge()) == 2
    await within(waiting)
    assert await putter.put(b"room", 2)


# drop()


async def test_drop_deletes_the_items_and_the_meta(
    engine_class: type[SharedStorageEngine], address: str, opened: Opener
) -> None:
    engine = await opened()
    await fill(engine, 3)
    await within(engine.drop())
    assert engine.size() == 0
    again = engine_class(address)
    assert await within(again.open(OpenOptions(meta={"serializer": "json"}))) == {
        "serializer": "json"
    }
    try:
        assert again.size() == 0
    finally:
        await again.close()


# The defaults, for engines that do not implement them


class Minimal(SharedStorageEngine):
    """A shared engine with the required operations only."""

    async def open(self, options: OpenOptions = DEFAULT_OPTIONS) -> Mapping[str, str]:
        return {}

    async def put(self, data: bytes, maxsize: int) -> bool:
        return True

    async def get(self) -> bytes | None:
        return None

    async def wait_for_items(self, timeout: float) -> None:
        return None

    async def wait_for_room(self, maxsize: int, timeout: float) -> None:
        return None

    def size(self) -> int:
        return 0

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("operation", "what"),
    [
        (lambda engine: engine.exists(), "tell whether its queue exists"),
        (lambda engine: engine.purge(), "remove every item"),
        (lambda engine: engine.drop(), "delete its queue"),
    ],
)
async def test_an_engine_without_an_optional_operation_says_so(
    operation: Callable[[SharedStorageEngine], Awaitable[Any]], what: str
) -> None:
    with pytest.raises(NotImplementedError, match=f"Minimal cannot {what}"):
        await operation(Minimal("anywhere"))


def test_an_engine_without_items_says_so_when_asked() -> None:
    with pytest.raises(NotImplementedError, match="Minimal cannot list its items"):
        Minimal("anywhere").items()
