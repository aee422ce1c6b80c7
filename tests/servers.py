"""Queues of a test's own on the Redis and PostgreSQL servers that the tests are given.

Each context manager checks that its server answers (skipping the test, or failing it where
servers are required, if it does not), yields the address of a queue that no other test
uses, and deletes that queue afterwards with the engine's `drop()`.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiodiskqueue.engines import SharedStorageEngine

from .conftest import POSTGRES_URL, REDIS_URL, unique_name, unreachable

ANSWER_TIMEOUT = 10.0
"""Seconds a server may take to answer before it counts as unreachable."""


def queue_address(database_url: str, name: str, **parameters: str) -> str:
    """The address of the queue `name` in the database at `database_url`."""
    parts = urllib.parse.urlsplit(database_url)
    query = "&".join(filter(None, [parts.query, urllib.parse.urlencode(parameters)]))
    return urllib.parse.urlunsplit(
        parts._replace(path=f"{parts.path.rstrip('/')}/{name}", query=query)
    )


async def drop(engine_class: type[SharedStorageEngine], address: str) -> None:
    """Delete the queue at `address` from its server, with the engine's own `drop()`."""
    engine: Any = engine_class(address)
    await asyncio.wait_for(engine.open(), ANSWER_TIMEOUT)
    try:
        await asyncio.wait_for(engine.drop(), ANSWER_TIMEOUT)
    finally:
        await engine.close()


@asynccontextmanager
async def redis_queue(url: str = REDIS_URL) -> AsyncIterator[str]:
    """A queue of the test's own on the Redis server at `url`."""
    import redis.asyncio
    import redis.exceptions

    from aiodiskqueue.engines import RedisEngine

    client = redis.asyncio.Redis.from_url(url)
    try:
        await asyncio.wait_for(client.ping(), ANSWER_TIMEOUT)
    except (redis.exceptions.RedisError, OSError, asyncio.TimeoutError) as exc:
        unreachable("redis", url, exc)
    finally:
        await client.aclose()
    address = queue_address(url, unique_name())
    try:
        yield address
    finally:
        await drop(RedisEngine, address)


@asynccontextmanager
async def postgres_queue(url: str = POSTGRES_URL) -> AsyncIterator[str]:
    """A queue of the test's own in the PostgreSQL database at `url`."""
    import asyncpg  # type: ignore[import-untyped]

    from aiodiskqueue.engines import PostgresEngine

    try:
        connection = await asyncio.wait_for(asyncpg.connect(url), ANSWER_TIMEOUT)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
        unreachable("postgres", url, exc)
    await connection.close()
    address = queue_address(url, unique_name())
    try:
        yield address
    finally:
        await drop(PostgresEngine, address)
