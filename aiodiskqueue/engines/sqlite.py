"""SqliteEngine: the queue as a table in an SQLite database.

One table, ``queue(key INTEGER PRIMARY KEY, data BLOB)``, in WAL mode. Each commit is one
transaction. The standard library's `sqlite3` runs in the engine's own thread, which holds
the one connection for as long as the queue is open (the design of aiosqlite, with one
thread hop per batch rather than one per statement).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence

from . import recovery
from .base import Record, Stored, ThreadedStorageEngine
from .files import create_private

__all__ = ["SqliteEngine"]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (key INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SqliteEngine(ThreadedStorageEngine):
    """Stores the queue in an SQLite database file, one transaction per batch.

    A returned commit is in SQLite's write-ahead log, handed to the operating system, so
    it survives the process being killed.
    """

    exclusive = True

    _db: sqlite3.Connection

    def blocking_open(self) -> Stored:
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            recovery.damaged(self.options, self.path, recovered=0, problem=str(exc))
            for suffix in ("", "-wal", "-shm"):
                self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
            self._db = self._connect()
        count, last_key = self._db.execute(
            "SELECT count(*), coalesce(max(key), 0) FROM queue"
        ).fetchone()
        self._db.executemany(
            "INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)", self.options.meta.items()
        )
        meta = dict(self._db.execute("SELECT name, value FROM meta"))
        logger.debug("opened %s with %d record(s)", self.path, count)
        return Stored(size=count, last_key=last_key, meta=meta)

    def _connect(self) -> sqlite3.Connection:
        create_private(self.path)  # SQLite gives its -wal and -shm files the same mode
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def blocking_read(self, after: int, limit: int) -> list[Record]:
        rows = self._db.execute(
            "SELECT key, data FROM queue WHERE key > ? ORDER BY key LIMIT ?", (after, limit)
        )
        return [Record(key, data) for key, data in rows]

    def blocking_commit(self, appends: Sequence[Record], removals: Sequence[int]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT INTO queue (key, data) VALUES (?, ?)", appends)
            self._db.executemany("DELETE FROM queue WHERE key = ?", ((key,) for key in removals))
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def blocking_close(self) -> None:
        self._db.close()
