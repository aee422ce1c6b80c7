"""PostgresEngine against real PostgreSQL servers: the shared engine contract, and restarts.

Most tests use the server at POSTGRES_URL, each with a queue of its own (from
`servers.postgres_queue`, which drops it afterwards). The restart tests crash and start a
cluster of their own (see `postgres_server`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import pytest

from aiodiskqueue import Queue, QueueConnectionError
from aiodiskqueue.engines import OpenOptions
from aiodiskqueue.engines.postgres import PostgresEngine

from .conftest import POSTGRES_URL, unique_name, unreachable
from .helpers import free_port, started, within
from .postgres_server import PostgresServer, find_binaries
from .servers import postgres_queue, queue_address

Opener = Callable[..., Awaitable[PostgresEngine]]

LONG = 60.0
"""A wait's own timeout where the test expects something else to end the wait first."""


async def connect(url: str) -> asyncpg.Connection:
    return await within(asyncpg.connect(url))


async def stored(url: str, name: str) -> tuple[list[bytes], int]:
    """The items in queue `name`, in order, and the size its row counts."""
    connection = await connect(url)
    try:
        rows = await connection.fetch(f'SELECT data FROM "aiodiskqueue_{name}" ORDER BY id')
        size = await connection.fetchval(
            "SELECT size FROM aiodiskqueue_queues WHERE name = $1", name
        )
    finally:
        await connection.close()
    return [row["data"] for row in rows], size


@pytest.fixture
async def address() -> AsyncIterator[str]:
    """A queue of the test's own on the server at POSTGRES_URL, dropped afterwards."""
    async with postgres_queue() as address:
        yield address


@pytest.fixture
def name(address: str) -> str:
    return PostgresEngine(address).name


@pytest.fixture
async def engines() -> AsyncIterator[Callable[..., Awaitable[PostgresEngine]]]:
    """Opens engines at an address, with options; closes them after the test."""
    opened: list[PostgresEngine] = []

    async def open_engine(at: str, options: OpenOptions | None = None) -> PostgresEngine:
        engine = PostgresEngine(at)
        opened.append(engine)
        await within(engine.open(options or OpenOptions()))
        return engine

    yield open_engine
    for engine in opened:
        await within(engine.close())


@pytest.fixture
def opened(engines: Callable[..., Awaitable[PostgresEngine]], address: str) -> Opener:
    """Opens engines on the test's queue (or, told `at`, elsewhere), with options."""

    def open_engine(
        options: OpenOptions | None = None, at: str | None = None
    ) -> Awaitable[PostgresEngine]:
        return engines(at or address, options)

    return open_engine


# The contract on one engine.


async def test_items_come_out_in_the_order_they_were_put(opened: Opener) -> None:
    engine = await opened()
    for item in (b"first", b"second", b"third"):
        assert await engine.put(item, 0)
    assert [await engine.get() for _ in range(3)] == [b"first", b"second", b"third"]


async def test_get_from_an_empty_queue_returns_none(opened: Opener) -> None:
    engine = await opened()
    assert await engine.get() is None
    assert engine.size() == 0


async def test_a_put_into_a_full_queue_returns_false_and_changes_nothing(
    opened: Opener, name: str
) -> None:
    engine = await opened()
    assert await engine.put(b"one", 2)
    assert await engine.put(b"two", 2)
    assert not await engine.put(b"three", 2)
    assert engine.size() == 2
    assert await stored(POSTGRES_URL, name) == ([b"one", b"two"], 2)


async def test_maxsize_zero_or_less_means_no_limit(opened: Opener) -> None:
    engine = await opened()
    assert all([await engine.put(b"item", maxsize) for maxsize in (0, -1, 0, -5)])
    assert engine.size() == 4


async def test_size_counts_the_engines_own_puts_and_gets(opened: Opener) -> None:
    engine = await opened()
    await engine.put(b"one", 0)
    await engine.put(b"two", 0)
    assert engine.size() == 2
    await engine.get()
    assert engine.size() == 1


async def test_size_follows_another_engines_puts_and_gets(opened: Opener) -> None:
    watcher, other = await opened(), await opened()
    await other.put(b"item", 0)
    await within(watcher.wait_for_items(LONG))
    assert watcher.size() == 1
    await other.get()
    await within(watcher.wait_for_room(1, LONG))
    assert watcher.size() == 0


async def test_drop_deletes_the_table_and_the_row_of_the_queue(opened: Opener, name: str) -> None:
    engine = await opened()
    await engine.put(b"item", 0)
    await engine.drop()
    connection = await connect(POSTGRES_URL)
    try:
        table = await connection.fetchval("SELECT to_regclass($1)", f"aiodiskqueue_{name}")
        row = await connection.fetchrow("SELECT 1 FROM aiodiskqueue_queues WHERE name = $1", name)
    finally:
        await connection.close()
    assert (table, row, engine.size()) == (None, None, 0)


