"""A single-owner queue has one owner, whatever name its file is reached by, and an engine
dropped without `close()` lets the next opener in at once; a live owner is named."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from aiodiskqueue import Queue, QueueLockedError
from aiodiskqueue.engines import SharedSqliteEngine, SqliteEngine, StorageEngine
from aiodiskqueue.engines.storage.files import AUXILIARY_MARKER

from .conftest import ENGINES, FILE_ENGINES
from .helpers import within
from .test_engines import EngineFactory, records

LINKS: dict[str, Callable[[Path, Path], None]] = {
    "symbolic link": lambda target, link: link.symlink_to(target),
    "hard link": lambda target, link: os.link(target, link),
}


def link_queue(path: Path, other: Path, make_link: Callable[[Path, Path], None]) -> None:
    """Give every file of the queue at `path` a second name, as if the queue were at `other`."""
    for file in sorted(path.parent.iterdir()):
        rest = file.name[len(path.name) :]
        ours = file.name.startswith(path.name) and AUXILIARY_MARKER not in rest
        if ours and rest not in ("-wal", "-shm"):  # SQLite makes its log for each name
            make_link(file, other.with_name(other.name + rest))


# The same file through another name


@pytest.mark.parametrize("link", list(LINKS))
async def test_a_second_opener_through_a_link_to_the_file_is_refused(
    engine: EngineFactory, path: Path, link: str
) -> None:
    owner = engine(path)
    await owner.open()
    await owner.commit(records(1, 12), [])
    other = path.with_name("other.db")
    link_queue(path, other, LINKS[link])
    with pytest.raises(QueueLockedError, match=r"other\.db"):
        await engine(other).open()
    await owner.close()


async def test_a_symbolic_link_is_refused_after_commits_replaced_the_file(
    engine: EngineFactory, path: Path
) -> None:
    owner = engine(path)
    await owner.open()
    await owner.commit(records(1, 12), [])
    other = path.with_name("other.db")
    link_queue(path, other, LINKS["symbolic link"])
    await owner.commit(records(13, 13), [1])  # a PickledList commit replaces the file
    with pytest.raises(QueueLockedError):
        await engine(other).open()
    await owner.close()


async def test_a_second_opener_through_a_link_to_the_directory_is_refused(
    engine: EngineFactory, path: Path
) -> None:
    owner = engine(path)
    await owner.open()
    linked = path.parent.with_name(path.parent.name + "-linked")
    linked.symlink_to(path.parent)
    with pytest.raises(QueueLockedError, match=type(owner).__name__):
        await engine(linked / path.name).open()
    await owner.close()


async def test_sqlite_engines_through_a_hard_link_are_refused_by_an_exclusive_owner(
    path: Path,
) -> None:
    owner = SqliteEngine(path)
    await owner.open()
    other = path.with_name("other.db")
    link_queue(path, other, LINKS["hard link"])
    with pytest.raises(QueueLockedError, match="open in this process by SqliteEngine"):
        await within(SharedSqliteEngine(other).open())
    await owner.close()


TRY_OPEN = """
import asyncio, sys
from aiodiskqueue import QueueLockedError
from tests.conftest import ENGINES

async def main():
    store = ENGINES[sys.argv[2]](sys.argv[1])
    try:
        await store.open()
    except QueueLockedError as exc:
        print("refused:", exc)
    else:
        print("opened:", await store.read(0, 100))
        await store.close()

asyncio.run(main())
"""


async def try_open_in_another_process(name: str, path: Path) -> str:
    """Open the engine `name` at `path` in another process; say what happened."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        TRY_OPEN,
        str(path),
        name,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0
    return output.decode()


@pytest.mark.parametrize("link", list(LINKS))
@pytest.mark.parametrize("name", list(ENGINES))
async def test_a_second_opener_in_another_process_through_a_link_is_refused(
    name: str, path: Path, link: str
) -> None:
    owner = ENGINES[name](path)
    await owner.open()
    await owner.commit(records(1, 12), [])
    other = path.with_name("other.db")
    link_queue(path, other, LINKS[link])
    outcome = await try_open_in_another_process(name, other)
    await owner.close()
    assert outcome.startswith("refused"), outcome


