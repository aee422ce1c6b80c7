"""How the commands open queues: to read without changing anything, and to append to.

A local queue is always opened with the single-owner engine of its format (see
`engines.detect`), which holds its lock for as long as the command runs, so no other
process changes it meanwhile, and with ``on_corruption="raise"``, so a damaged queue is
reported and never recovered (recovery writes backups and rewrites files). Reading goes
through `StorageEngine.read` a page at a time, so memory does not grow with the queue.

A queue of aiodiskqueue 0.1 is read as it is, by `engines.legacy`, under the same lock,
for the commands that only read; the commands that change it open it with its engine,
which upgrades it first (keeping the 0.1 files as a backup).
"""

from __future__ import annotations

import abc
import bisect
import contextlib
import importlib
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol, TypeVar

from .. import engines
from ..engines import (
    DbmEngine,
    ExclusiveSqliteEngine,
    OpenOptions,
    PickledList,
    Record,
    SharedStorageEngine,
    SqliteEngine,
    StorageEngine,
    Stored,
    legacy,
)
from ..engines.detect import QueueFiles, detect
from ..engines.locking import QueueLock, recorded_owner
from ..exceptions import QueueCorruptedError, QueueLockedError

__all__ = [
    "ENGINE_NAMES",
    "PAGE",
    "CliError",
    "Locked",
    "Opened",
    "Target",
    "find",
    "is_address",
    "open_engine",
    "opened",
    "pages",
    "reading",
    "same_queue",
    "target",
]

PAGE = 1000
"""Records read, or appended, per call to an engine: each append is one atomic commit."""

ENGINE_NAMES = (
    "DbmEngine",
    "ExclusiveSqliteEngine",
    "PickledList",
    "SqliteEngine",
    "RedisEngine",
    "PostgresEngine",
)
"""The engines a command can name, as `aiodiskqueue.engines` calls them."""
_SERVER_ENGINES = ("RedisEngine", "PostgresEngine")
_LOCAL_ENGINES: dict[str, Callable[[Path], StorageEngine]] = {
    "DbmEngine": DbmEngine,
    "ExclusiveSqliteEngine": ExclusiveSqliteEngine,
    "PickledList": PickledList,
    # SqliteEngine's file format is ExclusiveSqliteEngine's: appending by whole batches is
    # faster, and the file serves SqliteEngine all the same.
    "SqliteEngine": ExclusiveSqliteEngine,
}


class CliError(Exception):
    """A failure that the command reports in one line: the message says what went wrong."""


class Locked(CliError):
    """The queue is open in another process; `shared` if `SqliteEngine` queues hold it."""

    def __init__(self, path: Path, owner: int | None) -> None:
        self.owner = owner
        self.shared = owner is None
        holder = f"process {owner}" if owner is not None else "other processes (shared)"
        super().__init__(f"{path} is open in {holder}: close it there first")


def is_address(text: str) -> bool:
    """True if `text` is the address of a queue on a server rather than a path."""
    return "://" in text


def find(path: str) -> QueueFiles:
    """Return the local queue at `path`; raise `CliError` if there is none."""
    if is_address(path):
        raise CliError(
            f"{path} is on a server: only import and migrate (as the destination) "
            "work with server queues"
        )
    try:
        return detect(path)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None


async def open_engine(engine: StorageEngine, options: OpenOptions) -> Stored:
    """Open `engine`, reporting a lock held elsewhere as `Locked` and damage as `CliError`."""
    try:
        return await engine.open(options)
    except QueueLockedError:
        raise Locked(engine.path, recorded_owner(engine.path)) from None
    except QueueCorruptedError as exc:
        raise CliError(f"{exc} (nothing was changed)") from None


class Opened(NamedTuple):
    """A local queue open with its single-owner engine."""

    engine: StorageEngine
    stored: Stored


@contextlib.asynccontextmanager
async def opened(found: QueueFiles, *, fsync: bool = False) -> AsyncIterator[Opened]:
    """Open the queue `found`, failing on damage; close it when the block ends.

    Opening an intact queue changes none of its items. Pass `fsync` to commit changes so
    that they survive a power loss.
    """
    engine = found.single_owner_engine(found.path)
    stored = await open_engine(engine, OpenOptions(fsync=fsync, on_corruption="raise"))
    try:
        yield Opened(engine, stored)
    finally:
        await engine.close()