async def test_opening_counts_the_items_already_there(opened: Opener) -> None:
    first = await opened()
    await first.put(b"one", 0)
    await first.put(b"two", 0)
    await first.close()
    second = await opened()
    assert second.size() == 2
    assert await second.get() == b"one"


async def test_meta_is_written_once_and_returned_on_reopen(address: str) -> None:
    for meta in ({"format": "json"}, {"format": "pickle", "other": "x"}):
        engine = PostgresEngine(address)
        try:
            assert await within(engine.open(OpenOptions(meta=meta))) == {"format": "json"}
        finally:
            await engine.close()


async def test_engines_opening_a_new_queue_at_once_share_it(opened: Opener, name: str) -> None:
    engines = await within(
        asyncio.gather(*(opened(OpenOptions(meta={"n": str(n)})) for n in range(5)))
    )
    await engines[0].put(b"item", 0)
    assert await engines[4].get() == b"item"
    connection = await connect(POSTGRES_URL)
    try:
        meta = await connection.fetchval(
            "SELECT meta FROM aiodiskqueue_queues WHERE name = $1", name
        )
    finally:
        await connection.close()
    assert meta in {f'{{"n": "{n}"}}' for n in range(5)}


# Waiting.


async def test_wait_for_items_wakes_when_another_engine_puts(opened: Opener) -> None:
    waiter, putter = await opened(), await opened()
    waiting = await started(asyncio.create_task(waiter.wait_for_items(LONG)))
    await putter.put(b"item", 0)
    await within(waiting)
    assert waiter.size() == 1


async def test_wait_for_items_times_out_on_an_empty_queue_and_changes_nothing(
    opened: Opener, name: str
) -> None:
    engine = await opened()
    await within(engine.wait_for_items(0.05))
    assert engine.size() == 0
    assert await stored(POSTGRES_URL, name) == ([], 0)


async def test_wait_for_items_returns_at_once_when_there_are_items_and_takes_none(
    opened: Opener,
) -> None:
    engine = await opened()
    await engine.put(b"item", 0)
    await within(engine.wait_for_items(LONG))
    assert await engine.get() == b"item"


async def test_cancelling_wait_for_items_loses_nothing(opened: Opener) -> None:
    waiter, putter = await opened(), await opened()
    waiting = await started(asyncio.create_task(waiter.wait_for_items(LONG)))
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await putter.put(b"item", 0)
    await within(waiter.wait_for_items(LONG))
    assert await waiter.get() == b"item"


async def test_wait_for_room_wakes_when_another_engine_gets(opened: Opener) -> None:
    putter, getter = await opened(), await opened()
    await putter.put(b"item", 1)
    waiting = await started(asyncio.create_task(putter.wait_for_room(1, LONG)))
    assert await getter.get() == b"item"
    await within(waiting)
    assert putter.size() == 0
    assert await putter.put(b"next", 1)


async def test_wait_for_room_without_maxsize_returns_at_once(opened: Opener) -> None:
    engine = await opened()
    await engine.put(b"item", 0)
    await within(engine.wait_for_room(0, LONG))
    assert engine.size() == 1


async def test_a_wait_after_the_listening_connection_was_lost_listens_again(
    opened: Opener,
) -> None:
    waiter, putter = await opened(), await opened()
    connection = await connect(POSTGRES_URL)
    try:
        # The listening connection is the engine's own business: end it from the server.
        pid = waiter._listener.get_server_pid()
        assert await connection.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await connection.close()
    await putter.put(b"item", 0)

    async def hear_of_the_item() -> None:
        while waiter.size() == 0:  # a wait may return early when its connection is lost
            await waiter.wait_for_items(LONG)

    await within(hear_of_the_item())
    await putter.get()
    await within(waiter.wait_for_room(1, LONG))
    waiting = await started(asyncio.create_task(waiter.wait_for_items(LONG)))
    await putter.put(b"again", 0)
    await within(waiting)
    assert waiter.size() == 1


# Several engines at once.


async def test_every_item_goes_to_exactly_one_of_many_concurrent_getters(
    opened: Opener,
) -> None:
    putter = await opened()
    items = [b"%d" % n for n in range(300)]
    for item in items:
        await putter.put(item, 0)
    getters = [await opened() for _ in range(3)]

    async def take_all(engine: PostgresEngine) -> list[bytes]:
        taken = []
        while (item := await engine.get()) is not None:
            taken.append(item)
        return taken

    takes = await within(
        asyncio.gather(*(take_all(engine) for engine in getters for _ in range(8)))
    )
    everything = [item for take in takes for item in take]
    assert sorted(everything) == sorted(items)
    assert all(take == sorted(take, key=int) for take in takes)  # each getter in FIFO order


