"""Edge cases of the shared engines that a review found broken, and that stay mended.

SharedQueue with timeouts and cancellation, SharedSqliteEngine's openers racing each other and
an exclusive owner, its size heard out of order, and engines cancelled or left open. Another
process's transaction is played by a plain `sqlite3` connection in a thread, which holds
SQLite's write lock so that an operation is in flight when the test needs it to be. The
races are tried many times, so these tests are slower than most.
"""

from __future__ import annotations

import asyncio
import gc
import pickle
import random
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from aiodiskqueue import Queue, QueueLockedError
from aiodiskqueue.engines import SharedSqliteEngine, SqliteEngine
from aiodiskqueue.engines.storage.locking import QueueLock

from .helpers import within


@contextmanager
def write_lock_held(path: Path, seconds: float) -> Iterator[None]:
    """Hold SQLite's write lock on `path` for `seconds`, as another process's transaction."""
    started = threading.Event()

    def hold() -> None:
        db = sqlite3.connect(path, isolation_level=None, timeout=10)
        try:
            db.execute("BEGIN IMMEDIATE")
            started.set()
            time.sleep(seconds)
            db.execute("COMMIT")
        finally:
            db.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert started.wait(5)
    try:
        yield
    finally:
        thread.join(10)


async def exclusive_can_open(path: Path) -> bool:
    try:
        queue = await within(Queue.create(path, cls_storage_engine=SqliteEngine))
    except QueueLockedError:
        return False
    await within(queue.close())
    return True


# Cancellation (Python 3.11+: asyncio.timeout counts cancellation requests)


async def test_a_timeout_expiring_while_a_put_into_a_full_queue_is_sent_raises_timeout_error(
    path: Path,
) -> None:
    queue = await within(Queue.create(path, maxsize=1, cls_storage_engine=SharedSqliteEngine))
    await within(queue.put("fills it"))
    task = asyncio.current_task()
    assert task is not None
    escaped = False
    with write_lock_held(path, 0.3):  # the put's transaction waits past the deadline
        try:
            async with asyncio.timeout(0.1):
                await queue.put("waits for room")
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            escaped = True
            task.uncancel()
    await within(queue.close())
    assert not escaped, "the expired timeout escaped as CancelledError, not TimeoutError"


async def test_an_expired_timeout_block_leaves_no_cancellation_behind(path: Path) -> None:
    queue = await within(Queue.create(path, cls_storage_engine=SharedSqliteEngine))
    task = asyncio.current_task()
    assert task is not None
    with write_lock_held(path, 0.3):
        async with asyncio.timeout(0.1):
            await queue.put(1)  # sent before the deadline: completes after it
            await queue.put(2)
    cancelled = False
    try:
        await asyncio.sleep(0.01)
    except asyncio.CancelledError:
        cancelled = True
        while task.uncancel():
            pass
    await within(queue.close())
    assert not cancelled, "nobody cancelled the task, yet it was cancelled after the block"


# Resources


async def test_a_cancelled_create_leaves_the_file_unlocked(path: Path) -> None:
    creating = asyncio.create_task(Queue.create(path, cls_storage_engine=SharedSqliteEngine))
    await asyncio.sleep(0)  # the open is in the engine's thread
    creating.cancel()
    with suppress(asyncio.CancelledError):
        await within(creating)
    await asyncio.sleep(0.5)  # the open finishes in its thread
    gc.collect()
    assert await exclusive_can_open(path), "the lock of the cancelled open is never released"


async def test_a_cancelled_close_still_closes_the_engine(path: Path) -> None:
    queue = await within(Queue.create(path, cls_storage_engine=SharedSqliteEngine))
    with write_lock_held(path, 0.3):
        putting = asyncio.create_task(queue.put(1))
        await asyncio.sleep(0.05)  # the put is in flight
        try:
            async with asyncio.timeout(0.05):
                await queue.close()
        except TimeoutError:
            pass
        await within(queue.close())
        await within(putting)
    await asyncio.sleep(0.2)
    assert await exclusive_can_open(path), "close() was cancelled, and the engine never closed"


