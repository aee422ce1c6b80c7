"""Errors are raised to the caller, and leave the queue as its storage holds it."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from aiodiskqueue import Queue, SerializationError
from aiodiskqueue.engines import Record, SqliteEngine, StorageEngine

from .helpers import drain, within

Engine = Callable[[Path], StorageEngine]


async def reopened(path: Path, engine: Engine) -> list[Any]:
    """Reopen the queue at `path` and get all its items."""
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        return await drain(queue)


# Items that cannot be stored


def _generator() -> Iterator[int]:
    yield 1


UNPICKLABLE: dict[str, Callable[[], object]] = {
    "lambda": lambda: lambda: None,
    "lock": threading.Lock,
    "generator": _generator,
}


@pytest.mark.parametrize("make_item", UNPICKLABLE.values(), ids=list(UNPICKLABLE))
async def test_put_of_an_unpicklable_item_raises_serialization_error(
    engine: Engine, path: Path, make_item: Callable[[], object]
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        with pytest.raises(SerializationError):
            await within(queue.put(make_item()))


@pytest.mark.parametrize("make_item", UNPICKLABLE.values(), ids=list(UNPICKLABLE))
async def test_put_nowait_of_an_unpicklable_item_raises_serialization_error(
    engine: Engine, path: Path, make_item: Callable[[], object]
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        with pytest.raises(SerializationError):
            queue.put_nowait(make_item())


async def test_serialization_error_is_a_type_error(path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=SqliteEngine) as queue:
        with pytest.raises(TypeError):
            await within(queue.put(threading.Lock()))


async def put_unpicklable_items(queue: Queue[Any]) -> None:
    """Try to put each unpicklable item, with `put()` and with `put_nowait()`."""
    for make_item in UNPICKLABLE.values():
        with pytest.raises(SerializationError):
            await within(queue.put(make_item()))
        with pytest.raises(SerializationError):
            queue.put_nowait(make_item())


async def test_an_unpicklable_item_leaves_the_queue_unchanged(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        await queue.put("a")
        await put_unpicklable_items(queue)
        await queue.put("b")
        assert (queue.qsize(), await drain(queue)) == (2, ["a", "b"])


async def test_an_unpicklable_item_leaves_storage_unchanged(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        await queue.put("a")
        await put_unpicklable_items(queue)
        await queue.put("b")
    assert await reopened(path, engine) == ["a", "b"]


async def test_an_unpicklable_item_leaves_no_unfinished_task(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        await put_unpicklable_items(queue)
        await within(queue.join())


# Paths


async def test_a_path_ending_in_bak_raises_value_error_naming_bak(
    engine: Engine, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"\.bak"):
        await Queue.create(tmp_path / "queue.bak", cls_storage_engine=engine)


# Storage failures


class Faults:
    """Makes engines of the given kind whose commits or reads fail while the test says so.

    A failing call raises before it reaches the engine, so storage is left unchanged.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.commits_fail = False
        self.reads_fail = False

    def __call__(self, path: Path) -> StorageEngine:
        engine = self.engine(path)
        commit, read = engine.commit, engine.read

        async def faulty_commit(appends: Sequence[Record], removals: Sequence[int]) -> None:
            if self.commits_fail:
                raise OSError("disk full")
            await commit(appends, removals)

        async def faulty_read(after: int, limit: int) -> list[Record]:
            if self.reads_fail:
                raise OSError("read error")
            return await read(after, limit)

        engine.commit = faulty_commit  # type: ignore[method-assign]
        if engine.commits_in_place:
            commit_now = engine.commit_now

            def faulty_commit_now(
                appends: Sequence[Record], removals: Sequence[int]
            ) -> Awaitable[None] | None:
                if self.commits_fail:
                    raise OSError("disk full")
                return commit_now(appends, removals)

            read_now = engine.read_now

            def faulty_read_now(after: int, limit: int) -> list[Record]:
                if self.reads_fail:
                    raise OSError("read error")
                return read_now(after, limit)

            engine.commit_now = faulty_commit_now  # type: ignore[method-assign]
            engine.read_now = faulty_read_now  # type: ignore[method-assign]
        engine.read = faulty_read  # type: ignore[method-assign]
        return engine


class DiskFullSqliteEngine(SqliteEngine):
    """A real engine whose commits fail, in its own thread, while `full` is set."""

    def __init__(self, path: Path, full: threading.Event) -> None:
        super().__init__(path)
        self.full = full

    def blocking_commit(self, appends: Sequence[Record], removals: Sequence[int]) -> None:
        if self.full.is_set():
            raise OSError("disk full")
        super().blocking_commit(appends, removals)


async def test_a_commit_failing_in_the_engine_thread_makes_put_raise_its_error(
    path: Path,
) -> None:
    full = threading.Event()

    def engine(path: Path) -> StorageEngine:
        return DiskFullSqliteEngine(path, full)

    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        await queue.put("a")
        full.set()
        with pytest.raises(OSError, match="disk full"):
            await within(queue.put("b"))
        full.clear()
        await queue.put("c")
        assert await drain(queue) == ["a", "c"]


async def test_put_raises_the_storage_error(engine: Engine, path: Path) -> None:
    faults = Faults(engine)
    async with await Queue.create(path, cls_storage_engine=faults) as queue:
        faults.commits_fail = True
        with pytest.raises(OSError, match="disk full"):
            await within(queue.put("a"))


async def test_awaiting_put_nowait_raises_the_storage_error(engine: Engine, path: Path) -> None:
    faults = Faults(engine)
    async with await Queue.create(path, cls_storage_engine=faults) as queue:
        faults.commits_fail = True
        with pytest.raises(OSError, match="disk full"):
            await within(queue.put_nowait("a"))


