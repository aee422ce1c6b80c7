"""How the commands open queues: to read without changing anything, to empty, and to
append to.

A local queue is always opened with the single-owner engine of its format (see
`engines.storage.detect`), which holds its lock for as long as the command runs, so no other
process changes it meanwhile, and with ``on_corruption="raise"``, so a damaged queue is
reported and never recovered (recovery writes backups and rewrites files). Reading goes
through `StorageEngine.read` a page at a time, so memory does not grow with the queue.

A queue on a server (its address has a scheme: ``redis://``, ``postgresql://``...) is opened
with the engine its scheme names, as one more user of the queue: other users may go on
putting and getting meanwhile. It is looked for first (`SharedStorageEngine.exists`), so that
a command that reads a queue never creates one, and read with `SharedStorageEngine.items`,
which takes nothing from the queue's users. Addresses are shown with their passwords hidden
(`redacted`).

A queue of aiodiskqueue 0.1 is read as it is, by `engines.storage.legacy`, under the same lock,
for the commands that only read; the commands that change it open it with its engine,
which upgrades it first (keeping the 0.1 files as a backup).
"""

from __future__ import annotations

import abc
import bisect
import contextlib
import hashlib
import importlib
import os
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol, TypeVar

from .. import engines
from ..engines import (
    DbmEngine,
    OpenOptions,
    Record,
    SharedSqliteEngine,
    SharedStorageEngine,
    SqliteEngine,
    StorageEngine,
    Stored,
    registry,
)
from ..engines.contracts.shared import redacted
from ..engines.storage import legacy
from ..engines.storage.detect import QueueFiles, detect
from ..engines.storage.locking import QueueLock, recorded_owner
from ..exceptions import QueueCorruptedError, QueueLockedError

__all__ = [
    "ENGINE_NAMES",
    "PAGE",
    "CliError",
    "Locked",
    "Opened",
    "Readable",
    "Source",
    "Target",
    "delete_files",
    "drop_server_queue",
    "find",
    "is_address",
    "open_engine",
    "opened",
    "pages",
    "reading",
    "same_queue",
    "server_engine",
    "target",
]

PAGE = 1000
"""Records read, or appended, per call to an engine: each append is one atomic commit."""

ENGINE_NAMES = registry.names()
"""The engines a command can name, as `aiodiskqueue.engines` calls them."""


def _local_engine(name: str) -> Callable[[Path], StorageEngine]:
    """The engine that writes a new local queue of engine `name`: the single-owner engine of
    its format (SharedSqliteEngine's file serves it all the same, appended to by batches)."""
    entry = registry.ENGINES[name]
    assert entry.format is not None
    engine: Callable[[Path], StorageEngine] = registry.single_owner(entry.format).load()
    return engine


class CliError(Exception):
    """A failure that the command reports in one line: the message says what went wrong."""


class Locked(CliError):
    """The queue is open in another process; `shared` if `SharedSqliteEngine` queues hold it."""

    def __init__(self, path: Path, owner: int | None) -> None:
        self.owner = owner
        self.shared = owner is None
        if owner is not None:
            message = f"{path} is open in process {owner}: close it there first"
        else:
            message = (
                f"{path} is open in other processes (shared): close it there first, or, to "
                "import into it or migrate to it meanwhile, pass --engine SharedSqliteEngine"
            )
        super().__init__(message)


def is_address(text: str) -> bool:
    """True if `text` is the address of a queue on a server rather than a path."""
    return "://" in text


def find(path: str) -> QueueFiles:
    """Return the local queue at `path`; raise `CliError` if there is none."""
    try:
        return detect(path)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None


def server_engine(address: str, named: str | None = None) -> SharedStorageEngine:
    """The engine, not yet open, of the queue at the server `address`, as its scheme says.

    `named` is the engine the command line names, if it does: it must be that one.
    """
    scheme = urllib.parse.urlsplit(address).scheme
    entry = registry.by_scheme(scheme)
    engine = None if entry is None else entry.name
    if engine is None:
        schemes = ", ".join(
            f"{scheme}://" for entry in registry.ENGINES.values() for scheme in entry.schemes
        )
        raise CliError(f"{redacted(address)} is not a queue address: it starts with {schemes}")
    if named is not None and named != engine:
        raise CliError(f"{redacted(address)} is a queue of {engine}, not of {named}")
    cls: type[SharedStorageEngine] = getattr(engines, engine)  # ImportError if its extra
    return cls(address)  # is missing, ValueError for a malformed address: reported as such


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


@contextlib.asynccontextmanager
async def _read_as_it_is(found: QueueFiles, *, unpickle: bool) -> AsyncIterator[Opened0_1]:
    """Open the queue of aiodiskqueue 0.1 `found` to read it as it is, changing no file.

    Its lock is held meanwhile; its items are read when first asked for, and counted
    without unpickling any. Without `unpickle`, a 0.1 ``PickledList``, whose items are one
    pickle, is refused.
    """
    with holding_lock(found):
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
        yield Opened0_1(_Records(old), Stored(size, size, meta))


