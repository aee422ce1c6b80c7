"""An SQLite queue database on disk: its tables, and how it is created, checked and salvaged.

Both SQLite engines keep a queue in the same file format. Tables:
``queue(key INTEGER PRIMARY KEY, data BLOB NOT NULL, checksum INTEGER)``, the records in key
order, where ``checksum`` is the CRC-32 of the record, as in `framing` (a database of
aiodiskqueue 0.2, which had none, gets them when it is first opened);
``meta(name TEXT PRIMARY KEY, value TEXT NOT NULL)``; and
``size(count INTEGER NOT NULL, version INTEGER NOT NULL)``, one row that `SharedSqliteEngine`
keeps equal to the number of records, so that it can be read without counting them, and
the number of its puts and gets, so that a count read earlier is known to be older. The
database is in WAL mode. Its ``PRAGMA user_version`` is the format's version, `VERSION`; a
database of an older version, which had none (0), is told by its tables and upgraded when it
is opened (see ``docs/formats.rst``), and one of a newer version is refused.

A new database is built beside its path and renamed into place, so an existing file is
never legitimately empty: an empty file (without a log) is the one ``tempfile.mkstemp()``
leaves, and becomes a new queue. Checking reads only (``PRAGMA quick_check``, the tables'
columns, the meta rows and every record's checksum), so that nothing changes unless the
database is damaged. A damaged database ("file is not a database", "database disk image is
malformed", a damaged schema or meta row, a record that fails its checksum) is salvaged:
its records are read in key order, skipping past the parts that cannot be read, into a
fresh database, which replaces it once `recovery.damaged` has kept a backup. If SQL cannot
read the queue table whole, the file's table pages are then searched, byte by byte as
SQLite lays them out, for records that pass their checksum (`_scan_pages`); pages on the
free list are passed over, but a record removed shortly before may still come back.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from ..contracts.local import OpenOptions, Record
from ..registry import SQLITE_SIGNATURE
from ..storage import framing, legacy, recovery
from ..storage.files import auxiliary_path, create_temporary, fsync_file, replace
from ..storage.sqlite_look import connect_read_only

__all__ = [
    "INSERT",
    "SqliteFile",
    "transaction",
    "with_checksums",
]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (key INTEGER PRIMARY KEY, data BLOB NOT NULL, checksum INTEGER);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS size (count INTEGER NOT NULL, version INTEGER NOT NULL);
"""
INSERT = "INSERT INTO queue (key, data, checksum) VALUES (?, ?, ?)"
# The columns of each table, with their types and which is the primary key: of this
# version, or of aiodiskqueue 0.2.
_KEY_COLUMNS = {("key", "INTEGER", 1), ("data", "BLOB", 0)}
_COLUMNS = {
    "queue": ({*_KEY_COLUMNS, ("checksum", "INTEGER", 0)}, _KEY_COLUMNS),
    "meta": ({("name", "TEXT", 1), ("value", "TEXT", 0)},),
    "size": ({("count", "INTEGER", 0), ("version", "INTEGER", 0)},),
}

