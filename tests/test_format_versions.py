"""Every file format carries its version: an older one is read, a newer one refused unchanged.

The versions of each format, and how each is read, are in ``docs/formats.rst``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from aiodiskqueue.engines import OpenOptions, Record, SqliteEngine
from aiodiskqueue.engines.sqlite.file import VERSION

RAISE = OpenOptions(on_corruption="raise")


def user_version(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        (version,) = db.execute("PRAGMA user_version").fetchone()
    return int(version)


async def records_in(path: Path) -> list[Record]:
    store = SqliteEngine(path)
    await store.open(RAISE)
    try:
        return await store.read(0, 100)
    finally:
        await store.close()


async def test_a_new_sqlite_queue_carries_the_format_version(tmp_path: Path) -> None:
    path = tmp_path / "queue"
    assert await records_in(path) == []
    assert user_version(path) == VERSION == 2


async def test_an_sqlite_queue_of_0_2_0_without_a_version_is_read_and_given_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "queue"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(
            "CREATE TABLE queue (key INTEGER PRIMARY KEY, data BLOB NOT NULL);"
            "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "INSERT INTO queue VALUES (3, x'61'), (5, x'62');"
        )
    assert await records_in(path) == [Record(3, b"a"), Record(5, b"b")]
    assert user_version(path) == VERSION


async def test_an_sqlite_queue_of_a_newer_format_is_refused_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    path = tmp_path / "queue"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript("CREATE TABLE queue (id TEXT, payload BLOB); PRAGMA user_version = 3;")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="format version 3, newer than this aiodiskqueue"):
        await asyncio.wait_for(records_in(path), 10)
    assert path.read_bytes() == before
    assert sorted(file.name for file in tmp_path.iterdir()) == ["queue", "queue.aiodiskqueue-lock"]