async def test_a_queue_left_open_releases_its_file_once_collected(path: Path) -> None:
    # SharedSqliteEngine.__del__ says it lets the threads close the files; it never runs, since
    # the worker thread (its last call's locals) and the watcher thread refer to the engine.
    queue = await within(Queue.create(path, cls_storage_engine=SharedSqliteEngine))
    await within(queue.put(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del queue
        gc.collect()
    released = False
    for _ in range(20):
        await asyncio.sleep(0.1)
        gc.collect()
        if await exclusive_can_open(path):
            released = True
            break
    assert released, "the engine of a queue left open is never collected: the file stays locked"


# Items


async def test_close_during_the_get_of_an_unreadable_item_keeps_the_item(path: Path) -> None:
    queue = await within(Queue.create(path, cls_storage_engine=SharedSqliteEngine))
    await within(queue._backend.engine.put(pickle.dumps("unreadable")[:-3], 0))  # type: ignore[attr-defined]
    with write_lock_held(path, 0.3):
        getting = asyncio.create_task(queue.get())
        await asyncio.sleep(0.05)  # the get is in flight
        await within(queue.close())
        with suppress(Exception):  # whatever it raises, the item must stay
            await within(getting)
    db = sqlite3.connect(path)
    try:
        (count,) = db.execute("SELECT count(*) FROM queue").fetchone()
    finally:
        db.close()
    assert count == 1, "the unreadable item was removed, and putting it back failed after close()"


async def test_an_opener_that_waited_for_a_first_opener_that_failed_counts_the_items(
    path: Path,
) -> None:
    exclusive = await within(Queue.create(path, cls_storage_engine=SqliteEngine))
    for item in range(3):
        await within(exclusive.put(item))
    await within(exclusive.close())
    first = QueueLock(path)
    assert first.acquire_shared(1.0)  # a first SharedSqliteEngine opener checking the file...
    opening = asyncio.create_task(Queue.create(path, cls_storage_engine=SharedSqliteEngine))
    await asyncio.sleep(0.2)
    first.release()  # ...whose open fails (or whose process is killed): it lets go
    queue = await within(opening)
    try:
        try:
            got = await asyncio.wait_for(queue.get(), 2)
        except TimeoutError:
            got = "nothing: the size row was never counted, so every get finds 0 items"
        assert got == 0
    finally:
        await within(queue.close())


def test_sqlite_openers_at_once_after_an_exclusive_owner_are_not_refused(path: Path) -> None:
    refused: list[str] = []

    def open_and_close(barrier: threading.Barrier) -> None:
        async def run() -> None:
            barrier.wait(5)
            try:
                queue = await within(Queue.create(path, cls_storage_engine=SharedSqliteEngine))
            except QueueLockedError as exc:  # names the previous exclusive owner
                refused.append(str(exc))
                return
            await within(queue.close())

        asyncio.run(run())

    async def use_exclusively() -> None:
        queue = await within(Queue.create(path, cls_storage_engine=SqliteEngine))
        await within(queue.close())

    for _ in range(100):
        asyncio.run(use_exclusively())  # leaves its process id in the lock file
        barrier = threading.Barrier(4)
        openers = [threading.Thread(target=open_and_close, args=(barrier,)) for _ in range(4)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join(30)
        if refused:
            break
    assert not refused, refused[0]


# Wake-ups


async def test_a_waiting_get_wakes_soon_after_another_engine_puts_while_the_loop_is_busy(
    path: Path,
) -> None:
    # The engine's own get reports the size it read in its transaction; the watcher may have
    # reported a newer one first (another engine's put), which the older one then overwrites.
    # The watcher sees no further change, so the getter waits for WAIT_SLICE (5 s).
    queue = await within(Queue.create(path, cls_storage_engine=SharedSqliteEngine))
    got_b = threading.Event()
    stuck: list[str] = []

    def produce() -> None:
        async def run() -> None:
            producer = await within(Queue.create(path, cls_storage_engine=SharedSqliteEngine))
            deadline = time.monotonic() + 20
            for trial in range(400):
                got_b.clear()
                await within(producer.put("A"))
                await asyncio.sleep(random.uniform(0, 0.03))
                await within(producer.put("B"))
                if not await asyncio.to_thread(got_b.wait, 1.0):
                    stuck.append(f"trial {trial}: an item waited over 1 s, qsize()={queue.qsize()}")
                    break
                if time.monotonic() > deadline:
                    break
            await within(producer.close())

        asyncio.run(run())

    async def busy() -> None:  # CPU work on the event loop, in short slices
        while True:
            time.sleep(0.003)  # noqa: ASYNC251 - the point: the loop is blocked
            await asyncio.sleep(0)

    async def consume() -> None:
        while True:
            if await queue.get() == "B":
                got_b.set()

    tasks = [asyncio.create_task(busy()), asyncio.create_task(consume())]
    try:
        await asyncio.wait_for(asyncio.to_thread(produce), 90)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await within(queue.close())
    assert not stuck, stuck[0]
