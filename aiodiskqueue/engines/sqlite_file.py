"""An SQLite queue database on disk: its tables, and how it is created, checked and salvaged.

Both SQLite engines keep a queue in the same file format. Tables:
``queue(key INTEGER PRIMARY KEY, data BLOB NOT NULL, checksum INTEGER)``, the records in key
order, where ``checksum`` is the CRC-32 of the record, as in `framing` (a database of
aiodiskqueue 0.2, which had none, gets them when it is first opened);
``meta(name TEXT PRIMARY KEY, value TEXT NOT NULL)``; and
``size(count INTEGER NOT NULL, version INTEGER NOT NULL)``, one row that `SqliteEngine`
keeps equal to the number of records, so that it can be read without counting them, and
the number of its puts and gets, so that a count read earlier is known to be older. The
database is in WAL mode. Its ``PRAGMA user_version`` is the format's version, `VERSION`; a
database of an older version, which had none (0), is told by its tables and upgraded when it
is opened (see ``docs/formats.rst``), and one of a newer version is refused.

A new database is built beside its path and renamed into place, so an existing file is
never legitimately empty. Checking reads only (``PRAGMA quick_check`` and every record's
checksum), so that nothing changes unless the database is damaged. A damaged database
("file is not a database", "database disk image is malformed", an empty file, a record
that fails its checksum) is salvaged: its records are read in key order, skipping past the
parts that cannot be read, into a fresh database, which replaces it once
`recovery.damaged` has kept a backup.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from . import framing, legacy, recovery
from .base import OpenOptions, Record
from .files import create_private, fsync_file, replace

__all__ = ["INSERT", "SqliteFile", "transaction", "with_checksums"]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (key INTEGER PRIMARY KEY, data BLOB NOT NULL, checksum INTEGER);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS size (count INTEGER NOT NULL, version INTEGER NOT NULL);
"""
INSERT = "INSERT INTO queue (key, data, checksum) VALUES (?, ?, ?)"
VERSION = 2
"""The format's version: 0.1's was 0, 0.2.0's (without checksums) 1."""
_LARGEST_KEY = 2**63 - 1  # SQLite's largest integer key


