"""PickledList: the whole queue as one pickled list in one file.

The file holds a pickled dict: ``{"format": "aiodiskqueue.pickled-list", "version": 1,
"records": [(key, data), ...]}``. Every commit rewrites the whole file atomically (a
temporary file renamed over the old one), so a crash leaves the old or the new file, never
a torn one. The engine keeps every record in memory and each commit costs time in
proportion to the queue's length: it suits small queues only (see README's measurements).
"""

from __future__ import annotations

import bisect
import logging
import pickle
from collections.abc import Sequence

from . import recovery
from .base import Record, Stored, ThreadedStorageEngine
from .files import write_atomically

__all__ = ["PickledList"]

logger = logging.getLogger(__name__)

_FORMAT = "aiodiskqueue.pickled-list"
_VERSION = 1


class PickledList(ThreadedStorageEngine):
    """Stores the queue as one pickled list, rewritten whole on every commit.

    Simple and dependable for queues of a few thousand items; slow for long ones, since
    each batch of puts and gets rewrites every item. A returned commit has been handed to
    the operating system.
    """

    exclusive = True

    _meta: dict[str, str]
    _records: list[Record]

    def blocking_open(self) -> Stored:
        self._meta = dict(self.options.meta)
        try:
            content = self.path.read_bytes()
        except FileNotFoundError:
            self._records = []
            write_atomically(self.path, _dump(self._meta, self._records))
        else:
            try:
                self._meta, self._records = _load(content)
            except Exception as exc:  # unpickling damaged bytes can raise almost anything
                problem = f"{type(exc).__name__}: {exc}"
                recovery.damaged(self.options, self.path, recovered=0, problem=problem)
                self._records = []
                write_atomically(self.path, _dump(self._meta, self._records))
        logger.debug("opened %s with %d record(s)", self.path, len(self._records))
        last_key = self._records[-1].key if self._records else 0
        return Stored(size=len(self._records), last_key=last_key, meta=self._meta)

    def blocking_read(self, after: int, limit: int) -> list[Record]:
        start = bisect.bisect_right(self._records, after, key=lambda record: record.key)
        return self._records[start : start + limit]

    def blocking_commit(self, appends: Sequence[Record], removals: Sequence[int]) -> None:
        removed = set(removals)
        records = [record for record in (*self._records, *appends) if record.key not in removed]
        write_atomically(self.path, _dump(self._meta, records))
        self._records = records

    def blocking_close(self) -> None:
        self._records = []


def _dump(meta: dict[str, str], records: list[Record]) -> bytes:
    plain = [(record.key, record.data) for record in records]
    content = {"format": _FORMAT, "version": _VERSION, "meta": meta, "records": plain}
    return pickle.dumps(content, protocol=pickle.HIGHEST_PROTOCOL)


def _load(content: bytes) -> tuple[dict[str, str], list[Record]]:
    loaded = pickle.loads(content)
    if not (isinstance(loaded, dict) and loaded.get("format") == _FORMAT):
        raise ValueError("not a PickledList queue file")
    if loaded.get("version") != _VERSION:
        raise ValueError(f"unsupported PickledList format version {loaded.get('version')!r}")
    records = [Record(int(key), bytes(data)) for key, data in loaded["records"]]
    return dict(loaded["meta"]), records
