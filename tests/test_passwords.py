"""No password of a server address is shown: not in a repr, an exception, a log line, nor
the command line's output. Each shows the address with ``***`` for the password.

The Redis tests run a redis-server of their own that requires a password; the PostgreSQL
ones use the server at POSTGRES_URL, which takes (and, with trust authentication, ignores)
the password given.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aiodiskqueue import Queue, QueueClosedError, QueueConnectionError
from aiodiskqueue.engines import SharedStorageEngine
from aiodiskqueue.engines.contracts.shared import redacted

from .conftest import unique_name, unreachable
from .helpers import free_port, within
from .redis_server import RedisServer, available
from .servers import postgres_queue, queue_address
from .test_cli import failed, run, succeeded

SECRET = "s3cret-Pa55"
"""The password of every address here: no output may hold it."""

FORMS = ["password", "user-and-password", "query"]
"""The ways an address carries a password: ``:SECRET@``, ``USER:SECRET@``, ``?password=``."""


def with_password(address: str, form: str, user: str) -> tuple[str, str]:
    """`address` with `SECRET` in it, in `form` (as `user` for "user-and-password"); and
    how the address must be shown."""
    parts = urllib.parse.urlsplit(address)
    host = parts.netloc.rpartition("@")[2]
    if form == "query":
        query = "&".join(filter(None, [parts.query, f"password={SECRET}"]))
        parts = parts._replace(netloc=host, query=query)
    else:
        login = "" if form == "password" else user
        parts = parts._replace(netloc=f"{login}:{SECRET}@{host}")
    with_secret = urllib.parse.urlunsplit(parts)
    return with_secret, with_secret.replace(SECRET, "***")


# The helper


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        (f"redis://:{SECRET}@127.0.0.1:6379/0/jobs", "redis://:***@127.0.0.1:6379/0/jobs"),
        (f"rediss://user:{SECRET}@host:6380/2/jobs", "rediss://user:***@host:6380/2/jobs"),
        (f"unix://:{SECRET}@/run/redis.sock/jobs?db=0", "unix://:***@/run/redis.sock/jobs?db=0"),
        (
            f"postgresql://postgres:{SECRET}@db:5432/test/jobs",
            "postgresql://postgres:***@db:5432/test/jobs",
        ),
        (
            f"redis://127.0.0.1:6379/0/jobs?socket_timeout=1&password={SECRET}",
            "redis://127.0.0.1:6379/0/jobs?socket_timeout=1&password=***",
        ),
        (
            f"postgresql://u@db/test/jobs?PASSWORD={SECRET}&sslpassword={SECRET}#x",
            "postgresql://u@db/test/jobs?PASSWORD=***&sslpassword=***#x",
        ),
        (f"redis://:{SECRET}@@[::1]:6379/0/jobs", "redis://:***@[::1]:6379/0/jobs"),
        (f"redis://:{SECRET}%40%2F@h/0/jobs", "redis://:***@h/0/jobs"),
        (f"redis://:{SECRET}/more@h:6379/0/jobs", "redis://:***@h:6379/0/jobs"),
        (f"redis://:{SECRET}?more@h:6379/0/jobs", "redis://:***@h:6379/0/jobs"),
        (f"redis://:{SECRET}#more@h:6379/0/jobs", "redis://:***@h:6379/0/jobs"),
    ],
)
def test_redacted_shows_stars_for_the_password_of_an_address(address: str, shown: str) -> None:
    assert redacted(address) == shown


@pytest.mark.parametrize(
    "address",
    [
        "redis://127.0.0.1:6379/0/jobs",
        "redis://user@127.0.0.1:6379/0/jobs",
        "redis://127.0.0.1:6379/0/me@example.org",
        "redis://[::1]:6379/0/jobs?db=1",
        "unix:///run/redis.sock/jobs?db=0",
        "postgresql://postgres@127.0.0.1:5432/test/jobs?application_name=a:b@c",
        "/var/lib/queues/jobs.queue",
        "jobs.queue",
    ],
)
def test_redacted_leaves_an_address_without_a_password_as_it_is(address: str) -> None:
    assert redacted(address) == address


# Redis


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A redis-server of the test's own that requires the password `SECRET`."""
    if not available():
        unreachable("redis", "redis-server", "redis-server is not on PATH")
    own = RedisServer(tmp_path, password=SECRET)
    await own.start()
    yield own
    await own.kill()


def redis_address(server: RedisServer, form: str) -> tuple[str, str]:
    """A queue's address on `server`, with the password in `form`, and how it is shown."""
    plain = queue_address(server.url.replace(f":{SECRET}@", ""), unique_name())
    return with_password(plain, form, "default")


@pytest.mark.parametrize("form", FORMS)
async def test_a_redis_queue_shows_no_password_in_reprs_logs_or_errors(
    redis_server: RedisServer, form: str, caplog: pytest.LogCaptureFixture
) -> None:
    from aiodiskqueue.engines import RedisEngine

    address, shown = redis_address(redis_server, form)
    await shows_no_password(RedisEngine, address, shown, caplog)
    # A server that is gone: the engine says where it was.
    queue: Queue[str] = await within(Queue.create(address, cls_storage_engine=RedisEngine))
    async with queue:
        await redis_server.kill()
        with caplog.at_level(logging.DEBUG), pytest.raises(QueueConnectionError) as lost:
            await within(queue.put("item"))
    assert f"127.0.0.1:{redis_server.port}" in str(lost.value)
    assert SECRET not in str(lost.value)
    assert SECRET not in caplog.text


