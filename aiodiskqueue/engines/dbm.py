"""DbmEngine: the queue in a database of the standard library's `dbm` (the default engine).

Which `dbm` module a Python has differs by platform: `dbm.sqlite3` (Python 3.13+),
`dbm.gnu`, `dbm.ndbm`, and always `dbm.dumb`. `dbm.dumb` rewrites its whole index on every
delete and keeps its index consistent with its data only after a clean close. So this
engine never deletes a key and never grows a value: it only adds keys and overwrites values
in place with values of the same size. Every backend then costs O(1) per operation, and
a crash cannot leave `dbm.dumb`'s index pointing at the wrong bytes.

The database holds three kinds of key:

``meta``
    JSON written once: the format, its version and the dbm backend that created the file.
``page.<n>``
    A slot of fixed capacity holding one page: a 40-byte page header (magic ``AQDP``, the
    generation of the commit that wrote it, the first and last key of its records, the
    length and CRC-32 of its frames, and a CRC-32 of those fields), then its records framed
    as in `framing`, in key order, then zero bytes up to the slot's capacity.
``state.<capacity>.<0|1>``
    The commit record: generation, ``head`` (every key below it is removed), ``last_key``,
    and the removed keys above ``head``, with a CRC-32; written alternately to ``.0`` and
    ``.1`` so that the previous one survives a torn write. A new database writes both
    right after ``meta``, before any page, so that a data file cut short keeps them.

A commit writes the pages that receive records (rewriting the tail page in place: the bytes
of the records it already held do not change), then the next state record, which is the
commit point: records above its ``last_key`` are not part of the queue. When two pages hold
the same keys (a commit failed after writing a page and a later one wrote the same keys
elsewhere), the one of the later generation wins. A slot whose records are all removed is
reused for a later page, so the files grow to the longest the queue has been, no further.

Opening reads every page header and checks each page's frames against their CRC-32; only
a page that fails it is searched record by record. Only the tail page's frames stay in
memory; other pages are read when the queue reaches them. Records that the state counts
but no page holds intact are lost: they are reported (see `recovery.damaged`) and a new
state without them is written. Without a readable state, the pages say what the queue
holds (removals above the first page's first key are then forgotten, so such records come
back). A `dbm.dumb` index (``.dir``) that is lost or unreadable is rebuilt by scanning the
data file (``.dat``) for values, which start at 512-byte block boundaries.
"""

from __future__ import annotations

import ast
import bisect
import contextlib
import dbm
import importlib
import itertools
import json
import logging
import mmap
import os
import re
import struct
import sys
import zlib
from collections import deque
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple, cast

from . import framing, legacy, recovery
from .base import Record, Stored, ThreadedStorageEngine
from .files import PRIVATE_MODE, fsync_directory, fsync_file, write_atomically

__all__ = ["DbmEngine"]

logger = logging.getLogger(__name__)

_FORMAT = "aiodiskqueue.dbm"
_VERSION = 2
_BLOCK = 512  # dbm.dumb's block size: values are sized in whole blocks
_META_KEY = b"meta"
_PAGE_PREFIX = b"page."
_STATE_PREFIX = b"state."
_PAGE_MAGIC = b"AQDP"
# magic, generation, first key, last key, length and CRC-32 of the frames; then a CRC-32
# of those fields
_PAGE_FIELDS = struct.Struct("<4sQQQII")
_CHECKSUM = struct.Struct("<I")
_PAGE_HEADER_SIZE = _PAGE_FIELDS.size + _CHECKSUM.size
_STATE_HEADER = struct.Struct("<IQQQI")  # CRC-32, generation, head, last_key, removed count
_SQLITE_MAGIC = b"SQLite format 3\0"
_META_START = b'{"format": "aiodiskqueue.dbm"'


