"""Queues that aiodiskqueue 0.1 wrote: finding one at a path, reading it, upgrading it in place.

0.1 kept no version in its files; they are version 0 of each engine's format, and every item
in them is `pickle.dumps(item)` (0.1 had no other serializer):

``DbmEngine``
    A database of whichever module `dbm.open` preferred on the Python that made it. Keys
    ``head_id`` and ``tail_id`` hold the pickled numbers of the first and last item, both
    absent when the queue is empty; ``item-<n>`` holds item ``n``. An emptied `dbm.dumb`
    database has no keys but a data file that is not empty.
``PickledList``
    The file is one pickle: the list of the items.
``PickleSequence``
    The file is the items' pickles one after another. An empty file is an empty queue, but
    also what a power loss can leave of a file of today: it is treated as damage, which
    costs nothing since it holds no item.
``SqliteEngine``
    An SQLite database with one table, ``queue(item BLOB)``: the items in ``rowid`` order.

Finding reads the files and never changes them. It tells the formats apart by their shape,
without unpickling anything: the keys of a dbm database, the columns of the SQLite table,
the pickle opcodes of a file (`pickletools.genops`). Reading keeps each item's pickle as the
record's data, which is what `PickleSerializer` reads; only a pickled list is unpickled,
to split it into items, and so only for a queue opened with the pickle serializer (`count`
counts its items with every class it names replaced by a stand-in, running none). A file
that is one pickle of a list is read as a ``PickledList``, even if ``PickleSequence`` wrote
it with a list as its one item.

Upgrading (`upgrading`, which engines put on their ``blocking_open``, and `begin`) replaces
the 0.1 files by a queue of the engine's current format holding the same items in the same
order, and keeps the 0.1 files, unchanged, as ``<path>.v0.1`` (``<path>.v0.1.dat`` and so
on for a dbm database with several files). The steps, of which a crash may interrupt any:

1. read the 0.1 queue (a queue that cannot be read is refused, and nothing changes);
2. copy its files to the backup names, each through a temporary file and a rename;
3. write the marker ``<path>.v0.1-upgrade``, which says that the backup is complete;
4. remove the 0.1 files from the queue's path;
5. create the queue there and store the items (the engine's own writing);
6. remove the marker.

Until step 3 the 0.1 files are in place and opening starts again; from step 3 on the marker
is there and opening removes whatever is at the queue's path and starts again from step 5
with the backup. So a crash leaves the 0.1 files or the upgraded queue, never neither.
The backup is left in place: removing it is the user's choice, once the queue works.
"""

from __future__ import annotations

import contextlib
import dataclasses
import dbm
import functools
import importlib
import io
import json
import logging
import pickle
import pickletools
import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol, TypeVar, cast

from ...exceptions import QueueCorruptedError
from ..contracts.local import OpenOptions, Record, Stored
from ..registry import SQLITE_SIGNATURE
from .files import fsync_directory, write_atomically
from .sqlite_look import connect_read_only

if TYPE_CHECKING:
    from ..contracts.local import ThreadedStorageEngine

__all__ = ["BACKUP_SUFFIX", "Found", "Upgrade", "begin", "count", "find", "read", "upgrading"]

logger = logging.getLogger(__name__)

Format = Literal["dbm", "pickled-list", "sqlite"]
"""The format of the engines that open a 0.1 queue today (as in `detect`)."""

BACKUP_SUFFIX = ".v0.1"
"""Added to the queue's path to name the backup of its 0.1 files."""
_MARKER_SUFFIX = ".v0.1-upgrade"
_PICKLE_SERIALIZER = "pickle"

# Every file a queue of each format may have at its path, 0.1's and today's (`dbm.dumb`'s
# ``.bak``, its previous index, would be merged into a new database's index).
_FILES: dict[Format, tuple[str, ...]] = {
    "dbm": ("", ".dat", ".dir", ".bak", ".pag", ".db", "-wal", "-shm", "-journal"),
    "pickled-list": ("",),
    "sqlite": ("", "-wal", "-shm", "-journal"),
}
_DBM_KEY = re.compile(rb"head_id|tail_id|item-[1-9][0-9]*")
_DBM_META_START = b'{"format": "aiodiskqueue.dbm"'  # how today's dbm.dumb data file begins
_SQLITE_MAGIC = SQLITE_SIGNATURE
_PICKLE_PROTOCOL = b"\x80"  # how a pickle of protocol 2 or later, as 0.1 wrote, begins


class Found(NamedTuple):
    """A queue of aiodiskqueue 0.1 at a path."""

    path: Path
    format: Format
    engine: str
    """The 0.1 engine that wrote it: DbmEngine, PickledList, PickleSequence or SqliteEngine."""
    backend: str | None
    """The `dbm` module of a DbmEngine queue; None for the others."""
    files: tuple[Path, ...]
    """Its files, all of which exist."""


