"""A toy storage engine that keeps queues in memory: it loses everything when the process exits.

It is the engine contract in a few lines, for learning and for tests, and it is not
persistent at all. Every queue path gets one dict, shared by all engines of this process,
so closing a queue and opening the same path again restores its records, as with a real
engine, until the process ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aiodiskqueue.engines import Record, Stored, ThreadedStorageEngine

__all__ = ["MemoryEngine"]

# Each dict maps key to data.
_stores: dict[Path, dict[int, bytes]] = {}


class MemoryEngine(ThreadedStorageEngine):
    """Stores records in a dict in memory. A toy: nothing survives the process."""

    def blocking_open(self) -> Stored:
        records = _stores.setdefault(self.path, {})
        return Stored(len(records), max(records, default=0))

    def blocking_read(self, after: int, limit: int) -> list[Record]:
        records = _stores[self.path]
        # Sorted, because a record put back at the head was added to the dict last.
        newer = sorted(key for key in records if key > after)[:limit]
        return [Record(key, records[key]) for key in newer]

    def blocking_commit(self, appends: Sequence[Record], removals: Sequence[int]) -> None:
        # Change a copy and swap it in at the end: if a removal names an unknown key, the
        # KeyError leaves the stored records as they were, so the commit is all or nothing.
        records = dict(_stores[self.path])
        records.update(appends)
        for key in removals:
            del records[key]
        _stores[self.path] = records

    def blocking_close(self) -> None:
        # Nothing to release: the records stay in `_stores` for the next open of this path.
        pass