class SqliteFile:
    """The queue database at `path`, opened with `options`."""

    def __init__(self, path: Path, options: OpenOptions) -> None:
        self.path = path
        self.options = options

    def prepare(self) -> None:
        """Create the database if there is none; check it, and salvage it if it is damaged.

        A database of aiodiskqueue 0.1 is upgraded (see `legacy`)."""
        upgrade = legacy.begin(self.path, "sqlite", self.options)
        if upgrade is not None:
            self._install(self._build(upgrade.meta, upgrade.records))
            upgrade.finish()
        elif not self.path.exists():
            self._install(self._build(self.options.meta, ()))
        else:
            with (
                contextlib.closing(self._look()) as look,
                contextlib.suppress(sqlite3.DatabaseError),
            ):
                _version(look, self.path)  # a newer format is no damage: refuse it, unchanged
            damage = self._check()
            if damage is not None:
                self._salvage(*damage)

    def connect(self, timeout: float = 5.0) -> sqlite3.Connection:
        """Connect in autocommit mode, with the tables, the journal and the synchronous mode
        the queue uses; wait up to `timeout` seconds for a lock another connection holds."""
        db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self.options.fsync else 'NORMAL'}")
            db.executescript(_SCHEMA)
            if "checksum" not in _columns(db):  # a database of aiodiskqueue 0.2
                db.create_function("crc32", 2, framing.checksum, deterministic=True)
                db.executescript(
                    "BEGIN; ALTER TABLE queue ADD COLUMN checksum INTEGER;"
                    " UPDATE queue SET checksum = crc32(key, data); COMMIT;"
                )
            _set_version(db, self.path)
        except BaseException:
            db.close()
            raise
        return db

    # Checking and salvaging

    def _check(self) -> tuple[str, bool] | None:
        """Say what is wrong with the database, and whether its structure is whole."""
        if self.path.stat().st_size == 0:
            return "the file is empty", False
        try:
            with contextlib.closing(self._look()) as look:
                report = [
                    line
                    for (text,) in look.execute("PRAGMA quick_check")
                    for line in text.splitlines()
                    if not line.startswith("***")
                ]
                if report != ["ok"]:
                    more = f" (and {len(report) - 1} more)" if len(report) > 1 else ""
                    return f"quick_check: {report[0]}{more}", False
                select = _select(look)
                if select is None:  # a database that holds no queue yet: it gets the tables
                    return None
                failed = sum(not _intact(*row) for row in look.execute(select, (0,)))
        except sqlite3.DatabaseError as exc:
            return str(exc), False
        return (f"{failed} record(s) fail their checksum", True) if failed else None

    def _look(self) -> sqlite3.Connection:
        """Connect for reading only, so that looking changes no file.

        A -wal left by a killed process holds commits, so it is read (SQLite may create
        its -shm index for that); without one, the file is opened as immutable.
        """
        mode = "mode=ro" if self._sibling("-wal").exists() else "immutable=1"
        return sqlite3.connect(f"{self.path.absolute().as_uri()}?{mode}", uri=True)

    def _salvage(self, problem: str, whole: bool) -> None:
        """Replace the damaged database by one that holds every record that can be read."""
        with contextlib.closing(self._look()) as look:
            try:
                meta = dict(look.execute("SELECT name, value FROM meta"))
            except sqlite3.DatabaseError:
                meta = dict(self.options.meta)
            salvage = _Salvage(look)
            temporary = self._build(meta, salvage)
        try:
            recovery.damaged(
                self.options,
                self.path,
                self._sibling("-wal"),
                recovered=salvage.recovered,
                lost=salvage.failed if whole and salvage.whole else None,
                problem=problem,
            )
        except BaseException:
            temporary.unlink()
            raise
        self._install(temporary)

    def _build(self, meta: Mapping[str, str], records: Iterable[Record]) -> Path:
        """Write a new database beside the queue's path, and return where it is."""
        temporary = self._sibling(".tmp")
        temporary.unlink(missing_ok=True)
        create_private(temporary)  # SQLite gives its -wal and -shm files the same mode
        db = sqlite3.connect(temporary, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # as it will be used: opening changes nothing
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version = {VERSION}")
            db.execute("BEGIN")
            db.executemany("INSERT INTO meta (name, value) VALUES (?, ?)", meta.items())
            # A damaged table may yield a key twice: the first copy that passed its checksum stays.
            db.executemany(INSERT.replace("INTO", "OR IGNORE INTO"), with_checksums(records))
            db.execute("COMMIT")
        except BaseException:
            db.close()
            temporary.unlink()
            raise
        db.close()
        return temporary

    def _install(self, temporary: Path) -> None:
        """Put the database built at `temporary` in the place of the queue's files."""
        if self.options.fsync:
            fsync_file(temporary)
        for suffix in ("-wal", "-shm"):  # SQLite would apply a log to the wrong database
            self._sibling(suffix).unlink(missing_ok=True)
        replace(temporary, self.path, fsync=self.options.fsync)

    def _sibling(self, suffix: str) -> Path:
        return self.path.with_name(self.path.name + suffix)


class _Salvage:
    """The records of a damaged database that can be read and pass their checksum.

    Records are read in key order. Where reading fails, it goes on from the least key after
    the damage from which reading works again.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.recovered = 0
        self.failed = 0  # records read that fail their checksum
        self.whole = True  # no part of the table was unreadable

    def __iter__(self) -> Iterator[Record]:
        try:
            select = _select(self.db)
        except sqlite3.DatabaseError:
            select = None
        if select is None:
            self.whole = False
            return
        start = verified = 0
        while True:
            try:
                for key, data, checksum in self.db.execute(select, (start,)):
                    if _intact(key, data, checksum):
                        verified = max(verified, key)
                        self.recovered += 1
                        yield Record(key, data)
                    else:
                        self.failed += 1
                return
            except sqlite3.DatabaseError:
                self.whole = False
                if verified >= start:  # first try a fresh search past the last good record
                    start = verified + 1
                    continue
                resume = _next_readable(self.db, select, start)
                if resume is None:
                    return
                start = resume


def _next_readable(db: sqlite3.Connection, select: str, start: int) -> int | None:
    """Return the least key above `start` from which reading works again; None if none.

    Keys are tried at doubling distances from `start` until reading works (or finds no
    record), then the gap between the last that failed and the first that worked is halved
    down to the edge of the damage.
    """
    failed, step = start, 1
    while True:
        candidate = min(start + step, _LARGEST_KEY)
        readable = _readable(db, select, candidate)
        if readable is not False:
            break
        if candidate == _LARGEST_KEY:
            return None
        failed, step = candidate, step * 2
    while candidate - failed > 1:
        middle = (failed + candidate) // 2
        found = _readable(db, select, middle)
        if found is False:
            failed = middle
        else:
            candidate, readable = middle, found
    return None if readable is None else candidate


def _readable(db: sqlite3.Connection, select: str, start: int) -> bool | None:
    """Whether the first record with a key from `start` on can be read and passes its
    checksum; None if there is no such record."""
    try:
        row = db.execute(f"{select} LIMIT 1", (start,)).fetchone()
    except sqlite3.DatabaseError:
        return False
    return None if row is None else _intact(*row)


def _select(db: sqlite3.Connection) -> str | None:
    """The query for the records with keys from a parameter on, with their checksums.

    None if the database has no queue table.
    """
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'queue'").fetchone() is None:
        return None
    # A record without a checksum is damaged, unless the table is one of 0.2, which had none.
    checksum = "coalesce(checksum, -1)" if "checksum" in _columns(db) else "NULL"
    return f"SELECT key, data, {checksum} FROM queue WHERE key >= ? ORDER BY key"


def _set_version(db: sqlite3.Connection, path: Path) -> None:
    """Give a database of an older version, brought up to date, the current one."""
    if _version(db, path) < VERSION:
        db.execute(f"PRAGMA user_version = {VERSION}")


def _version(db: sqlite3.Connection, path: Path) -> int:
    """The database's format version; `ValueError` if this release cannot read it."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > VERSION:
        raise ValueError(
            f"{path} is an SQLite queue of format version {version}, newer than this "
            f"aiodiskqueue reads ({VERSION}): open it with the release that wrote it"
        )
    return int(version)


def _columns(db: sqlite3.Connection) -> set[str]:
    return {row[1] for row in db.execute("PRAGMA table_info(queue)")}


def _intact(key: object, data: object, checksum: object) -> bool:
    """Whether a row is a record that passes its checksum (None: a table that has none)."""
    if not (isinstance(key, int) and isinstance(data, bytes)):  # a damaged row
        return False
    return checksum is None or checksum == framing.checksum(key, data)


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """Run the block in a transaction that holds the write lock from its start."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def with_checksums(records: Iterable[Record]) -> Iterator[tuple[int, bytes, int]]:
    for key, data in records:
        yield key, data, framing.checksum(key, data)
