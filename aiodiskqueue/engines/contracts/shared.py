"""The shared engine contract: a queue that many `Queue` objects use at once.

A `StorageEngine` has one owner, which numbers the items and keeps the head of the queue in
memory. A `SharedStorageEngine` is a queue of its own, kept by a server or a file that
several `Queue` objects use at the same time, in one process or many, on one machine or
many: the store orders the items and hands each to exactly one getter, and the `Queue` in
front of it keeps no item in memory. `Queue.create()` tells the two kinds apart by the
class of the engine, so the code above it does not change.

Every operation is one atomic step on the store, so no item is ever half put or half got.
Waiting is the store's business too: an engine waits for items or room the way its store
allows best (a blocking command on the server, a notification, a cheap change counter),
never by a busy loop.
"""

from __future__ import annotations

import abc
import asyncio
import os
import re
from collections.abc import AsyncGenerator, Callable, Mapping

from .local import DEFAULT_OPTIONS, OpenOptions

__all__ = ["KnownSize", "SharedStorageEngine", "redacted"]

# What may stand before the path in an address that has no user information: a host (or an
# IPv6 address in brackets), then maybe a port.
_HOST_AND_PORT = re.compile(r"(\[[^\]]*\]|[^:@\[\]]+)(:\d*)?|")
_SECRET_PARAMETER = re.compile(r"([?&][^=&#]*password[^=&#]*=)[^&#]*", re.IGNORECASE)


def redacted(address: str | os.PathLike[str]) -> str:
    """`address` as it may be shown, in a repr, a message or a log line: its password
    replaced by ``***``.

    That is the password of its user information (``redis://:***@host:6379/0/jobs``,
    ``postgresql://user:***@host/db/jobs``) and the value of each query parameter whose
    name holds "password" (``?password=***``, ``?sslpassword=***``). A password that holds
    a ``/``, ``?`` or ``#`` it should have percent-encoded is hidden all the same, with
    everything up to the last ``@``. A path, or an address without a password, is returned
    as it is.
    """
    text = os.fspath(address)
    scheme, separator, rest = text.partition("://")
    if not separator:
        return text
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        at = authority.rfind("@")
    elif not _HOST_AND_PORT.fullmatch(authority):  # the password holds a / ? or #
        at = rest.rfind("@")
    else:
        at = -1
    if at >= 0 and ":" in rest[:at]:
        user = rest[:at].partition(":")[0]
        rest = f"{user}:***{rest[at:]}"
    path, question, query = rest.partition("?")
    if question:
        rest = path + _SECRET_PARAMETER.sub(r"\1***", question + query)
    return f"{scheme}{separator}{rest}"


