"""RedisEngine, on a real Redis server: the shared engine contract, and what a crash keeps.

Most tests use the server at REDIS_URL, each on a queue of its own. Those that kill the
server start a redis-server of their own (see `redis_server`). A test that must know that a
wait is blocked on the server before it acts watches the server's MONITOR stream for the
wait's command, instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import TypeVar, cast
from urllib.parse import quote

import pytest
import redis.asyncio
import redis.exceptions

from aiodiskqueue import Queue, QueueConnectionError
from aiodiskqueue.engines import OpenOptions
from aiodiskqueue.engines.contracts.local import DEFAULT_OPTIONS
from aiodiskqueue.engines.redis import RedisEngine

from .conftest import REDIS_URL, unique_name, unreachable
from .helpers import free_port
from .redis_server import DURABLE, RedisServer, available
from .servers import queue_address, redis_queue

R = TypeVar("R")
Opener = Callable[..., Awaitable[RedisEngine]]
"""Opens a `RedisEngine` for an address (and options), to be closed after the test."""

TIMEOUT = 10.0
"""How long any one wait in a test may take before the test fails."""


async def within(awaitable: Awaitable[R]) -> R:
    """Await `awaitable`, failing the test if it takes longer than `TIMEOUT`."""
    return await asyncio.wait_for(awaitable, TIMEOUT)


@pytest.fixture
async def address() -> AsyncIterator[str]:
    """The address of a queue of the test's own on the server at REDIS_URL, deleted after."""
    async with redis_queue() as address:
        yield address


