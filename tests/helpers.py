"""Small helpers that the Queue tests share."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiodiskqueue import Queue, QueueEmpty

R = TypeVar("R")

TIMEOUT = 5.0
"""How long any one wait in a test may take before the test fails."""


async def within(awaitable: Awaitable[R]) -> R:
    """Await `awaitable`, failing the test if it takes longer than `TIMEOUT`."""
    return await asyncio.wait_for(awaitable, TIMEOUT)


async def started(task: asyncio.Task[Any]) -> asyncio.Task[Any]:
    """Let `task` run one step, so that it is waiting in the queue, and check it still waits."""
    await asyncio.sleep(0)
    assert not task.done(), f"{task!r} did not wait"
    return task


async def drain(queue: Queue[Any]) -> list[Any]:
    """Get every item in `queue`, in order."""
    items = []
    while queue.qsize():
        try:
            items.append(queue.get_nowait())
        except QueueEmpty:  # the next items are still being read: wait for them
            items.append(await within(queue.get()))
    return items


def free_port() -> int:
    """A loopback TCP port that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
