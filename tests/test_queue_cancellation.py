"""Cancelling a `put()` or `get()` never loses, duplicates or reorders an item.

The cases of `asyncio.Queue`'s own tests (waiters cancelled while waiting, or after being
woken) raise `CancelledError`, and so does a put or get cancelled while its change is being
stored: the put takes its item out again, the get puts its item back at the head. Only a put
whose item a getter has already taken completes instead, and the task sees the cancellation
at its next await. Each test checks the items left, in the queue or on reopen.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from aiodiskqueue import Queue
from aiodiskqueue.engines import Record, StorageEngine

from .helpers import TIMEOUT, started, within

Engine = Callable[[Path], StorageEngine]
R = TypeVar("R")

END = "end of the queue"

BEFORE_SENT = "before its batch is sent"
WHILE_STORED = "while its batch is stored"
AFTER_STORED = "after its batch is stored"
WHEN_STORING = [BEFORE_SENT, WHILE_STORED, AFTER_STORED]
"""The moments at which a put or get is cancelled while the change it made is stored."""
ONCE_SENT = [WHILE_STORED, AFTER_STORED]


async def finished(task: asyncio.Task[Any]) -> asyncio.Task[Any]:
    """Wait until `task` is done, without raising what it raised."""
    done, _ = await asyncio.wait([task], timeout=TIMEOUT)
    assert done, f"{task!r} did not finish"
    return task


async def take_all(queue: Queue[Any]) -> list[Any]:
    """Get every item in `queue`, in order, up to an end marker put after them.

    Getting up to a marker rather than `qsize()` items also shows an item too many.
    """
    marker = asyncio.ensure_future(queue.put(END))
    items = []
    while (item := await within(queue.get())) != END:
        items.append(item)
    await within(marker)
    return items


async def then_wait(call: Awaitable[R], results: list[R]) -> None:
    """Keep what `call` returns, then wait for ever: a cancellation arrives at that await."""
    results.append(await call)
    await asyncio.Event().wait()


async def reopened(path: Path, engine: Engine) -> list[Any]:
    """Reopen the queue at `path` and take all its items."""
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        return await take_all(queue)


class Hooks:
    """Makes engines of the given kind that call a hook once, around their next commit.

    The test sets a hook when it wants one; a `before_commit` hook may return an awaitable,
    which the commit waits for.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.before_commit: Callable[[], object] | None = None
        self.after_commit: Callable[[], object] | None = None

    def __call__(self, path: Path) -> StorageEngine:
        engine = self.engine(path)
        commit = engine.commit

        async def commit_with_hooks(appends: Sequence[Record], removals: Sequence[int]) -> None:
            before, self.before_commit = self.before_commit, None
            if before is not None and inspect.isawaitable(waiting := before()):
                await waiting
            await commit(appends, removals)
            after, self.after_commit = self.after_commit, None
            if after is not None:
                after()

        engine.commit = commit_with_hooks  # type: ignore[method-assign]
        return engine


async def put_then_cancel(
    queue: Queue[Any],
    hooks: Hooks,
    item: Any,
    call: Callable[[], Coroutine[Any, Any, R]],
    when: str,
) -> asyncio.Task[R]:
    """Put `item`, then run `call()` in a task and cancel it at moment `when` of storing its change.

    For BEFORE_SENT, the batch holding `item` is being stored (held until the task is
    cancelled), so that the change of `call()` waits for the next batch.
    """
    if when == BEFORE_SENT:
        release = asyncio.Event()
        hooks.before_commit = release.wait
        stored = queue.put_nowait(item)
        task = asyncio.create_task(call())
        try:
            await asyncio.sleep(0)  # `item` is being stored; `call()` makes its change and waits
            assert not task.done()
            task.cancel()  # the task sees it before the storing of `item` goes on
        finally:
            release.set()
        await finished(task)
        await within(stored)
        return task
    await within(queue.put(item))
    task = asyncio.create_task(call())
    if when == WHILE_STORED:
        hooks.before_commit = task.cancel
    else:
        hooks.after_commit = task.cancel
    await finished(task)
    return task