def test_a_malformed_redis_address_is_reported_without_its_password() -> None:
    from aiodiskqueue.engines import RedisEngine

    with pytest.raises(ValueError, match="queue name") as raised:
        RedisEngine(f"redis://:{SECRET}@127.0.0.1:6379/jobs")
    assert SECRET not in str(raised.value)
    assert "redis://:***@127.0.0.1:6379/jobs" in str(raised.value)


# PostgreSQL


@pytest.fixture
async def postgres_address() -> AsyncIterator[str]:
    """A queue of the test's own at POSTGRES_URL, dropped afterwards."""
    async with postgres_queue() as address:
        yield address


@pytest.mark.parametrize("form", FORMS)
async def test_a_postgres_queue_shows_no_password_in_reprs_logs_or_errors(
    postgres_address: str, form: str, caplog: pytest.LogCaptureFixture
) -> None:
    from aiodiskqueue.engines import PostgresEngine

    address, shown = with_password(postgres_address, form, "postgres")
    await shows_no_password(PostgresEngine, address, shown, caplog)
    nowhere = with_password(
        queue_address(f"postgresql://postgres@127.0.0.1:{free_port()}/test", "jobs"),
        form,
        "postgres",
    )[0]
    with caplog.at_level(logging.DEBUG), pytest.raises(QueueConnectionError) as unreached:
        await within(Queue.create(nowhere, cls_storage_engine=PostgresEngine))
    assert SECRET not in str(unreached.value)
    assert SECRET not in caplog.text


async def shows_no_password(
    engine: type[SharedStorageEngine],
    address: str,
    shown: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Check the reprs of an engine and a queue at `address`, the log of their life at
    DEBUG, and the error of a closed queue: each shows the address as `shown`."""
    assert repr(engine(address)) == f"{engine.__name__}({shown!r})"
    with caplog.at_level(logging.DEBUG):
        queue: Queue[str] = await within(Queue.create(address, cls_storage_engine=engine))
        async with queue:
            await within(queue.put("item"))
            assert await within(queue.get()) == "item"
            assert shown in repr(queue)
            assert SECRET not in repr(queue)
        with pytest.raises(QueueClosedError) as closed:
            await queue.put("late")
    assert shown in str(closed.value)
    assert SECRET not in str(closed.value)
    assert shown in caplog.text  # the engine's DEBUG lines name it
    assert SECRET not in caplog.text


def test_a_malformed_postgres_address_is_reported_without_its_password() -> None:
    from aiodiskqueue.engines import PostgresEngine

    for address in (
        f"postgresql://postgres:{SECRET}@127.0.0.1/a/b/jobs",
        f"postgresql://postgres:{SECRET}@127.0.0.1/test/bad;name",
        f"postgresq://postgres:{SECRET}@127.0.0.1/test/jobs",
    ):
        with pytest.raises(ValueError, match="PostgresEngine") as raised:
            PostgresEngine(address)
        assert SECRET not in str(raised.value)


# The command line


def cli_succeeds(*args: object, cwd: Path) -> str:
    output = succeeded(run(*args, cwd=cwd))
    assert SECRET not in output
    return output


def cli_fails(*args: object, cwd: Path) -> str:
    line = failed(run(*args, cwd=cwd))
    assert SECRET not in line
    return line


@pytest.mark.parametrize("form", FORMS)
async def test_the_command_line_shows_no_redis_password(
    redis_server: RedisServer, tmp_path: Path, form: str
) -> None:
    address, shown = redis_address(redis_server, form)
    await commands_show_no_password("RedisEngine", address, shown, tmp_path)
    await redis_server.kill()
    line = await asyncio.to_thread(
        cli_fails, "import", address, "items.jsonl", "--engine", "RedisEngine", cwd=tmp_path
    )
    assert redacted(address).split("/0/")[0] in line


@pytest.mark.parametrize("form", FORMS)
async def test_the_command_line_shows_no_postgres_password(
    postgres_address: str, tmp_path: Path, form: str
) -> None:
    address, shown = with_password(postgres_address, form, "postgres")
    await commands_show_no_password("PostgresEngine", address, shown, tmp_path)


async def commands_show_no_password(engine: str, address: str, shown: str, cwd: Path) -> None:
    """Run the commands on the queue at `address` (with its password): each output line
    names the queue as `shown`, and none holds the password."""
    (cwd / "items.jsonl").write_text('{"item": 1}\n')
    (cwd / "other.jsonl").write_text('{"serialized": "AA==", "serializer": "json"}\n')
    lines: Any = await asyncio.to_thread(
        cli_succeeds, "import", address, "items.jsonl", "--engine", engine, cwd=cwd
    )
    assert lines == f"imported 1 item(s) into {shown}\n"
    lines = await asyncio.to_thread(
        cli_fails, "import", address, "other.jsonl", "--engine", engine, cwd=cwd
    )
    assert "line 1" in lines
    lines = await asyncio.to_thread(
        cli_fails, "migrate", address, address, "--engine", engine, cwd=cwd
    )
    assert f"{shown} and {shown} are the same queue" in lines
    lines = await asyncio.to_thread(
        cli_fails, "import", address, "items.jsonl", "--engine", "DbmEngine", cwd=cwd
    )
    assert shown in lines