async def test_a_failed_put_leaves_qsize_at_what_storage_holds(engine: Engine, path: Path) -> None:
    faults = Faults(engine)
    async with await Queue.create(path, cls_storage_engine=faults) as queue:
        await queue.put("a")
        faults.commits_fail = True
        queue.put_nowait("b")
        with pytest.raises(OSError, match="disk full"):
            await within(queue.put("c"))
        assert queue.qsize() == 1


async def test_a_failed_put_leaves_no_unfinished_task(engine: Engine, path: Path) -> None:
    faults = Faults(engine)
    async with await Queue.create(path, cls_storage_engine=faults) as queue:
        faults.commits_fail = True
        with pytest.raises(OSError, match="disk full"):
            await within(queue.put("a"))
        await within(queue.join())


async def fail_puts_then_recover(queue: Queue[Any], faults: Faults) -> None:
    """Put "a", fail the puts of "b" and "c", then put "d" once storage works again."""
    await queue.put("a")
    faults.commits_fail = True
    queue.put_nowait("b")
    with pytest.raises(OSError, match="disk full"):
        await within(queue.put("c"))
    faults.commits_fail = False
    await queue.put("d")


async def test_a_queue_works_again_once_storage_does_and_holds_only_what_was_stored(
    engine: Engine, path: Path
) -> None:
    faults = Faults(engine)
    async with await Queue.create(path, cls_storage_engine=faults) as queue:
        await fail_puts_then_recover(queue, faults)
        assert await drain(queue) == ["a", "d"]


async def test_storage_holds_only_the_items_whose_puts_were_stored_after_a_failure(
    engine: Engine, path: Path
) -> None:
    faults = Faults(engine)
    async with await Queue.create(path, cls_storage_engine=faults) as queue:
        await fail_puts_then_recover(queue, faults)
    assert await reopened(path, engine) == ["a", "d"]


async def test_get_raises_the_storage_error_and_leaves_the_item_at_the_head(
    engine: Engine, path: Path
) -> None:
    faults = Faults(engine)
    async with await Queue.create(path, cls_storage_engine=faults) as queue:
        await queue.put("a")
        await queue.put("b")
        faults.commits_fail = True
        with pytest.raises(OSError, match="disk full"):
            await within(queue.get())
        faults.commits_fail = False
        assert (queue.qsize(), await drain(queue)) == (2, ["a", "b"])


async def test_items_taken_by_get_nowait_before_a_failed_commit_are_delivered_again(
    engine: Engine, path: Path
) -> None:
    faults = Faults(engine)
    async with await Queue.create(path, cls_storage_engine=faults) as queue:
        for item in ("a", "b", "c"):
            await queue.put(item)
        faults.commits_fail = True
        assert queue.get_nowait() == "a"
        with pytest.raises(OSError, match="disk full"):
            await within(queue.get())  # "b": its removal is stored with that of "a"
        faults.commits_fail = False
        assert await drain(queue) == ["a", "b", "c"]


async def test_join_returns_once_every_delivered_item_is_done_after_a_failed_get(
    batching_engine: Engine, path: Path
) -> None:
    faults = Faults(batching_engine)
    async with await Queue.create(path, cls_storage_engine=faults) as queue:
        await queue.put("a")
        faults.commits_fail = True
        with pytest.raises(OSError, match="disk full"):
            await within(queue.get())
        faults.commits_fail = False
        assert await within(queue.get()) == "a"
        queue.task_done()
        await within(queue.join())


async def test_an_item_got_again_after_a_failed_commit_counts_as_a_task_each_time_it_is_got(
    batching_engine: Engine, path: Path
) -> None:
    faults = Faults(batching_engine)
    async with await Queue.create(path, cls_storage_engine=faults) as queue:
        for item in ("a", "b"):
            await queue.put(item)
        faults.commits_fail = True
        assert queue.get_nowait() == "a"
        with pytest.raises(OSError, match="disk full"):
            await within(queue.get())  # "b": never delivered
        faults.commits_fail = False
        assert await drain(queue) == ["a", "b"]
        for _ in range(3):  # "a" twice, "b" once
            queue.task_done()
        await within(queue.join())
        with pytest.raises(ValueError, match="too many"):
            queue.task_done()


async def read_ahead_failure(queue: Queue[Any], faults: Faults) -> None:
    """Take the two items of the window, and let a getter wait for a read-ahead that fails."""
    faults.reads_fail = True
    assert [queue.get_nowait(), queue.get_nowait()] == [0, 1]
    with pytest.raises(OSError, match="read error"):
        await within(queue.get())
    faults.reads_fail = False


async def test_a_getter_waiting_for_a_failed_read_ahead_raises_the_storage_error(
    engine: Engine, path: Path
) -> None:
    faults = Faults(engine)
    async with await Queue.create(path, cls_storage_engine=faults) as queue:
        for item in range(5):
            queue.put_nowait(item)
    async with await Queue.create(path, cls_storage_engine=faults, readahead=2) as queue:
        await read_ahead_failure(queue, faults)
        assert queue.qsize() == 3


async def test_get_delivers_the_items_left_once_reading_works_again_after_a_failed_read_ahead(
    engine: Engine, path: Path
) -> None:
    faults = Faults(engine)
    async with await Queue.create(path, cls_storage_engine=faults) as queue:
        for item in range(5):
            queue.put_nowait(item)
    async with await Queue.create(path, cls_storage_engine=faults, readahead=2) as queue:
        await read_ahead_failure(queue, faults)
        assert [await within(queue.get()) for _ in range(3)] == [2, 3, 4]
