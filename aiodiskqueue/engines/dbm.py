"""DbmEngine: the queue in a database of the standard library's `dbm` (the default engine).

Which `dbm` module a Python has differs by platform: `dbm.sqlite3` (Python 3.13+),
`dbm.gnu`, `dbm.ndbm`, and always `dbm.dumb`. `dbm.dumb` rewrites its whole index on every
delete and keeps its index consistent with its data only after a clean close. So this
engine never deletes a key and never grows a value: it only adds keys and overwrites values
in place with values of the same size. Every backend then costs O(1) per operation, and
a crash cannot leave `dbm.dumb`'s index pointing at the wrong bytes.

The database holds three kinds of key:

``meta``
    JSON written once: the format, its version, the dbm backend that created the file, the
    queue's meta and a CRC-32 of the JSON of those (``checksum``, which files written
    before it was added lack), so that a damaged version is not taken for another one.
``page.<n>``
    A slot of fixed capacity holding one page: a 40-byte page header (magic ``AQDP``, the
    generation of the commit that wrote it, the first and last key of its records, the
    length and CRC-32 of its frames, and a CRC-32 of those fields), then its records framed
    as in `framing`, in key order, then zero bytes up to the slot's capacity.
``state.<capacity>.<0|1>``
    The commit record: generation, ``head`` (every key below it is removed), ``last_key``,
    and the removed keys above ``head``, with a CRC-32; written alternately to ``.0`` and
    ``.1`` so that the previous one survives a torn write. Both keys of the pair always
    exist: a new database writes both right after ``meta``, before any page, so that a
    data file cut short keeps them, and a state that outgrows its capacity moves to a new
    pair of twice the size, writing both keys and blanking the old pair with zero bytes.

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
state without them is written. A state record of the newest pair that is missing or fails
its CRC-32 is reported too, since it may have been the newest: the other one then says
which records were removed, and the pages which were put (so the removals of the newest
commit are forgotten, and such records come back). Without a readable state, the pages say
what the queue holds (removals above the first page's first key are then forgotten too).
A database that its dbm module cannot open or read in full, or that holds keys no queue
has, is reported and built anew from the values that can be read. A `dbm.dumb` index
(``.dir``) that is lost, unreadable or names places where no value can be is rebuilt by
scanning the data file (``.dat``) for values, which start at 512-byte block boundaries.
A file with no queue's values, such as the empty file ``tempfile.mkstemp()`` leaves at the
path, is a new queue; but a database that a dbm module other than `dbm.dumb` made is never
left without them, so one that holds none is reported as damaged.
"""

from __future__ import annotations

import ast
import bisect
import contextlib
import dbm
import gc
import importlib
import itertools
import json
import logging
import mmap
import os
import re
import sqlite3
import struct
import sys
import warnings
import zlib
from collections import deque
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple, cast