def find(path: Path, format: str | None = None) -> Found | None:
    """Return the 0.1 queue at `path` (of `format`, if given); None if there is none.

    Reads only; changes no file. A format that 0.1 did not have finds none.
    """
    formats = [format] if format else list(_FINDERS)
    for kind in (each for each in formats if each in _FINDERS):
        found = _FINDERS[kind](path)
        if found is not None:
            return found
    return None


def read(found: Found) -> list[Record]:
    """Return the items of the 0.1 queue `found` as records keyed 1, 2, ..., in order.

    Changes no file. Raises `QueueCorruptedError` if they cannot all be read. Unpickles
    the list of a ``PickledList``, and no other item.
    """
    items = _reading(found, _READERS[found.engine])
    return [Record(key, data) for key, data in enumerate(items, 1)]


def count(found: Found) -> int:
    """Return how many items the 0.1 queue `found` holds, unpickling none of them.

    Changes no file. Raises `QueueCorruptedError` if they cannot be counted.
    """
    if found.engine == "PickledList":
        return _reading(found, _count_pickled_list)
    return len(_reading(found, _READERS[found.engine]))


R = TypeVar("R")


def _reading(found: Found, reader: Callable[[Found], R]) -> R:
    try:
        return reader(found)
    except Exception as exc:  # unpickling a list can raise almost anything
        raise QueueCorruptedError(
            f"{found.path} is a queue of aiodiskqueue 0.1 that cannot be read: {exc}"
        ) from exc


# Finding


def _find_dbm(path: Path) -> Found | None:
    backend = dbm.whichdb(str(path))
    if not backend or (backend == "dbm.sqlite3" and _sqlite_columns(path, "Dict") is None):
        return None
    try:
        with _dbm_reading(path, backend) as db:
            if db.get(b"meta") is not None:
                return None  # today's format, known without listing its keys
            keys = db.keys()
    except Exception:  # each backend fails in its own way on a file it cannot read
        return None  # a database this Python cannot read, or a damaged one: the engine reports it
    if not keys:  # no key tells a new database from an emptied one, but for dbm.dumb
        if not (backend == "dbm.dumb" and _emptied_dumb(path)):
            return None
    elif not all(_DBM_KEY.fullmatch(key) for key in keys):
        return None
    files = tuple(file for file in _paths(path, "dbm") if file.is_file())
    return Found(path, "dbm", "DbmEngine", backend, files)


def _emptied_dumb(path: Path) -> bool:
    """True if the data file of the keyless `dbm.dumb` database at `path` holds 0.1's
    values: not today's meta, which a new DbmEngine queue writes first."""
    with open(f"{path}.dat", "rb") as file:
        start = file.read(len(_DBM_META_START))
    return bool(start) and start != _DBM_META_START


def _find_pickles(path: Path) -> Found | None:
    try:
        with path.open("rb") as file:
            if file.read(1) != _PICKLE_PROTOCOL:  # a file of today, or none of a queue
                return None
            file.seek(0)
            content = file.read()
    except (FileNotFoundError, IsADirectoryError):
        return None
    pickles = _split_pickles(content)
    if pickles is None:
        return None
    engine = "PickledList" if len(pickles) == 1 and _is_list(pickles[0]) else "PickleSequence"
    return Found(path, "pickled-list", engine, None, (path,))


def _find_sqlite(path: Path) -> Found | None:
    if _sqlite_columns(path, "queue") != ["item"]:
        return None
    files = tuple(file for file in _paths(path, "sqlite") if file.is_file())
    return Found(path, "sqlite", "SqliteEngine", None, files)


_FINDERS: dict[Format, Callable[[Path], Found | None]] = {
    "dbm": _find_dbm,
    "pickled-list": _find_pickles,
    "sqlite": _find_sqlite,
}


def _sqlite_columns(path: Path, table: str) -> list[str] | None:
    """The columns of `table` in the SQLite database at `path`; None if it has none."""
    try:
        with open(path, "rb") as file:
            if file.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
                return None
        with contextlib.closing(connect_read_only(path)) as db:
            columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
    except (OSError, sqlite3.Error, UnicodeDecodeError):  # damage: told and reported elsewhere
        return None
    return columns or None


class _Values(Protocol):
    def keys(self) -> list[bytes]: ...

    def get(self, key: bytes) -> bytes | None: ...


@contextlib.contextmanager
def _dbm_reading(path: Path, backend: str) -> Iterator[_Values]:
    """The dbm database at `path`, opened to read it, changing no file."""
    if backend == "dbm.sqlite3":  # whose read-only opening would create files beside it
        with contextlib.closing(connect_read_only(path)) as db:
            yield _Dict(db)
        return
    importlib.import_module(backend)
    with dbm.open(str(path), "r") as opened:
        yield cast(_Values, opened)