VERSION = 2
"""The format's version: 0.1's was 0, 0.2.0's (without checksums) 1."""
_LARGEST_KEY = 2**63 - 1  # SQLite's largest integer key
_MAGIC = SQLITE_SIGNATURE
# What reading a damaged database raises: SQLite's error, or Python's when SQLite's message
# quotes damaged text.
_DAMAGED = (sqlite3.DatabaseError, UnicodeDecodeError)


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
        elif self._is_new():
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

    def _is_new(self) -> bool:
        """Whether there is no database yet: no file, or an empty one without a log.

        A database is built beside its path and renamed into place, so an empty file is
        none of ours: it is the one that ``tempfile.mkstemp()`` leaves, for a new queue.
        """
        if not self.path.exists():
            return True
        wal = self._sibling("-wal")
        return self.path.stat().st_size == 0 and (not wal.exists() or wal.stat().st_size == 0)

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
        with self.path.open("rb") as file:
            start = file.read(len(_MAGIC))
        if not start:
            return "the file is empty", False
        if start != _MAGIC:
            return "file is not a database", False  # as SQLite says it
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
                problem = _schema_problem(look)
                if problem is not None:
                    return problem, False
                if not _read_meta(look)[1]:
                    return "its meta table holds a row that is no text", True
                select = _select(look)
                if select is None:  # a database that holds no queue yet: it gets the tables
                    if any(_scan_pages(self.path.read_bytes())):
                        return "its queue table is missing", False
                    return None
                failed = sum(not _intact(*row) for row in look.execute(select, (0,)))
        except _DAMAGED as exc:
            return str(exc), False
        return (f"{failed} record(s) fail their checksum", True) if failed else None

    def _look(self) -> sqlite3.Connection:
        """Connect for reading only, so that looking changes no file (see `read_only_uri`)."""
        return connect_read_only(self.path)

    def _salvage(self, problem: str, whole: bool) -> None:
        """Replace the damaged database by one that holds every record that can be read."""
        with contextlib.closing(self._look()) as look:
            try:
                meta = _read_meta(look)[0]
            except _DAMAGED:
                meta = dict(self.options.meta)
            salvage = _Salvage(look, self.path, scan=not whole)
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
        temporary = auxiliary_path(self.path, "tmp")
        os.close(create_temporary(temporary))  # SQLite gives its -wal and -shm files its mode
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
    the damage from which reading works again. If any part could not be read, or `scan`
    says that the database's structure is damaged (so that SQL may not see every record),
    the file's table pages are then searched for the records not read yet (`_scan_pages`).
    """

    def __init__(self, db: sqlite3.Connection, path: Path, scan: bool) -> None:
        self.db = db
        self.path = path
        self.scan = scan  # search the pages even if SQL reads the table whole
        self.recovered = 0
        self.failed = 0  # records read that fail their checksum
        self.whole = True  # no part of the table was unreadable

    def __iter__(self) -> Iterator[Record]:
        keys: set[int] = set()  # a damaged page may hold a record twice: the first counts
        for record in itertools.chain(self._read(), self._scanned()):
            if record.key not in keys:
                keys.add(record.key)
                self.recovered += 1
                yield record

    def _scanned(self) -> Iterator[Record]:
        if self.scan or not self.whole:  # known once `_read` is done
            yield from _scan_pages(self.path.read_bytes())

    def _read(self) -> Iterator[Record]:
        try:
            select = _select(self.db)
        except _DAMAGED:
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
                        yield Record(key, data)
                    else:
                        self.failed += 1
                return
            except _DAMAGED:
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
    except _DAMAGED:
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


def _columns(db: sqlite3.Connection, table: str = "queue") -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _schema_problem(db: sqlite3.Connection) -> str | None:
    """Say which of the queue's tables has other columns than it should; None if none."""
    for table, expected in _COLUMNS.items():
        columns = {(row[1], row[2], row[5]) for row in db.execute(f"PRAGMA table_info({table})")}
        if columns and columns not in expected:
            described = ", ".join(" ".join(map(str, column[:2])) for column in sorted(columns))
            return f"its {table} table's columns are damaged ({described})"
    return None


def _read_meta(db: sqlite3.Connection) -> tuple[dict[str, str], bool]:
    """Return the meta table's rows that are text, and whether every row is."""
    meta: dict[str, str] = {}
    whole = True
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
        return meta, whole
    for name, value in db.execute("SELECT CAST(name AS BLOB), CAST(value AS BLOB) FROM meta"):
        try:
            meta[name.decode()] = value.decode()
        except (AttributeError, UnicodeDecodeError):  # NULL, or not UTF-8
            whole = False
    return meta, whole


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


# Reading records from the file's bytes, where SQL cannot reach them. The layout is SQLite's
# (https://www.sqlite.org/fileformat2.html): pages of the size the header gives; a table's
# rows in leaf pages (type 13), each a cell of payload length, row id and payload, the
# payload's tail in a chain of overflow pages when it is long; a payload is a record, a
# header of serial types followed by the values.

_TABLE_LEAF = 13


