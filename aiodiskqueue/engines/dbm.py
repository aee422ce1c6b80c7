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
    A slot of fixed capacity holding one page: a 16-byte page header (magic ``AQDP``, the
    generation of the commit that wrote it, a CRC-32 of both), then records framed as in
    `framing`, with consecutive keys, then zero bytes up to the slot's capacity.
``state.<capacity>.<0|1>``
    The commit record: generation, ``head`` (every key below it is removed), ``last_key``,
    and the removed keys above ``head``, with a CRC-32; written alternately to ``.0`` and
    ``.1`` so that the previous one survives a torn write.

A commit writes the pages that receive records (rewriting the tail page in place: the bytes
of the records it already held do not change), then the next state record, which is the
commit point: records above its ``last_key`` are not part of the queue. When two pages hold
the same keys (a commit failed after writing a page and a later one wrote the same keys
elsewhere), the one of the later generation wins. A slot whose records are all removed is
reused for a later page, so the files grow to the longest the queue has been, no further.
"""

from __future__ import annotations

import ast
import contextlib
import dbm
import importlib
import json
import logging
import os
import struct
import sys
import zlib
from collections import deque
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from . import framing, recovery
from .base import Record, Stored, ThreadedStorageEngine
from .files import PRIVATE_MODE, write_atomically

__all__ = ["DbmEngine"]

logger = logging.getLogger(__name__)

_FORMAT = "aiodiskqueue.dbm"
_VERSION = 1
_BLOCK = 512  # dbm.dumb's block size: values are sized in whole blocks
_META_KEY = b"meta"
_PAGE_PREFIX = b"page."
_STATE_PREFIX = b"state."
_PAGE_MAGIC = b"AQDP"
_PAGE_HEADER = struct.Struct("<4sQI")  # magic, generation, CRC-32 of magic and generation
_STATE_HEADER = struct.Struct("<IQQQI")  # CRC-32, generation, head, last_key, removed count


class DbmEngine(ThreadedStorageEngine):
    """Stores the queue in a `dbm` database: fast, O(1) per operation, one process at a time.

    A returned commit has been handed to the operating system. `backend` names the dbm
    module for a new queue (``"dbm.dumb"``, ``"dbm.gnu"``, ...; default: the one `dbm`
    prefers on this Python); an existing queue is always reopened with the backend that
    created it. `page_size` is the capacity of a page in bytes.
    """

    exclusive = True

    def __init__(
        self, path: str | os.PathLike[str], *, backend: str | None = None, page_size: int = 16384
    ) -> None:
        super().__init__(path)
        self.backend = backend
        self.page_size = _blocks(page_size)
        self._db: MutableMapping[bytes, bytes]
        self._state = _State()
        self._generation = 0
        self._slots: dict[int, int] = {}  # slot number -> capacity in bytes
        self._free: list[int] = []  # slots that hold no live record
        self._pages: deque[_Page] = deque()  # live pages in key order; the last is the tail
        self._tail = bytearray()  # the tail page's frames
        self._state_capacity = _BLOCK
        self._read_cache: tuple[_Page, int, list[Record]] | None = None

    # Opening

    def blocking_open(self) -> Stored:
        self.backend = self._choose_backend()
        module = importlib.import_module(self.backend)
        self._db = cast(
            MutableMapping[bytes, bytes], module.open(str(self.path), "c", PRIVATE_MODE)
        )
        logger.debug("opened %s with backend %s", self.path, self.backend)
        meta = self._check_meta()
        self._load()
        return Stored(size=self._state.count, last_key=self._state.last_key, meta=meta)

    def _choose_backend(self) -> str:
        if Path(f"{self.path}.dat").exists():
            _repair_dumb_index(self.path)
        found = dbm.whichdb(str(self.path))
        if found == "":
            raise ValueError(f"{self.path} exists but is not a dbm database")
        if found is None:
            return self.backend or _default_backend()
        if self.backend is not None and found != self.backend:
            raise ValueError(f"{self.path} is a {found} database, not {self.backend}")
        return found

    def _check_meta(self) -> dict[str, str]:
        """Return the queue's meta, written now if the database is new."""
        value = self._db.get(_META_KEY)
        if value is None:
            if len(self._db):
                raise ValueError(f"{self.path} is a dbm database of something else")
            content: dict[str, Any] = {
                "format": _FORMAT,
                "version": _VERSION,
                "backend": self.backend,
                "meta": dict(self.options.meta),
            }
            self._db[_META_KEY] = json.dumps(content).encode()
        else:
            content = json.loads(value)
            if content.get("format") != _FORMAT or content.get("version") != _VERSION:
                raise ValueError(f"{self.path} is not a DbmEngine queue of version {_VERSION}")
        return {str(name): str(value) for name, value in content["meta"].items()}

    def _load(self) -> None:
        states, pages = [], []
        for key in list(self._db.keys()):
            if key.startswith(_STATE_PREFIX):
                value = self._db[key]
                self._state_capacity = max(self._state_capacity, len(value))
                state = _State.decode(value)
                if state is not None:
                    states.append(state)
            elif key.startswith(_PAGE_PREFIX):
                slot, content = int(key[len(_PAGE_PREFIX) :]), self._db[key]
                self._slots[slot] = len(content)
                pages.append((slot, content))
        if states:
            self._state = max(states, key=lambda state: state.generation)
        elif pages:  # no readable commit record: take what the pages hold
            self._state = _State(last_key=sys.maxsize)
        self._generation = self._state.generation
        damaged = self._place_pages(pages)
        if pages and not states:
            first, last = (self._pages[0], self._pages[-1]) if self._pages else (None, None)
            self._state = _State(
                head=first.first_key if first else 1, last_key=last.last_key if last else 0
            )
        missing = self._missing_keys() | (damaged - self._state.removed)
        if missing or (pages and not states):
            self._recover(missing)

    def _place_pages(self, pages: list[tuple[int, bytes]]) -> set[int]:
        """Find the live page for each stored key; every other slot becomes free.

        Return the keys of the live pages' damaged records.
        """
        candidates = []
        for slot, content in pages:
            page = _Page.parse(slot, content)
            if page is None:
                self._free.append(slot)
                continue
            self._generation = max(self._generation, page.generation)
            candidates.append(page)
        live: list[_Page] = []
        # A newer page wins the keys it shares with an older one.
        for page in sorted(candidates, key=lambda page: page.generation, reverse=True):
            page.clip(self._state.head, self._state.last_key)
            if page.first_key > page.last_key or any(page.overlaps(other) for other in live):
                self._free.append(page.slot)
            else:
                live.append(page)
        self._pages = deque(sorted(live, key=lambda page: page.first_key))
        if self._pages:
            self._tail = self._pages[-1].frames
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

    def _recover(self, missing: set[int]) -> None:
        """Keep a backup, then store a state without the `missing` records."""
        self._generation += 1
        state = replace(self._state, removed=self._state.removed | missing)
        state = state.advanced(self._generation)
        files = [self.path, *(Path(f"{self.path}{suffix}") for suffix in (".dat", ".dir", ".db"))]
        problem = f"{len(missing)} record(s) missing or damaged" if missing else "no state record"
        recovery.damaged(self.options, *files, recovered=state.count, problem=problem)
        self._write_state(state)
        self._state = state

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
        cached = self._read_cache
        if cached is not None and cached[0] is page and cached[1] == page.last_key:
            return cached[2]
        records = [
            record
            for record in framing.unframe(bytes(page.frames), page.first_key)
            if record.key <= page.last_key
        ]
        self._read_cache = (page, page.last_key, records)
        return records

    # Writing

    def blocking_commit(self, appends: Sequence[Record], removals: Sequence[int]) -> None:
        # Advanced even if this commit fails, so that its pages rank below a later commit's.
        self._generation += 1
        state = self._state.advanced(self._generation, appends, removals)
        pages = self._paginate(appends)
        for page in pages:
            self._db[_PAGE_PREFIX + b"%d" % page.slot] = page.encode(self._slots[page.slot])
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
            if not pages or not pages[-1].fits(len(frame), self._slots[pages[-1].slot]):
                slot = self._take_slot(free, _PAGE_HEADER.size + len(frame))
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
        self._tail = self._pages[-1].frames if self._pages else bytearray()

    def _write_state(self, state: _State) -> None:
        value = state.encode()
        if len(value) > self._state_capacity:
            # A larger value would not fit in place: move to a new pair of keys.
            self._state_capacity = max(_blocks(len(value)), 2 * self._state_capacity)
        key = _STATE_PREFIX + b"%d.%d" % (self._state_capacity, state.generation % 2)
        self._db[key] = value.ljust(self._state_capacity, b"\0")

    def blocking_close(self) -> None:
        close = getattr(self._db, "close", None)
        if close is not None:
            close()


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
    def decode(cls, value: bytes) -> _State | None:
        """Return the state in `value`, or None if it is damaged."""
        if len(value) < _STATE_HEADER.size:
            return None
        checksum, generation, head, last_key, count = _STATE_HEADER.unpack_from(value)
        end = _STATE_HEADER.size + 8 * count
        if end > len(value) or zlib.crc32(value[4:end]) != checksum:
            return None
        removed = struct.unpack_from(f"<{count}Q", value, _STATE_HEADER.size)
        return cls(generation, head, last_key, set(removed))