class DbmEngine(ThreadedStorageEngine):
    """Stores the queue in a `dbm` database: fast, O(1) per operation, one process at a time.

    `backend` names the dbm module for a new queue (``"dbm.dumb"``, ``"dbm.gnu"``, ...;
    default: the one `dbm` prefers on this Python); an existing queue is always reopened
    with the backend that created it. `page_size` is the capacity of a page in bytes.

    Durability: a returned commit has been handed to the operating system, so it survives
    the process being killed. With ``options.fsync`` ("power-loss") it is on the disk too:
    the pages are flushed before the state record that makes them part of the queue is
    written, and the state after it, so a commit that adds records costs two flushes to the
    disk and one that only removes records costs one. With `dbm.dumb` that is ``os.fsync``
    of ``.dat`` (and of ``.dir`` when a commit adds a key, and when the files are created);
    with other backends, the database's ``sync()``. `dbm.sqlite3` commits each write by
    itself, to the disk with SQLite's default ``synchronous=FULL``, whatever the option;
    `dbm.ndbm` has no way to flush, so it cannot promise more than the process level.
    """

    exclusive = True

    def __init__(
        self, path: str | os.PathLike[str], *, backend: str | None = None, page_size: int = 16384
    ) -> None:
        super().__init__(path)
        self.backend = backend
        self.page_size = _blocks(page_size)
        self._db: MutableMapping[bytes, bytes] | None = None
        self._state = _State()
        self._generation = 0
        self._slots: dict[int, int] = {}  # slot number -> capacity in bytes
        self._free: list[int] = []  # slots that hold no live record
        self._pages: deque[_Page] = deque()  # live pages in key order; the last is the tail
        self._tail = bytearray()  # the tail page's frames
        self._state_capacity = _BLOCK
        self._read_cache: tuple[_Page, int, list[Record]] | None = None

    # Opening: look without changing anything, report damage, then write what is needed.

    @legacy.upgrading("dbm")
    def blocking_open(self) -> Stored:
        problems: list[str] = []
        found = self._existing_backend()
        self.backend = found or self.backend or _default_backend()
        fsync = self.options.fsync
        repair = _dumb_index(self.path, problems, fsync) if found == "dbm.dumb" else _NO_REPAIR
        if found == "":
            problems.append("it is not a dbm database")
        try:
            values = self._values(found, repair)
            new = not len(values)
            meta = self._read_meta(values, problems)
            lost = self._load(values, problems)
            if problems:
                recovery.damaged(
                    self.options,
                    *(Path(f"{self.path}{end}") for end in ("", ".dat", ".dir", ".pag", ".db")),
                    recovered=self._state.count,
                    lost=lost,
                    problem="; ".join(problems),
                    reserved=[Path(f"{self.path}.bak")],  # dbm.dumb's previous index
                )
        except BaseException:
            self._disconnect()
            raise
        self._repair(found == "", repair)
        meta = self._write_opening(meta, new, repaired=bool(problems))
        logger.debug("opened %s with backend %s", self.path, self.backend)
        return Stored(size=self._state.count, last_key=self._state.last_key, meta=meta)

    def _values(self, found: str | None, repair: _DumbRepair) -> Mapping[bytes, bytes]:
        """The database's values, to look at before anything is changed."""
        if found == "":
            return {}
        if repair.rebuilt is not None:
            return _DumbValues(self.path, repair.rebuilt)
        return self._connect()

    def _repair(self, not_dbm: bool, repair: _DumbRepair) -> None:
        """Make the damaged files fit to be opened and written (after `recovery.damaged`)."""
        if not_dbm:
            self.path.unlink()
        if repair.rebuilt is not None:
            index = _index_text(repair.rebuilt)
            write_atomically(Path(f"{self.path}.dir"), index, fsync=self.options.fsync)
            # dbm.dumb's previous index names other places: it must not be merged in later.
            Path(f"{self.path}.bak").unlink(missing_ok=True)
        data = Path(f"{self.path}.dat")
        if repair.data_size and repair.data_size > data.stat().st_size:
            os.truncate(data, repair.data_size)  # zero bytes where the lost ones were
        if self._db is None:
            self._connect()

    def _write_opening(
        self, meta: dict[str, str] | None, new: bool, repaired: bool
    ) -> dict[str, str]:
        """Write the meta of a new or damaged store, and its state if new or repaired."""
        db = self._connected()
        with self._durable():
            if meta is None:
                meta = dict(self.options.meta)
                content = {"format": _FORMAT, "version": _VERSION, "backend": self.backend}
                db[_META_KEY] = json.dumps({**content, "meta": meta}).encode()
            if new:  # the state records come first in the files, before any page
                for generation in (0, 1):
                    self._state = replace(self._state, generation=generation)
                    self._write_state(self._state)
                self._generation = self._state.generation
            elif repaired:
                self._generation += 1
                self._state = self._state.advanced(self._generation)
                self._write_state(self._state)
        if (new or repaired) and self.options.fsync:
            fsync_directory(self.path.parent)
        return meta

    def _existing_backend(self) -> str | None:
        """Return the dbm module of the queue's files: None if there are none, "" if the
        file at the path is not a dbm database."""
        found = dbm.whichdb(str(self.path))
        if not found and any(Path(f"{self.path}{suffix}").exists() for suffix in (".dat", ".dir")):
            found = "dbm.dumb"  # whose index is missing or damaged: see `_dumb_index`
        if found == "":
            with self.path.open("rb") as file:
                if file.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC:
                    raise ValueError(f"{self.path} is an SQLite database, not a dbm database")
        elif found is not None and self.backend is not None and found != self.backend:
            raise ValueError(f"{self.path} is a {found} database, not {self.backend}")
        return found

    def _connect(self) -> MutableMapping[bytes, bytes]:
        assert self.backend is not None
        module = importlib.import_module(self.backend)
        self._db = cast(
            MutableMapping[bytes, bytes], module.open(str(self.path), "c", PRIVATE_MODE)
        )
        return self._db

    def _read_meta(
        self, values: Mapping[bytes, bytes], problems: list[str]
    ) -> dict[str, str] | None:
        """Return the queue's meta; None if the database is new or its meta is lost."""
        value = values.get(_META_KEY)
        try:
            content = json.loads(value) if value is not None else None
        except ValueError:  # not JSON, or not text
            content = None
        if isinstance(content, dict):
            if content.get("format") != _FORMAT or content.get("version") != _VERSION:
                raise ValueError(f"{self.path} is not a DbmEngine queue of version {_VERSION}")
            return {str(name): str(value) for name, value in content["meta"].items()}
        keys = list(values.keys())
        if any(
            not key.startswith((_PAGE_PREFIX, _STATE_PREFIX)) for key in keys if key != _META_KEY
        ):
            raise ValueError(f"{self.path} is a dbm database of something else")
        if keys:
            problems.append("its meta record is " + ("missing" if value is None else "damaged"))
        return None

    def _load(self, values: Mapping[bytes, bytes], problems: list[str]) -> int | None:
        """Read the state and the pages; return how many records are lost (None: unknown)."""
        states, pages, stated = [], [], False
        for key in list(values.keys()):
            if key.startswith(_STATE_PREFIX):
                value = values[key]
                self._state_capacity = max(self._state_capacity, len(value))
                state = _State.decode(value)
                if state is not None:
                    states.append(state)
                stated = True
            elif key.startswith(_PAGE_PREFIX):
                slot, content = int(key[len(_PAGE_PREFIX) :]), values[key]
                self._slots[slot] = len(content)
                pages.append(_Page.parse(slot, content))  # its metadata only: memory stays small
        if states:
            self._state = max(states, key=lambda state: state.generation)
        elif pages:  # no readable commit record: take what the pages hold
            self._state = _State(last_key=sys.maxsize)
        self._generation = self._state.generation
        damaged = self._place_pages(pages, values)
        if (pages or stated) and not states:
            first, last = (self._pages[0], self._pages[-1]) if self._pages else (None, None)
            self._state = _State(
                head=first.first_key if first else 1, last_key=last.last_key if last else 0
            )
            problems.append("no state record")
        missing = self._missing_keys() | (damaged - self._state.removed)
        if missing:
            problems.append(f"{len(missing)} record(s) missing or damaged")
            self._state = replace(self._state, removed=self._state.removed | missing)
        return len(missing) if states else None

    def _place_pages(self, pages: list[_Page], values: Mapping[bytes, bytes]) -> set[int]:
        """Find the live page for each stored key; every other slot becomes free.

        Return the keys of the live pages' damaged records.
        """
        candidates = []
        for page in pages:
            if page.first_key > page.last_key:  # no valid page in that slot
                self._free.append(page.slot)
                continue
            self._generation = max(self._generation, page.generation)
            candidates.append(page)
        live: list[_Page] = []  # in key order
        # A newer page wins the keys it shares with an older one.
        for page in sorted(candidates, key=lambda page: page.generation, reverse=True):
            page.clip(self._state.head, self._state.last_key)
            place = bisect.bisect(live, page.first_key, key=lambda page: page.first_key)
            neighbours = live[max(place - 1, 0) : place + 1]
            if page.first_key > page.last_key or any(map(page.overlaps, neighbours)):
                self._free.append(page.slot)
            else:
                live.insert(place, page)
        self._pages = deque(live)
        if self._pages:  # the tail page's frames are kept in memory, to append to
            tail = self._pages[-1]
            records = _Page.records(values[_PAGE_PREFIX + b"%d" % tail.slot], tail.last_key)
            self._tail = tail.frames = bytearray(b"".join(map(framing.frame, records)))
        head, last_key = self._state.head, self._state.last_key
        return {key for page in live for key in page.damaged if head <= key <= last_key}

    def _missing_keys(self) -> set[int]:
        """Return the keys that the state counts in the queue but no page holds."""
        missing: set[int] = set()
        expected = self._state.head
        for page in self._pages:
            missing.update(range(expected, page.first_key))
            expected = max(expected, page.last_key + 1)
        missing.update(range(expected, self._state.last_key + 1))
        return missing - self._state.removed

    # Reading

    def blocking_read(self, after: int, limit: int) -> list[Record]:
        records: list[Record] = []
        for record in self._records_from(max(after + 1, self._state.head)):
            if len(records) == limit:
                break
            records.append(record)
        return records

    def _records_from(self, start: int) -> Iterator[Record]:
        """Yield the live records with keys from `start` on, in key order."""
        removed = self._state.removed
        for page in self._pages:
            if page.last_key < start:
                continue
            for record in self._page_records(page):
                if record.key >= start and record.key not in removed:
                    yield record

    def _page_records(self, page: _Page) -> list[Record]:
        """Return the intact records of `page`: of the tail from memory, of others from disk."""
        cached = self._read_cache
        if cached is not None and cached[0] is page and cached[1] == page.last_key:
            return cached[2]
        if page.frames:
            records = list(framing.unframe(bytes(page.frames), page.first_key, gaps=True))
        else:
            content = self._connected()[_PAGE_PREFIX + b"%d" % page.slot]
            records = list(_Page.records(content, page.last_key))
        self._read_cache = (page, page.last_key, records)
        return records

    # Writing

    def blocking_commit(self, appends: Sequence[Record], removals: Sequence[int]) -> None:
        # Advanced even if this commit fails, so that its pages rank below a later commit's.
        self._generation += 1
        state = self._state.advanced(self._generation, appends, removals)
        pages = self._paginate(appends)
        db = self._connected()
        if pages:
            # With fsync, the pages are on the disk before the state that makes them live.
            with self._durable():
                for page in pages:
                    db[_PAGE_PREFIX + b"%d" % page.slot] = page.encode(self._slots[page.slot])
        with self._durable():
            self._write_state(state)
        self._state = state
        self._adopt(pages)

    def _paginate(self, appends: Sequence[Record]) -> list[_Page]:
        """Return the pages to write for `appends`: a new tail page, then new pages."""
        pages: list[_Page] = []
        free = list(self._free)
        if self._pages:
            tail = self._pages[-1]
            pages.append(_Page(tail.slot, self._generation, tail.first_key, tail.last_key))
            pages[0].frames = bytearray(self._tail)
        for record in appends:
            frame = framing.frame(record)
            page = pages[-1] if pages else None
            # A page holds consecutive keys: after lost records, the next key starts a page.
            if (
                page is None
                or page.last_key + 1 != record.key
                or not page.fits(len(frame), self._slots[page.slot])
            ):
                slot = self._take_slot(free, _PAGE_HEADER_SIZE + len(frame))
                pages.append(_Page(slot, self._generation, record.key, record.key - 1))
            pages[-1].add(frame, record.key)
        if self._pages and len(pages[0].frames) == len(self._tail):  # the tail is unchanged
            pages.pop(0)
        return pages

    def _take_slot(self, free: list[int], needed: int) -> int:
        for index, slot in enumerate(free):
            if self._slots[slot] >= needed:
                return free.pop(index)
        slot = max(self._slots, default=-1) + 1
        self._slots[slot] = max(self.page_size, _blocks(needed))
        return slot

    def _adopt(self, pages: list[_Page]) -> None:
        """Make the written `pages` live and free the slots of fully removed pages."""
        for page in pages:
            if self._pages and self._pages[-1].slot == page.slot:
                self._pages[-1] = page
            else:
                with contextlib.suppress(ValueError):
                    self._free.remove(page.slot)
                self._pages.append(page)
        while self._pages and self._pages[0].last_key < self._state.head:
            self._free.append(self._pages.popleft().slot)
        for page in pages[:-1]:  # only the tail page's frames stay in memory
            page.frames = bytearray()
        self._tail = self._pages[-1].frames if self._pages else bytearray()

    def _write_state(self, state: _State) -> None:
        db = self._connected()
        value, old = state.encode(), self._state_capacity
        if len(value) > old:
            # A larger value would not fit in place: move to a new pair of keys.
            self._state_capacity = max(_blocks(len(value)), 2 * old)
        db[self._state_key(state.generation)] = value.ljust(self._state_capacity, b"\0")
        if self._state_capacity != old:
            # Blank the old pair, which would pass for the newest state if the new one were lost.
            for parity in (0, 1):
                key = _STATE_PREFIX + b"%d.%d" % (old, parity)
                if key in db:
                    db[key] = bytes(old)

    def _state_key(self, generation: int) -> bytes:
        return _STATE_PREFIX + b"%d.%d" % (self._state_capacity, generation % 2)

    @contextlib.contextmanager
    def _durable(self) -> Iterator[None]:
        """With `options.fsync`, flush to the disk what the block writes, before going on."""
        if not self.options.fsync:
            yield
            return
        db = self._connected()
        keys = len(db) if self.backend == "dbm.dumb" else 0
        yield
        if self.backend == "dbm.dumb":
            fsync_file(Path(f"{self.path}.dat"))
            if len(db) != keys:  # dbm.dumb appended the new keys to its index
                fsync_file(Path(f"{self.path}.dir"))
        else:
            sync = getattr(db, "sync", None)
            if sync is not None:
                sync()

    def blocking_close(self) -> None:
        self._disconnect()
        if self.options.fsync and self.backend == "dbm.dumb":
            # dbm.dumb rewrites its index on close, after renaming the old one to .bak.
            fsync_file(Path(f"{self.path}.dir"))
            fsync_directory(self.path.parent)

    def _disconnect(self) -> None:
        close = getattr(self._db, "close", None)
        if close is not None:
            close()
        self._db = None

    def _connected(self) -> MutableMapping[bytes, bytes]:
        assert self._db is not None, "the database is not open"
        return self._db