async def test_concurrent_puts_from_several_engines_never_exceed_maxsize(
    opened: Opener, name: str
) -> None:
    engines = [await opened() for _ in range(3)]

    async def put_five(engine: PostgresEngine, task: int) -> int:
        return sum([await engine.put(b"%d-%d" % (task, n), 7) for n in range(5)])

    puts = await within(
        asyncio.gather(*(put_five(engine, task) for engine in engines for task in range(10)))
    )
    assert sum(puts) == 7
    items, size = await stored(POSTGRES_URL, name)
    assert len(items) == size == 7


async def test_queue_create_makes_a_queue_on_postgres(address: str) -> None:
    queue: Queue[dict[str, int]] = await within(
        Queue.create(address, cls_storage_engine=PostgresEngine)
    )
    try:
        await within(queue.put({"job": 1}))
        await within(queue.put({"job": 2}))
        assert queue.qsize() == 2
        assert await within(queue.get()) == {"job": 1}
        assert queue.qsize() == 1
    finally:
        await within(queue.close())


# Addresses, options and errors.


@pytest.mark.parametrize(
    "address",
    [
        "postgresql://127.0.0.1/test",  # no queue name
        "postgresql://127.0.0.1/test/",  # an empty queue name
        "postgresql://127.0.0.1/test/jobs;drop",
        "postgresql://127.0.0.1/test/jobs%22x",
        "postgresql://127.0.0.1/test/" + "x" * 51,
        "postgresql://127.0.0.1/a/b/jobs",  # a database name with a slash
        "postgresql://127.0.0.1//jobs",
        "redis://127.0.0.1/0/jobs",
        "/var/lib/queues/jobs",
    ],
)
def test_a_bad_address_raises_value_error(address: str) -> None:
    with pytest.raises(ValueError, match="PostgresEngine"):
        PostgresEngine(address)


def test_repr_shows_the_address_with_stars_for_its_passwords() -> None:
    engine = PostgresEngine("postgresql://user:secret@db.example:5433/app/jobs?password=secret")
    assert repr(engine) == (
        "PostgresEngine('postgresql://user:***@db.example:5433/app/jobs?password=***')"
    )


async def test_query_parameters_of_the_address_reach_the_server(opened: Opener, name: str) -> None:
    await opened(at=queue_address(POSTGRES_URL, name, application_name=name))
    connection = await connect(POSTGRES_URL)
    try:
        sessions = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name
        )
    finally:
        await connection.close()
    assert sessions >= 2  # the listening connection and one of the pool


