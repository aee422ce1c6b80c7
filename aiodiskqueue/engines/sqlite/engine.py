"""SqliteEngine: a queue in an SQLite database that one `Queue` owns.

The file format is `SqliteFile`'s, shared with `SharedSqliteEngine`. This engine keeps the
single-owner contract of `StorageEngine`: the `Queue` numbers the records and writes each
batch of puts and gets as one transaction (group commit), so one process goes several times
faster than with `SharedSqliteEngine`, which makes a transaction of every operation so that other
processes can use the file at the same time. Each commit is one transaction. The standard
library's `sqlite3` runs in the engine's own thread, which holds the one connection for as
long as the queue is open (the design of aiosqlite, with one thread hop per batch rather
than one per statement).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence

from ..contracts.local import Record, Stored, ThreadedStorageEngine
from .file import INSERT, SqliteFile, transaction, with_checksums

__all__ = ["ExclusiveSqliteEngine", "SqliteEngine"]

logger = logging.getLogger(__name__)


class SqliteEngine(ThreadedStorageEngine):
    """Stores the queue in an SQLite database file that one `Queue` owns, a transaction per batch.

    Durability: a returned commit is in SQLite's write-ahead log, handed to the operating
    system (``PRAGMA synchronous=NORMAL``), so it survives the process being killed; an
    operating-system crash or a power loss may lose the last commits, but leaves a
    consistent database. With ``options.fsync`` ("power-loss"), ``synchronous=FULL``:
    SQLite flushes the log to the disk at every commit (one flush per commit) and the
    directory when it creates the log, so a returned commit survives a power loss too.
    Opening reads every record once, to check it. While it is open, no other queue, of
    either SQLite engine, can open the file.
    """

    exclusive = True

    _db: sqlite3.Connection

    def blocking_open(self) -> Stored:
        file = SqliteFile(self.path, self.options)
        file.prepare()
        self._db = file.connect()
        count, last_key = self._db.execute(
            "SELECT count(*), coalesce(max(key), 0) FROM queue"
        ).fetchone()
        self._db.executemany(
            "INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)", self.options.meta.items()
        )
        meta = dict(self._db.execute("SELECT name, value FROM meta"))
        logger.debug("opened %s with %d record(s)", self.path, count)
        return Stored(size=count, last_key=last_key, meta=meta)

    def blocking_read(self, after: int, limit: int) -> list[Record]:
        rows = self._db.execute(
            "SELECT key, data FROM queue WHERE key > ? ORDER BY key LIMIT ?", (after, limit)
        )
        return [Record(key, data) for key, data in rows]

    def blocking_commit(self, appends: Sequence[Record], removals: Sequence[int]) -> None:
        with transaction(self._db):
            self._db.executemany(INSERT, with_checksums(appends))
            self._db.executemany("DELETE FROM queue WHERE key = ?", ((key,) for key in removals))

    def blocking_close(self) -> None:
        self._db.close()


ExclusiveSqliteEngine = SqliteEngine
"""The name `SqliteEngine` had in aiodiskqueue 0.2.0, where `SqliteEngine` named the engine
now called `SharedSqliteEngine`."""
