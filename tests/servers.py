"""Queues of a test's own on the Redis and PostgreSQL servers that the tests are given.

Each context manager checks that its server answers (skipping the test, or failing it where
servers are required, if it does not), yields the address of a queue that no other test
uses, and deletes that queue's data afterwards.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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


def redis_keys(name: str) -> str:
    """A pattern that matches every key of the Redis queue `name`."""
    return f"aiodiskqueue:{{{name}}}*"


@asynccontextmanager
async def redis_queue(url: str = REDIS_URL) -> AsyncIterator[str]:
    """A queue of the test's own on the Redis server at `url`."""
    import redis.asyncio
    import redis.exceptions

    client = redis.asyncio.Redis.from_url(url)
    try:
        await asyncio.wait_for(client.ping(), ANSWER_TIMEOUT)
    except (redis.exceptions.RedisError, OSError, asyncio.TimeoutError) as exc:
        await client.aclose()
        unreachable("redis", url, exc)
    name = unique_name()
    try:
        yield queue_address(url, name)
    finally:
        keys = await client.keys(redis_keys(name))
        if keys:
            await client.delete(*keys)
        await client.aclose()


@asynccontextmanager
async def postgres_queue(url: str = POSTGRES_URL) -> AsyncIterator[str]:
    """A queue of the test's own in the PostgreSQL database at `url`."""
    import asyncpg  # type: ignore[import-untyped]

    try:
        connection = await asyncio.wait_for(asyncpg.connect(url), ANSWER_TIMEOUT)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
        unreachable("postgres", url, exc)
    name = unique_name()
    try:
        yield queue_address(url, name)
    finally:
        await connection.execute(f'DROP TABLE IF EXISTS "aiodiskqueue_{name}"')
        if await connection.fetchval("SELECT to_regclass('aiodiskqueue_queues') IS NOT NULL"):
            await connection.execute("DELETE FROM aiodiskqueue_queues WHERE name = $1", name)
        await connection.close()