@dataclass(eq=False)
class _Page:
    """A page of consecutive records, `first_key` to `last_key`, in one slot."""

    slot: int
    generation: int
    first_key: int
    last_key: int
    frames: bytearray = field(default_factory=bytearray)
    damaged: list[int] = field(default_factory=list)  # keys whose frames fail their checksum

    @classmethod
    def parse(cls, slot: int, content: bytes) -> _Page | None:
        """Return the page stored in `content`, or None if its slot holds no valid page."""
        if len(content) < _PAGE_HEADER.size:
            return None
        magic, generation, checksum = _PAGE_HEADER.unpack_from(content)
        if magic != _PAGE_MAGIC or zlib.crc32(content[:12]) != checksum:
            return None
        body = content[_PAGE_HEADER.size :]
        first_key = framing.first_key(body)
        page = cls(slot, generation, first_key, first_key - 1)
        page._keep(body, up_to=sys.maxsize)
        return page if page.frames else None

    def _keep(self, body: bytes, up_to: int) -> None:
        """Hold the frames at the start of `body` with keys up to `up_to`."""
        end, self.last_key, self.damaged = 0, self.first_key - 1, []
        for key, data, frame_end in framing.scan(body, self.first_key):
            if key > up_to:
                break
            if data is None:
                self.damaged.append(key)
            end, self.last_key = frame_end, key
        self.frames = bytearray(body[:end])

    def fits(self, frame_size: int, capacity: int) -> bool:
        return _PAGE_HEADER.size + len(self.frames) + frame_size <= capacity

    def add(self, frame: bytes, key: int) -> None:
        self.frames += frame
        self.last_key = key

    def clip(self, head: int, last_key: int) -> None:
        """Keep the records up to `last_key` only, and none if all are below `head`."""
        if self.last_key > last_key:
            self._keep(bytes(self.frames), up_to=last_key)
        if self.last_key < head:
            self._keep(b"", up_to=0)

    def overlaps(self, other: _Page) -> bool:
        return self.first_key <= other.last_key and other.first_key <= self.last_key

    def encode(self, capacity: int) -> bytes:
        header = _PAGE_MAGIC + struct.pack("<Q", self.generation)
        page = header + struct.pack("<I", zlib.crc32(header)) + self.frames
        return page.ljust(capacity, b"\0")


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