# Cancelled while waiting (asyncio's cases)


async def test_a_getter_cancelled_while_waiting_does_not_take_the_next_item(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        cancelled = await started(asyncio.create_task(queue.get()))
        waiting = await started(asyncio.create_task(queue.get()))
        cancelled.cancel()
        assert (await finished(cancelled)).cancelled()
        await queue.put("item")
        assert await within(waiting) == "item"
        assert await take_all(queue) == []


async def test_a_getter_cancelled_after_being_woken_passes_the_item_to_the_next_getter(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        woken = await started(asyncio.create_task(queue.get()))
        waiting = await started(asyncio.create_task(queue.get()))
        queue.put_nowait("item")  # wakes `woken`, which has not run yet when cancelled
        woken.cancel()
        assert (await finished(woken)).cancelled()
        assert await within(waiting) == "item"
        assert await take_all(queue) == []


async def test_a_putter_cancelled_while_waiting_for_a_slot_does_not_put_its_item(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, maxsize=1, cls_storage_engine=engine) as queue:
        await queue.put("first")
        putter = await started(asyncio.create_task(queue.put("cancelled")))
        putter.cancel()
        assert (await finished(putter)).cancelled()
        assert (queue.qsize(), await take_all(queue)) == (1, ["first"])


async def test_a_putter_cancelled_while_waiting_for_a_slot_leaves_storage_unchanged(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, maxsize=1, cls_storage_engine=engine) as queue:
        await queue.put("first")
        putter = await started(asyncio.create_task(queue.put("cancelled")))
        putter.cancel()
        await finished(putter)
    assert await reopened(path, engine) == ["first"]


async def test_a_putter_cancelled_after_being_woken_passes_the_slot_to_the_next_putter(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, maxsize=1, cls_storage_engine=engine) as queue:
        await queue.put("first")
        woken = await started(asyncio.create_task(queue.put("cancelled")))
        waiting = await started(asyncio.create_task(queue.put("second")))
        assert queue.get_nowait() == "first"  # wakes `woken`, which has not run yet
        woken.cancel()
        assert (await finished(woken)).cancelled()
        await within(waiting)
        assert await take_all(queue) == ["second"]


# A put cancelled once it has placed its item takes it out again


@pytest.mark.parametrize("when", WHEN_STORING)
async def test_a_put_cancelled_after_placing_its_item_raises_cancelled_error(
    batching_engine: Engine, path: Path, when: str
) -> None:
    hooks = Hooks(batching_engine)
    async with await Queue.create(path, cls_storage_engine=hooks) as queue:
        putter = await put_then_cancel(queue, hooks, "a", lambda: queue.put("x"), when)
        assert putter.cancelled()


@pytest.mark.parametrize("when", WHEN_STORING)
async def test_a_put_cancelled_after_placing_its_item_leaves_the_queue_without_it(
    batching_engine: Engine, path: Path, when: str
) -> None:
    hooks = Hooks(batching_engine)
    async with await Queue.create(path, cls_storage_engine=hooks) as queue:
        await put_then_cancel(queue, hooks, "a", lambda: queue.put("x"), when)
        await queue.put("b")
        assert (queue.qsize(), await take_all(queue)) == (2, ["a", "b"])


@pytest.mark.parametrize("when", WHEN_STORING)
async def test_a_put_cancelled_after_placing_its_item_leaves_storage_without_it(
    batching_engine: Engine, path: Path, when: str
) -> None:
    hooks = Hooks(batching_engine)
    async with await Queue.create(path, cls_storage_engine=hooks) as queue:
        await put_then_cancel(queue, hooks, "a", lambda: queue.put("x"), when)
        await queue.put("b")
    assert await reopened(path, batching_engine) == ["a", "b"]


@pytest.mark.parametrize("when", WHEN_STORING)
async def test_a_put_cancelled_after_placing_its_item_counts_no_task(
    batching_engine: Engine, path: Path, when: str
) -> None:
    hooks = Hooks(batching_engine)
    async with await Queue.create(path, cls_storage_engine=hooks) as queue:
        await put_then_cancel(queue, hooks, "a", lambda: queue.put("x"), when)
        assert await within(queue.get()) == "a"
        queue.task_done()
        await within(queue.join())


async def test_a_put_cancelled_after_its_item_was_stored_beyond_the_window_takes_it_out(
    batching_engine: Engine, path: Path
) -> None:
    # With a read-ahead of 2, "c" is stored beyond the window, and the commit that stores it
    # also empties the window: a read-ahead that sees "c" starts before the put is cancelled.
    hooks = Hooks(batching_engine)
    async with await Queue.create(path, cls_storage_engine=hooks, readahead=2) as queue:
        for item in ("a", "b", "x"):
            await queue.put(item)
        putter = asyncio.create_task(queue.put("c"))
        hooks.after_commit = putter.cancel
        assert [queue.get_nowait(), queue.get_nowait()] == ["a", "b"]
        assert (await finished(putter)).cancelled()
        assert (queue.qsize(), await take_all(queue)) == (1, ["x"])


async def test_a_put_cancelled_after_a_getter_took_its_item_returns_normally(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        getter = await started(asyncio.create_task(queue.get()))
        putter = asyncio.create_task(queue.put("item"))
        await asyncio.sleep(0)  # the put places its item and wakes the getter
        await asyncio.sleep(0)  # the getter takes it
        putter.cancel()
        await finished(putter)
        assert (putter.cancelled(), putter.exception()) == (False, None)
        assert await within(getter) == "item"
        assert await take_all(queue) == []


async def test_cancelled_puts_neither_lose_nor_duplicate_nor_reorder_items(
    batching_engine: Engine, path: Path
) -> None:
    hooks = Hooks(batching_engine)
    async with await Queue.create(path, cls_storage_engine=hooks) as queue:
        for item, when in enumerate(WHEN_STORING * 2):
            await put_then_cancel(
                queue, hooks, f"kept {item}", functools.partial(queue.put, item), when
            )
        assert await take_all(queue) == [f"kept {item}" for item in range(6)]


# A get cancelled before its removal is sent gives its item back


async def test_a_get_cancelled_before_its_removal_is_sent_raises_cancelled_error(
    batching_engine: Engine, path: Path
) -> None:
    hooks = Hooks(batching_engine)
    async with await Queue.create(path, cls_storage_engine=hooks) as queue:
        getter = await put_then_cancel(queue, hooks, "a", queue.get, BEFORE_SENT)
        assert getter.cancelled()


async def test_a_get_cancelled_before_its_removal_is_sent_puts_the_item_back_at_the_head(
    batching_engine: Engine, path: Path
) -> None:
    hooks = Hooks(batching_engine)
    async with await Queue.create(path, cls_storage_engine=hooks) as queue:
        await queue.put("a")
        await put_then_cancel(queue, hooks, "b", queue.get, BEFORE_SENT)
        assert (queue.qsize(), await take_all(queue)) == (2, ["a", "b"])


async def test_a_get_cancelled_before_its_removal_is_sent_keeps_the_item_in_storage(
    batching_engine: Engine, path: Path
) -> None:
    hooks = Hooks(batching_engine)
    async with await Queue.create(path, cls_storage_engine=hooks) as queue:
        await queue.put("a")
        await put_then_cancel(queue, hooks, "b", queue.get, BEFORE_SENT)
        await queue.put("c")
    assert await reopened(path, batching_engine) == ["a", "b", "c"]


async def test_an_item_put_back_by_a_cancelled_get_goes_to_a_waiting_getter(
    batching_engine: Engine, path: Path
) -> None:
    hooks = Hooks(batching_engine)
    async with await Queue.create(path, cls_storage_engine=hooks) as queue:
        release = asyncio.Event()
        hooks.before_commit = release.wait
        stored = queue.put_nowait("a")  # its batch is held: the get's removal waits to be sent
        cancelled = asyncio.create_task(queue.get())
        await asyncio.sleep(0)  # the get takes "a": the queue is empty
        waiting = await started(asyncio.create_task(queue.get()))
        cancelled.cancel()
        assert (await finished(cancelled)).cancelled()
        release.set()
        await within(stored)
        assert await within(waiting) == "a"
        assert await take_all(queue) == []


# A get cancelled once its removal is sent to storage gives its item back too


@pytest.mark.parametrize("when", ONCE_SENT)
async def test_a_get_cancelled_while_its_removal_is_stored_raises_cancelled_error(
    batching_engine: Engine, path: Path, when: str
) -> None:
    hooks = Hooks(batching_engine)
    async with await Queue.create(path, cls_storage_engine=hooks) as queue:
        getter = await put_then_cancel(queue, hooks, "a", queue.get, when)
        assert getter.cancelled()


@pytest.mark.parametrize("when", ONCE_SENT)
async def test_a_get_cancelled_while_its_removal_is_stored_puts_the_item_back_at_the_head(
    batching_engine: Engine, path: Path, when: str
) -> None:
    hooks = Hooks(batching_engine)
    async with await Queue.create(path, cls_storage_engine=hooks) as queue:
        await queue.put("a")
        await put_then_cancel(queue, hooks, "b", queue.get, when)
        assert (queue.qsize(), await take_all(queue)) == (2, ["a", "b"])


@pytest.mark.parametrize("when", ONCE_SENT)
async def test_a_get_cancelled_while_its_removal_is_stored_stores_the_item_again(
    batching_engine: Engine, path: Path, when: str
) -> None:
    # The item's removal was stored: it is stored again, behind the items stored before.
    hooks = Hooks(batching_engine)
    async with await Queue.create(path, cls_storage_engine=hooks) as queue:
        await queue.put("a")
        await put_then_cancel(queue, hooks, "b", queue.get, when)
    assert await reopened(path, batching_engine) == ["b", "a"]


async def cancelled_gets(queue: Queue[int], hooks: Hooks) -> list[int]:
    """Put an item, then cancel a get, at every moment of storing, twice; return what was got."""
    got = []
    for item, when in enumerate(WHEN_STORING * 2):
        getter = await put_then_cancel(queue, hooks, item, queue.get, when)
        if not getter.cancelled():
            got.append(getter.result())
    return got


async def test_cancelled_gets_neither_lose_nor_duplicate_nor_reorder_items(
    batching_engine: Engine, path: Path
) -> None:
    hooks = Hooks(batching_engine)
    async with await Queue.create(path, cls_storage_engine=hooks) as queue:
        got = await cancelled_gets(queue, hooks)
        assert (got, await take_all(queue)) == ([], list(range(6)))


async def test_cancelled_gets_neither_lose_nor_duplicate_items_in_storage(
    batching_engine: Engine, path: Path
) -> None:
    hooks = Hooks(batching_engine)
    async with await Queue.create(path, cls_storage_engine=hooks) as queue:
        got = await cancelled_gets(queue, hooks)
    assert sorted(got + await reopened(path, batching_engine)) == list(range(6))


async def test_a_get_cancelled_by_wait_for_in_a_cancelled_task_loses_nothing(
    batching_engine: Engine, path: Path
) -> None:
    # Python 3.10 and 3.11's wait_for() drop the result of an inner get() that completes
    # after its outer task was cancelled: the get must raise instead, keeping its item.
    hooks = Hooks(batching_engine)
    async with await Queue.create(path, cls_storage_engine=hooks) as queue:
        await queue.put("a")
        await queue.put("b")
        outer = asyncio.create_task(asyncio.wait_for(queue.get(), TIMEOUT))
        hooks.before_commit = outer.cancel
        assert (await finished(outer)).cancelled()
        assert await take_all(queue) == ["a", "b"]


async def test_a_put_cancelled_by_wait_for_in_a_cancelled_task_is_not_stored(
    batching_engine: Engine, path: Path
) -> None:
    hooks = Hooks(batching_engine)
    async with await Queue.create(path, cls_storage_engine=hooks) as queue:
        outer = asyncio.create_task(asyncio.wait_for(queue.put("x"), TIMEOUT))
        hooks.before_commit = outer.cancel
        assert (await finished(outer)).cancelled()
    assert await reopened(path, batching_engine) == []
