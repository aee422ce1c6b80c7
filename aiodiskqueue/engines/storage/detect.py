"""Which engine wrote the queue at a path: told from the files' own bytes, changing nothing.

Each local engine's files are known by how they begin:

- an SQLite database (``SQLite format 3\\0``) with a ``queue`` table: the format of
  `SqliteEngine` and `SharedSqliteEngine`, which share it;
- ``AQPL``: `PickledList`;
- ``AQLG``: `LogEngine`, whose records are in the segment files
  ``<path>.aiodiskqueue-seg-<number>`` beside it (they begin with ``AQLS``);
- a `dbm` database, as `dbm.whichdb` tells it (``dbm.gnu``, ``dbm.ndbm``, ``dbm.dumb``'s
  ``.dat`` and ``.dir``, or an SQLite database with ``dbm.sqlite3``'s ``Dict`` table):
  `DbmEngine`, which records its backend so and reopens a queue with it;
- the files of aiodiskqueue 0.1, as `legacy.find` tells them, which the engine of today's
  format upgrades when it opens them.

Looking reads the files and, for SQLite, the table names through a read-only connection;
it takes no lock, so it may run while another process has the queue open.
"""

from __future__ import annotations

import contextlib
import dbm
import os
from pathlib import Path
from typing import NamedTuple

from .. import log, registry
from ..contracts.local import ThreadOwningEngine
from ..registry import Format
from . import legacy
from .sqlite_look import sqlite_tables

__all__ = ["Format", "QueueFiles", "detect"]

_SQLITE_MAGIC = registry.SQLITE_SIGNATURE
_PICKLED_LIST_MAGIC = registry.PICKLED_LIST_SIGNATURE
_LOG_MAGIC = registry.LOG_SIGNATURE
# Every file a dbm backend may keep for a database at a path (`dbm.dumb`'s ``.bak`` is an
# old copy of its index, not part of the database).
_DBM_SUFFIXES = ("", ".db", ".pag", ".dir", ".dat", "-wal", "-shm")
_SQLITE_SUFFIXES = ("", "-wal", "-shm")


class QueueFiles(NamedTuple):
    """The files of a queue found at a path, and the format they are in."""

    path: Path
    """The queue's path, as engines are given it."""
    format: Format
    backend: str | None
    """The `dbm` module of a ``"dbm"`` queue; None for the other formats."""
    files: tuple[Path, ...]
    """The files that hold the queue (not its ``.lock``), all of which exist."""
    from_0_1: bool = False
    """True if aiodiskqueue 0.1 wrote the files: opening them with an engine upgrades them."""

    @property
    def engine_names(self) -> tuple[str, ...]:
        """The engines of `aiodiskqueue.engines` that open this format."""
        return tuple(
            name for name, entry in registry.ENGINES.items() if entry.format == self.format
        )

    @property
    def single_owner_engine(self) -> type[ThreadOwningEngine]:
        """The engine that opens the queue for one owner, holding its lock exclusively."""
        engine: type[ThreadOwningEngine] = registry.single_owner(self.format).load()
        return engine

    @property
    def size(self) -> int:
        """The bytes of its files now, together (a file removed since, such as SQLite's log
        on close, counts 0)."""
        total = 0
        for file in self.files:
            with contextlib.suppress(FileNotFoundError):
                total += file.stat().st_size
        return total


def detect(path: str | os.PathLike[str]) -> QueueFiles:
    """Say which format the queue stored at `path` is in, from its files' bytes.

    Raises `FileNotFoundError` if no queue files are there, and `ValueError` if the file at
    `path` is not one that an engine of this package wrote (or is too damaged to tell).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a queue")
    old = legacy.find(path)
    if old is not None:
        return QueueFiles(path, old.format, old.backend, old.files, from_0_1=True)
    head = _head(path)
    if head is not None and head.startswith(_SQLITE_MAGIC):
        if "Dict" in (sqlite_tables(path) or set()) - {"queue"}:  # dbm.sqlite3's table
            return _found(path, "dbm", "dbm.sqlite3", _DBM_SUFFIXES)
        return _found(path, "sqlite", None, _SQLITE_SUFFIXES)
    if head is not None and head.startswith(_PICKLED_LIST_MAGIC):
        return _found(path, "pickled-list", None, ("",))
    if head is not None and head.startswith(_LOG_MAGIC):
        segments = [segment for _, segment in log.segment_files(path)]
        return QueueFiles(path, "log", None, (path, *segments))
    backend = dbm.whichdb(str(path))
    if backend is None and any(Path(f"{path}{end}").exists() for end in (".dat", ".dir")):
        backend = "dbm.dumb"  # whose index is missing or damaged, as DbmEngine allows
    if backend:
        return _found(path, "dbm", backend, _DBM_SUFFIXES)
    if head is None:
        raise FileNotFoundError(f"no queue at {path}")
    if not head:
        raise ValueError(f"{path} is an empty file, not a queue")
    raise ValueError(f"{path} is not a queue that aiodiskqueue knows: its format is unknown")


def _head(path: Path) -> bytes | None:
    """The first bytes of the file at `path`; None if there is none."""
    try:
        with path.open("rb") as file:
            return file.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return None


def _found(path: Path, kind: Format, backend: str | None, suffixes: tuple[str, ...]) -> QueueFiles:
    files = tuple(file for file in (Path(f"{path}{end}") for end in suffixes) if file.is_file())
    return QueueFiles(path, kind, backend, files)