from .contracts.local import Record, Stored, ThreadedStorageEngine
from .registry import SQLITE_SIGNATURE
from .storage import framing, legacy, recovery
from .storage.files import PRIVATE_MODE, fsync_directory, fsync_file, write_atomically
from .storage.sqlite_look import sqlite_tables

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
_SQLITE_MAGIC = SQLITE_SIGNATURE
# What dbm modules raise for a file they cannot read (dbm.sqlite3 lets some of SQLite's
# through, and Python's when SQLite's message quotes damaged text).
_UNREADABLE = (*dbm.error, sqlite3.Error, UnicodeDecodeError)
_KEY = re.compile(rb"(meta)|(page)\.\d{1,18}|(state)\.\d{1,18}\.[01]")
# The files of a database of each backend (dbm.dumb's previous index, .bak, included).
_FILES = {
    "dbm.dumb": (".dat", ".dir", ".bak"),
    "dbm.ndbm": (".db", ".pag", ".dir"),
    "dbm.gnu": ("",),
    "dbm.sqlite3": ("", "-wal", "-shm"),
}
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
    data_suffixes = ("", ".dat", ".db", ".pag")  # the data file of each backend: lock that

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
        values = self._look(found, repair, problems)
        try:
            meta = self._read_meta(values, problems)
            lost = self._load(values, problems)
            if found not in (None, "", "dbm.dumb") and not len(values) and not problems:
                # A new database gets its meta and state at once: it was emptied.
                problems.append("it holds none of the queue's records")
            if problems:
                recovery.damaged(
                    self.options,
                    self.path,  # named in the message, whichever files the backend has
                    *self._files(found),
                    recovered=self._state.count,
                    lost=lost,
                    problem="; ".join(problems),
                )
            # A damaged database (but dbm.dumb's, repaired above) is built anew from what
            # can be read: its module may fail to write to it.
            rebuild = values.failed or (problems and found not in ("", "dbm.dumb"))
            salvaged = dict(values.readable()) if rebuild else None
        finally:
            values.close()
        self._repair(found, repair, salvaged)
        meta = self._write_opening(meta, new=not len(values), repaired=bool(problems))
        logger.debug("opened %s with backend %s", self.path, self.backend)
        return Stored(size=self._state.count, last_key=self._state.last_key, meta=meta)

    def _files(self, backend: str | None) -> list[Path]:
        """The files that hold a database of `backend` (of any backend if None or "")."""
        suffixes = _FILES.get(backend or "", sorted(set(itertools.chain(*_FILES.values()))))
        return [Path(f"{self.path}{suffix}") for suffix in suffixes]

    def _look(self, found: str | None, repair: _DumbRepair, problems: list[str]) -> _Readable:
        """The database's values, to look at before anything is changed."""
        if repair.rebuilt is not None:
            return _Readable(_DumbValues(self.path, repair.rebuilt), problems)
        if not found or (found == "dbm.dumb" and not Path(f"{self.path}.dir").exists()):
            return _Readable({}, problems)  # (dbm.dumb writes its index after its data file)
        # A read-only SQLite connection would leave behind the -wal and -shm it creates.
        flag = "w" if found == "dbm.sqlite3" else "r"
        try:
            return _Readable(self._open_module(flag), problems)
        except _UNREADABLE as exc:
            problems.append(f"{found} cannot open it ({exc})")
        # dbm.sqlite3 then leaves its connection open, in a reference cycle: collect it
        # (once the exception is gone), so that it closes and removes the -wal and -shm it made.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        return _Readable({}, problems, failed=True)

    def _repair(
        self, found: str | None, repair: _DumbRepair, salvaged: dict[bytes, bytes] | None
    ) -> None:
        """Make the damaged files fit to be opened and written (after `recovery.damaged`)."""
        if found == "":
            self.path.unlink()
        if salvaged is not None:  # the database is damaged inside: build a new one
            for file in self._files(found):
                file.unlink(missing_ok=True)
        if repair.rebuilt is not None:
            index = _index_text(repair.rebuilt)
            write_atomically(Path(f"{self.path}.dir"), index, fsync=self.options.fsync)
            # dbm.dumb's previous index names other places: it must not be merged in later.
            Path(f"{self.path}.bak").unlink(missing_ok=True)
        data = Path(f"{self.path}.dat")
        if repair.data_size and repair.data_size > data.stat().st_size:
            os.truncate(data, repair.data_size)  # zero bytes where the lost ones were
        db = self._connect()
        for key, value in (salvaged or {}).items():
            if _kind(key) is not None:
                db[key] = value

    def _write_opening(
        self, meta: dict[str, str] | None, new: bool, repaired: bool
    ) -> dict[str, str]:
        """Write the meta of a new or damaged store, and its state if new or repaired."""
        db = self._connected()
        with self._durable():
            if meta is None:
                meta = dict(self.options.meta)
                content = {"format": _FORMAT, "version": _VERSION, "backend": self.backend}
                db[_META_KEY] = _meta_record({**content, "meta": meta})
            if new:  # the state records come first in the files, before any page
                for generation in (0, 1):
                    self._state = replace(self._state, generation=generation)
                    self._write_state(self._state)
                self._generation = self._state.generation
            elif repaired:
                self._generation += 1
                self._state = self._state.advanced(self._generation)
                self._write_state(self._state, whole_pair=True)
        if (new or repaired) and self.options.fsync:
            fsync_directory(self.path.parent)
        return meta

    def _existing_backend(self) -> str | None:
        """Return the dbm module of the queue's files: None if there are none (an empty
        file at the path, such as ``tempfile.mkstemp()`` leaves, is none), "" if the file
        at the path is not a dbm database.

        Told by the files' names first, so that a database too damaged to open is known.
        """
        if self.path.is_file() and self.path.stat().st_size > 0:
            found = dbm.whichdb(str(self.path))
        elif any(file.exists() for file in self._files("dbm.ndbm")[:2]):  # .db, or .pag
            found = "dbm.ndbm"
        elif any(file.exists() for file in self._files("dbm.dumb")[:2]):
            found = "dbm.dumb"  # whose index may be missing or damaged: see `_dumb_index`
        else:
            return None
        if found in ("", "dbm.sqlite3"):
            with self.path.open("rb") as file:
                sqlite = file.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
            # dbm.sqlite3 keeps its values in a table "Dict"; an unreadable schema is damage.
            tables = sqlite_tables(self.path) if sqlite else None
            if sqlite and (found == "" or (tables is not None and "Dict" not in tables)):
                raise ValueError(f"{self.path} is an SQLite database, not a dbm database")
        if found and self.backend is not None and found != self.backend:
            raise ValueError(f"{self.path} is a {found} database, not {self.backend}")
        return found

    def _connect(self) -> MutableMapping[bytes, bytes]:
        self._db = self._open_module("c")
        return self._db

    def _open_module(self, flag: str) -> MutableMapping[bytes, bytes]:
        assert self.backend is not None
        try:
            module = importlib.import_module(self.backend)
        except ImportError as exc:
            raise ValueError(f"{self.path} is a {self.backend} database: {exc}") from exc
        return cast(MutableMapping[bytes, bytes], module.open(str(self.path), flag, PRIVATE_MODE))

    def _read_meta(
        self, values: Mapping[bytes, bytes], problems: list[str]
    ) -> dict[str, str] | None:
        """Return the queue's meta; None if the database is new or its meta is lost.

        Keys that no queue has are damage if the database holds any of the queue's keys;
        if it holds none, it is another program's database, which is refused.
        """
        keys = list(values)
        unknown = [key for key in keys if _kind(key) is None]
        if unknown and len(unknown) == len(keys):
            raise ValueError(f"{self.path} is a dbm database of something else")
        if unknown:  # (the database is then built anew without them)
            problems.append(f"{len(unknown)} key(s) that no queue has")
        value = values.get(_META_KEY)
        try:
            content = json.loads(value) if value is not None else None
        except ValueError:  # not JSON, or not text
            content = None
        if isinstance(content, dict) and content.get("format") == _FORMAT and _checked(content):
            version, meta = content.get("version"), content.get("meta")
            if isinstance(version, int) and version != _VERSION:
                raise ValueError(f"{self.path} is not a DbmEngine queue of version {_VERSION}")
            if version == _VERSION and isinstance(meta, dict):
                return {str(name): str(value) for name, value in meta.items()}
        if keys:
            problems.append("its meta record is " + ("missing" if value is None else "damaged"))
        return None

    def _load(self, values: Mapping[bytes, bytes], problems: list[str]) -> int | None:
        """Read the state and the pages; return how many records are lost (None: unknown).

        Both state records of the current pair must be intact. If one is damaged, it may
        have been the newest: the pages then say which records were put after the other
        one, and the removals since it are forgotten (such records come back).
        """
        stored_states, pages = [], []
        for key in values:
            kind, value = _kind(key), values.get(key)
            if value is None or kind is None:  # reported by `_Readable`, `_read_meta`
                continue
            if kind == "state":
                stored_states.append((int(key.split(b".")[1]), value))
                self._state_capacity = max(self._state_capacity, len(value))
            elif kind == "page":
                slot = int(key[len(_PAGE_PREFIX) :])
                self._slots[slot] = len(value)
                pages.append(_Page.parse(slot, value))  # its metadata only: memory stays small
        # An older pair of state records is blanked when the state moves to a larger pair;
        # the newest pair always has both.
        top = max((capacity for capacity, _ in stored_states), default=0)
        states = []
        damaged_states = 2 - sum(capacity == top for capacity, _ in stored_states) if top else 0
        for capacity, value in stored_states:
            state = _State.decode(value) if len(value) == capacity else None
            if state is not None:
                states.append(state)
            elif capacity == top:
                damaged_states += 1
        known = self._state = max(states, key=lambda state: state.generation, default=_State())
        self._generation = self._state.generation
        rolled = not states or damaged_states > 0  # the pages say where the queue ends
        if rolled:
            self._state = replace(self._state, last_key=sys.maxsize)
        damaged = self._place_pages(pages, values)
        if rolled:
            last = self._pages[-1].last_key if self._pages else 0
            if states:
                problems.append("a commit record is damaged")
                self._state = replace(known, last_key=max(known.last_key, last))
            else:
                first = self._pages[0].first_key if self._pages else 1
                self._state = _State(head=first, last_key=last)
                if len(values):
                    problems.append("no state record")
        missing = self._missing_keys() | (damaged - self._state.removed)
        if missing:
            problems.append(f"{len(missing)} record(s) missing or damaged")
            self._state = replace(self._state, removed=self._state.removed | missing)
        return None if rolled else len(missing)

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
            content = values.get(_PAGE_PREFIX + b"%d" % tail.slot, b"")
            records = _Page.records(content, tail.last_key)
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

    def _write_state(self, state: _State, whole_pair: bool = False) -> None:
        """Write `state` in its place in the current pair (in both places with `whole_pair`)."""
        db = self._connected()
        value, old = state.encode(), self._state_capacity
        if len(value) > old:
            # A larger value would not fit in place: move to a new pair of keys.
            self._state_capacity = max(_blocks(len(value)), 2 * old)
        value = value.ljust(self._state_capacity, b"\0")
        db[self._state_key(state.generation)] = value
        moved = self._state_capacity != old
        if whole_pair or moved:
            # The new pair starts whole, its other key holding the same state until the next
            # commit, so that a key missing from the newest pair is known to be damage.
            db[self._state_key(state.generation + 1)] = value
        if moved:
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


