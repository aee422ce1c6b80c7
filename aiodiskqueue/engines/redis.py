"""RedisEngine: the queue as a list on a Redis server, which many queues use at once.

The address is the Redis URL of a database, then ``/`` and the queue's name:
``redis://127.0.0.1:6379/0/jobs``, ``rediss://user:secret@host:6380/2/jobs``,
``unix:///run/redis.sock/jobs?db=0``. The query string passes options to redis-py (such as
``socket_timeout``, in seconds, which bounds the wait for a reply: 10 by default). A queue
named ``jobs`` has these keys, which share the hash tag ``{jobs}`` so that they are in one
cluster slot and one Lua script may use them all:

``aiodiskqueue:{jobs}``
    A list of the items, serialised, oldest first: `put()` appends at the right, `get()`
    removes at the left. Redis deletes the key while the queue is empty.
``aiodiskqueue:{jobs}:meta``
    A hash of the queue's meta; opening adds each field that it does not hold yet (HSETNX).
``aiodiskqueue:{jobs}:full``
    A set of the ``maxsize`` values with which a putter found the queue full.
``aiodiskqueue:{jobs}:room:<maxsize>``
    A list that holds one token while there may be room below ``maxsize``: a putter that
    finds the queue full deletes it, in the same script that looked, and blocks until it
    is back; `get()` puts it back, in the script that removes the item, for every
    ``maxsize`` in ``full`` that the queue is now below.

`put()` and `get()` are each one Lua script, so the check against ``maxsize`` and the
append, or the removal and the wake-up of putters, are one atomic step. The waits block on
the server, never polling: `wait_for_items()` with ``BLMOVE`` of the list onto itself, from
the left to the left, which returns once the list holds an item and rotates the head back
to where it was; `wait_for_room()` the same way on its room token. Neither removes anything,
so a wait cancelled at any moment (which drops its connection) loses nothing, and every
waiter wakes, not only one. Each operation that may be in flight at once has a connection
of its own from a pool; the waits have a pool of their own, without a read timeout.

A connection that fails raises `QueueConnectionError`, which names the server and says
whether the operation may have taken effect: it cannot have if no connection could be made,
and may have if the request was sent. `put()` and `get()` are never retried: a retried put
could store an item twice, a retried get lose one. The next operation connects again.

Durability: Redis replies to a command once it has applied it in memory and, with an
append-only file (``appendonly yes``), written it there. So when `put()` or `get()`
returns, the change is as durable as the server's ``appendfsync`` makes it:

``always``
    Flushed to the disk before the reply: nothing that returned is lost, by a crash of the
    server or of the machine, or a power loss.
``everysec`` (Redis's default)
    Handed to the operating system before the reply, flushed once a second: an operating
    system crash or a power loss may lose the last second or two. A killed
    ``redis-server`` loses nothing, except when the disk falls behind: while a flush takes
    longer than a second, Redis keeps new writes in its own memory for up to two seconds,
    replying all the same, and a kill then loses them.
``no``
    As ``everysec``, but the operating system flushes when it chooses (on Linux, within
    about 30 seconds).

Without an append-only file (``appendonly no``), a restart of the server loses everything
since its last snapshot (all of it, with ``save ""``). This engine asks the server for no
more than it is configured to do (Redis 7.0 has no ``WAITAOF``): opening reads the
configuration, where ``CONFIG`` is allowed, and logs at INFO when it cannot keep the
promise asked of it: to survive a restart of the server, or with ``options.fsync``
("power-loss") a power loss, which takes ``always``. A lost `get()` brings its item back;
a lost `put()` loses it. Replication is asynchronous: a failover to a replica loses what
the replica had not yet received.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncGenerator, Mapping
from typing import Any, NoReturn, cast
from urllib.parse import unquote, urlsplit, urlunsplit

import redis.asyncio
import redis.exceptions
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..exceptions import QueueConnectionError
from .contracts.local import DEFAULT_OPTIONS, OpenOptions, not_open
from .contracts.shared import SharedStorageEngine, redacted

__all__ = ["RedisEngine"]

logger = logging.getLogger(__name__)

_CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
_REPLY_TIMEOUT = 10.0  # seconds a command's reply may take, unless the URL says otherwise
_CONNECT_TIMEOUT = 5.0
_LONGEST_WAIT = 30.0  # seconds one blocking command lasts at most (the contract allows early)
_SHORTEST_WAIT = 0.001  # Redis counts block timeouts in milliseconds, and 0 means forever

# KEYS: the list. ARGV: the item, maxsize. Returns {1, new length}, or {0, length} if full.
_PUT = """
local maxsize = tonumber(ARGV[2])
local length = redis.call('LLEN', KEYS[1])
if maxsize > 0 and length >= maxsize then
    return {0, length}
