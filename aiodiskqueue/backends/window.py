"""The read-ahead window: the first items of a local queue, held in memory within a budget."""

from __future__ import annotations

from collections import deque

from ..engines import Record

__all__ = ["ITEM_OVERHEAD", "READ_CHUNK", "Window"]

READ_CHUNK = 1000
"""The most records read in one call to the engine: the window fills in several."""

ITEM_OVERHEAD = 64
"""Bytes of memory counted for each item in the window beyond its data (its record)."""


class Window:
    """The first items of the queue, held in memory within a count and a memory budget.

    `end` is the key up to which every stored item is in the window or was taken; the items
    after it are read from the engine, while the window is at most half full.
    """

    def __init__(self, items: int | None, budget: int) -> None:
        self._records: deque[Record] = deque()
        self._items = items
        self._budget = budget
        self._bytes = 0
        self._item_size = 1024 + ITEM_OVERHEAD  # a guess until items are seen
        self.end = 0

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, record: Record) -> bool:
        return record in self._records

    def has_room(self) -> bool:
        """True while the window holds fewer items and bytes than it may."""
        return (self._items is None or len(self._records) < self._items) and (
            self._bytes < self._budget
        )

    def wants_more(self) -> bool:
        """True while the window is at most half full: time to read ahead."""
        return (self._items is None or len(self._records) <= self._items // 2) and (
            self._bytes <= self._budget // 2
        )

    def room_for(self) -> int:
        """How many items to read next: what the budget has room for, at the size of the
        items seen so far (at least one, at most `READ_CHUNK`)."""
        room = self._budget - self._bytes
        if self._items is not None:
            room = min(room, (self._items - len(self._records)) * self._item_size)
        return max(1, min(READ_CHUNK, room // self._item_size))

    def head(self) -> Record:
        return self._records[0]

    def append(self, record: Record) -> None:
        size = len(record.data) + ITEM_OVERHEAD
        self._records.append(record)
        self._bytes += size
        self._item_size = (self._item_size * 7 + size) // 8  # a running average
        if record.key > self.end:
            self.end = record.key

    def extend(self, records: list[Record]) -> None:
        """Append records read from storage, in key order."""
        if records:
            size = sum(len(record.data) for record in records) + ITEM_OVERHEAD * len(records)
            self._records.extend(records)
            self._bytes += size
            self._item_size = (self._item_size + size // len(records)) // 2
            self.end = max(self.end, records[-1].key)

    def appendleft(self, record: Record) -> None:
        self._records.appendleft(record)
        self._bytes += len(record.data) + ITEM_OVERHEAD

    def popleft(self) -> Record:
        record = self._records.popleft()
        self._bytes -= len(record.data) + ITEM_OVERHEAD
        return record

    def remove(self, record: Record) -> None:
        self._records.remove(record)
        self._bytes -= len(record.data) + ITEM_OVERHEAD

    def clear(self) -> None:
        """Forget every item, so that the window is read again from the first stored key."""
        self._records.clear()
        self._bytes = 0
        self.end = 0