def _scan_pages(content: bytes) -> Iterator[Record]:
    """Yield the records in the table leaf pages of a database file's bytes that pass their
    checksum: the rows ``(key, data, checksum)`` of the queue table.

    Pages on the free list, which hold removed records, are passed over when the header
    that says which they are is intact.
    """
    page_size = _page_size(content)
    usable = page_size - content[20] if len(content) > 100 else page_size
    free = _free_pages(content, page_size)
    for number in range(1, len(content) // page_size + 1):
        start = (number - 1) * page_size
        header = start + (100 if number == 1 else 0)
        if number in free or content[header] != _TABLE_LEAF:
            continue
        cells = int.from_bytes(content[header + 3 : header + 5], "big")
        for index in range(cells):
            pointer = header + 8 + 2 * index
            cell = start + int.from_bytes(content[pointer : pointer + 2], "big")
            with contextlib.suppress(IndexError, ValueError):
                record = _cell_record(content, cell, page_size, usable)
                if record is not None:
                    yield record


def _page_size(content: bytes) -> int:
    size = int.from_bytes(content[16:18], "big")
    size = 65536 if size == 1 else size
    return size if content.startswith(_MAGIC) and size in _PAGE_SIZES else 4096


_PAGE_SIZES = {2**power for power in range(9, 17)}


def _free_pages(content: bytes, page_size: int) -> set[int]:
    """The pages on the free list, as far as the header and the trunk pages tell."""
    free: set[int] = set()
    if not content.startswith(_MAGIC):
        return free
    trunk = int.from_bytes(content[32:36], "big")
    while 0 < trunk <= len(content) // page_size and trunk not in free:
        free.add(trunk)
        start = (trunk - 1) * page_size
        leaves = min(int.from_bytes(content[start + 4 : start + 8], "big"), page_size // 4 - 2)
        for index in range(leaves):
            at = start + 8 + 4 * index
            free.add(int.from_bytes(content[at : at + 4], "big"))
        trunk = int.from_bytes(content[start : start + 4], "big")
    return free


def _cell_record(content: bytes, offset: int, page_size: int, usable: int) -> Record | None:
    """The record in the table leaf cell at `offset`, if it is one that passes its checksum."""
    length, offset = _varint(content, offset)
    key, offset = _varint(content, offset)
    key = key - 2**64 if key >= 2**63 else key
    payload = _payload(content, offset, length, page_size, usable)
    if payload is None:
        return None
    header_size, at = _varint(payload, 0)
    types = []
    while at < header_size:
        serial_type, at = _varint(payload, at)
        types.append(serial_type)
    # The key is the row id (NULL in the record), the data a BLOB, the checksum an integer.
    if len(types) != 3 or types[0] != 0 or types[1] < 12 or types[1] % 2:
        return None
    data_end = header_size + (types[1] - 12) // 2
    data, checksum = payload[header_size:data_end], _integer(payload, data_end, types[2])
    if len(data) != data_end - header_size or checksum != framing.checksum(key, data):
        return None
    return Record(key, data)


def _payload(content: bytes, offset: int, length: int, page_size: int, usable: int) -> bytes | None:
    """A cell's payload of `length` bytes from `offset` on, with its overflow pages."""
    most = usable - 35
    if length <= most:
        return content[offset : offset + length]
    least = (usable - 12) * 32 // 255 - 23
    local = least + (length - least) % (usable - 4)
    local = local if local <= most else least
    parts = [content[offset : offset + local]]
    remaining = length - local
    page = int.from_bytes(content[offset + local : offset + local + 4], "big")
    seen: set[int] = set()
    while remaining > 0:
        if not 0 < page <= len(content) // page_size or page in seen:
            return None
        seen.add(page)
        start = (page - 1) * page_size
        part = content[start + 4 : start + 4 + min(remaining, usable - 4)]
        parts.append(part)
        remaining -= len(part)
        page = int.from_bytes(content[start : start + 4], "big")
    return b"".join(parts)


def _varint(buffer: bytes, offset: int) -> tuple[int, int]:
    """SQLite's variable-length integer at `offset`, and the offset after it."""
    value = 0
    for index in range(8):
        byte = buffer[offset + index]
        value = value << 7 | byte & 0x7F
        if byte < 0x80:
            return value, offset + index + 1
    return value << 8 | buffer[offset + 8], offset + 9


_INTEGER_SIZES = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}


def _integer(payload: bytes, offset: int, serial_type: int) -> int | None:
    """The integer of `serial_type` at `offset`; None if that type is no integer."""
    if serial_type in (8, 9):
        return serial_type - 8
    size = _INTEGER_SIZES.get(serial_type)
    if size is None or offset + size > len(payload):
        return None
    return int.from_bytes(payload[offset : offset + size], "big", signed=True)
