"""A toy shared engine: queues of this process that share a deque in memory, lost at exit.

It is the shared engine contract in a few lines, for learning and for tests. Every address
gets one store, which all the engines opened on that address in this process share, as
engines in several processes share a server. It runs on the event loop and never awaits
inside an operation, so each operation is atomic; a real engine makes it atomic on its
server (a transaction, a script) instead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from aiodiskqueue.engines import DEFAULT_OPTIONS, KnownSize, OpenOptions, SharedStorageEngine

__all__ = ["MemorySharedEngine"]


class _Store:
    """One queue: its meta, its items, and the engines to tell of every change."""

    def __init__(self, meta: Mapping[str, str]) -> None:
        self.meta = dict(meta)
        self.items: deque[bytes] = deque()
        self.listeners: set[KnownSize] = set()

    def changed(self) -> None:
        for size in self.listeners:
            size.heard(len(self.items))


_stores: dict[str, _Store] = {}


class MemorySharedEngine(SharedStorageEngine):
    """Shares a deque in memory among the queues of one process. A toy: nothing survives it."""

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self._size = KnownSize()

    async def open(self, options: OpenOptions = DEFAULT_OPTIONS) -> Mapping[str, str]:
        self._store = _stores.setdefault(self.address, _Store(options.meta))
        self._store.listeners.add(self._size)
        self._size.heard(len(self._store.items))
        return self._store.meta

    async def put(self, data: bytes, maxsize: int) -> bool:
        if 0 < maxsize <= len(self._store.items):
            return False
        self._store.items.append(data)
        self._store.changed()
        return True

    async def get(self) -> bytes | None:
        if not self._store.items:
            return None
        data = self._store.items.popleft()
        self._store.changed()
        return data

    async def wait_for_items(self, timeout: float) -> None:
        await self._size.wait_for_items(timeout)

    async def wait_for_room(self, maxsize: int, timeout: float) -> None:
        await self._size.wait_for_room(maxsize, timeout)

    def size(self) -> int:
        return int(self._size)

    async def close(self) -> None:
        self._store.listeners.discard(self._size)
