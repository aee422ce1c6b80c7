"""A batch: changes to a local queue that are stored together (group commit)."""

from __future__ import annotations

import asyncio

from ..engines import Record

__all__ = ["Batch"]


class Batch:
    """Changes that will be stored together; `done` completes when they are (or fails)."""

    __slots__ = ("appends", "awaited_gets", "done", "removals", "sent")

    def __init__(self) -> None:
        self.appends: list[Record] = []
        self.removals: list[int] = []
        self.awaited_gets = 0  # removals whose item is handed out only once they are stored
        self.sent = False  # handed to the engine: too late to change
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def __bool__(self) -> bool:
        return bool(self.appends or self.removals)

    def settle(self, exc: BaseException | None = None) -> None:
        """Record that storing the batch succeeded, or failed with `exc`."""
        if exc is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(exc)
            self.done.exception()  # nobody need ask: a failure is logged