@dataclass
class _State:
    """The commit record: which stored keys make up the queue."""

    generation: int = 0
    head: int = 1
    last_key: int = 0
    removed: set[int] = field(default_factory=set)

    @property
    def count(self) -> int:
        return self.last_key - self.head + 1 - len(self.removed)

    def advanced(
        self, generation: int, appends: Sequence[Record] = (), removals: Sequence[int] = ()
    ) -> _State:
        head, removed = self.head, self.removed | set(removals)
        while head in removed:
            removed.remove(head)
            head += 1
        last_key = appends[-1].key if appends else self.last_key
        return _State(generation, head, last_key, removed)

    def encode(self) -> bytes:
        body = struct.pack(
            f"<QQQI{len(self.removed)}Q",
            self.generation,
            self.head,
            self.last_key,
            len(self.removed),
            *sorted(self.removed),
        )
        return struct.pack("<I", zlib.crc32(body)) + body

    @classmethod
    def decode(cls, value: bytes | mmap.mmap, offset: int = 0) -> _State | None:
        """Return the state at `offset` in `value`, or None if it is damaged."""
        if len(value) < offset + _STATE_HEADER.size:
            return None
        checksum, generation, head, last_key, count = _STATE_HEADER.unpack_from(value, offset)
        end = offset + _STATE_HEADER.size + 8 * count
        if end > len(value) or zlib.crc32(value[offset + 4 : end]) != checksum:
            return None
        removed = struct.unpack_from(f"<{count}Q", value, offset + _STATE_HEADER.size)
        return cls(generation, head, last_key, set(removed))