class Readable(Protocol):
    """What `pages` reads records from: an open engine, or the records of a 0.1 queue."""

    async def read(self, after: int, limit: int) -> list[Record]:
        """Return up to `limit` records with keys greater than `after`, in key order."""


class Reading(NamedTuple):
    """A local queue open to be read, changing nothing."""

    records: Readable
    stored: Stored


@contextlib.asynccontextmanager
async def reading(found: QueueFiles, *, unpickle: bool = True) -> AsyncIterator[Reading]:
    """Open the queue `found` to read it, failing on damage; close it when the block ends.

    Changes no item, and no file of a queue of aiodiskqueue 0.1, which is read as it is:
    its items are read when first asked for, and counted without unpickling any. Without
    `unpickle`, a 0.1 ``PickledList``, whose items are one pickle, is refused.
    """
    if not found.from_0_1:
        async with opened(found) as queue:
            yield Reading(queue.engine, queue.stored)
        return
    lock = QueueLock(found.path)
    try:
        lock.acquire()
    except QueueLockedError:
        raise Locked(found.path, recorded_owner(found.path)) from None
    try:
        old = legacy.find(found.path, found.format)
        if old is None:
            raise CliError(f"{found.path} changed while it was being read: try again")
        if not unpickle and old.engine == "PickledList":
            raise CliError(
                f"{found.path} is a PickledList of aiodiskqueue 0.1: its items are one "
                "pickle, which must be unpickled to split them; leave out --raw"
            )
        size = _reported(legacy.count, old)
        meta = {"serializer": "pickle"}  # aiodiskqueue 0.1 pickled every item
        yield Reading(_Records(old), Stored(size, size, meta))
    finally:
        lock.release()


class _Records:
    """The records of a queue of aiodiskqueue 0.1, read whole when first asked for, as
    0.1 itself read them."""

    def __init__(self, found: legacy.Found) -> None:
        self._found = found
        self._records: list[Record] | None = None

    async def read(self, after: int, limit: int) -> list[Record]:
        if self._records is None:
            self._records = _reported(legacy.read, self._found)
        start = bisect.bisect_right(self._records, after, key=lambda record: record.key)
        return self._records[start : start + limit]


R = TypeVar("R")


def _reported(reader: Callable[[legacy.Found], R], found: legacy.Found) -> R:
    """Call `reader`, reporting a 0.1 queue that cannot be read as `CliError`."""
    try:
        return reader(found)
    except QueueCorruptedError as exc:
        raise CliError(f"{exc} (nothing was changed)") from None


async def pages(engine: Readable, size: int = PAGE) -> AsyncIterator[list[Record]]:
    """Yield the records of the open `engine` in key order, `size` at a time."""
    after = 0
    while records := await engine.read(after, size):
        yield records
        after = records[-1].key


# Appending


class Target(abc.ABC):
    """A queue that a command appends items to: its meta and size once open.

    Every change is durable when the call that makes it returns: it survives a power loss.
    """

    meta: Mapping[str, str]
    size: int

    def __init__(self, name: str, exists: bool | None) -> None:
        self.name = name
        self.exists = exists
        """True if the queue is known to exist, False if it will be created, None if unknown."""

    @abc.abstractmethod
    async def open(self, meta: Mapping[str, str]) -> None:
        """Open the queue, creating it with `meta` if there is none."""

    @abc.abstractmethod
    async def append(self, items: Sequence[bytes]) -> None:
        """Append the serialised `items`, in order."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the queue."""


class _LocalTarget(Target):
    """A local queue, appended to by a single-owner engine: each call is one atomic commit."""

    def __init__(self, engine: StorageEngine, exists: bool) -> None:
        super().__init__(str(engine.path), exists)
        self._engine = engine
        self._next_key = 1

    async def open(self, meta: Mapping[str, str]) -> None:
        options = OpenOptions(fsync=True, on_corruption="raise", meta=meta)
        stored = await open_engine(self._engine, options)
        self.meta, self.size, self._next_key = stored.meta, stored.size, stored.last_key + 1

    async def append(self, items: Sequence[bytes]) -> None:
        records = [Record(key, data) for key, data in enumerate(items, self._next_key)]
        await self._engine.commit(records, ())
        self._next_key += len(records)
        self.size += len(records)

    async def close(self) -> None:
        await self._engine.close()