@contextlib.contextmanager
def holding_lock(found: QueueFiles) -> Iterator[None]:
    """Hold the lock of the local queue `found`, as its engine would, changing no file of its;
    `Locked` if another process has the queue open."""
    lock = QueueLock(found.path)
    try:
        lock.acquire()
    except QueueLockedError:
        raise Locked(found.path, recorded_owner(found.path)) from None
    try:
        yield
    finally:
        lock.release()


class Opened0_1(NamedTuple):
    """A queue of aiodiskqueue 0.1, open to be read as it is."""

    records: Readable
    stored: Stored


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


# Reading


class Source(abc.ABC):
    """An open queue that a command reads, and may empty: what it is, and its items."""

    name: str
    """The queue's path or address, as it may be shown."""
    engine_names: tuple[str, ...]
    meta: Mapping[str, str]
    size: int
    """The number of items it held when opened."""

    @abc.abstractmethod
    def batches(
        self, limit: int | None = None, *, remember: bool = False
    ) -> AsyncGenerator[list[bytes], None]:
        """Yield the items from the head, `PAGE` at a time, `limit` in all (every one if
        None), removing none. With `remember`, keep what `remove_read` needs. Close the
        generator (`contextlib.aclosing`) if stopping before its end."""

    @abc.abstractmethod
    async def remove_read(self) -> None:
        """Remove the items that the last `batches(remember=True)` yielded."""

    @abc.abstractmethod
    async def purge(self) -> int:
        """Remove every item in one atomic step, durably; return how many were removed."""


class _LocalSource(Source):
    """A local queue, held by its single-owner engine (or, for a queue of aiodiskqueue 0.1
    read as it is, its lock): nobody else changes it meanwhile."""

    def __init__(self, found: QueueFiles, queue: Opened | Opened0_1) -> None:
        self.name = str(found.path)
        self.engine_names = found.engine_names
        self.meta, self.size = queue.stored.meta, queue.stored.size
        self._records: Readable = queue.records if isinstance(queue, Opened0_1) else queue.engine
        self._engine = queue.engine if isinstance(queue, Opened) else None
        self._read: list[int] = []  # the keys of the items read with `remember`

    async def batches(
        self, limit: int | None = None, *, remember: bool = False
    ) -> AsyncGenerator[list[bytes], None]:
        self._read = []
        left = limit
        async for records in pages(self._records, PAGE if left is None else min(PAGE, left)):
            records = records if left is None else records[:left]
            if remember:
                self._read.extend(record.key for record in records)
            yield [record.data for record in records]
            if left is not None:
                left -= len(records)
                if left <= 0:
                    return

    async def remove_read(self) -> None:
        if self._read:
            await self._writable().commit((), self._read)

    async def purge(self) -> int:
        keys = [record.key async for records in pages(self._records) for record in records]
        if keys:
            await self._writable().commit((), keys)
        return len(keys)

    def _writable(self) -> StorageEngine:
        if self._engine is None:  # `reading` opens a 0.1 queue with its engine to change it
            raise CliError(f"{self.name} is read as it is: it cannot be changed")
        return self._engine


class _ServerSource(Source):
    """A queue on a server, read as one more user of it: others may use it meanwhile."""

    def __init__(self, engine: SharedStorageEngine, meta: Mapping[str, str]) -> None:
        self.name = redacted(engine.address)
        self.engine_names = (type(engine).__name__,)
        self.meta, self.size = meta, engine.size()
        self._engine = engine
        self._read: list[bytes] = []  # the digests of the items read with `remember`

    async def batches(
        self, limit: int | None = None, *, remember: bool = False
    ) -> AsyncGenerator[list[bytes], None]:
        self._read = []
        async with contextlib.aclosing(self._engine.items(limit)) as items:
            batch: list[bytes] = []
            async for data in items:
                batch.append(data)
                if remember:
                    self._read.append(_digest(data))
                if len(batch) == PAGE:
                    yield batch
                    batch = []
            if batch:
                yield batch

    async def remove_read(self) -> None:
        """Get the items read, one by one from the head, as any getter does; stop at the
        first one that is not the next item read (other users changed the queue), putting
        it back at the tail."""
        for done, expected in enumerate(self._read):
            data = await self._engine.get()
            if data is not None and _digest(data) == expected:
                continue
            found = "no item" if data is None else "another item"
            if data is not None:
                await self._engine.put(data, 0)
            raise CliError(
                f"{self.name} changed while its items were moved: the next item to remove "
                f"was {found}{' (put back at the tail)' if data is not None else ''}; "
                f"{done} of the {len(self._read)} item(s) copied were removed from it"
            )

    async def purge(self) -> int:
        return await self._engine.purge()


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@contextlib.asynccontextmanager
async def reading(
    place: str, *, fsync: bool = False, unpickle: bool = True
) -> AsyncIterator[Source]:
    """Open the queue at `place`, a path or a server address, to read (and maybe empty);
    close it when the block ends. A queue that does not exist is reported, never created.

    Pass `fsync` to change the queue, durably (to survive a power loss): a queue of
    aiodiskqueue 0.1 is then opened with its engine, which upgrades it first; without it, it
    is read as it is (`unpickle`: see `_read_as_it_is`).
    """
    if not is_address(place):
        found = find(place)
        if found.from_0_1 and not fsync:
            async with _read_as_it_is(found, unpickle=unpickle) as old:
                yield _LocalSource(found, old)
            return
        async with opened(found, fsync=fsync) as queue:
            yield _LocalSource(found, queue)
        return
    async with _server_queue_opened(place, fsync) as (engine, meta):
        yield _ServerSource(engine, meta)