class _PageHeader(NamedTuple):
    generation: int
    first_key: int
    last_key: int
    length: int  # of the frames
    checksum: int  # of the frames


@dataclass(eq=False)
class _Page:
    """A page of records with keys from `first_key` to `last_key`, in one slot.

    Only the pages being written and the tail page hold their frames in memory.
    """

    slot: int
    generation: int
    first_key: int
    last_key: int
    frames: bytearray = field(default_factory=bytearray)
    damaged: list[int] = field(default_factory=list)  # keys whose frames are not intact

    @classmethod
    def parse(cls, slot: int, content: bytes) -> _Page:
        """Return what the page in `content` holds (nothing if the slot holds no page).

        An intact page is known by its header alone; a damaged one is searched frame by
        frame for its intact records.
        """
        header = _page_header(content)
        if header is None:
            return cls(slot, 0, 1, 0)
        page = cls(slot, header.generation, header.first_key, header.last_key)
        if not _intact(content, header):
            intact = [record.key for record in cls.records(content, header.last_key)]
            page.last_key = intact[-1] if intact else page.first_key - 1
            page.damaged = sorted(set(range(page.first_key, page.last_key + 1)) - set(intact))
        return page

    @staticmethod
    def records(content: bytes, last_key: int) -> Iterator[Record]:
        """Yield the intact records of the page in `content` with keys up to `last_key`."""
        header = _page_header(content)
        if header is None:
            return
        body = content[_PAGE_HEADER_SIZE:]
        if _intact(content, header):  # its frames may skip the keys of records lost before
            body = body[: header.length]
            yield from framing.unframe(body, header.first_key, gaps=True, last_key=last_key)
        else:
            last_key = min(last_key, header.last_key)
            yield from framing.unframe(body, header.first_key, last_key=last_key)

    def fits(self, frame_size: int, capacity: int) -> bool:
        return _PAGE_HEADER_SIZE + len(self.frames) + frame_size <= capacity

    def add(self, frame: bytes, key: int) -> None:
        self.frames += frame
        self.last_key = key

    def clip(self, head: int, last_key: int) -> None:
        """Keep the records up to `last_key` only, and none if all are below `head`."""
        self.last_key = min(self.last_key, last_key)
        if self.last_key < head:
            self.last_key = self.first_key - 1

    def overlaps(self, other: _Page) -> bool:
        return self.first_key <= other.last_key and other.first_key <= self.last_key

    def encode(self, capacity: int) -> bytes:
        fields = _PAGE_FIELDS.pack(
            _PAGE_MAGIC,
            self.generation,
            self.first_key,
            self.last_key,
            len(self.frames),
            zlib.crc32(self.frames),
        )
        page = fields + _CHECKSUM.pack(zlib.crc32(fields)) + self.frames
        return page.ljust(capacity, b"\0")


