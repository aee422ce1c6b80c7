"""SharedSqliteEngine: a queue in an SQLite database file that several processes use at once.

The file format is `SqliteFile`'s. Every put and every get is one short transaction, begun
with ``BEGIN IMMEDIATE`` so that it takes SQLite's write lock at once: the transactions of
all the processes that have the file open run one after another, and each item goes to
exactly one getter. A transaction that finds the lock taken waits for it (a busy timeout of
`BUSY_TIMEOUT` seconds), so that contention makes a caller wait rather than fail with
"database is locked". A put checks the ``size`` row against `maxsize` and appends in the
same transaction, so `maxsize` holds across processes.

Waking a getter in another process: each engine has a thread that asks SQLite every
`POLL_INTERVAL` seconds whether another connection has committed (``PRAGMA data_version``,
read from the WAL index in shared memory, without touching the disk) and, if one has, reads
the ``size`` row and tells the waiting getters and putters. A getter therefore wakes within
about `POLL_INTERVAL` of a put in another process (at once for a put in its own), and
`size()` is never staler than that.

The first engine to open the file holds it alone while it checks it (and salvages it if it
is damaged, as `SqliteFile` does) and counts its records; the others wait for that, then
join. `SqliteEngine` cannot open the file while any `SharedSqliteEngine` has it open,
nor the other way round.

Durability: as `SqliteEngine`'s, for each operation. A returned put or get is in
the write-ahead log, handed to the operating system, so it survives the process being
killed; with ``options.fsync`` ("power-loss"), it is flushed to the disk before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeVar

from ..contracts.local import (
    DEFAULT_OPTIONS,
    OpenOptions,
    check_not_a_directory,
    check_queue_path,
    not_open,
)
from ..contracts.shared import KnownSize, SharedStorageEngine
from ..storage import framing
from ..storage.locking import QueueLock
from ..storage.thread import EngineThread
from .file import INSERT, SqliteFile, transaction

__all__ = ["SharedSqliteEngine"]

logger = logging.getLogger(__name__)

R = TypeVar("R")

BUSY_TIMEOUT = 60.0
"""Seconds a transaction waits for another process's to end before it fails."""
POLL_INTERVAL = 0.02
"""Seconds between two looks for commits of other processes."""
FIRST_OPENER_PATIENCE = 60.0
"""Seconds an opener waits for the first opener to finish checking the file."""


