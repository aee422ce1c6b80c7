"""The servers of the shared engines, as the measurements use them: a queue of its own for each
row, whether a server answers, and removing a queue afterwards.

A queue on a server is named by its address, the server's URL with the queue's name as the
last path segment (``redis://127.0.0.1:6379/0/measure_0123456789ab``). Each row gets a name
no other row uses, so rows never see each other's items, and the queue is removed with the
engine's own ``drop()`` when the row is done.

The client libraries (redis, asyncpg) are imported only when a server engine is measured.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiodiskqueue import engines

REDIS = "RedisEngine"
POSTGRES = "PostgresEngine"
DEFAULT_URLS = {
    REDIS: "redis://127.0.0.1:6379/0",
    POSTGRES: "postgresql://postgres@127.0.0.1:5432/test",
}
SERVER_ENGINES = tuple(DEFAULT_URLS)
"""The shared engines that keep their queue on a server, not in a local file."""
SERVER_NAMES = {REDIS: "Redis", POSTGRES: "PostgreSQL"}
ANSWER_TIMEOUT = 3.0


def unique_name() -> str:
    """A queue name that no other row uses, valid for every server engine."""
    return f"measure_{uuid.uuid4().hex[:12]}"


def queue_address(url: str, name: str) -> str:
    """The address of the queue `name` on the server at `url`: the name as the last path
    segment, before any query string."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{name}"))


def queue_name(address: str) -> str:
    return urlsplit(address).path.rpartition("/")[2]


def server_url(address: str) -> str:
    parts = urlsplit(address)
    return urlunsplit(parts._replace(path=parts.path.rpartition("/")[0]))


def problem(engine: str, url: str) -> str | None:
    """Why the server of `engine` at `url` cannot be measured, or None if it answers."""
    try:
        if engine == REDIS:
            with _redis(url) as client:
                client.ping()
        else:
            asyncio.run(_postgres(url, "SELECT 1"))
    except ImportError as error:
        return f"{engine} needs {error.name}, which is not installed"
    except Exception as error:
        return f"{SERVER_NAMES[engine]} at {url} does not answer ({error})"
    return None


def drop_queue(engine: str, address: str) -> None:
    """Remove the queue at `address` and everything the engine stored for it."""
    asyncio.run(_drop(getattr(engines, engine), address))


async def _drop(engine_class: Any, address: str) -> None:
    engine = engine_class(address)
    await engine.open()
    try:
        await engine.drop()
    finally:
        await engine.close()


def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(
        url, socket_timeout=ANSWER_TIMEOUT, socket_connect_timeout=ANSWER_TIMEOUT
    )


async def _postgres(url: str, query: str) -> None:
    import asyncpg  # type: ignore[import-untyped, unused-ignore]

    connection = await asyncpg.connect(url, timeout=ANSWER_TIMEOUT)
    try:
        await connection.execute(query)
    finally:
        await connection.close()
