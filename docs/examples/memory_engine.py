"""A toy storage engine that keeps queues in memory: it loses everything when the process exits.

It is the engine contract in a few lines, for learning and for tests, and it is not
persistent at all. Every queue path gets one store, shared by all engines of this process,
so closing a queue and opening the same path again restores its records, as with a real
engine, until the process ends.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

from aiodiskqueue.engines import Record, Stored, ThreadedStorageEngine

__all__ = ["MemoryEngine"]

# Per path: the queue's meta, and its records as a dict from key to data. A dict keeps the
# order in which keys were added, and appended keys always increase, so iterating over it
# yields the records in key order.
_stores: dict[Path, tuple[dict[str, str], dict[int, bytes]]] = {}


class MemoryEngine(ThreadedStorageEngine):
    """Stores records in a dict in memory. A toy: nothing survives the process."""

    def blocking_open(self) -> Stored:
        meta, records = _stores.setdefault(self.path, (dict(self.options.meta), {}))
        return Stored(len(records), max(records, default=0), meta)

    def blocking_read(self, after: int, limit: int) -> list[Record]:
        records = _stores[self.path][1]
        newer = (Record(key, data) for key, data in records.items() if key > after)
        return list(itertools.islice(newer, limit))

    def blocking_commit(self, appends: Sequence[Record], removals: Sequence[int]) -> None:
        # Change a copy and swap it in at the end: if a removal names an unknown key, the
        # KeyError leaves the stored records as they were, so the commit is all or nothing.
        meta, records = _stores[self.path]
        changed = dict(records)
        changed.update(appends)
        for key in removals:
            del changed[key]
        _stores[self.path] = meta, changed

    def blocking_close(self) -> None:
        # Nothing to release: the records stay in `_stores` for the next open of this path.
        pass