def _page_header(content: bytes | mmap.mmap, offset: int = 0) -> _PageHeader | None:
    """Return the page header at `offset`, or None if there is none."""
    if len(content) < offset + _PAGE_HEADER_SIZE:
        return None
    magic, *fields = _PAGE_FIELDS.unpack_from(content, offset)
    end = offset + _PAGE_FIELDS.size
    (checksum,) = _CHECKSUM.unpack_from(content, end)
    if magic != _PAGE_MAGIC or zlib.crc32(content[offset:end]) != checksum:
        return None
    return _PageHeader(*fields)


def _intact(content: bytes, header: _PageHeader) -> bool:
    """True if the page's frames are all there, as its header says."""
    start = _PAGE_HEADER_SIZE
    frames = content[start : start + header.length]
    return len(frames) == header.length and zlib.crc32(frames) == header.checksum


def _blocks(size: int) -> int:
    """Round `size` up to whole dbm blocks."""
    return max(_BLOCK, -(-size // _BLOCK) * _BLOCK)


def _default_backend() -> str:
    """The module that `dbm.open` uses for a new database on this Python."""
    for name in cast(list[str], getattr(dbm, "_names", ["dbm.dumb"])):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
            return name
    return "dbm.dumb"  # pragma: no cover - dbm.dumb is always importable


# dbm.dumb's index

_Index = dict[str, tuple[int, int]]  # key -> (offset in .dat, size)


class _DumbRepair(NamedTuple):
    """What `dbm.dumb`'s files need once `recovery.damaged` has run."""

    rebuilt: _Index | None  # an index rebuilt from the data file, to write; None: keep it
    data_size: int  # the size the data file must have, at least, for its index


_NO_REPAIR = _DumbRepair(None, 0)


def _dumb_index(path: Path, problems: list[str], fsync: bool) -> _DumbRepair:
    """Make `dbm.dumb`'s index usable, and say what its damaged files need.

    `dbm.dumb` appends a line to ``<path>.dir`` for every new key, and rewrites the file on
    close after renaming the old one to ``<path>.bak``. A crash can tear the last line or
    leave the rewrite unfinished. Since this engine never deletes keys nor moves values,
    the union of the readable lines of both files is the whole index: it is written back at
    once. Damage is added to `problems`: an index lost in another way (missing with no
    previous copy, or unreadable before its last line) is rebuilt by scanning the data
    file; a data file shorter than its index says must be made long enough again, or
    `dbm.dumb` would append new values over the space of old ones.
    """
    data, index_path = Path(f"{path}.dat"), Path(f"{path}.dir")
    current, torn, garbled = _read_dumb_index(index_path)
    previous, _, _ = _read_dumb_index(Path(f"{path}.bak"))
    whole = {**previous, **current}
    if not data.exists():
        if not whole:
            return _NO_REPAIR  # dbm.dumb creates both files
        problems.append(f"{data.name} is missing")
        return _DumbRepair({}, 0)
    size = data.stat().st_size
    if garbled or (not whole and size > 0):
        lost = "unreadable" if garbled or torn else "empty" if index_path.exists() else "missing"
        problems.append(f"{index_path.name} is {lost}")
        return _DumbRepair(_scan_dumb_data(data), 0)
    if torn or whole != current:
        logger.info("repaired the dbm.dumb index %s after a crash", index_path)
        write_atomically(index_path, _index_text(whole), fsync=fsync)
    needed = max((position + length for position, length in whole.values()), default=0)
    if size < needed:
        problems.append(f"{data.name} is cut short")
    return _DumbRepair(None, needed)


_PLAIN_INDEX_LINE = re.compile(r"'([\w.]+)', \((\d+), (\d+)\)")


def _read_dumb_index(path: Path) -> tuple[_Index, bool, bool]:
    """Return the entries of a `dbm.dumb` index file, whether its last line is unreadable
    (torn by a crash), and whether any other line is."""
    entries: _Index = {}
    unreadable: list[int] = []
    lines = path.read_text(encoding="latin-1").splitlines() if path.exists() else []
    for number, line in enumerate(lines):
        plain = _PLAIN_INDEX_LINE.fullmatch(line)  # the lines this engine's keys give: fast
        if plain is not None:
            entries[plain[1]] = (int(plain[2]), int(plain[3]))
            continue
        try:
            key, position = ast.literal_eval(line)
        except (SyntaxError, ValueError, TypeError):
            unreadable.append(number)
        else:
            entries[key] = position
    torn = unreadable[-1:] == [len(lines) - 1]
    return entries, torn, len(unreadable) > (1 if torn else 0)


def _index_text(index: _Index) -> bytes:
    lines = (f"{key!r}, {position!r}\n" for key, position in index.items())
    return "".join(lines).encode("latin-1")


def _scan_dumb_data(path: Path) -> _Index:
    """Rebuild `dbm.dumb`'s index by finding this engine's values in its data file.

    Values start at block boundaries and are recognised by their content: the meta by its
    JSON, a page by its header, a state record by its checksum. A page's frames are passed
    over, so that a record whose data looks like a value is not taken for one. Pages are
    numbered anew; each reaches to the next value found, so that its slot keeps at least
    its capacity.
    """
    size = path.stat().st_size
    found: list[tuple[int, str, int, int]] = []  # offset, kind, end of content, generation
    if size:
        with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            offset = 0
            while offset < size:
                value = _recognise(data, offset)
                if value is None:
                    offset += _BLOCK
                else:
                    found.append((offset, *value))
                    offset = max(offset + _BLOCK, _blocks(value[1]))
    index: _Index = {}
    generations: dict[str, int] = {}  # state key -> generation of the state kept under it
    slots = itertools.count()
    for number, (offset, kind, end, generation) in enumerate(found):
        if kind == "meta":
            index.setdefault("meta", (offset, end - offset))
        elif kind == "page":
            reach = found[number + 1][0] if number + 1 < len(found) else size
            index[f"page.{next(slots)}"] = (offset, reach - offset)
        else:
            capacity = _blocks(end - offset)
            key = f"state.{capacity}.{generation % 2}"
            if generation >= generations.get(key, -1):
                index[key], generations[key] = (offset, capacity), generation
    return index


def _recognise(data: mmap.mmap, offset: int) -> tuple[str, int, int] | None:
    """Return the kind of this engine's value at `offset`, where its content ends, and its
    generation (0 for the meta); None if there is none."""
    if data[offset : offset + len(_META_START)] == _META_START:
        end = data.find(b"\0", offset)
        end = len(data) if end < 0 else end
        with contextlib.suppress(ValueError):
            content = json.loads(data[offset:end])
            if isinstance(content, dict) and content.get("format") == _FORMAT:
                return "meta", end, 0
        return None
    header = _page_header(data, offset)
    if header is not None:
        return "page", offset + _PAGE_HEADER_SIZE + header.length, header.generation
    state = _State.decode(data, offset)
    if state is not None:
        return "state", offset + _STATE_HEADER.size + 8 * len(state.removed), state.generation
    return None


class _DumbValues(Mapping[bytes, bytes]):
    """The values of a `dbm.dumb` database, read through an index kept apart from its files."""

    def __init__(self, path: Path, index: _Index) -> None:
        self._data, self._index = Path(f"{path}.dat"), index

    def __getitem__(self, key: bytes) -> bytes:
        position, size = self._index[key.decode("latin-1")]
        with self._data.open("rb") as file:
            file.seek(position)
            return file.read(size)

    def __iter__(self) -> Iterator[bytes]:
        return (key.encode("latin-1") for key in self._index)

    def __len__(self) -> int:
        return len(self._index)