class SharedStorageEngine(abc.ABC):
    """A queue kept by a store that several `Queue` objects may use at once.

    The contract, which `Queue` relies on and every shared engine must keep:

    - `open(options)` connects, creates the queue with `options.meta` if there is none, and
      returns the queue's meta. `options.fsync` asks for the store's strongest durability.
    - `put(data, maxsize)` appends `data` at the tail if the queue holds fewer than `maxsize`
      items (any number if `maxsize` is 0 or less), checking and appending in one atomic
      step, and returns True; it returns False, changing nothing, if the queue is full.
      When it returns True the item is stored as durably as the store promises.
    - `get()` removes the item at the head and returns it, in one atomic step: however many
      getters there are, in however many processes, each item goes to exactly one of them.
      It returns None if the queue is empty.
    - `wait_for_items(timeout)` returns once the queue holds an item or `timeout` seconds
      have passed; `wait_for_room(maxsize, timeout)` once it holds fewer than `maxsize`
      items or the time has passed. Both may return early: the caller tries again. They
      change no item, so cancelling them is always safe.
    - `size()` is the number of items the queue held when the engine last heard from the
      store (after each of its own operations, and whenever the store tells it of a
      change). It never blocks and is never negative.
    - `close()` releases connections. It is called once, after the last operation.

    Optional operations, which `Queue` never calls: the ``aiodiskqueue`` command line uses
    them to look into a queue, empty it and delete it, and reports an engine that lacks one
    (their defaults raise `NotImplementedError`):

    - `exists()`, on an engine that is not open, connects, says whether the store holds the
      queue (any item or meta of it), and lets go, creating nothing.
    - `items(limit)`, on an open engine, yields the items from the head, removing none: the
      items the queue held at one instant, whatever other users do meanwhile, at most
      `limit` of them (every one if None). Close the iterator (`contextlib.aclosing`) when
      stopping before its end, so that the engine lets go of what it holds for it.
    - `purge()` removes every item of the queue in one atomic step and returns how many
      it removed; the meta stays, and the queue's other users go on using it.
    - `drop()` deletes the queue from the store: its items, its meta and whatever else the
      engine keeps for it. Afterwards the engine may only be closed; how engines open on
      the queue elsewhere fare is the engine's to document.

    `Queue` may call `put`, `get` and the waits from several tasks at once; an engine that
    holds a single connection serialises them itself. An operation that fails because the
    store is unreachable raises `QueueConnectionError` and leaves the queue as it was, or,
    when the store cannot say whether the operation took effect, says so in the message;
    a later operation reconnects.
    """

    def __init__(self, address: str | os.PathLike[str]) -> None:
        self.address = os.fspath(address)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redacted(self.address)!r})"

    @abc.abstractmethod
    async def open(self, options: OpenOptions = DEFAULT_OPTIONS) -> Mapping[str, str]:
        """Connect, create the queue if there is none, and return its meta."""

    @abc.abstractmethod
    async def put(self, data: bytes, maxsize: int) -> bool:
        """Append `data` unless the queue holds `maxsize` items or more; True if appended."""

    @abc.abstractmethod
    async def get(self) -> bytes | None:
        """Remove and return the item at the head; None if the queue is empty."""

    @abc.abstractmethod
    async def wait_for_items(self, timeout: float) -> None:
        """Return once the queue holds an item, or after `timeout` seconds (or earlier)."""

    @abc.abstractmethod
    async def wait_for_room(self, maxsize: int, timeout: float) -> None:
        """Return once the queue holds fewer than `maxsize` items, or after `timeout` seconds."""

    async def put_back(self, data: bytes) -> None:
        """Return an item that `get()` removed to the head of the queue, whatever its size.

        `Queue` calls it when the caller of a get was cancelled while the get was on its way,
        or cannot read the item. This default appends it at the tail instead (with `put`);
        an engine whose store can insert at the head overrides it.
        """
        await self.put(data, 0)

    @abc.abstractmethod
    def size(self) -> int:
        """The number of items in the queue, as the engine last heard it from the store."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the engine's connections."""

    async def exists(self) -> bool:
        """Whether the store holds the queue, asked without opening it or creating anything."""
        raise self._cannot("tell whether its queue exists")

    def items(self, limit: int | None = None) -> AsyncGenerator[bytes, None]:
        """Yield up to `limit` items (all if None) from the head, as they stood at one
        instant, removing none."""
        raise self._cannot("list its items without removing them")

    async def purge(self) -> int:
        """Remove every item in one atomic step; return how many were removed."""
        raise self._cannot("remove every item at once")

    async def drop(self) -> None:
        """Delete the queue from the store, with its meta; then only `close()` may follow."""
        raise self._cannot("delete its queue")

    def _cannot(self, what: str) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} cannot {what}")


class KnownSize:
    """The size of a shared queue as an engine last heard it, and waits on it.

    For engines that learn of changes from the store (a notification, a change counter)
    rather than wait on the server: they call `heard()` with every size they learn, and
    implement the waits with `wait_until()`. Sizes learnt along different paths (an
    operation's reply, a notification) may arrive out of order: an engine that can number
    the states of the store passes that number as `version`, and an older size is ignored.
    """

    def __init__(self, size: int = 0) -> None:
        self._size = max(0, size)
        self._version = -1
        self._changed = asyncio.Event()

    def __int__(self) -> int:
        return self._size

    @property
    def version(self) -> int:
        """The version of the last size heard with one (-1 before any)."""
        return self._version

    def heard(self, size: int, version: int | None = None) -> None:
        """Record a size learnt from the store, unless its `version` is older than the last
        one heard, and wake the waits to look at it."""
        if version is not None:
            if version < self._version:
                return
            self._version = version
        self._size = max(0, size)
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, condition: Callable[[int], bool], timeout: float) -> None:
        """Return once `condition(size)` holds, or after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition(self._size):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def wait_for_items(self, timeout: float) -> None:
        """Return once the size is above 0, or after `timeout` seconds."""
        await self.wait_until(lambda size: size > 0, timeout)

    async def wait_for_room(self, maxsize: int, timeout: float) -> None:
        """Return once the size is below `maxsize` (any, if it is 0 or less), or after `timeout`."""
        await self.wait_until(lambda size: maxsize <= 0 or size < maxsize, timeout)