class _SharedTarget(Target):
    """A queue that a shared engine keeps: each item is put by itself, as one more user."""

    def __init__(self, engine: SharedStorageEngine, name: str, exists: bool | None) -> None:
        super().__init__(name, exists)
        self._engine = engine

    async def open(self, meta: Mapping[str, str]) -> None:
        options = OpenOptions(fsync=True, on_corruption="raise", meta=meta)
        try:
            self.meta = await self._engine.open(options)
        except QueueLockedError:
            raise Locked(Path(self.name), recorded_owner(Path(self.name))) from None
        except QueueCorruptedError as exc:
            raise CliError(f"{exc} (nothing was changed)") from None
        self.size = self._engine.size()

    async def append(self, items: Sequence[bytes]) -> None:
        for data in items:
            await self._engine.put(data, 0)
        self.size = self._engine.size()

    async def close(self) -> None:
        await self._engine.close()


class _SqliteTarget(Target):
    """An SQLite queue for `SqliteEngine`: appended to by whole batches while no other
    process has it open, and item by item, as one more `SqliteEngine`, while some do."""

    def __init__(self, path: Path, exists: bool) -> None:
        super().__init__(str(path), exists)
        self._path = path
        self._chosen: Target = _LocalTarget(ExclusiveSqliteEngine(path), exists)

    async def open(self, meta: Mapping[str, str]) -> None:
        try:
            await self._chosen.open(meta)
        except Locked as exc:
            if not exc.shared:
                raise
            self._chosen = _SharedTarget(SqliteEngine(self._path), self.name, self.exists)
            await self._chosen.open(meta)
        self.meta, self.size = self._chosen.meta, self._chosen.size

    async def append(self, items: Sequence[bytes]) -> None:
        await self._chosen.append(items)
        self.size = self._chosen.size

    async def close(self) -> None:
        await self._chosen.close()


def target(place: str, engine: str | None, backend: str | None = None) -> Target:
    """Return the queue at `place` (a path or a server address) to append to.

    `engine` names the engine (see `ENGINE_NAMES`); for an existing local queue it may be
    left out, and must otherwise be one that opens its format. A new local queue gets
    `DbmEngine` by default, with the dbm module `backend` if given.
    """
    if engine is not None and engine not in ENGINE_NAMES:
        raise CliError(f"unknown engine {engine!r}: choose from {', '.join(ENGINE_NAMES)}")
    if backend is not None and engine not in (None, "DbmEngine"):
        raise CliError("--dbm-backend is for DbmEngine queues only")
    if is_address(place):
        return _server_target(place, engine)
    if engine in _SERVER_ENGINES:
        raise CliError(f"{engine} needs the address of a queue on its server, not {place!r}")
    path = Path(place)
    try:
        found: QueueFiles | None = detect(path)
    except FileNotFoundError:
        found = None
    if found is None:
        return _new_local_target(path, engine or "DbmEngine", backend)
    if engine is not None and engine not in found.engine_names:
        raise CliError(
            f"{path} is a queue of {' or '.join(found.engine_names)}, which {engine} cannot open"
        )
    if backend is not None and backend != found.backend:
        raise CliError(f"{path} is a {found.backend} database, not {backend}")
    if engine == "SqliteEngine":
        return _SqliteTarget(path, exists=True)
    return _LocalTarget(found.single_owner_engine(path), exists=True)


def _new_local_target(path: Path, engine: str, backend: str | None) -> Target:
    if engine == "SqliteEngine":
        return _SqliteTarget(path, exists=False)
    if backend is not None:
        try:
            importlib.import_module(backend)
        except ImportError:
            raise CliError(f"{backend!r} is not a dbm module this Python has") from None
        return _LocalTarget(DbmEngine(path, backend=backend), exists=False)
    return _LocalTarget(_LOCAL_ENGINES[engine](path), exists=False)


def _server_target(address: str, engine: str | None) -> Target:
    if engine not in _SERVER_ENGINES:
        raise CliError(
            f"{address} is a server address: name RedisEngine or PostgresEngine with --engine"
        )
    cls = getattr(engines, engine)  # ImportError if its extra is missing: reported as such
    return _SharedTarget(cls(address), address, exists=None)


def same_queue(first: str, second: str) -> bool:
    """True if the two places name the same local queue."""
    if is_address(first) or is_address(second):
        return first == second
    return os.path.realpath(first) == os.path.realpath(second)
