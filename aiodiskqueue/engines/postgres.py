"""PostgresEngine: the queue as a table in a PostgreSQL database, shared by every user of it.

The address is a PostgreSQL URL of a database followed by ``/`` and the queue's name:
``postgresql://user@host:5432/database/jobs`` is the queue ``jobs`` in ``database``. Query
parameters are the connection's (``?sslmode=require``, ``?application_name=worker``, or a
server setting such as ``?search_path=queues``). A name is 1 to 50 letters, digits, ``_``
or ``-``, and case matters.

Two tables, created on first use with ``IF NOT EXISTS`` under an advisory lock, so that
processes opening at once do not race to create them:

``aiodiskqueue_<name>(id bigint generated always as identity primary key, data bytea not null)``
    The items, one row each; in ``id`` order they are the queue, oldest first.
``aiodiskqueue_queues(name text primary key, size bigint, changes bigint, meta jsonb)``
    One row per queue: how many items it holds, how many puts and gets have changed it
    (the version of ``size``), and the meta it was created with.

To remove a queue, drop its table and delete its row, while no engine has it open.

Each operation is one statement, so one transaction. A put adds one to the queue's
``size`` and ``changes`` if ``size`` is below ``maxsize``, inserts the item only if that
updated the row, and notifies the channel ``aiodiskqueue_<name>`` of the new ``changes``
and ``size``. A get deletes the row of the lowest ``id`` that no other transaction holds
(``FOR UPDATE SKIP LOCKED``), takes one from ``size`` if it deleted one, and notifies.
Both read the row back when they change nothing, so the engine learns the size anyway.

The queue's row orders every put and get of that queue: each holds its lock from its update
until its commit. That is what makes ``maxsize`` exact, since a put sees the ``size`` that
every earlier put and get left, and it keeps ``size`` equal to the number of rows. Getters
never wait for each other's items, only for that row. (NOTIFY makes PostgreSQL commit the
transactions that notify one at a time anyway, so splitting the row into a count of puts
and a count of gets does not make commits any faster.)

Waiting is LISTEN on a connection of the engine's own: every notification carries the
queue's ``changes`` and ``size``, the engine keeps the newest it has seen (from
notifications and from its own statements), and a wait returns when that says there are
items (or room), or when it changes. A get that finds every counted item held by getters
that have not committed yet makes waits for items wait for the next change, rather than
send the getter back at once. When the listening connection is lost, waits return early;
the next one opens a new connection and reads the row again, since notifications sent
meanwhile are lost. Other operations use a pool of up to `POOL_SIZE` connections, so that
several tasks of one process run theirs at once; connections are opened when needed and
kept until they break.

Durability: PostgreSQL commits each statement before it answers, so an item whose put()
returned is in the database, and an item that get() returned is gone from it; with the
server's ``synchronous_commit`` on (its default) and ``fsync`` on, it survives a restart or
a crash of PostgreSQL, or of its machine. With ``options.fsync`` the engine sets
``synchronous_commit`` to on for its own sessions where the server (or the URL) has it
off; otherwise it leaves the setting as it finds it. A statement whose connection breaks
before it answers may or may not have been committed: the engine raises
`QueueConnectionError` saying so, and does not retry it.

The client is asyncpg rather than psycopg 3: it implements PostgreSQL's protocol itself on
asyncio (binary wheels, no libpq to install), receives notifications on a connection with
`add_listener` while that connection is otherwise idle, prepares and caches each statement
per connection, and is among the fastest PostgreSQL clients for Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from ..exceptions import QueueConnectionError
from .contracts.local import DEFAULT_OPTIONS, OpenOptions, not_open
from .contracts.shared import KnownSize, SharedStorageEngine, redacted

__all__ = ["PostgresEngine"]

logger = logging.getLogger(__name__)

POOL_SIZE = 10
"""The most connections an engine uses for puts and gets at once (besides its listening one)."""

CLOSE_TIMEOUT = 10.0
"""Seconds `close()` waits for the server to acknowledge before dropping a connection."""

READ_PAGE = 1000
"""Rows `items()` fetches per round trip."""

_SCHEMES = ("postgresql", "postgres")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,50}")  # "aiodiskqueue_" + name fits in 63 bytes
_PREFIX = "aiodiskqueue_"
_QUEUES = "aiodiskqueue_queues"
_CREATION_LOCK = 0x6169_6F64_7175_6575  # "aiodqueu": the advisory lock around creating tables

# Errors that mean the server could not be reached or the connection broke. Timeouts come
# from connecting: a caller's own timeout reaches the engine as a cancellation instead.
# InternalClientError (and its ProtocolError) is asyncpg's own side finding the connection in
# a state it did not expect, as when the server dies in the middle of an exchange.
_CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InternalClientError,
)

# What making a connection raises besides: the server refusing it (no such database or role,
# a wrong password, too many connections...), which is as final for the operation.
_CONNECT_ERRORS = (*_CONNECTION_ERRORS, asyncpg.PostgresError)


def _lost(exc: BaseException, connection: Any) -> bool:
    """Whether `exc`, raised by an operation on `connection`, means the connection broke.

    asyncpg raises InterfaceError for a connection that closed under the operation, and for
    misuse too (two operations at once on one connection): only the first is a lost one.
    """
    if isinstance(exc, _CONNECTION_ERRORS):
        return True
    if not isinstance(exc, asyncpg.InterfaceError):
        return False
    try:
        return bool(connection.is_closed())
    except asyncpg.InterfaceError:  # the pool detaches a connection that closed from its proxy
        return True


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


class PostgresEngine(SharedStorageEngine):
    """Stores the queue in a PostgreSQL table that any number of `Queue` objects share.

    `address` is ``postgresql://[user[:password]@]host[:port]/database/name[?parameters]``;
    a missing or unsafe queue name raises ValueError here, before anything connects.
    """

    def __init__(self, address: str | os.PathLike[str]) -> None:
        super().__init__(address)
        self._dsn, self.name, self.server = _parse(self.address)
        table = _quote(_PREFIX + self.name)
        self._channel = _PREFIX + self.name
        self._put_sql = _PUT.format(table=table, queues=_QUEUES)
        self._get_sql = _GET.format(table=table, queues=_QUEUES)
        self._purge_sql = _PURGE.format(table=table, queues=_QUEUES)
        self._table = table
        self._pool: Any = None
        self._listener: Any = None
        self._listener_lock = asyncio.Lock()
        self._fsync = False
        self._said_synchronous = False
        # The size of the newest version of the queue's row that the engine has heard of.
        self._known = KnownSize()
        # The version at which a get found nothing to take (the rows it counts were held
        # by getters that had not committed yet): waits for items wait past it.
        self._empty_at = -1

    async def open(self, options: OpenOptions = DEFAULT_OPTIONS) -> Mapping[str, str]:
        self._fsync = options.fsync
        # No floor of connections (min_size=0): asyncpg would reconnect to it in the
        # background, logging a warning with a traceback at every try while the server is
        # down. Connections are opened when needed instead, and kept until they break.
        self._pool = asyncpg.create_pool(
            self._dsn,
            min_size=0,
            max_size=POOL_SIZE,
            max_inactive_connection_lifetime=0,
            init=self._setup_session,
            reset=_keep_session,
        )
        try:
            await self._pool
            meta = await self._create(options.meta)
            await self._listen()
        except BaseException:
            await self.close()
            raise
        logger.debug("opened %r holding %d item(s)", self, self.size())
        return meta

    async def _setup_session(self, connection: Any) -> None:
        if not self._fsync:
            return
        raised = await connection.fetchval(
            "SELECT set_config('synchronous_commit', 'on', false)"
            " WHERE current_setting('synchronous_commit') = 'off'"
        )
        if raised is not None and not self._said_synchronous:
            self._said_synchronous = True
            logger.info(
                "synchronous_commit is off at %s: %r sets it to on for its sessions (fsync)",
                self.server,
                self,
            )

    async def _create(self, meta: Mapping[str, str]) -> dict[str, str]:
        """Create the tables and the queue's row if missing; learn the size; return the meta."""
        creating = self._connection(f"creating queue {self.name!r}")
        async with creating as connection, connection.transaction():
            found = await connection.fetchrow(
                "SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL",
                _QUEUES,
                self._table,
            )
            new_table = not found[1]
            if not (found[0] and found[1]):
                await connection.execute("SELECT pg_advisory_xact_lock($1)", _CREATION_LOCK)
                await connection.execute(_CREATE_QUEUES)
                # Another process may have created the table while this one waited.
                new_table = await connection.fetchval("SELECT to_regclass($1) IS NULL", self._table)
                await connection.execute(_CREATE_ITEMS.format(table=self._table))
            row = await connection.fetchrow(_STATE, self.name)
            if row is None or new_table:
                # A new queue, or a row left by a table that was dropped: count the rows.
                row = await connection.fetchrow(
                    _INSERT_STATE.format(table=self._table, queues=_QUEUES),
                    self.name,
                    json.dumps(dict(meta)),
                )
        self._known.heard(row["size"], row["changes"])
        stored: dict[str, str] = json.loads(row["meta"])
        return stored

    async def put(self, data: bytes, maxsize: int) -> bool:
        row = await self._run(
            "putting an item", "the item is in the queue", self._put_sql, self.name, data, maxsize
        )
        self._known.heard(row["size"], row["changes"])
        return bool(row["stored"])

    async def get(self) -> bytes | None:
        row = await self._run(
            "getting an item", "an item was taken and is lost", self._get_sql, self.name
        )
        self._known.heard(row["size"], row["changes"])
        data: bytes | None = row["data"]
        if data is None:
            self._empty_at = row["changes"]
        return data

    async def _run(self, doing: str, if_committed: str, query: str, *args: object) -> Any:
        """Run one statement (one transaction) on a connection of the pool; return its row."""
        async with self._connection(doing, if_committed) as connection:
            row = await connection.fetchrow(query, *args, self._channel)
        if row is None:
            raise RuntimeError(f"{self!r}: the queue has no row in {_QUEUES}: was it dropped?")
        return row

    @contextlib.asynccontextmanager
    async def _connection(self, doing: str, if_committed: str = "") -> AsyncIterator[Any]:
        """A connection of the pool, turning connection errors into `QueueConnectionError`:
        a broken connection is in doubt, since the server may have committed before it broke."""
        pool = self._running()
        try:
            connection = await pool.acquire()
        except _CONNECT_ERRORS as exc:
            raise QueueConnectionError(
                f"cannot reach {self.server}: {exc}; nothing was changed"
            ) from exc
        try:
            yield connection
        except Exception as exc:
            if not _lost(exc, connection):
                raise
            in_doubt = (
                f"; the server may or may not have committed it (if it did, {if_committed})"
                if if_committed
                else ""
            )
            raise QueueConnectionError(
                f"lost the connection to {self.server} while {doing}: {exc}{in_doubt}"
            ) from exc
        finally:
            try:
                await pool.release(connection)
            except _CONNECTION_ERRORS as exc:  # the pool has dropped the connection
                logger.debug("%r: releasing a broken connection: %s", self, exc)

    async def wait_for_items(self, timeout: float) -> None:
        await self._watching()
        await self._known.wait_until(
            lambda size: (size > 0 and self._known.version != self._empty_at) or self._deaf(),
            timeout,
        )

    async def wait_for_room(self, maxsize: int, timeout: float) -> None:
        await self._watching()
        await self._known.wait_until(
            lambda size: maxsize <= 0 or size < maxsize or self._deaf(), timeout
        )

    def size(self) -> int:
        return int(self._known)

    async def exists(self) -> bool:
        """Whether the database holds the queue's table; the engine must not be open."""
        try:
            connection = await asyncpg.connect(self._dsn)
        except _CONNECT_ERRORS as exc:
            raise QueueConnectionError(f"cannot reach {self.server}: {exc}") from exc
        try:
            found: bool = await connection.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", self._table
            )
        except Exception as exc:
            if _lost(exc, connection):
                raise QueueConnectionError(
                    f"lost the connection to {self.server} while looking for queue "
                    f"{self.name!r}: {exc}"
                ) from exc
            raise
        finally:
            try:
                await connection.close(timeout=CLOSE_TIMEOUT)
            except (*_CONNECTION_ERRORS, asyncpg.InterfaceError):
                connection.terminate()
        return found

    async def items(self, limit: int | None = None) -> AsyncGenerator[bytes, None]:
        """Yield up to `limit` items (all if None) from the head, removing none.

        They are read `READ_PAGE` at a time, in one read-only transaction that sees the
        queue as it was when the transaction began (repeatable read), which holds one
        connection of the pool until the iterator ends or is closed.
        """
        query = f"SELECT data FROM {self._table} ORDER BY id LIMIT $1"
        reading = self._connection(f"reading queue {self.name!r}")
        async with (
            reading as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            rows = None if limit is None else max(limit, 0)  # LIMIT NULL: every row
            async for row in connection.cursor(query, rows, prefetch=READ_PAGE):
                yield row["data"]

    async def purge(self) -> int:
        """Remove every item in one transaction, waking waiters; return how many."""
        row = await self._run(
            "removing every item", "the queue was emptied", self._purge_sql, self.name
        )
        self._known.heard(row["size"], row["changes"])
        removed: int = row["removed"]
        return removed

    async def drop(self) -> None:
        """Delete the queue from the database: its table and its row, in one transaction.

        Queues open on it elsewhere fail on their next operation, saying the queue has no
        row; opening it again creates it anew.
        """
        dropping = self._connection(f"dropping queue {self.name!r}")
        async with dropping as connection, connection.transaction():
            await connection.execute(f"DROP TABLE IF EXISTS {self._table}")
            await connection.execute(f"DELETE FROM {_QUEUES} WHERE name = $1", self.name)
        self._known.heard(0)

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        pool, self._pool = self._pool, None
        if listener is not None:
            listener.remove_termination_listener(self._on_listener_lost)
            try:
                await listener.close(timeout=CLOSE_TIMEOUT)
            except (*_CONNECTION_ERRORS, asyncpg.InterfaceError) as exc:
                logger.debug("%r: closing the listening connection: %s", self, exc)
                listener.terminate()
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT)
            except (*_CONNECTION_ERRORS, asyncpg.InterfaceError) as exc:
                logger.debug("%r: closing the pool: %s", self, exc)
                pool.terminate()
        logger.debug("closed %r", self)

    def _running(self) -> Any:
        if self._pool is None:
            raise not_open(self)
        return self._pool

    # What the engine knows of the queue, and the listening connection that tells it.

    def _deaf(self) -> bool:
        """Whether the listening connection is lost, so that a wait would not hear changes."""
        return self._listener is None or bool(self._listener.is_closed())

    async def _watching(self) -> None:
        """Make sure the engine listens, connecting again if the connection was lost."""
        self._running()
        if self._deaf():
            async with self._listener_lock:
                if self._deaf():
                    await self._listen()

    async def _listen(self) -> None:
        """Open the listening connection, then read the queue's row: notifications that were
        sent before LISTEN took effect are lost, but their changes are in the row."""
        try:
            listener = await asyncpg.connect(self._dsn)
        except _CONNECT_ERRORS as exc:
            raise QueueConnectionError(
                f"cannot reach {self.server} to wait for changes: {exc}"
            ) from exc
        listener.add_termination_listener(self._on_listener_lost)
        try:
            await listener.add_listener(self._channel, self._on_notification)
            row = await listener.fetchrow(_STATE, self.name)
        except BaseException as exc:
            lost = _lost(exc, listener)
            listener.remove_termination_listener(self._on_listener_lost)
            listener.terminate()
            if lost:
                raise QueueConnectionError(
                    f"lost the connection to {self.server} while listening: {exc}"
                ) from exc
            raise
        previous, self._listener = self._listener, listener
        if row is not None:
            self._known.heard(row["size"], row["changes"])
        if previous is not None:
            logger.info("%r listens again at %s", self, self.server)

    def _on_notification(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        try:
            changes, size = map(int, payload.split())
        except ValueError:
            logger.debug("%r: ignored notification %r", self, payload)
            return
        self._known.heard(size, changes)

    def _on_listener_lost(self, connection: Any) -> None:
        # Waits return early, and the next one connects again.
        logger.info("%r lost its listening connection to %s", self, self.server)
        self._known.heard(self.size())


async def _keep_session(connection: Any) -> None:
    """Release a connection to the pool as it is: the engine's statements change no session
    state, so asyncpg's default reset (RESET ALL, UNLISTEN *, ...) would only cost a round trip
    per operation, and would undo `synchronous_commit`."""


def _parse(address: str) -> tuple[str, str, str]:
    """Split an address into the database's URL, the queue's name, and the server's URL
    without parameters and with its password hidden (for messages)."""
    parts = urllib.parse.urlsplit(address)
    if parts.scheme not in _SCHEMES:
        raise ValueError(
            f"PostgresEngine needs a postgresql:// URL ending in /database/queue, "
            f"not {parts.scheme + '://' if parts.scheme else 'an address without a scheme'}"
        )
    database, _, name = parts.path.rpartition("/")
    if database.count("/") != 1 or database == "/":
        raise ValueError(
            "PostgresEngine's address names a database, then the queue: "
            "postgresql://host/database/queue"
        )
    name = urllib.parse.unquote(name)
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"queue name {name!r} in a PostgresEngine address must be 1 to 50 letters, "
            "digits, '_' or '-'"
        )
    dsn = urllib.parse.urlunsplit((parts.scheme, parts.netloc, database, parts.query, ""))
    server = redacted(urllib.parse.urlunsplit((parts.scheme, parts.netloc, database, "", "")))
    return dsn, name, server