@pytest.mark.parametrize(("fsync", "expected"), [(True, "on"), (False, "off")])
async def test_fsync_turns_synchronous_commit_on_where_it_is_off(
    opened: Opener, name: str, fsync: bool, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    at = queue_address(POSTGRES_URL, name, synchronous_commit="off")
    with caplog.at_level(logging.INFO, logger="aiodiskqueue"):
        engine = await opened(OpenOptions(fsync=fsync), at=at)
    async with engine._pool.acquire() as connection:  # the engine's own session
        assert await connection.fetchval("SHOW synchronous_commit") == expected
    said = [record for record in caplog.records if "synchronous_commit" in record.getMessage()]
    assert [record.levelno for record in said] == ([logging.INFO] if fsync else [])


CLIENT_SIDE_FAILURES = {
    "internal-client-error": asyncpg.InternalClientError("not connected"),
    "protocol-error": asyncpg.ProtocolError("unexpected message"),
}
"""What asyncpg raises from its own side when a connection breaks in an unexpected state,
as when the server is killed mid-operation."""


@pytest.mark.parametrize("failure", list(CLIENT_SIDE_FAILURES))
async def test_a_client_side_connection_failure_raises_queue_connection_error(
    opened: Opener, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    engine = await opened()

    async def broken(connection: asyncpg.Connection, *args: object, **kwargs: object) -> None:
        raise CLIENT_SIDE_FAILURES[failure]

    with monkeypatch.context() as patched:
        patched.setattr(asyncpg.Connection, "fetchrow", broken)
        for operation in (engine.put(b"item", 0), engine.get()):
            with pytest.raises(QueueConnectionError, match="may or may not have committed"):
                await within(operation)
    assert await within(engine.put(b"after", 0))


async def test_a_connection_closed_under_an_operation_raises_queue_connection_error(
    opened: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await opened()
    fetchrow = asyncpg.Connection.fetchrow

    async def closed_first(connection: asyncpg.Connection, *args: object, **kwargs: object) -> Any:
        connection.terminate()  # as a broken socket would, just before the statement
        return await fetchrow(connection, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(asyncpg.Connection, "fetchrow", closed_first)
        with pytest.raises(QueueConnectionError, match="may or may not have committed"):
            await within(engine.put(b"item", 0))
    assert await within(engine.put(b"after", 0))
    assert await within(engine.get()) == b"after"


@pytest.mark.parametrize(
    ("credentials", "database", "reason"),
    [
        ("postgres", "no_such_database", 'database "no_such_database" does not exist'),
        ("no_such_role", "test", 'role "no_such_role" does not exist'),
    ],
)
async def test_a_connection_the_server_refuses_raises_queue_connection_error(
    credentials: str, database: str, reason: str
) -> None:
    parts = urllib.parse.urlsplit(POSTGRES_URL)
    server = parts._replace(netloc=f"{credentials}@{parts.hostname}:{parts.port or 5432}")
    address = f"{urllib.parse.urlunsplit(server._replace(path=''))}/{database}/jobs"
    for attempt in (PostgresEngine(address).exists(), PostgresEngine(address).open()):
        with pytest.raises(QueueConnectionError, match=reason):
            await within(attempt)


async def test_opening_with_no_server_raises_queue_connection_error() -> None:
    port = free_port()
    engine = PostgresEngine(f"postgresql://postgres:secret@127.0.0.1:{port}/test/jobs")
    with pytest.raises(QueueConnectionError, match=f"127.0.0.1:{port}") as raised:
        await within(engine.open())
    assert "secret" not in str(raised.value)


# Restarts of a server of the tests' own.


@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgresServer]:
    binaries = find_binaries()
    if binaries is None:
        unreachable("postgres", "a cluster of the tests' own", "initdb is not installed")
    assert binaries is not None
    server = PostgresServer(binaries)
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
async def server(own_server: PostgresServer) -> PostgresServer:
    """The tests' own server, running (a test before may have left it stopped)."""
    if not await asyncio.to_thread(own_server.running):
        await asyncio.to_thread(own_server.start)
    return own_server


async def test_every_item_whose_put_returned_survives_a_crash(
    server: PostgresServer, engines: Opener
) -> None:
    name = unique_name()
    engine = await engines(queue_address(server.url, name))
    returned: list[int] = []
    enough = asyncio.Event()

    async def put_until_it_fails() -> int:
        for n in itertools.count():
            try:
                await engine.put(b"%d" % n, 0)
            except QueueConnectionError:
                return n  # its put may or may not have been committed
            returned.append(n)
            if len(returned) == 100:
                enough.set()
        raise AssertionError("unreachable")

    putting = asyncio.create_task(put_until_it_fails())
    await within(enough.wait())
    await asyncio.to_thread(server.crash)
    in_doubt = await within(putting)
    await asyncio.to_thread(server.start)

    items, size = await stored(server.url, name)
    kept = [int(item) for item in items]
    assert kept in (returned, [*returned, in_doubt])
    assert size == len(kept)


async def test_an_operation_during_an_outage_raises_queue_connection_error(
    server: PostgresServer, engines: Opener
) -> None:
    address = queue_address(server.url.replace("postgres@", "postgres:secret@"), unique_name())
    engine = await engines(address)
    await asyncio.to_thread(server.crash)
    with pytest.raises(QueueConnectionError, match=f"127.0.0.1:{server.port}") as raised:
        await within(engine.put(b"item", 0))
    assert "secret" not in str(raised.value)


async def test_the_same_engine_works_again_after_the_server_restarts(
    server: PostgresServer, engines: Opener
) -> None:
    engine = await engines(queue_address(server.url, unique_name()))
    assert await engine.put(b"before", 0)
    await asyncio.to_thread(server.crash)
    with pytest.raises(QueueConnectionError):
        await within(engine.get())
    await asyncio.to_thread(server.start)
    assert await within(engine.put(b"after", 0))
    assert [await within(engine.get()) for _ in range(2)] == [b"before", b"after"]


async def test_waits_wake_again_after_the_server_restarts(
    server: PostgresServer, engines: Opener
) -> None:
    address = queue_address(server.url, unique_name())
    waiter = await engines(address)
    await asyncio.to_thread(server.crash)
    await asyncio.to_thread(server.start)
    putter = await engines(address)
    waiting = asyncio.create_task(waiter.wait_for_items(LONG))
    await putter.put(b"item", 0)
    await within(waiting)
    assert waiter.size() == 1