end
return {1, redis.call('RPUSH', KEYS[1], ARGV[1])}
"""

# KEYS: the list. ARGV: the item. Returns the new length.
_PUT_BACK = "return redis.call('LPUSH', KEYS[1], ARGV[1])"

# Part of a script with KEYS[1] the list and KEYS[2] the set of full maxsizes: gives back the
# room token of every maxsize in that set that the queue, now `length` items long, is below.
# The tokens' names are made here, from the list's: they share its hash tag.
_WAKE_PUTTERS = """
for _, maxsize in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    local room = KEYS[1] .. ':room:' .. maxsize
    if length < tonumber(maxsize) and redis.call('EXISTS', room) == 0 then
        redis.call('RPUSH', room, 'room')
    end
end
"""

# KEYS: the list, the set of full maxsizes. Returns {new length, item}, or {length} if empty.
_GET = (
    """
local item = redis.call('LPOP', KEYS[1])
local length = redis.call('LLEN', KEYS[1])
if not item then
    return {length}
end
"""
    + _WAKE_PUTTERS
    + """
return {length, item}
"""
)

# KEYS: the list, the set of full maxsizes. Returns how many items it removed.
_PURGE = (
    """
local removed = redis.call('LLEN', KEYS[1])
redis.call('DEL', KEYS[1])
local length = 0
"""
    + _WAKE_PUTTERS
    + """
return removed
"""
)

# KEYS: the list, the set of full maxsizes, the room token for ARGV[1]. ARGV: maxsize.
# Returns the length; if it is maxsize or more, the token is gone until a get makes room.
_CHECK_ROOM = """
local length = redis.call('LLEN', KEYS[1])
if length >= tonumber(ARGV[1]) then
    redis.call('SADD', KEYS[2], ARGV[1])
    redis.call('DEL', KEYS[3])
end
return length
"""

# KEYS: the list, the meta hash, the set of full maxsizes. Deletes every key of the queue,
# each by its name (the room tokens' from the maxsizes in the set, which the wait that made
# a token added first), so that no other queue's key can match.
_DROP = """
for _, maxsize in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    redis.call('DEL', KEYS[1] .. ':room:' .. maxsize)
end
return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
"""

# KEYS: the meta hash. ARGV: field, value, field, value... Returns the whole hash.
_OPEN = """
for i = 1, #ARGV, 2 do
    redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
end
return redis.call('HGETALL', KEYS[1])
"""


class _NotSent(redis.exceptions.ConnectionError):
    """No connection could be made, so the command was not sent."""


class _Pool(ConnectionPool):
    """A pool that tells a connection that could not be made from one lost later."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        try:
            connection: AbstractConnection = await super().get_connection(  # type: ignore[no-untyped-call]
                *args, **kwargs
            )
        except _CONNECTION_ERRORS as exc:
            raise _NotSent(str(exc)) from exc
        return connection