class _Dict:
    """The table in which `dbm.sqlite3` keeps a database, read through `connect_read_only`."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def keys(self) -> list[bytes]:
        return [bytes(key) for (key,) in self._db.execute("SELECT key FROM Dict")]

    def get(self, key: bytes) -> bytes | None:
        row = self._db.execute("SELECT value FROM Dict WHERE key = CAST(? AS BLOB)", (key,))
        value = row.fetchone()
        return None if value is None else bytes(value[0])


def _split_pickles(content: bytes) -> list[bytes] | None:
    """The pickles that `content` holds one after another, found by their opcodes without
    unpickling them; None if it is not such a sequence."""
    stream, pickles = io.BytesIO(content), []
    while stream.tell() < len(content):
        start = stream.tell()
        try:
            for _ in pickletools.genops(stream):
                pass
        except Exception:  # genops raises whatever bad bytes make it raise
            return None
        pickles.append(content[start : stream.tell()])
    return pickles


def _is_list(data: bytes) -> bool:
    """True if the pickle `data` is of a list: it begins by making an empty list and ends by
    appending to it (or at once, for an empty list)."""
    names = [opcode.name for opcode, _, _ in pickletools.genops(data)]
    body = [name for name in names if name not in ("PROTO", "FRAME", "MEMOIZE", "BINPUT", "PUT")]
    return (
        len(body) > 1
        and body[0] == "EMPTY_LIST"
        and body[-2] in ("EMPTY_LIST", "APPEND", "APPENDS")
    )


# Reading


def _read_dbm(found: Found) -> list[bytes]:
    assert found.backend is not None
    with _dbm_reading(found.path, found.backend) as db:
        head, tail = _number(db.get(b"head_id")), _number(db.get(b"tail_id"))
        if not head or not tail:  # as 0.1 read it: both or no items
            return []
        # An item missing in between was got by a 0.1 process that died before it moved
        # head_id on: 0.1 itself would have handed it out again as None.
        values = (db.get(b"item-%d" % number) for number in range(head, tail + 1))
        return [value for value in values if value is not None]


def _number(value: bytes | None) -> int | None:
    """The number pickled in `value`, unpickled so that no object but a number can come out."""
    if value is None:
        return None
    number = _NumbersOnly(io.BytesIO(value)).load()
    if not isinstance(number, int):
        raise ValueError(f"a pickled {type(number).__name__} where a number belongs")
    return number


class _NumbersOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> type:
        raise pickle.UnpicklingError(f"{module}.{name} where a number belongs")


def _read_pickled_list(found: Found) -> list[bytes]:
    items = pickle.loads(found.path.read_bytes())
    return [pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL) for item in items]


def _count_pickled_list(found: Found) -> int:
    items = _Shapes(io.BytesIO(found.path.read_bytes())).load()
    if not isinstance(items, list):
        raise ValueError(f"a pickled {type(items).__name__} where a list belongs")
    return len(items)


class _Shapes(pickle.Unpickler):
    """Unpickles with every class that a pickle names replaced by `_Stub`: the containers
    come out as they are, and no code that the pickle names runs."""

    def find_class(self, module: str, name: str) -> type:
        return _Stub


class _Stub:
    """Stands for any object of a class, taking whatever unpickling gives it."""

    def __new__(cls, *args: object, **kwargs: object) -> _Stub:
        return object.__new__(cls)

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass

    def append(self, item: object) -> None:
        pass

    def extend(self, items: object) -> None:
        pass


def _read_pickle_sequence(found: Found) -> list[bytes]:
    pickles = _split_pickles(found.path.read_bytes())
    if pickles is None:
        raise ValueError("it is no longer a sequence of pickles")
    return pickles


def _read_sqlite(found: Found) -> list[bytes]:
    with contextlib.closing(connect_read_only(found.path)) as db:
        rows = db.execute("SELECT item FROM queue ORDER BY rowid").fetchall()
    if not all(isinstance(item, bytes) for (item,) in rows):
        raise ValueError("a row of its queue table holds no pickle")
    return [item for (item,) in rows]


_READERS: dict[str, Callable[[Found], list[bytes]]] = {
    "DbmEngine": _read_dbm,
    "PickledList": _read_pickled_list,
    "PickleSequence": _read_pickle_sequence,
    "SqliteEngine": _read_sqlite,
}


# Upgrading


@dataclasses.dataclass
class Upgrade:
    """An upgrade under way: the 0.1 files are in the backup, and gone from the queue's path.

    The engine creates its queue at the path with `meta` and stores `records` in it, then
    calls `finish()`.
    """

    path: Path
    records: list[Record]
    meta: dict[str, str]
    backend: str | None
    """The dbm module of the 0.1 queue: the one to create the new queue with."""
    fsync: bool

    def finish(self) -> None:
        """The upgraded queue is stored: remove the marker and say so."""
        _marker(self.path).unlink()
        if self.fsync:
            fsync_directory(self.path.parent)
        logger.info(
            "upgraded %s from aiodiskqueue 0.1: %d item(s); its 0.1 files are kept as %s*",
            self.path,
            len(self.records),
            _backup(self.path),
        )


def begin(
    path: Path, format: Format, options: OpenOptions, backend: str | None = None
) -> Upgrade | None:
    """Start, or take up again, the upgrade of a 0.1 queue at `path`; None if there is none.

    Steps 1 to 4 of the module's documentation. `backend` is the dbm module an engine was
    asked for, if any. Raises `ValueError` if the queue must not be upgraded so (another
    serializer, another dbm module), and `QueueCorruptedError` if it cannot be read: in
    either case before anything changes.
    """
    marker = _marker(path)
    found: Found | None
    if marker.exists():
        found = _resumed(path, format, marker)
    else:
        found = find(path, format)
        if found is None:
            return None
    serializer = options.meta.get("serializer", _PICKLE_SERIALIZER)
    if serializer != _PICKLE_SERIALIZER:
        raise ValueError(
            f"{path} is a queue of aiodiskqueue 0.1, whose items are pickled: open it with "
            f"the pickle serializer, not {serializer!r}, to upgrade it"
        )
    if backend is not None and found.backend is not None and backend != found.backend:
        raise ValueError(f"{path} is a {found.backend} database, not {backend}")
    records = read(found)
    if not marker.exists():
        for file in found.files:
            backup = Path(f"{_backup(path)}{file.name[len(path.name) :]}")
            write_atomically(backup, file.read_bytes(), fsync=options.fsync)
        content = {"format": format, "engine": found.engine, "backend": found.backend}
        write_atomically(marker, json.dumps(content).encode(), fsync=options.fsync)
    for file in _paths(path, format):
        file.unlink(missing_ok=True)
    if options.fsync:
        fsync_directory(path.parent)
    meta = {**options.meta, "serializer": _PICKLE_SERIALIZER}
    return Upgrade(path, records, meta, found.backend, options.fsync)


def _resumed(path: Path, format: Format, marker: Path) -> Found:
    """The backup of an upgrade that a crash interrupted after it was complete."""
    content = json.loads(marker.read_text())
    if content["format"] != format:
        raise ValueError(
            f"{path} is being upgraded from a {content['engine']} queue of aiodiskqueue 0.1: "
            "open it with the engine of that name to finish"
        )
    backup = _backup(path)
    suffixes = _FILES[format]
    files = tuple(file for file in (Path(f"{backup}{end}") for end in suffixes) if file.is_file())
    logger.info("taking up the upgrade of %s from aiodiskqueue 0.1 again, from %s", path, backup)
    return Found(backup, format, content["engine"], content["backend"], files)


E = TypeVar("E", bound="ThreadedStorageEngine")


def upgrading(format: Format) -> Callable[[Callable[[E], Stored]], Callable[[E], Stored]]:
    """Make an engine's ``blocking_open`` upgrade a 0.1 queue of `format` that it finds.

    The engine opens (creating) its queue as ever; the records are then stored in one
    commit. A DbmEngine creates it with the 0.1 queue's dbm module unless it was given one.
    """

    def decorate(blocking_open: Callable[[E], Stored]) -> Callable[[E], Stored]:
        @functools.wraps(blocking_open)
        def upgrading_open(engine: E) -> Stored:
            asked = getattr(engine, "backend", None)
            upgrade = begin(engine.path, format, engine.options, asked)
            if upgrade is None:
                return blocking_open(engine)
            engine.options = dataclasses.replace(engine.options, meta=upgrade.meta)
            if upgrade.backend is not None and asked is None:
                engine.backend = upgrade.backend  # type: ignore[attr-defined]
            stored = blocking_open(engine)
            try:
                engine.blocking_commit(upgrade.records, ())
                upgrade.finish()
            except BaseException:  # the opening fails, so nothing else closes what it opened
                engine.blocking_close()
                raise
            count = len(upgrade.records)
            return Stored(size=count, last_key=count, meta=stored.meta)

        return upgrading_open

    return decorate


def _paths(path: Path, format: Format) -> Iterator[Path]:
    return (Path(f"{path}{end}") for end in _FILES[format])


def _backup(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


def _marker(path: Path) -> Path:
    return path.with_name(path.name + _MARKER_SUFFIX)