async def drop_server_queue(address: str) -> int:
    """Delete the queue at the server `address`; return how many items it held."""
    async with _server_queue_opened(address, fsync=True) as (engine, _):
        held = engine.size()
        await engine.drop()
    return held


@contextlib.asynccontextmanager
async def _server_queue_opened(
    address: str, fsync: bool
) -> AsyncIterator[tuple[SharedStorageEngine, Mapping[str, str]]]:
    """The engine of the queue at `address`, open, and the queue's meta; `CliError` if there
    is no queue there (opening would create one)."""
    engine = server_engine(address)
    if not await engine.exists():
        raise CliError(f"no queue at {redacted(address)}")
    meta = await engine.open(OpenOptions(fsync=fsync))
    try:
        yield engine, meta
    finally:
        await engine.close()


def delete_files(found: QueueFiles) -> list[Path]:
    """Delete the files of the local queue `found`; return those it deleted.

    The queue's lock is held meanwhile, so a queue that another process has open is refused
    (`Locked`) and none opens it until its files are gone. The main file goes last, so that
    a log left behind never meets a new database at the same path. The lock file stays, as
    engines leave it: removing it would race with a process opening the queue.
    """
    with holding_lock(found):
        files = list(detect(found.path).files)  # as they are now that nobody has them open
        if found.backend == "dbm.dumb":  # its copy of the index, from its last commit
            files.append(Path(f"{found.path}.bak"))
        files.sort(key=lambda file: file == found.path)
        deleted = []
        for file in files:
            with contextlib.suppress(FileNotFoundError):
                file.unlink()
                deleted.append(file)
        return deleted


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

    async def resolve(self) -> None:  # noqa: B027 - most targets know without asking
        """Find out whether the queue exists, where that takes asking its store."""

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

    async def resolve(self) -> None:
        if self.exists is None:
            self.exists = await self._engine.exists()

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
    """An SQLite queue for `SharedSqliteEngine`: appended to by whole batches while no other
    process has it open, and item by item, as one more `SharedSqliteEngine`, while some do."""

    def __init__(self, path: Path, exists: bool) -> None:
        super().__init__(str(path), exists)
        self._path = path
        self._chosen: Target = _LocalTarget(SqliteEngine(path), exists)

    async def open(self, meta: Mapping[str, str]) -> None:
        try:
            await self._chosen.open(meta)
        except Locked as exc:
            if not exc.shared:
                raise
            self._chosen = _SharedTarget(SharedSqliteEngine(self._path), self.name, self.exists)
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
        return _SharedTarget(server_engine(place, engine), redacted(place), exists=None)
    if engine in registry.names(local=False):
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
    if engine == "SharedSqliteEngine":
        return _SqliteTarget(path, exists=True)
    return _LocalTarget(found.single_owner_engine(path), exists=True)


def _new_local_target(path: Path, engine: str, backend: str | None) -> Target:
    if engine == "SharedSqliteEngine":
        return _SqliteTarget(path, exists=False)
    if backend is not None:
        try:
            importlib.import_module(backend)
        except ImportError:
            raise CliError(f"{backend!r} is not a dbm module this Python has") from None
        return _LocalTarget(DbmEngine(path, backend=backend), exists=False)
    return _LocalTarget(_local_engine(engine)(path), exists=False)


def same_queue(first: str, second: str) -> bool:
    """True if the two places name the same queue: the same local files, or the same queue
    on the same server, however the addresses give the user, password and options."""
    if is_address(first) != is_address(second):
        return False
    if is_address(first):
        return _server_queue(first) == _server_queue(second)
    return os.path.realpath(first) == os.path.realpath(second)


def _server_queue(address: str) -> tuple[str | None, str | None, int | None, str]:
    parts = urllib.parse.urlsplit(address)
    try:
        port = parts.port
    except ValueError:
        port = None
    entry = registry.by_scheme(parts.scheme)
    name = None if entry is None else entry.name
    return name, parts.hostname, port, urllib.parse.unquote(parts.path)
