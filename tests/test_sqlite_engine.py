"""`SharedSqliteEngine`: one SQLite file that several processes share, and its neighbours.

The queue semantics are in test_shared_queue.py and the processes in
test_shared_processes.py; here: the engine itself, its lock against single-owner engines,
and the file format it shares with `SqliteEngine`.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest

from aiodiskqueue import QueueCorruptedError, QueueLockedError
from aiodiskqueue.engines import OpenOptions, Record, SharedSqliteEngine, SqliteEngine

from .helpers import within


async def test_two_engines_share_one_file(path: Path) -> None:
    first, second = SharedSqliteEngine(path), SharedSqliteEngine(path)
    await within(first.open())
    await within(second.open())
    assert await within(first.put(b"one", 0))
    assert await within(second.get()) == b"one"
    assert await within(first.get()) is None
    await within(first.close())
    await within(second.close())


async def test_put_refuses_a_full_queue_and_changes_nothing(path: Path) -> None:
    engine = SharedSqliteEngine(path)
    await within(engine.open())
    assert await within(engine.put(b"one", 1))
    assert not await within(engine.put(b"two", 1))
    assert engine.size() == 1
    assert await within(engine.get()) == b"one"
    assert await within(engine.get()) is None
    await within(engine.close())


async def test_a_wait_for_items_ends_after_its_timeout_on_an_empty_queue(path: Path) -> None:
    engine = SharedSqliteEngine(path)
    await within(engine.open())
    await within(engine.wait_for_items(0.05))
    assert engine.size() == 0
    await within(engine.close())


async def test_an_engine_hears_of_the_puts_of_another(path: Path) -> None:
    first, second = SharedSqliteEngine(path), SharedSqliteEngine(path)
    await within(first.open())
    await within(second.open())
    waiting = asyncio.create_task(second.wait_for_items(60.0))
    await within(first.put(b"one", 0))
    await within(waiting)
    assert second.size() == 1
    await within(first.close())
    await within(second.close())


async def test_an_exclusive_engine_is_refused_while_the_file_is_shared(path: Path) -> None:
    shared = SharedSqliteEngine(path)
    await within(shared.open())
    with pytest.raises(QueueLockedError, match=rf"{path.name}.*shared by SharedSqliteEngine"):
        await within(SqliteEngine(path).open())
    await within(shared.close())


async def test_sharing_is_refused_while_an_exclusive_engine_owns_the_file(path: Path) -> None:
    owner = SqliteEngine(path)
    await within(owner.open())
    with pytest.raises(QueueLockedError, match="open in this process by SqliteEngine"):
        await within(SharedSqliteEngine(path).open())
    await within(owner.close())


async def test_items_of_an_exclusive_engine_are_shared_after_it_closes(path: Path) -> None:
    owner = SqliteEngine(path)
    await within(owner.open())
    await within(owner.commit([Record(1, b"one"), Record(2, b"two"), Record(3, b"three")], [1]))
    await within(owner.close())
    shared = SharedSqliteEngine(path)
    await within(shared.open())
    assert shared.size() == 2, "the first sharer counts the records"
    assert await within(shared.get()) == b"two"
    assert await within(shared.put(b"four", 0))
    await within(shared.close())
    owner = SqliteEngine(path)
    stored = await within(owner.open())
    assert await within(owner.read(0, 10)) == [Record(3, b"three"), Record(4, b"four")]
    assert stored.size == 2
    await within(owner.close())


async def test_the_first_sharer_salvages_a_damaged_file(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(QueueCorruptedError, match="not a database"):
        await within(SharedSqliteEngine(path).open(OpenOptions(on_corruption="raise")))
    engine = SharedSqliteEngine(path)
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        await within(engine.open())
    assert "not a database" in caplog.text
    assert list(path.parent.glob(f"{path.name}.damaged-*"))
    assert engine.size() == 0
    await within(engine.close())


async def test_a_shared_file_keeps_a_count_of_its_records(path: Path) -> None:
    engine = SharedSqliteEngine(path)
    await within(engine.open())
    for data in (b"a", b"b", b"c"):
        await within(engine.put(data, 0))
    await within(engine.get())
    await within(engine.close())
    with closing(sqlite3.connect(path)) as database:
        assert database.execute("SELECT count FROM size").fetchall() == [(2,)]
        assert database.execute("SELECT count(*) FROM queue").fetchone() == (2,)


async def test_a_program_that_leaves_a_shared_queue_open_and_waiting_exits(path: Path) -> None:
    program = (
        "import asyncio, sys\n"
        "from aiodiskqueue import Queue, SharedSqliteEngine\n"
        "async def main():\n"
        "    global left_open\n"
        "    left_open = await Queue.create(sys.argv[1], cls_storage_engine=SharedSqliteEngine)\n"
        "    await left_open.put('got')\n"
        "    await left_open.put('kept')\n"
        "    print(await left_open.get(), flush=True)\n"
        "    asyncio.ensure_future(left_open.put('while exiting'))\n"
        "asyncio.run(main())\n"
    )
    done = await asyncio.wait_for(
        asyncio.create_subprocess_exec(
            sys.executable, "-c", program, str(path), stdout=asyncio.subprocess.PIPE
        ),
        timeout=30,
    )
    stdout, _ = await asyncio.wait_for(done.communicate(), timeout=60)
    assert done.returncode == 0
    assert stdout == b"got\n"
    engine = SharedSqliteEngine(path)
    await within(engine.open())
    assert pickle.loads(await within(engine.get()) or b"") == "kept"
    assert await within(engine.get()) in (None, pickle.dumps("while exiting"))
    await within(engine.close())
