"""Code written for aiodiskqueue 0.1 works, or fails before it changes the queue.

0.1's `put_nowait()`, `get_nowait()` and `task_done()` were coroutines. Awaiting what
`put_nowait()` and `task_done()` return still works (they return awaitables); awaiting the
item that `get_nowait()` returns cannot, so the call is refused before it takes the item.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from aiodiskqueue import Queue, QueueUsageError
from aiodiskqueue.engines import StorageEngine

from .helpers import within

Engine = Callable[[Path], StorageEngine]


async def test_awaiting_get_nowait_raises_before_taking_the_item(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        await queue.put("kept")
        with pytest.raises(QueueUsageError, match=r"item = queue\.get_nowait\(\)`, without await"):
            await queue.get_nowait()  # type: ignore[misc]
        assert (queue.qsize(), await within(queue.get())) == (1, "kept")


async def test_awaiting_get_nowait_raises_a_type_error_as_awaiting_an_item_would(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        await queue.put("kept")
        with pytest.raises(TypeError):
            await queue.get_nowait()  # type: ignore[misc]


async def test_get_nowait_not_awaited_takes_the_item(engine: Engine, path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        await queue.put("taken")
        items = [queue.get_nowait()]
        assert items == ["taken"]


async def test_awaiting_put_nowait_and_task_done_works_as_in_0_1(
    engine: Engine, path: Path
) -> None:
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        await queue.put_nowait("item")
        assert queue.get_nowait() == "item"
        await queue.task_done()
        await within(queue.join())