@pytest.mark.parametrize("name", list(ENGINES))
async def test_an_owner_in_another_process_is_named_with_its_engine(name: str, path: Path) -> None:
    owner = ENGINES[name](path)
    await owner.open()
    outcome = await try_open_in_another_process(name, path)
    await owner.close()
    assert f"process {os.getpid()}, {type(owner).__name__})" in outcome, outcome


# Engines dropped without close()


@pytest.mark.parametrize("collect", [False, True], ids=["without gc", "with gc"])
async def test_an_engine_dropped_without_close_lets_the_next_opener_in_at_once(
    engine: EngineFactory, path: Path, collect: bool
) -> None:
    store = engine(path)
    await store.open()
    await store.commit(records(1, 12), [3])
    del store
    if collect:
        gc.collect()
    again = engine(path)
    await within(again.open())
    assert await again.read(0, 100) == [r for r in records(1, 12) if r.key != 3]
    await again.close()


async def test_an_engine_dropped_in_a_reference_cycle_lets_the_next_opener_in_at_once(
    engine: EngineFactory, path: Path
) -> None:
    store = engine(path)
    await store.open()
    await store.commit(records(1, 12), [])
    store.cycle = store  # type: ignore[attr-defined]
    del store
    again = engine(path)
    await within(again.open())
    assert await again.read(0, 100) == records(1, 12)
    await again.close()


@pytest.mark.parametrize("reopener", [SharedSqliteEngine, SqliteEngine])
async def test_a_sqlite_engine_dropped_without_close_lets_the_next_opener_in_at_once(
    path: Path, reopener: type[StorageEngine | SharedSqliteEngine]
) -> None:
    store = SharedSqliteEngine(path)
    await within(store.open())
    assert await within(store.put(b"kept", 0))
    del store
    again = reopener(path)
    await within(again.open())
    await within(again.close())


async def test_a_live_engine_is_not_taken_for_a_dropped_one(
    engine: EngineFactory, path: Path
) -> None:
    store = engine(path)
    await store.open()
    gc.collect()
    with pytest.raises(QueueLockedError, match=f"open in this process by {type(store).__name__}"):
        await engine(path).open()
    with pytest.raises(QueueLockedError, match=f"open in this process by {type(store).__name__}"):
        await within(SharedSqliteEngine(path).open())
    await store.close()


async def test_an_exclusive_opener_is_told_when_sqlite_engines_share_the_file(path: Path) -> None:
    shared = SharedSqliteEngine(path)
    await within(shared.open())
    with pytest.raises(QueueLockedError, match="shared by SharedSqliteEngine queues"):
        await within(SqliteEngine(path).open())
    await within(shared.close())


@pytest.mark.parametrize("name", list(FILE_ENGINES))
async def test_a_queue_dropped_without_close_can_be_created_again_at_once(
    name: str, path: Path
) -> None:
    queue = await within(Queue.create(path, cls_storage_engine=FILE_ENGINES[name]))
    for item in range(12):
        await within(queue.put(item))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del queue
    again = await within(Queue.create(path, cls_storage_engine=FILE_ENGINES[name]))
    assert [await within(again.get()) for _ in range(12)] == list(range(12))
    assert again.empty()
    await within(again.close())


async def test_an_open_cancelled_midway_lets_the_next_opener_in_at_once(
    engine: EngineFactory, path: Path
) -> None:
    store = engine(path)  # still referenced, so never collected: only its open was cancelled
    opening = asyncio.ensure_future(store.open())
    await asyncio.sleep(0)  # the open has been handed to the engine's thread
    opening.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await opening
    again = engine(path)
    await within(again.open())
    await again.close()