class RedisEngine(SharedStorageEngine):
    """Stores the queue in a Redis list, which any number of queues may use at once.

    `address` is the Redis URL of a database, then ``/`` and the queue's name, as in
    ``redis://127.0.0.1:6379/0/jobs``; a `ValueError` says what is wrong with one that is
    not. Needs the ``redis`` package (``pip install 'aiodiskqueue[redis]'``).
    """

    _client: redis.asyncio.Redis | None = None
    _waiter: redis.asyncio.Redis | None = None

    def __init__(self, address: str | os.PathLike[str]) -> None:
        super().__init__(address)
        self._url, self.name, self._server = _parse(self.address)
        items = f"aiodiskqueue:{{{self.name}}}"
        self._items = items
        self._meta = f"{items}:meta"
        self._full = f"{items}:full"
        self._size = 0

    async def open(self, options: OpenOptions = DEFAULT_OPTIONS) -> Mapping[str, str]:
        commands = self._commands_pool()
        kwargs = commands.connection_kwargs
        self._reply_timeout = kwargs.get("socket_timeout") or _REPLY_TIMEOUT
        # The waits block on the server for as long as they ask: no read timeout, but a
        # deadline of their own (see `_block`).
        waits = _Pool(
            connection_class=commands.connection_class,
            **{**kwargs, "socket_timeout": None},
        )
        self._client = redis.asyncio.Redis.from_pool(commands)
        self._waiter = redis.asyncio.Redis.from_pool(waits)
        self._put = self._client.register_script(_PUT)
        self._get = self._client.register_script(_GET)
        self._put_back = self._client.register_script(_PUT_BACK)
        self._check_room = self._client.register_script(_CHECK_ROOM)
        self._purge = self._client.register_script(_PURGE)
        self._drop = self._client.register_script(_DROP)
        try:
            fields = [text for field in options.meta.items() for text in field]
            try:
                reply = await self._client.register_script(_OPEN)([self._meta], fields)
            except _CONNECTION_ERRORS as exc:
                self._lost(exc, "open")
            meta = {reply[i].decode(): reply[i + 1].decode() for i in range(0, len(reply), 2)}
            try:
                self._size = await self._client.llen(self._items)
            except _CONNECTION_ERRORS as exc:
                self._lost(exc, "open")
            await self._check_persistence(options)
        except BaseException:
            await self.close()
            raise
        logger.debug("opened %r holding %d item(s)", self, self._size)
        return meta

    def _commands_pool(self) -> _Pool:
        """A pool of connections for commands that do not block: never retried, each reply
        awaited for the URL's ``socket_timeout``, or `_REPLY_TIMEOUT`."""
        return _Pool.from_url(
            self._url,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=_REPLY_TIMEOUT,
            socket_connect_timeout=_CONNECT_TIMEOUT,
            # With RESP3, redis-py 8 enables maintenance notifications, and then no longer
            # checks that a pooled connection is still open before it sends on it.
            protocol=2,
        )

    async def _check_persistence(self, options: OpenOptions) -> None:
        """Log, once, if the server's persistence cannot keep the promise asked of it."""
        try:
            config = await self._running().config_get("append*")
        except redis.exceptions.ResponseError:  # CONFIG is forbidden, as on managed Redis
            return
        except _CONNECTION_ERRORS as exc:
            self._lost(exc, "open")
        appendonly = _text(config.get("appendonly", b""))
        appendfsync = _text(config.get("appendfsync", b""))
        if appendonly == "no":
            logger.info(
                "%s keeps no append-only file (appendonly no): a restart of the server loses "
                "every item put since its last snapshot",
                self._server,
            )
        elif options.fsync and appendfsync in ("everysec", "no"):
            logger.info(
                "%s flushes its append-only file %s (appendfsync %s), not at every write: an "
                "operating-system crash or a power loss may lose the last puts and gets",
                self._server,
                "once a second" if appendfsync == "everysec" else "when the OS chooses",
                appendfsync,
            )

    async def put(self, data: bytes, maxsize: int) -> bool:
        self._running()
        try:
            stored, length = await self._put([self._items], [data, maxsize])
        except _CONNECTION_ERRORS as exc:
            self._lost(exc, "put")
        self._size = length
        return bool(stored)

    async def put_back(self, data: bytes) -> None:
        """Return an item that `get()` removed to the head of the list (``LPUSH``)."""
        self._running()
        try:
            self._size = await self._put_back([self._items], [data])
        except _CONNECTION_ERRORS as exc:
            self._lost(exc, "put back")

    async def get(self) -> bytes | None:
        self._running()
        try:
            reply = await self._get([self._items, self._full])
        except _CONNECTION_ERRORS as exc:
            self._lost(exc, "get")
        self._size = reply[0]
        return reply[1] if len(reply) > 1 else None

    async def wait_for_items(self, timeout: float) -> None:
        client = self._running()
        if timeout <= 0:
            return
        head = await self._block("BLMOVE", self._items, self._items, timeout)
        if head is None:
            self._size = 0
            return
        try:  # the size, for qsize(): the wait only says that there is an item
            self._size = await client.llen(self._items)
        except _CONNECTION_ERRORS as exc:
            self._lost(exc, "wait")

    async def wait_for_room(self, maxsize: int, timeout: float) -> None:
        self._running()
        if maxsize <= 0 or timeout <= 0:
            return
        room = f"{self._items}:room:{maxsize}"
        try:
            self._size = await self._check_room([self._items, self._full, room], [maxsize])
        except _CONNECTION_ERRORS as exc:
            self._lost(exc, "wait")
        if self._size >= maxsize:
            await self._block("BLMOVE", room, room, timeout)

    def size(self) -> int:
        return max(0, self._size)

    async def exists(self) -> bool:
        """Whether the server holds the queue's items or meta; the engine must not be open."""
        client = redis.asyncio.Redis.from_pool(self._commands_pool())
        try:
            found: int = await client.exists(self._items, self._meta)
        except _CONNECTION_ERRORS as exc:
            self._lost(exc, "check")
        finally:
            await client.aclose()
        return found > 0

    async def items(self, limit: int | None = None) -> AsyncGenerator[bytes, None]:
        """Yield up to `limit` items (all if None) from the head, removing none.

        They are read with one command, so they are the list at one instant; and so all of
        them are held in memory at once, as the server holds them.
        """
        client = self._running()
        if limit is not None and limit <= 0:
            return
        try:
            last = -1 if limit is None else limit - 1
            found = cast(list[bytes], await client.lrange(self._items, 0, last))  # no decoding
        except _CONNECTION_ERRORS as exc:
            self._lost(exc, "read")
        for data in found:
            yield data

    async def purge(self) -> int:
        """Remove every item in one atomic step, waking putters that wait for room; return
        how many were removed."""
        self._running()
        try:
            removed: int = await self._purge([self._items, self._full])
        except _CONNECTION_ERRORS as exc:
            self._lost(exc, "purge")
        self._size = 0
        return removed

    async def drop(self) -> None:
        """Delete the queue from the server, in one atomic step: its items, its meta and its
        wake-up keys, each by its exact name, so that no other queue loses anything.

        Queues open on it elsewhere see an empty queue, which their next put creates again.
        """
        self._running()
        try:
            await self._drop([self._items, self._meta, self._full])
        except _CONNECTION_ERRORS as exc:
            self._lost(exc, "drop")
        self._size = 0

    async def close(self) -> None:
        clients = (self._client, self._waiter)
        self._client = self._waiter = None
        for client in clients:
            if client is not None:
                await client.aclose()

    async def _block(self, command: str, source: str, destination: str, timeout: float) -> Any:
        """Run a blocking move of `source`'s head onto `destination`; None if it timed out.

        It blocks on the server for `timeout` seconds at most (and at most `_LONGEST_WAIT`);
        a server that has not answered some time after that counts as lost.
        """
        waiter = self._waiter
        if waiter is None:
            raise not_open(self)
        seconds = min(max(timeout, _SHORTEST_WAIT), _LONGEST_WAIT)
        # redis-py types BLMOVE's timeout as whole seconds; Redis takes fractions.
        move = waiter.execute_command(  # type: ignore[no-untyped-call]
            command, source, destination, "LEFT", "LEFT", f"{seconds:.3f}"
        )
        try:
            return await asyncio.wait_for(move, seconds + self._reply_timeout)
        except asyncio.TimeoutError as exc:
            raise QueueConnectionError(
                f"{self._server} did not answer a wait of {seconds:.3f}s within "
                f"{self._reply_timeout:g}s after it ended"
            ) from exc
        except _CONNECTION_ERRORS as exc:
            self._lost(exc, "wait")

    def _running(self) -> redis.asyncio.Redis:
        if self._client is None:
            raise not_open(self)
        return self._client

    def _lost(self, exc: BaseException, operation: str) -> NoReturn:
        """Raise `QueueConnectionError` for `exc`, met by `operation` ("open", "put"...).

        Of the operations, a put, a get, a purge and a drop change the queue: the message
        says whether it may have. It cannot have if no connection could be made, or if the
        server refused it because it is still loading its data.
        """
        if isinstance(exc, _NotSent):
            message = f"Could not reach {self._server} to {operation} ({exc})"
        else:
            article = "an" if operation == "open" else "a"
            message = f"Lost the connection to {self._server} during {article} {operation} ({exc})"
        if operation in ("put", "put back", "get", "purge", "drop"):
            if isinstance(exc, (_NotSent, redis.exceptions.BusyLoadingError)):
                message += ": nothing was changed"
            else:
                message += f": the {operation} may or may not have taken effect"
        raise QueueConnectionError(message) from exc


def _parse(address: str) -> tuple[str, str, str]:
    """Split an address into the Redis URL, the queue's name and the server, for messages
    (without its password)."""
    parts = urlsplit(address)
    database, _, name = parts.path.rpartition("/")
    if parts.scheme in ("redis", "rediss"):
        well_formed = re.fullmatch(r"/\d+", database) is not None
    else:
        well_formed = parts.scheme == "unix" and database != ""
    if not well_formed or not name:
        raise ValueError(
            f"{redacted(address)!r} is not a Redis URL of a database followed by / and a "
            "queue name, as in redis://127.0.0.1:6379/0/jobs or unix:///run/redis.sock/jobs?db=0"
        )
    url = urlunsplit(parts._replace(path=database))
    server = urlunsplit((parts.scheme, parts.netloc, database, "", ""))
    return url, unquote(name), f"Redis at {redacted(server)}"


def _text(value: str | bytes | None) -> str:
    return value.decode() if isinstance(value, bytes) else value or ""