def _repair_dumb_index(path: Path) -> None:
    """Make `dbm.dumb`'s index whole again after a crash.

    `dbm.dumb` appends a line to ``<path>.dir`` for every new key, and rewrites the file on
    close after renaming the old one to ``<path>.bak``. A crash can tear the last line or
    leave the rewrite unfinished. Since this engine never deletes keys nor moves values,
    the union of the readable lines of both files is the whole index.
    """
    index_path, previous_path = Path(f"{path}.dir"), Path(f"{path}.bak")
    current, current_damaged = _read_dumb_index(index_path)
    previous, _ = _read_dumb_index(previous_path)
    whole = {**previous, **current}
    if current_damaged or whole != current:
        logger.info("repaired the dbm.dumb index %s after a crash", index_path)
        lines = "".join(f"{key!r}, {position!r}\n" for key, position in whole.items())
        write_atomically(index_path, lines.encode("latin-1"))


def _read_dumb_index(path: Path) -> tuple[dict[str, Any], bool]:
    """Return the entries of a `dbm.dumb` index file, and whether any line was unreadable."""
    entries: dict[str, Any] = {}
    damaged = False
    if path.exists():
        for line in path.read_text(encoding="latin-1").splitlines():
            try:
                key, position = ast.literal_eval(line)
            except (SyntaxError, ValueError, TypeError):
                damaged = True
            else:
                entries[key] = position
    return entries, damaged
