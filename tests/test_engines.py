"""The storage engine contract, checked on every engine directly (without `Queue`)."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from aiodiskqueue import QueueLockedError
from aiodiskqueue.engines import Record, StorageEngine, Stored
from aiodiskqueue.engines.storage.files import auxiliary_path

from .conftest import ENGINES

EngineFactory = Callable[[Path], StorageEngine]


def records(first: int, last: int) -> list[Record]:
    return [Record(key, f"item {key}".encode()) for key in range(first, last + 1)]


async def reopened(engine: EngineFactory, path: Path) -> tuple[Stored, list[Record]]:
    """Open the engine at `path` again and return what it holds."""
    store = engine(path)
    stored = await store.open()
    held = await store.read(0, 1_000_000)
    await store.close()
    return stored, held


async def test_a_new_store_is_empty(engine: EngineFactory, path: Path) -> None:
    store = engine(path)
    assert await store.open() == Stored(0, 0, {})
    assert await store.read(0, 10) == []
    await store.close()


async def test_committed_records_are_read_back_in_key_order(
    engine: EngineFactory, path: Path
) -> None:
    store = engine(path)
    await store.open()
    await store.commit(records(1, 3), [])
    await store.commit(records(4, 5), [])
    assert await store.read(0, 10) == records(1, 5)
    await store.close()


async def test_read_returns_at_most_limit_records_after_the_given_key(
    engine: EngineFactory, path: Path
) -> None:
    store = engine(path)
    await store.open()
    await store.commit(records(1, 10), [])
    assert await store.read(3, 4) == records(4, 7)
    assert await store.read(10, 4) == []
    await store.close()


async def test_removed_records_are_not_read(engine: EngineFactory, path: Path) -> None:
    store = engine(path)
    await store.open()
    await store.commit(records(1, 6), [])
    await store.commit([], [1, 2, 4])
    assert [record.key for record in await store.read(0, 10)] == [3, 5, 6]
    await store.close()


async def test_a_commit_may_remove_records_it_appends(engine: EngineFactory, path: Path) -> None:
    store = engine(path)
    await store.open()
    await store.commit(records(1, 2), [])
    await store.commit(records(3, 4), [1, 3])
    assert [record.key for record in await store.read(0, 10)] == [2, 4]
    await store.close()
    assert await reopened(engine, path) == (Stored(2, 4, {}), [*records(2, 2), *records(4, 4)])


async def test_reopening_restores_records_and_last_key(engine: EngineFactory, path: Path) -> None:
    store = engine(path)
    await store.open()
    await store.commit(records(1, 5), [1, 2])
    await store.close()
    stored, held = await reopened(engine, path)
    assert stored == Stored(3, 5, {})
    assert held == records(3, 5)


async def test_an_emptied_store_numbers_on_from_at_least_its_last_key(
    engine: EngineFactory, path: Path
) -> None:
    store = engine(path)
    await store.open()
    await store.commit(records(1, 3), [1, 2, 3])
    await store.close()
    stored, held = await reopened(engine, path)
    assert stored.size == 0
    assert held == []
    # New records numbered from last_key + 1 are accepted and read back.
    store = engine(path)
    await store.open()
    await store.commit(records(stored.last_key + 1, stored.last_key + 2), [])
    assert await store.read(0, 10) == records(stored.last_key + 1, stored.last_key + 2)
    await store.close()


async def test_many_commits_round_trip(engine: EngineFactory, path: Path) -> None:
    store = engine(path)
    await store.open()
    expected: list[Record] = []
    key = 0
    for round_number in range(200):
        batch = [Record(key + n + 1, os.urandom(round_number % 7 * 50)) for n in range(5)]
        key += 5
        removals = [record.key for record in expected[:3]]
        await store.commit(batch, removals)
        expected = expected[3:] + batch
    assert await store.read(0, 10_000) == expected
    await store.close()
    assert await reopened(engine, path) == (Stored(len(expected), key, {}), expected)


async def test_large_and_empty_records_round_trip(engine: EngineFactory, path: Path) -> None:
    big = Record(1, os.urandom(3 * 1024 * 1024))
    empty = Record(2, b"")
    store = engine(path)
    await store.open()
    await store.commit([big, empty], [])
    await store.close()
    assert (await reopened(engine, path))[1] == [big, empty]


async def test_new_data_files_are_private_to_their_owner(engine: EngineFactory, path: Path) -> None:
    store = engine(path)
    await store.open()
    await store.commit(records(1, 1), [])
    await store.close()
    for file in path.parent.iterdir():
        if file.name.startswith(path.name) and not file.name.endswith((".bak", "-shm")):
            assert stat.S_IMODE(file.stat().st_mode) & 0o077 == 0, file


def test_a_path_ending_in_bak_is_refused(engine: EngineFactory, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.bak"):
        engine(tmp_path / "queue.bak")


async def test_an_engine_used_before_open_says_so(engine: EngineFactory, path: Path) -> None:
    with pytest.raises(RuntimeError, match="not open"):
        await engine(path).read(0, 1)


async def test_a_second_opener_is_refused_with_the_path_and_the_owner(
    engine: EngineFactory, path: Path
) -> None:
    store = engine(path)
    await store.open()
    name = type(store).__name__
    with pytest.raises(QueueLockedError, match=rf"{path.name}.*open in this process by {name}"):
        await engine(path).open()
    await store.close()


@pytest.mark.parametrize("name", list(ENGINES))
async def test_a_second_opener_in_another_process_is_refused(name: str, path: Path) -> None:
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import asyncio, sys\n"
        "from tests.conftest import ENGINES\n"
        "from aiodiskqueue import Queue\n"
        "async def main():\n"
        "    queue = await Queue.create(sys.argv[1], cls_storage_engine=ENGINES[sys.argv[2]])\n"
        "    print('open', flush=True)\n"
        "    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)\n"
        "    await queue.close()\n"
        "asyncio.run(main())\n",
        str(path),
        name,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    assert holder.stdout is not None
    assert holder.stdin is not None
    assert await asyncio.wait_for(holder.stdout.readline(), timeout=30) == b"open\n"
    with pytest.raises(QueueLockedError, match=rf"process {holder.pid}"):
        await ENGINES[name](path).open()
    holder.stdin.close()
    assert await asyncio.wait_for(holder.wait(), timeout=30) == 0


async def test_a_closed_store_can_be_opened_again_at_once(
    engine: EngineFactory, path: Path
) -> None:
    store = engine(path)
    await store.open()
    await store.close()
    again = engine(path)
    await again.open()
    await again.close()


async def test_the_lock_of_a_killed_process_is_released(engine: EngineFactory, path: Path) -> None:
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n",
        str(auxiliary_path(path, "lock")),
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdout is not None
    assert await asyncio.wait_for(holder.stdout.readline(), timeout=30) == b"locked\n"
    with pytest.raises(QueueLockedError):
        await engine(path).open()
    holder.kill()
    await asyncio.wait_for(holder.wait(), timeout=30)
    store = engine(path)
    await store.open()
    await store.close()
