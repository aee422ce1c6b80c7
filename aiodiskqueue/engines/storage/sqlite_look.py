"""Looking into an SQLite database without changing any file: for the SQLite engines' checks,
format detection, the files of aiodiskqueue 0.1 and the command line."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

__all__ = ["connect_read_only", "read_only_uri", "sqlite_tables"]

_DAMAGED = (sqlite3.DatabaseError, UnicodeDecodeError)


def read_only_uri(path: Path) -> str:
    """The URI that opens the SQLite database at `path` for reading only, changing no file.

    A -wal left by a killed process holds commits, so it is read (SQLite may create its
    -shm index for that); without one, the file is opened as immutable.
    """
    mode = "mode=ro" if path.with_name(path.name + "-wal").exists() else "immutable=1"
    return f"{path.absolute().as_uri()}?{mode}"


def connect_read_only(path: Path) -> sqlite3.Connection:
    """Connect to the SQLite database at `path` for reading only, changing no file.

    Damaged text (a table's name, a column's) must not stop the look: it reads as other
    names than the format's, which is reported.
    """
    look = sqlite3.connect(read_only_uri(path), uri=True)
    look.text_factory = lambda text: text.decode(errors="replace")
    return look


def sqlite_tables(path: Path) -> set[str] | None:
    """The names of the tables of the SQLite database at `path`; None if it is unreadable."""
    try:
        with contextlib.closing(connect_read_only(path)) as db:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except _DAMAGED:
        return None
    return {name for (name,) in rows}