@pytest.fixture
async def server(address: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A client of the server at REDIS_URL (which `address` has found reachable)."""
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def engines() -> AsyncIterator[Opener]:
    """Opens engines, and closes them after the test."""
    async with AsyncExitStack() as stack:

        async def opened(address: str, options: OpenOptions = DEFAULT_OPTIONS) -> RedisEngine:
            engine = RedisEngine(address)
            await engine.open(options)
            stack.push_async_callback(engine.close)
            return engine

        yield opened


@pytest.fixture
async def own_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A redis-server of the test's own that flushes every write, killed after the test."""
    if not available():
        unreachable("redis", "redis-server", "redis-server is not on PATH")
    own = RedisServer(tmp_path, *DURABLE)
    await own.start()
    yield own
    await own.kill()


@asynccontextmanager
async def watching(url: str) -> AsyncIterator[Callable[[str, str], Awaitable[None]]]:
    """Watch the commands that the server at `url` runs; the function given waits for one.

    ``await seen("BLMOVE", key)`` returns once the server has run a BLMOVE of `key`, which
    on an empty list means the client is now blocked on it.
    """
    client = redis.asyncio.Redis.from_url(url)
    try:
        async with client.monitor() as monitor:

            async def seen(command: str, key: str) -> None:
                while True:
                    line = (await within(monitor.next_command()))["command"]
                    if line.split()[:2] == [command, key]:
                        return

            yield seen
    finally:
        await client.aclose()


async def held(url: str, name: str) -> list[bytes]:
    """The items that the queue `name` holds, read without an engine."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        return cast(list[bytes], await client.lrange(f"aiodiskqueue:{{{name}}}", 0, -1))
    finally:
        await client.aclose()


def name_of(address: str) -> str:
    return address.rpartition("/")[2]


# Addresses


def test_the_queue_name_is_the_last_segment_of_the_address() -> None:
    engine = RedisEngine("redis://127.0.0.1:6379/0/jobs")
    assert engine.name == "jobs"
    assert engine.address == "redis://127.0.0.1:6379/0/jobs"


@pytest.mark.parametrize(
    "address",
    [
        "redis://127.0.0.1:6379/0",
        "redis://127.0.0.1:6379/0/",
        "redis://127.0.0.1:6379",
        "redis://127.0.0.1:6379/jobs",
        "redis://127.0.0.1:6379/0/jobs/more",
        "http://127.0.0.1:6379/0/jobs",
    ],
)
def test_an_address_without_a_database_and_a_queue_name_is_a_value_error(address: str) -> None:
    with pytest.raises(ValueError, match="queue name"):
        RedisEngine(address)


def test_the_password_in_an_address_is_not_shown() -> None:
    engine = RedisEngine("redis://user:secret@127.0.0.1:6379/0/jobs")
    assert "secret" not in repr(engine)
    assert "user:***@127.0.0.1:6379/0/jobs" in repr(engine)


# The engine contract


async def test_items_are_got_in_the_order_they_were_put(address: str, engines: Opener) -> None:
    engine = await engines(address)
    for item in (b"one", b"two", b"three"):
        assert await engine.put(item, 0)
    assert [await engine.get() for _ in range(3)] == [b"one", b"two", b"three"]


async def test_get_from_an_empty_queue_returns_none(address: str, engines: Opener) -> None:
    engine = await engines(address)
    assert await engine.get() is None
    assert engine.size() == 0


async def test_put_refuses_an_item_when_the_queue_holds_maxsize_and_changes_nothing(
    address: str, engines: Opener
) -> None:
    engine = await engines(address)
    assert await engine.put(b"1", 2)
    assert await engine.put(b"2", 2)
    assert not await engine.put(b"3", 2)
    assert await held(REDIS_URL, name_of(address)) == [b"1", b"2"]
    assert engine.size() == 2


async def test_put_with_maxsize_0_or_less_never_refuses(address: str, engines: Opener) -> None:
    engine = await engines(address)
    assert all([await engine.put(b"item", maxsize) for maxsize in (0, -1, 0, -5)])
    assert engine.size() == 4


async def test_concurrent_puts_never_fill_the_queue_beyond_maxsize(
    address: str, engines: Opener
) -> None:
    putters = [await engines(address) for _ in range(4)]
    stored = await within(
        asyncio.gather(*(engine.put(b"item", 10) for engine in putters for _ in range(10)))
    )
    assert stored.count(True) == 10
    assert len(await held(REDIS_URL, name_of(address))) == 10


async def test_size_is_the_length_the_engine_last_heard_from_the_server(
    address: str, engines: Opener
) -> None:
    putter, getter = await engines(address), await engines(address)
    for item in (b"1", b"2", b"3"):
        await putter.put(item, 0)
    assert putter.size() == 3
    assert getter.size() == 0  # it has not heard of the puts
    await getter.get()
    assert getter.size() == 2
    assert putter.size() == 3  # nor this of the get
    await putter.get()
    assert putter.size() == 1


async def test_opening_finds_the_items_already_there(address: str, engines: Opener) -> None:
    putter = await engines(address)
    await putter.put(b"1", 0)
    await putter.put(b"2", 0)
    assert (await engines(address)).size() == 2


async def test_meta_is_written_once_and_returned_on_reopening(address: str) -> None:
    first = RedisEngine(address)
    assert await first.open(OpenOptions(meta={"serializer": "pickle"})) == {"serializer": "pickle"}
    await first.close()
    again = RedisEngine(address)
    meta = await again.open(OpenOptions(meta={"serializer": "json", "added": "later"}))
    await again.close()
    assert meta == {"serializer": "pickle", "added": "later"}


async def test_the_queue_keys_share_the_hash_tag_of_its_name(
    address: str, engines: Opener, server: redis.asyncio.Redis
) -> None:
    name = name_of(address)
    engine = await engines(address, OpenOptions(meta={"serializer": "pickle"}))
    await engine.put(b"item", 1)
    await engine.wait_for_room(1, 0.01)  # the queue is full: notes its maxsize
    await engine.get()  # makes room below it: leaves the room token
    await engine.put(b"item", 0)
    keys = sorted(
        cast(bytes, key).decode() for key in await server.keys(f"aiodiskqueue:{{{name}}}*")
    )
    prefix = f"aiodiskqueue:{{{name}}}"
    assert keys == [prefix, f"{prefix}:full", f"{prefix}:meta", f"{prefix}:room:1"]


async def test_drop_deletes_every_key_of_the_queue(
    address: str, engines: Opener, server: redis.asyncio.Redis
) -> None:
    engine = await engines(address, OpenOptions(meta={"serializer": "pickle"}))
    await engine.put(b"item", 1)
    await engine.wait_for_room(1, 0.01)  # notes the maxsize: more keys than the list
    await engine.drop()
    assert await server.keys(f"aiodiskqueue:{{{name_of(address)}}}*") == []
    assert engine.size() == 0
    assert await engine.get() is None


@pytest.mark.parametrize(
    ("dropped", "neighbours"),
    [
        ("*", ["-other", ""]),
        ("?", ["s", "x"]),
        ("-[ab]", ["-a", "-b"]),
        ("", ["}x", "}:meta"]),
        ("\\", ["", "}x"]),
    ],
    ids=["star", "question-mark", "brackets", "closing-brace", "backslash"],
)
async def test_drop_deletes_that_queue_only_whatever_glob_characters_its_name_holds(
    engines: Opener, server: redis.asyncio.Redis, dropped: str, neighbours: list[str]
) -> None:
    # Every name starts alike, so that a glob made from the dropped name matches the others
    # but no queue of another test.
    stem = unique_name()
    kept = {
        stem + suffix: queue_address(REDIS_URL, quote(stem + suffix, safe=""))
        for suffix in neighbours
    }
    address = queue_address(REDIS_URL, quote(stem + dropped, safe=""))
    try:
        for at in kept.values():
            neighbour = await engines(at, OpenOptions(meta={"serializer": "pickle"}))
            await neighbour.put(b"kept", 1)
            await neighbour.wait_for_room(1, 0.01)  # notes its maxsize: all its kinds of key
        engine = await engines(address, OpenOptions(meta={"serializer": "pickle"}))
        await engine.put(b"dropped", 0)
        await engine.drop()
        for name in kept:
            assert await held(REDIS_URL, name) == [b"kept"], name
            assert (
                await server.exists(
                    f"aiodiskqueue:{{{name}}}:meta", f"aiodiskqueue:{{{name}}}:full"
                )
                == 2
            )
        assert await held(REDIS_URL, stem + dropped) == []
    finally:
        for at in kept.values():
            engine = RedisEngine(at)
            await engine.open()
            await engine.drop()
            await engine.close()


# Waiting


async def test_wait_for_items_returns_when_another_engine_puts(
    address: str, engines: Opener
) -> None:
    waiter, putter = await engines(address), await engines(address)
    async with watching(REDIS_URL) as seen:
        waiting = asyncio.create_task(waiter.wait_for_items(TIMEOUT))
        await seen("BLMOVE", f"aiodiskqueue:{{{name_of(address)}}}")
        assert not waiting.done()
        await putter.put(b"item", 0)
        await within(waiting)
    assert waiter.size() == 1
    assert await waiter.get() == b"item"


async def test_every_waiter_wakes_when_one_item_is_put(address: str, engines: Opener) -> None:
    waiters = [await engines(address) for _ in range(3)]
    putter = await engines(address)
    key = f"aiodiskqueue:{{{name_of(address)}}}"
    async with watching(REDIS_URL) as seen:
        waiting = []
        for waiter in waiters:
            waiting.append(asyncio.create_task(waiter.wait_for_items(TIMEOUT)))
            await seen("BLMOVE", key)
        await putter.put(b"item", 0)
        await within(asyncio.gather(*waiting))
    assert await held(REDIS_URL, name_of(address)) == [b"item"]


async def test_wait_for_items_returns_at_once_when_the_queue_holds_items_and_keeps_them(
    address: str, engines: Opener
) -> None:
    engine = await engines(address)
    for item in (b"1", b"2", b"3"):
        await engine.put(item, 0)
    for _ in range(3):
        await within(engine.wait_for_items(TIMEOUT))
    assert await held(REDIS_URL, name_of(address)) == [b"1", b"2", b"3"]


async def test_wait_for_items_on_an_empty_queue_times_out_and_changes_nothing(
    address: str, engines: Opener, server: redis.asyncio.Redis
) -> None:
    engine = await engines(address)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await within(engine.wait_for_items(0.3))
    assert 0.3 <= loop.time() - started < TIMEOUT
    assert await server.keys(f"aiodiskqueue:{{{name_of(address)}}}") == []


async def test_cancelling_wait_for_items_at_any_point_loses_nothing(
    address: str, engines: Opener
) -> None:
    engine = await engines(address)
    for item in (b"1", b"2", b"3"):
        await engine.put(item, 0)
    for steps in range(20):  # cancel after 0, 1, 2... turns of the event loop
        waiting = asyncio.create_task(engine.wait_for_items(TIMEOUT))
        for _ in range(steps):
            await asyncio.sleep(0)
        waiting.cancel()
        with suppress(asyncio.CancelledError):  # or it had already returned
            await waiting
    assert await held(REDIS_URL, name_of(address)) == [b"1", b"2", b"3"]


async def test_a_blocked_wait_for_items_that_is_cancelled_leaves_the_next_item_to_a_get(
    address: str, engines: Opener
) -> None:
    waiter, putter = await engines(address), await engines(address)
    async with watching(REDIS_URL) as seen:
        waiting = asyncio.create_task(waiter.wait_for_items(TIMEOUT))
        await seen("BLMOVE", f"aiodiskqueue:{{{name_of(address)}}}")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    await putter.put(b"item", 0)
    assert await waiter.get() == b"item"


async def test_wait_for_room_returns_at_once_when_the_queue_is_below_maxsize(
    address: str, engines: Opener
) -> None:
    engine = await engines(address)
    await engine.put(b"item", 0)
    await within(engine.wait_for_room(2, TIMEOUT))
    assert engine.size() == 1


async def test_wait_for_room_returns_when_a_get_makes_room(address: str, engines: Opener) -> None:
    putter, getter = await engines(address), await engines(address)
    await putter.put(b"1", 2)
    await putter.put(b"2", 2)
    async with watching(REDIS_URL) as seen:
        waiting = asyncio.create_task(putter.wait_for_room(2, TIMEOUT))
        await seen("BLMOVE", f"aiodiskqueue:{{{name_of(address)}}}:room:2")
        assert not waiting.done()
        assert await getter.get() == b"1"
        await within(waiting)
    assert await putter.put(b"3", 2)


async def test_wait_for_room_wakes_each_waiter_when_the_queue_falls_below_its_maxsize(
    address: str, engines: Opener
) -> None:
    below_3, below_2 = await engines(address), await engines(address)
    getter = await engines(address)
    for item in (b"1", b"2", b"3"):
        await getter.put(item, 0)
    room = f"aiodiskqueue:{{{name_of(address)}}}:room"
    async with watching(REDIS_URL) as seen:
        waiting_3 = asyncio.create_task(below_3.wait_for_room(3, TIMEOUT))
        await seen("BLMOVE", f"{room}:3")
        waiting_2 = asyncio.create_task(below_2.wait_for_room(2, TIMEOUT))
        await seen("BLMOVE", f"{room}:2")
        await getter.get()  # 2 left: room below 3, not below 2
        await within(waiting_3)
        assert not waiting_2.done()
        await getter.get()
        await within(waiting_2)


async def test_cancelling_wait_for_room_leaves_the_wake_up_to_other_waiters(
    address: str, engines: Opener
) -> None:
    cancelled, other, getter = [await engines(address) for _ in range(3)]
    await getter.put(b"1", 1)
    room = f"aiodiskqueue:{{{name_of(address)}}}:room:1"
    async with watching(REDIS_URL) as seen:
        waiting = asyncio.create_task(cancelled.wait_for_room(1, TIMEOUT))
        await seen("BLMOVE", room)
        still_waiting = asyncio.create_task(other.wait_for_room(1, TIMEOUT))
        await seen("BLMOVE", room)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await getter.get()
        await within(still_waiting)


# Concurrency


async def test_concurrent_gets_from_several_engines_get_every_item_exactly_once(
    address: str, engines: Opener
) -> None:
    items = [str(number).encode() for number in range(300)]
    putter = await engines(address)
    for item in items:
        await putter.put(item, 0)
    getters = [await engines(address) for _ in range(4)]

    async def get_all(engine: RedisEngine) -> list[bytes]:
        got = []
        while (item := await engine.get()) is not None:
            got.append(item)
        return got

    results = await within(
        asyncio.gather(*(get_all(engine) for engine in getters for _ in range(4)))
    )
    got = [item for result in results for item in result]
    assert sorted(got) == sorted(items)
    assert all(result == sorted(result, key=items.index) for result in results)  # FIFO each


# Durability and connection loss (a server of the test's own)


async def test_every_put_that_returned_survives_the_server_being_killed_and_restarted(
    own_server: RedisServer, engines: Opener
) -> None:
    name = unique_name()
    engine = await engines(queue_address(own_server.url, name), OpenOptions(fsync=True))
    putters = 4
    acknowledged: list[list[bytes]] = [[] for _ in range(putters)]
    uncertain: dict[int, bytes] = {}  # each putter's put that raised when the server died
    enough = asyncio.Event()

    async def put_until_lost(putter: int) -> None:
        for number in range(1_000_000):
            item = f"{putter}:{number}".encode()
            try:
                await engine.put(item, 0)
            except QueueConnectionError:
                uncertain[putter] = item
                return
            acknowledged[putter].append(item)
            if sum(map(len, acknowledged)) >= 400:
                enough.set()

    putting = [asyncio.create_task(put_until_lost(putter)) for putter in range(putters)]
    await within(enough.wait())
    await own_server.kill()  # while the putters go on putting
    await within(asyncio.gather(*putting))
    await own_server.start()

    stored = await held(own_server.url, name)
    assert len(stored) == len(set(stored))  # none twice
    for putter, items in enumerate(acknowledged):
        own = [item for item in stored if item.startswith(f"{putter}:".encode())]
        assert own[: len(items)] == items  # every returned put, in order
        assert own[len(items) :] in ([], [uncertain[putter]])  # it may or may not be there
    # The same engine goes on, on the restarted server.
    assert await engine.put(b"after", 0)
    assert await engine.get() == stored[0]


async def test_an_operation_on_a_dead_server_raises_queue_connection_error(
    own_server: RedisServer, engines: Opener
) -> None:
    engine = await engines(queue_address(own_server.url, unique_name()))
    await own_server.kill()
    with pytest.raises(QueueConnectionError, match="nothing was changed") as raised:
        await engine.put(b"item", 0)
    assert f"127.0.0.1:{own_server.port}" in str(raised.value)
    with pytest.raises(QueueConnectionError, match="nothing was changed"):
        await engine.get()
    with pytest.raises(QueueConnectionError):
        await engine.wait_for_items(TIMEOUT)
    with pytest.raises(QueueConnectionError):
        await engine.wait_for_room(1, TIMEOUT)


async def test_the_engine_reconnects_by_itself_once_the_server_is_back(
    own_server: RedisServer, engines: Opener
) -> None:
    engine = await engines(queue_address(own_server.url, unique_name()))
    await engine.put(b"before", 0)
    await own_server.kill()
    with pytest.raises(QueueConnectionError):
        await engine.put(b"lost", 0)
    await own_server.start()
    assert await engine.put(b"after", 0)
    assert [await engine.get(), await engine.get(), await engine.get()] == [
        b"before",
        b"after",
        None,
    ]


async def test_a_wait_blocked_when_the_server_dies_raises_queue_connection_error(
    own_server: RedisServer, engines: Opener
) -> None:
    address = queue_address(own_server.url, unique_name())
    engine = await engines(address)
    async with watching(own_server.url) as seen:
        waiting = asyncio.create_task(engine.wait_for_items(TIMEOUT))
        await seen("BLMOVE", f"aiodiskqueue:{{{name_of(address)}}}")
        await own_server.kill()
    with pytest.raises(QueueConnectionError, match="Lost the connection"):
        await within(waiting)


async def test_a_put_whose_reply_is_lost_says_it_may_have_taken_effect(
    own_server: RedisServer, engines: Opener
) -> None:
    name = unique_name()
    engine = await engines(queue_address(f"{own_server.url}?socket_timeout=0.2", name))
    control = redis.asyncio.Redis.from_url(own_server.url)
    try:
        # The server takes the put, and holds it without a reply until it is unpaused.
        await control.client_pause(60_000, all=False)
        with pytest.raises(QueueConnectionError, match="the put may or may not have taken"):
            await within(engine.put(b"item", 0))
        await control.client_unpause()
    finally:
        await control.aclose()
    assert await engine.put(b"next", 0)
    assert (await held(own_server.url, name))[-1] == b"next"


@pytest.mark.parametrize(
    ("options", "logged"),
    [
        (("--appendonly", "no"), "appendonly no"),
        (("--appendonly", "yes", "--appendfsync", "everysec"), "appendfsync everysec"),
        (DURABLE, None),
    ],
)
async def test_opening_for_power_loss_logs_when_the_server_cannot_keep_the_promise(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    options: tuple[str, ...],
    logged: str | None,
) -> None:
    if not available():
        unreachable("redis", "redis-server", "redis-server is not on PATH")
    own = RedisServer(tmp_path, *options)
    await own.start()
    try:
        engine = RedisEngine(queue_address(own.url, unique_name()))
        with caplog.at_level(logging.INFO, logger="aiodiskqueue"):
            await engine.open(OpenOptions(fsync=True))
        await engine.close()
    finally:
        await own.kill()
    messages = [
        record.getMessage() for record in caplog.records if record.name.startswith("aiodiskqueue")
    ]
    if logged is None:
        assert not any("append" in message for message in messages)
    else:
        assert any(logged in message for message in messages)


async def test_opening_an_unreachable_server_raises_queue_connection_error() -> None:
    engine = RedisEngine(queue_address(f"redis://127.0.0.1:{free_port()}/0", unique_name()))
    with pytest.raises(QueueConnectionError, match="Could not reach Redis at"):
        await engine.open()


async def test_an_engine_that_is_not_open_raises_runtime_error(address: str) -> None:
    engine = RedisEngine(address)
    with pytest.raises(RuntimeError, match="not open"):
        await engine.put(b"item", 0)
    await engine.open()
    await engine.close()
    with pytest.raises(RuntimeError, match="not open"):
        await engine.get()


async def test_waits_with_no_time_left_return_at_once(address: str, engines: Opener) -> None:
    engine = await engines(address)
    await engine.put(b"item", 1)
    await within(engine.wait_for_room(1, 0))
    await within(engine.wait_for_items(0))
    assert engine.size() == 1


async def test_a_server_that_does_not_answer_a_wait_raises_queue_connection_error(
    own_server: RedisServer, engines: Opener
) -> None:
    engine = await engines(queue_address(f"{own_server.url}?socket_timeout=0.2", unique_name()))
    control = redis.asyncio.Redis.from_url(own_server.url)
    try:
        await control.client_pause(60_000, all=False)  # BLMOVE writes
        with pytest.raises(QueueConnectionError, match="did not answer"):
            await within(engine.wait_for_items(0.1))
        await control.client_unpause()
    finally:
        await control.aclose()


async def test_a_server_that_forbids_config_opens_without_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if not available():
        unreachable("redis", "redis-server", "redis-server is not on PATH")
    own = RedisServer(tmp_path, "--appendonly", "no", "--rename-command", "CONFIG", "")
    await own.start()
    try:
        engine = RedisEngine(queue_address(own.url, unique_name()))
        with caplog.at_level(logging.INFO, logger="aiodiskqueue"):
            assert await engine.open(OpenOptions(meta={"serializer": "pickle"})) == {
                "serializer": "pickle"
            }
        assert await engine.put(b"item", 0)
        await engine.close()
    finally:
        await own.kill()
    assert not any("append" in record.getMessage() for record in caplog.records)


# Through the public API


async def test_queue_create_opens_a_shared_queue_on_redis(address: str) -> None:
    producer: Queue[dict[str, int]] = await Queue.create(address, cls_storage_engine=RedisEngine)
    consumer: Queue[dict[str, int]] = await Queue.create(address, cls_storage_engine=RedisEngine)
    async with producer, consumer:
        for item in ({"job": 1}, {"job": 2}):
            await within(producer.put(item))
        assert producer.qsize() == 2
        assert [await within(consumer.get()) for _ in range(2)] == [{"job": 1}, {"job": 2}]
        assert consumer.qsize() == 0