_CREATE_QUEUES = f"""
CREATE TABLE IF NOT EXISTS {_QUEUES} (
    name text PRIMARY KEY,
    size bigint NOT NULL,
    changes bigint NOT NULL,
    meta jsonb NOT NULL
)
"""
_CREATE_ITEMS = """
CREATE TABLE IF NOT EXISTS {table} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    data bytea NOT NULL
)
"""
_STATE = f"SELECT size, changes, meta FROM {_QUEUES} WHERE name = $1"
# `changes` only grows, even for a row replaced for a new table, so no engine that still
# listens ever takes the new state for an old one.
_INSERT_STATE = """
INSERT INTO {queues} (name, size, changes, meta)
SELECT $1, count(*), 0, $2::jsonb FROM {table}
ON CONFLICT (name) DO UPDATE
SET size = excluded.size, changes = {queues}.changes + 1, meta = excluded.meta
RETURNING size, changes, meta
"""
# $1 the queue's name, $2 the item, $3 maxsize, $4 the channel. The second branch reads the
# row when the put changed nothing (the queue was full).
_PUT = """
WITH counted AS (
    UPDATE {queues} SET size = size + 1, changes = changes + 1
    WHERE name = $1 AND ($3::bigint <= 0 OR size < $3::bigint)
    RETURNING changes, size
), stored AS (
    INSERT INTO {table} (data) SELECT $2::bytea FROM counted
), notified AS (
    SELECT changes, size, pg_notify($4, changes || ' ' || size) FROM counted
)
SELECT true AS stored, changes, size FROM notified
UNION ALL
SELECT false, changes, size FROM {queues}
WHERE name = $1 AND NOT EXISTS (SELECT FROM counted)
"""
# $1 the queue's name, $2 the channel. Rows that getters hold are deleted once they let go
# of them (if they did not take them), and `size` is updated from the row as they left it.
_PURGE = """
WITH taken AS (
    DELETE FROM {table} RETURNING id
), counted AS (
    UPDATE {queues} SET size = size - (SELECT count(*) FROM taken), changes = changes + 1
    WHERE name = $1
    RETURNING changes, size
), notified AS (
    SELECT changes, size, pg_notify($2, changes || ' ' || size) FROM counted
)
SELECT (SELECT count(*) FROM taken) AS removed, changes, size FROM notified
"""
# $1 the queue's name, $2 the channel. The second branch reads the row when there was no
# item to take.
_GET = """
WITH taken AS (
    DELETE FROM {table} WHERE id = (
        SELECT id FROM {table} ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1
    )
    RETURNING data
), counted AS (
    UPDATE {queues} SET size = size - 1, changes = changes + 1
    WHERE name = $1 AND EXISTS (SELECT FROM taken)
    RETURNING changes, size
), notified AS (
    SELECT changes, size, pg_notify($2, changes || ' ' || size) FROM counted
)
SELECT taken.data, notified.changes, notified.size FROM taken, notified
UNION ALL
SELECT NULL::bytea, changes, size FROM {queues}
WHERE name = $1 AND NOT EXISTS (SELECT FROM taken)
"""
