"""PickledList: the whole queue in one file, rewritten whole on every commit.

The class keeps the name it had in aiodiskqueue 0.1, when the file was a pickled list. The
file is now our own framed format (version 2), so that when it is damaged, every intact
record can still be read::

    magic      4 bytes: b"AQPL"
    version    4 bytes, little-endian: 2
    count      8 bytes, little-endian: how many records follow
    last key   8 bytes, little-endian: the greatest key among them (0 if none)
    meta size  4 bytes, little-endian
    meta       meta size bytes: the queue's meta, as a JSON object
    checksum   4 bytes, little-endian: CRC-32 of everything above
    records    `count` frames (see `framing`), in increasing key order, with gaps where
               records were removed out of order

Every commit rewrites the whole file atomically (a temporary file renamed over the old one),
so a crash leaves the old or the new file, never a torn one. The engine keeps every record
in memory and each commit costs time in proportion to the queue's length: it suits small
queues only (see README's measurements). Reading the file never unpickles anything, so it is
as safe as the queue's serializer.
"""

from __future__ import annotations

import bisect
import json
import logging
import struct
import zlib
from collections.abc import Sequence
from typing import NamedTuple

from .contracts.local import Record, Stored, ThreadedStorageEngine
from .registry import PICKLED_LIST_SIGNATURE
from .storage import framing, legacy, recovery
from .storage.files import write_atomically

__all__ = ["PickledList"]

logger = logging.getLogger(__name__)

_MAGIC = PICKLED_LIST_SIGNATURE
_VERSION = 2
_HEADER = struct.Struct("<4sIQQI")  # magic, version, count, last key, meta size
_CHECKSUM = struct.Struct("<I")


class PickledList(ThreadedStorageEngine):
    """Stores the queue in one file, rewritten whole on every commit.

    Simple and dependable for queues of a few thousand items; slow for long ones, since
    each batch of puts and gets rewrites every item.

    Durability: a returned commit has been handed to the operating system, so it survives
    the process being killed; each commit writes the whole file once. With
    ``options.fsync`` ("power-loss"), it is also on the disk: the new file is flushed
    before it is renamed over the old one and the directory after, which costs two
    flushes to the disk per commit. When opened, every record is checked against its
    checksum; a damaged file keeps every intact record (see `recovery.damaged`).
    """

    exclusive = True

    _meta: dict[str, str]
    _records: list[Record]

    @legacy.upgrading("pickled-list")
    def blocking_open(self) -> Stored:
        try:
            content = self.path.read_bytes()
        except FileNotFoundError:
            content = b""
        # The file is written whole, so an empty one was not: it is the one that
        # tempfile.mkstemp() leaves, for a new queue.
        if not content:
            self._meta, self._records = dict(self.options.meta), []
            self._write(self._records)
        else:
            found = _load(content)
            self._meta = dict(self.options.meta) if found.meta is None else found.meta
            self._records = found.records
            if found.problem is not None:
                recovery.damaged(
                    self.options,
                    self.path,
                    recovered=len(found.records),
                    lost=found.lost,
                    problem=found.problem,
                )
                self._write(self._records)
        logger.debug("opened %s with %d record(s)", self.path, len(self._records))
        last_key = self._records[-1].key if self._records else 0
        return Stored(size=len(self._records), last_key=last_key, meta=self._meta)

    def blocking_read(self, after: int, limit: int) -> list[Record]:
        start = bisect.bisect_right(self._records, after, key=lambda record: record.key)
        return self._records[start : start + limit]

    def blocking_commit(self, appends: Sequence[Record], removals: Sequence[int]) -> None:
        removed = set(removals)
        records = [record for record in (*self._records, *appends) if record.key not in removed]
        self._write(records)
        self._records = records

    def blocking_close(self) -> None:
        self._records = []

    def _write(self, records: list[Record]) -> None:
        write_atomically(
            self.path,
            _dump(self._meta, records),
            fsync=self.options.fsync,
            # The lock goes with the queue's file, which a hard link may name too.
            before_replace=self._lock.follow if self._lock is not None else None,
        )


class _Loaded(NamedTuple):
    meta: dict[str, str] | None  # None: not readable
    records: list[Record]
    lost: int | None  # None: not known
    problem: str | None  # None: the file is whole


def _dump(meta: dict[str, str], records: list[Record]) -> bytes:
    meta_json = json.dumps(meta).encode()
    last_key = records[-1].key if records else 0
    header = _HEADER.pack(_MAGIC, _VERSION, len(records), last_key, len(meta_json)) + meta_json
    return b"".join([header, _CHECKSUM.pack(zlib.crc32(header)), *map(framing.frame, records)])


def _load(content: bytes) -> _Loaded:
    """Read a file's meta and its intact records, and say what is wrong with it if anything."""
    header = _header(content)
    if header is None:
        records = list(framing.unframe(content, 1, gaps=True))
        return _Loaded(None, records, None, "its header is damaged")
    meta, count, last_key, start = header
    records, end = [], 0
    for key, data, frame_end in framing.scan(content[start:], 1, gaps=True, last_key=last_key):
        records.append(Record(key, data))
        end = frame_end
    if len(records) == count and start + end == len(content):
        return _Loaded(meta, records, 0, None)
    lost = count - len(records)
    problem = f"{lost} record(s) missing or damaged" if lost else "bytes after the last record"
    return _Loaded(meta, records, lost, problem)


def _header(content: bytes) -> tuple[dict[str, str], int, int, int] | None:
    """Return meta, count, last key and where the records start; None if damaged."""
    if len(content) < _HEADER.size:
        return None
    magic, version, count, last_key, meta_size = _HEADER.unpack_from(content)
    end = _HEADER.size + meta_size
    if magic != _MAGIC or end + _CHECKSUM.size > len(content):
        return None
    if _CHECKSUM.unpack_from(content, end)[0] != zlib.crc32(content[:end]):
        return None
    if version != _VERSION:
        raise ValueError(f"unsupported PickledList format version {version}")
    meta = json.loads(content[_HEADER.size : end])
    return meta, count, last_key, end + _CHECKSUM.size
