"""Backends: what a `Queue` delegates to, one kind per kind of storage engine.

`Queue` keeps `asyncio.Queue`'s surface: its waiting getters and putters, the count of
unfinished tasks, shutdown and closing. Where the items are is a backend's business:

- `LocalBackend`, for a `StorageEngine` that the queue owns alone: it numbers the items, keeps
  the first ones in memory and stores changes in batches (group commit);
- `SharedBackend`, for a `SharedStorageEngine` that several queues use at once: every put and
  get is one atomic operation on the store.

Both offer the same methods (`Backend`), and say what they can do: `can_get_nowait` (an item
can be taken without waiting on storage) and `can_deliver_at_least_once`.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from ..waiting import Completion
from .local import LocalBackend
from .shared import SharedBackend

__all__ = ["Backend", "LocalBackend", "SharedBackend"]

T_co = TypeVar("T_co", covariant=True)


class Backend(Protocol[T_co]):
    """What a `Queue` asks of the storage behind it."""

    can_get_nowait: bool
    """`get_nowait()` can take an item without waiting on storage."""
    can_deliver_at_least_once: bool
    """Items can stay stored until `finish()`ed (``delivery="at-least-once"``)."""

    def size(self) -> int:
        """The number of items in the queue (as last heard, for a shared store)."""

    def ready(self) -> bool:
        """True if `get()` may find an item now."""

    def expect_items(self) -> None:
        """A getter is about to wait: make sure it will be woken when items come."""

    def expect_room(self) -> None:
        """A putter is about to wait: make sure it will be woken when room is made."""

    def put_nowait(self, data: bytes) -> Completion:
        """Put an item at once; the completion says when it is stored."""

    async def put(self, data: bytes) -> bool:
        """Put an item and wait until it is stored; False if the store was full."""

    def get_nowait(self) -> tuple[T_co, int]:
        """Take an item at once; return it and its key. Raises `QueueEmpty` if none is ready."""

    async def get(self) -> tuple[T_co, int] | None:
        """Take an item and wait until its removal is stored; None if the store had none."""

    def finish(self, keys: list[int]) -> Completion:
        """Remove items delivered at least once that are done."""

    async def close(self) -> None:
        """Store what is pending, then close the engine."""