def _meta_record(content: dict[str, object]) -> bytes:
    """The meta record of `content`, with a CRC-32 of its JSON."""
    checksum = zlib.crc32(json.dumps(content).encode())
    return json.dumps({**content, "checksum": checksum}).encode()


def _checked(content: dict[str, object]) -> bool:
    """Whether a meta record's content passes its CRC-32 (removed from it), if it has one."""
    checksum = content.pop("checksum", None)
    return checksum is None or checksum == zlib.crc32(json.dumps(content).encode())


def _kind(key: bytes) -> str | None:
    """Which of the queue's keys `key` is: "meta", "page" or "state"; None if none."""
    match = _KEY.fullmatch(key)
    return None if match is None else next(kind.decode() for kind in match.groups() if kind)


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
    once. (``<path>.bak`` is only a copy: its lines that are unreadable, or that disagree
    with ``<path>.dir``, are passed over.) Damage is added to `problems`: an index lost in
    another way (missing with no previous copy, unreadable before its last line, or naming
    places where no value can be) is rebuilt by scanning the data file; a data file
    shorter than its index says must be made long enough again, or `dbm.dumb` would append
    new values over the space of old ones.
    """
    data, index_path = Path(f"{path}.dat"), Path(f"{path}.dir")
    current, torn, garbled, foreign = _read_dumb_index(index_path)
    if foreign and not current:
        raise ValueError(f"{path} is a dbm database of something else")
    previous = _read_dumb_index(Path(f"{path}.bak"))[0]
    whole = dict(current)
    for key, place in previous.items():
        if key not in whole and _placeable(whole, place):
            whole[key] = place
    if not data.exists():
        if not whole:
            return _NO_REPAIR  # dbm.dumb creates both files
        problems.append(f"{data.name} is missing")
        return _DumbRepair({}, 0)
    size = data.stat().st_size
    if garbled or foreign or not _placed_apart(current) or (not whole and size > 0):
        lost = (
            "unreadable"
            if garbled or torn or foreign or current
            else "empty"
            if index_path.exists()
            else "missing"
        )
        problems.append(f"{index_path.name} is {lost}")
        return _DumbRepair(_scan_dumb_data(data), 0)
    if torn or whole != current:
        logger.info("repaired the dbm.dumb index %s after a crash", index_path)
        write_atomically(index_path, _index_text(whole), fsync=fsync)
    needed = max((position + length for position, length in whole.values()), default=0)
    if size < needed:
        problems.append(f"{data.name} is cut short")
    return _DumbRepair(None, needed)


def _placeable(index: _Index, place: tuple[int, int]) -> bool:
    """Whether a value at `place` would share no block with the values in `index`."""
    return _placed_apart({**index, "": place})


def _placed_apart(index: _Index) -> bool:
    """Whether every value in `index` starts at a block and shares no block with another."""
    end = 0
    for position, size in sorted(index.values()):
        if position % _BLOCK or size <= 0 or position < end:
            return False
        end = position + _blocks(size)
    return True


_PLAIN_INDEX_LINE = re.compile(r"'([\w.]+)', \((\d+), (\d+)\)")


def _read_dumb_index(path: Path) -> tuple[_Index, bool, bool, bool]:
    """Read a `dbm.dumb` index file as `dbm.dumb` does.

    Return the entries of this engine's keys, whether its last line is unreadable (torn by
    a crash), whether any other line is, and whether any line names a key no queue has.
    """
    entries: _Index = {}
    unreadable: list[int] = []
    foreign = False
    lines = []
    if path.exists():
        with path.open(encoding="latin-1") as file:
            lines = [line.rstrip() for line in file]
    for number, line in enumerate(lines):
        plain = _PLAIN_INDEX_LINE.fullmatch(line)  # the lines this engine's keys give: fast
        if plain is not None:
            key, place = plain[1], (int(plain[2]), int(plain[3]))
        else:
            try:
                key, place = ast.literal_eval(line)
            except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
                unreadable.append(number)
                continue
        if not (
            isinstance(key, str)
            and isinstance(place, tuple)
            and len(place) == 2
            and all(type(number) is int for number in place)
        ):
            unreadable.append(number)
        elif _kind(key.encode("latin-1")) is None:
            foreign = True
        else:
            entries[key] = place
    torn = unreadable[-1:] == [len(lines) - 1]
    return entries, torn, len(unreadable) > (1 if torn else 0), foreign


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


class _Readable(Mapping[bytes, bytes]):
    """A database's values as far as they can be read.

    A value that cannot be read is missing, and said so in `problems`; `failed` tells that
    any could not be, so that the database must be built anew from `readable()`.
    """

    def __init__(
        self, db: Mapping[bytes, bytes], problems: list[str], failed: bool = False
    ) -> None:
        self._db, self._problems, self.failed = db, problems, failed
        self._unreadable: set[bytes] = set()
        try:
            keys = list(db.keys())
        except _UNREADABLE as exc:
            self._fail(f"its keys cannot be read ({exc})")
            keys = []
        self._keys = [key for key in keys if isinstance(key, bytes)]
        if len(self._keys) < len(keys):  # dbm.sqlite3 reads a damaged key as NULL
            self._fail(f"{len(keys) - len(self._keys)} key(s) cannot be read")

    def _fail(self, problem: str) -> None:
        self.failed = True
        self._problems.append(problem)

    def __getitem__(self, key: bytes) -> bytes:
        if key in self._unreadable:
            raise KeyError(key)
        try:
            value = self._db[key]
        except KeyError:
            raise
        except _UNREADABLE as exc:
            problem = str(exc)
        else:
            if isinstance(value, bytes):
                return value
            problem = f"not bytes but {type(value).__name__}"
        self._unreadable.add(key)
        self._fail(f"{key.decode('latin-1')} cannot be read ({problem})")
        raise KeyError(key)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def readable(self) -> Iterator[tuple[bytes, bytes]]:
        """Yield the keys and values that can be read."""
        for key in self._keys:
            value = self.get(key)
            if value is not None:
                yield key, value

    def close(self) -> None:
        close = getattr(self._db, "close", None)
        if close is not None:
            close()