class SharedSqliteEngine(SharedStorageEngine):
    """Stores the queue in an SQLite database file, which queues in several processes share.

    Every operation is a transaction of its own (see the module's documentation); for one
    process alone, `SqliteEngine` and `DbmEngine` are faster.
    """

    _thread: EngineThread | None = None
    _watcher: _Watcher | None = None
    _db: sqlite3.Connection

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.path = check_queue_path(path)
        self._size = KnownSize()

    async def open(self, options: OpenOptions = DEFAULT_OPTIONS) -> Mapping[str, str]:
        file = SqliteFile(self.path, options)
        thread = EngineThread(name=f"aiodiskqueue {self.path.name}")
        try:
            meta, size = await thread.call(self._blocking_open, file, thread)
        except BaseException:  # a cancelled open may yet open the file: close it then
            thread.abandon(self._blocking_close)
            raise
        self._thread = thread
        self._size.heard(*size)
        self._watcher = _Watcher(
            file, weakref.WeakMethod(self._heard_from_thread), asyncio.get_running_loop()
        )
        logger.debug("opened %s with %d record(s)", self.path, size.items)
        return meta

    def _blocking_open(
        self, file: SqliteFile, thread: EngineThread
    ) -> tuple[dict[str, str], _Size]:
        check_not_a_directory(self.path)
        lock = QueueLock(self.path, self)
        thread.lock = lock  # before it is taken: see ThreadedStorageEngine._lock_and_open
        first = lock.acquire_shared(FIRST_OPENER_PATIENCE)
        try:
            if first:
                file.prepare()
            self._db = file.connect(timeout=BUSY_TIMEOUT)
            try:
                with transaction(self._db):
                    if first or self._blocking_size() is None:
                        # The count is kept by this engine alone: make it true.
                        for statement in _RECOUNT:
                            self._db.execute(statement)
                    self._db.executemany(
                        "INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)",
                        file.options.meta.items(),
                    )
                meta = dict(self._db.execute("SELECT name, value FROM meta"))
                size = self._blocking_size() or _NONE
            except BaseException:
                self._db.close()
                raise
        except BaseException:
            thread.unlock()
            raise
        lock.share()
        thread.opened = True
        return meta, size

    async def put(self, data: bytes, maxsize: int) -> bool:
        stored, size = await self._call(self._blocking_put, data, maxsize)
        self._size.heard(*size)
        return stored

    def _blocking_put(self, data: bytes, maxsize: int) -> tuple[bool, _Size]:
        with transaction(self._db):
            size = self._blocking_size() or _NONE
            if 0 < maxsize <= size.items:
                return False, size
            (key,) = self._db.execute("SELECT coalesce(max(key), 0) + 1 FROM queue").fetchone()
            self._db.execute(INSERT, (key, data, framing.checksum(key, data)))
            self._db.execute("UPDATE size SET count = count + 1, version = version + 1")
        return True, _Size(size.items + 1, size.version + 1)

    async def put_back(self, data: bytes) -> None:
        _, size = await self._call(self._blocking_put_back, data)
        self._size.heard(*size)

    def _blocking_put_back(self, data: bytes) -> tuple[bool, _Size]:
        """Insert `data` before the head, under the key below it (keys stay positive, so
        when the head's key is 1 it goes to the tail instead)."""
        with transaction(self._db):
            (head,) = self._db.execute("SELECT min(key) FROM queue").fetchone()
            if head is None or head <= 1:
                (key,) = self._db.execute("SELECT coalesce(max(key), 0) + 1 FROM queue").fetchone()
            else:
                key = head - 1
            self._db.execute(INSERT, (key, data, framing.checksum(key, data)))
            self._db.execute("UPDATE size SET count = count + 1, version = version + 1")
            return True, self._blocking_size() or _NONE

    async def get(self) -> bytes | None:
        data, size = await self._call(self._blocking_get)
        self._size.heard(*size)
        return data

    def _blocking_get(self) -> tuple[bytes | None, _Size]:
        size = self._blocking_size() or _NONE
        if size.items == 0:  # a read, which waits for no lock
            return None, size
        with transaction(self._db):
            row = self._db.execute("SELECT key, data FROM queue ORDER BY key LIMIT 1").fetchone()
            if row is None:
                return None, self._blocking_size() or _NONE
            key, data = row
            self._db.execute("DELETE FROM queue WHERE key = ?", (key,))
            self._db.execute("UPDATE size SET count = max(count - 1, 0), version = version + 1")
            return data, self._blocking_size() or _NONE

    def _blocking_size(self) -> _Size | None:
        return _read_size(self._db)

    async def wait_for_items(self, timeout: float) -> None:
        await self._size.wait_for_items(timeout)

    async def wait_for_room(self, maxsize: int, timeout: float) -> None:
        await self._size.wait_for_room(maxsize, timeout)

    def size(self) -> int:
        return int(self._size)

    def _heard_from_thread(self, size: _Size) -> None:
        self._size.heard(*size)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        thread = self._running()
        self._thread = None
        await thread.close(self._blocking_close)

    def _blocking_close(self) -> None:
        self._db.close()

    def __del__(self) -> None:
        # A queue that was never closed: let the threads close the files.
        if self._watcher is not None:
            self._watcher.stop()
        if self._thread is not None:
            self._thread.abandon(self._blocking_close)

    async def _call(self, function: Callable[..., R], *args: Any) -> R:
        return await self._running().call(function, *args)

    def _running(self) -> EngineThread:
        if self._thread is None:
            raise not_open(self)
        return self._thread


class _Size(NamedTuple):
    """The ``size`` row: the number of records, and of the puts and gets that changed it."""

    items: int
    version: int


_NONE = _Size(0, 0)

_RECOUNT = (
    "DROP TABLE IF EXISTS size",
    "CREATE TABLE size (count INTEGER NOT NULL, version INTEGER NOT NULL)",
    "INSERT INTO size SELECT count(*), 0 FROM queue",
)


def _read_size(db: sqlite3.Connection) -> _Size | None:
    """The ``size`` row; None if there is none (a file that no SharedSqliteEngine counted yet)."""
    row = db.execute("SELECT count, version FROM size").fetchone()
    return None if row is None else _Size(int(row[0]), int(row[1]))


Reporter = Callable[[_Size], None]


class _Watcher:
    """A thread that looks for commits to the database and reports the size after each.

    It holds the engine's report method by a weak reference, so that an engine left open
    can be collected: the thread ends then.
    """

    def __init__(
        self,
        file: SqliteFile,
        report: weakref.WeakMethod[Reporter],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=_watch,
            args=(file, report, loop, self._stopped),
            name=f"aiodiskqueue {file.path.name} watcher",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Let the thread end at its next look."""
        self._stopped.set()


def _watch(
    file: SqliteFile,
    report: weakref.WeakMethod[Reporter],
    loop: asyncio.AbstractEventLoop,
    stopped: threading.Event,
) -> None:
    with contextlib.closing(file.connect(timeout=BUSY_TIMEOUT)) as db:
        seen = None
        while not stopped.wait(POLL_INTERVAL):
            try:
                (version,) = db.execute("PRAGMA data_version").fetchone()
                if version == seen:
                    continue
                seen = version
                size = _read_size(db)
            except sqlite3.Error as exc:  # look again next time; waits have their timeout
                logger.warning(
                    "%s: looking for other processes' changes failed: %s", file.path, exc
                )
                continue
            engine_report = report()
            if engine_report is None:  # the engine was collected
                return
            try:
                loop.call_soon_threadsafe(engine_report, size or _NONE)
            except RuntimeError:  # the loop is closed: nobody is left to tell
                return
            del engine_report
