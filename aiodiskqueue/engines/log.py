"""LogEngine: the queue in memory-mapped, pre-allocated log segments, committed in place.

Files (format version 2), for a queue at ``PATH``:

- ``PATH``, the queue's header, written once when the queue is created::

      magic      4 bytes: b"AQLG"
      version    4 bytes, little-endian: 2
      meta size  4 bytes, little-endian
      meta       meta size bytes: the queue's meta, as a JSON object
      checksum   4 bytes, little-endian: CRC-32 of everything above

- ``PATH.aiodiskqueue-seg-<number>``, the segments, numbered from 1 up (ten decimal digits), each
  pre-allocated to its full size and then filled from the front::

      magic      4 bytes: b"AQLS"
      version    4 bytes, little-endian: 1
      number     8 bytes, little-endian: the number in its name
      size       8 bytes, little-endian: the size of the segment
      checksum   4 bytes, little-endian: CRC-32 of the 24 bytes above
      (4 zero bytes)
      frames     from offset 32 on, one after the other, keys increasing; zeros after the last
      summary    after the segment's size bytes, if it has one (below)

  A frame is a record: ``length`` (4 bytes), ``checksum`` (4 bytes, CRC-32 of the key's 8
  bytes and the data, as in `framing`), ``key`` (8 bytes), ``state`` (1 byte: 0 stored,
  ``0x52`` removed), 3 zero bytes, then ``length`` bytes of data. A record that does not
  fit in what is left of a segment goes to the front of the next; keys increase from each
  segment to the next.

  A segment's summary says what its frames are, so that opening need not check each one::

      magic      4 bytes: b"AQLI"
      frames     8 bytes, little-endian: how many
      live       8 bytes, little-endian: how many of them are stored, not removed
      end        8 bytes, little-endian: the offset just past the last
      segment    4 bytes, little-endian: CRC-32 of the segment's size bytes
      keys       frames times 8 bytes, little-endian: the frames' keys, in order
      offsets    frames times 8 bytes, little-endian: where they begin
      checksum   4 bytes, little-endian: CRC-32 of the summary's bytes above

  The engine's thread writes them when the queue is closed, if it changed since it was
  opened (a queue only read is left as it was): one for each segment that its summary, if
  it has one, no longer describes. A summary holds while the segment's bytes are the ones
  it was written for: a frame written or removed since, or damage anywhere in the
  segment, fails its ``segment`` checksum, and a summary torn by a crash or damaged fails
  its own; either way, opening checks every frame, as without one. It costs 16 bytes of
  disk per record.

Version 1 (aiodiskqueue 0.3.0) had no summaries, and its header says version 1: a segment's
file is exactly its size bytes, and any more is damage. Such a queue is read so; the
first close after a change makes it one of version 2, writing its header again before any
summary (its segments keep their version, 1: their bytes are laid out as before). An
older aiodiskqueue refuses version 2.

A put writes its frame into the mapped segment, data first and header last, so that a
process killed in the middle leaves a frame whose checksum fails, at the tail. A removal
(a get, an acknowledgement, a cancelled put taken back, in any order) sets its frame's state
byte: one byte, which no crash can tear; the consumer's position is the first frame not
removed, so it needs no cursor of its own, and out-of-order removals need no list. Both are
stores into memory that the operating system writes back to the file: they survive the
process being killed as soon as they are made, and the event loop makes no system call for
them. The checksum does not cover the state byte, so that setting it costs one store; a state
byte that is neither value counts as damage, and its record as stored.

The engine's thread does every system call: it creates the next segment under a temporary
name, allocates it whole (`os.posix_fallocate`, so that a full disk is an `OSError` there
and not a ``SIGBUS`` on a store into the mapping), maps it, faults its pages in for writing
(``MADV_POPULATE_WRITE``, called through `ctypes`, which lets go of the GIL: `mmap.madvise`
holds it, and the event loop with it, for milliseconds) and renames it into place before the
writer needs it; it flushes the mappings for ``durability="power-loss"`` (the puts and gets
made meanwhile share one flush); it unmaps segments that neither the writer nor the reader
is in, and deletes segments whose every record is removed. What remains on the event loop:
mapping a segment again when the reader or a removal comes back to it (one ``mmap`` per
segment), the page faults of reading it back if the system evicted its pages, and creating a
segment itself, and faulting its pages in one by one as it is written, if the thread has not
prepared one in time (or on a system without ``MADV_POPULATE_WRITE``: Linux before 5.14, or
no `ctypes`).

Opening reads every segment, and checks every frame of each one without a summary that
holds. A torn frame at the tail of the last written segment is a put that never returned:
it is wiped without a warning. Anything else that does not read back (a truncated,
overwritten or empty segment file, a damaged header) goes through `recovery.damaged`: a
backup and one warning, after which the intact frames are written again to a segment of
their own, or `QueueCorruptedError`.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import glob
import inspect
import itertools
import json
import logging
import mmap
import os
import struct
import sys
import weakref
import zlib
from array import array
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .contracts.local import Record, Stored, ThreadOwningEngine
from .registry import LOG_SIGNATURE
from .storage import recovery
from .storage.files import (
    AUXILIARY_MARKER,
    PRIVATE_MODE,
    fsync_directory,
    fsync_file,
    write_atomically,
)
from .storage.framing import checksum

__all__ = ["LogEngine"]

logger = logging.getLogger(__name__)

_MAGIC = LOG_SIGNATURE
SEGMENT_MAGIC = b"AQLS"
_VERSION = 2
"""The format's version, in the queue's header: 2 added the segments' summaries."""
_HEADER = struct.Struct("<4sII")  # magic, version, meta size
_CRC = struct.Struct("<I")
_SEGMENT_HEADER = struct.Struct("<4sIQQ")  # magic, version, number, size
_SEGMENT_VERSION = 1  # of a segment's own bytes, which version 2 left as they were
_SUMMARY = struct.Struct("<4sQQQI")  # magic, frames, live, end, the segment's checksum
SUMMARY_MAGIC = b"AQLI"
_FIRST_FRAME = 32
_FRAME = struct.Struct("<IIQB3x")  # length, checksum, key, state
_STATE = 16  # offset of the state byte in a frame
STORED, REMOVED = 0, 0x52
_SEGMENT_PREFIX = f"{AUXILIARY_MARKER}seg-"
"""A segment of the queue at ``PATH`` is ``PATH.aiodiskqueue-seg-<number>``: an auxiliary
file's name, which no queue can have."""

DEFAULT_SEGMENT_SIZE = 8 * 2**20
_PREPARE_WHEN_LEFT = 8
"""The thread prepares the next segment once the writer has less than 1/this of its
segment left: about 3,500 puts of 256-character items, time enough for it (allocating a
segment and faulting its pages in take a few milliseconds, the loop letting go of the GIL
for the thread at its turns), and little disk allocated ahead of the writer. Where it is
late, the writer makes the segment itself, on the loop."""
_MADV_POPULATE_WRITE = 23  # Linux 5.14; no constant in Python's mmap before 3.13


class _Segment:
    """One segment file: its mapping (None while unmapped) and where its frames are."""

    __slots__ = ("end", "keys", "live", "mm", "number", "offsets", "path", "size", "summarized")

    def __init__(self, path: Path, number: int, size: int, mm: mmap.mmap | None) -> None:
        self.path, self.number, self.size, self.mm = path, number, size, mm
        self.keys: array[int] = array("q")
        self.offsets: array[int] = array("Q")
        self.live = 0  # frames not removed
        self.end = _FIRST_FRAME  # where the next frame goes
        self.summarized: tuple[int, int] | None = None
        """How many frames, and how many of them live, its file's summary records; None if
        it has none. Frames are only added, and removals only lower `live`, so the summary
        describes the segment as long as these are its own."""


class _Header(NamedTuple):
    meta: dict[str, str]
    version: int  # of the queue's files, as opening found them
    problem: str | None  # what is wrong with the header file


class _Scanned(NamedTuple):
    keys: array[int]  # of the intact frames, in order
    offsets: array[int]  # where they begin
    live: int  # how many of them are not removed
    end: int  # just past the last intact frame
    tail: bool  # bytes after `end` that are no intact frame
    skipped: bool  # damage before an intact frame
    from_summary: bool = False  # read from the segment's summary, not frame by frame


def segment_files(queue_path: Path) -> list[tuple[int, Path]]:
    """The segments of the queue at `queue_path`, by number, in order."""
    found = []
    start = len(queue_path.name) + len(_SEGMENT_PREFIX)
    for path in queue_path.parent.glob(f"{glob.escape(queue_path.name)}{_SEGMENT_PREFIX}*"):
        if path.name[start:].isdecimal():
            found.append((int(path.name[start:]), path))
    return sorted(found)


class LogEngine(ThreadOwningEngine):
    """Stores the queue in memory-mapped log segments, changed in place on the event loop.

    A `put()` or `get()` is a store into a mapped file: it completes without waiting for a
    thread, and survives the process being killed once it returns. With
    ``durability="power-loss"``, it waits for the engine's thread to flush the mappings to
    the disk, one flush for every change made meanwhile. Disk use is the queue's records
    plus at most 2 1/8 segments of `segment_size` bytes: the front of the first segment,
    whose records were removed (a segment is deleted once all are), the end of the last,
    not yet written, and the next, allocated ahead once the last is 7/8 full; and, once it
    is closed, 16 bytes per record for the summaries that make opening it again quick.
    That bound holds while the engine's thread keeps up: the queue lets go of the GIL for
    it each time it yields to a busy event loop, but code of yours that holds the loop for
    long without calling the queue holds the thread up too, and segments then wait to be
    deleted (and the next is made on the loop) until it lets go.

    Linux is its platform: elsewhere it falls back to writing zeros to allocate a segment,
    and refuses ``durability="power-loss"`` where a flush of a mapping is not a flush to the
    disk (macOS); use `DbmEngine` there. The file format is described in the module.
    """

    commits_in_place = True
    exclusive = True

    def __init__(self, path: str | os.PathLike[str], segment_size: int = DEFAULT_SEGMENT_SIZE):
        super().__init__(path)
        if segment_size < 4096:
            raise ValueError(f"segment_size must be at least 4096 bytes, not {segment_size}")
        self.segment_size = segment_size
        self._segments: list[_Segment] = []
        self._next_number = 1
        self._writer: _Segment | None = None  # the last segment, while it has room
        self._next: _Segment | None = None  # prepared by the thread
        self._preparing = False
        self._reader: _Segment | None = None  # where read() last read
        self._flushing = False
        self._flush_waiters: asyncio.Future[None] | None = None
        self._dirty: set[_Segment] = set()
        self._files = _SegmentFiles()
        self._jobs: set[asyncio.Future[Any]] = set()
        self._version = _VERSION  # of the files, as opening found them
        self._meta: dict[str, str] = {}
        self._as_opened: list[tuple[int, int, int]] = []  # `_holdings()` once opened
        self.segments_made_on_the_loop = 0
        """How often the thread had no segment ready in time (see the measurements)."""

    # Opening and closing (in the thread)

    def blocking_open(self) -> Stored:
        if sys.platform == "darwin" and self.options.fsync:
            raise ValueError(
                "LogEngine cannot flush a memory mapping to the disk on macOS "
                '(durability="power-loss"): use DbmEngine there'
            )
        header = self._open_header()
        problems = [header.problem] if header.problem else []
        recovered = 0
        damaged: list[_Segment] = []
        torn: list[_Segment] = []
        paths = self._segment_paths()
        summaries = header.version >= 2
        scans = [(n, path, _read_segment(path, n, summaries=summaries)) for n, path in paths]
        last_with_frames = max(
            (i for i, (_, _, (_, scan)) in enumerate(scans) if scan.keys), default=-1
        )
        last_key = 0
        for i, (number, path, (size, scan)) in enumerate(scans):
            segment = _Segment(path, number, size, None)
            segment.keys, segment.offsets, segment.live = scan.keys, scan.offsets, scan.live
            if scan.from_summary:
                segment.summarized = (len(scan.keys), scan.live)
            keys_ok = not segment.keys or segment.keys[0] > last_key
            last_key = max(last_key, segment.keys[-1] if segment.keys else 0)
            torn_tail = scan.tail and not scan.skipped and i >= last_with_frames
            if size < _FIRST_FRAME or scan.skipped or (scan.tail and not torn_tail) or not keys_ok:
                problems.append(f"{path.name}: {_problem(size, scan)}")
                damaged.append(segment)
            elif torn_tail:
                torn.append(segment)
            recovered += segment.live
            segment.end = scan.end
            self._segments.append(segment)
        if problems:
            recovery.damaged(
                self.options,
                *([self.path] if header.problem else []),
                *(segment.path for segment in damaged),
                recovered=recovered,
                lost=None if damaged else 0,  # a damaged header loses the meta, no record
                problem="; ".join(problems),
            )
            for segment in damaged:
                self._rewrite(segment)
        if header.problem:
            write_atomically(self.path, _dump_header(header.meta), fsync=self.options.fsync)
        self._version, self._meta = header.version, header.meta
        for segment in torn:  # a put that never returned: nothing lost
            logger.debug("wiping a frame torn at the tail of %s", segment.path)
            _wipe(segment.path, segment.end, segment.size)
        for path in self.path.parent.glob(f"{glob.escape(self.path.name)}{_SEGMENT_PREFIX}*.tmp"):
            path.unlink()  # a segment whose preparation a crash interrupted
        self._next_number = max((number for number, _ in paths), default=0) + 1
        for segment in [s for s in self._segments if not s.live]:
            if segment is not self._segments[-1] or segment.end >= segment.size - _FRAME.size:
                self._segments.remove(segment)
                segment.path.unlink()
        # Segments are made when the first put needs one: opening to read makes none.
        last = self._segments[-1] if self._segments else None
        if last is not None and last.end < last.size - _FRAME.size:
            last.mm = _map(last.path, last.size)
            self._writer = last
        size = sum(segment.live for segment in self._segments)
        self._as_opened = self._holdings()
        logger.debug("opened %s: %d record(s) in %d segment(s)", self.path, size, len(paths))
        return Stored(size=size, last_key=last_key, meta=header.meta)

    def _open_header(self) -> _Header:
        """Read the queue's header file, or write a new queue's.

        A damaged header is written again, with the meta that `open()` was given, once the
        segments are read and the damage dealt with (see `recovery`).
        """
        try:
            content = self.path.read_bytes()
        except FileNotFoundError:
            content = None
        if content == b"" and not self._segment_paths():
            content = None  # an empty file and no segment: a new queue (as mkstemp() leaves)
        loaded = None if content is None else _load_header(content)
        if loaded is not None:
            return _Header(*loaded, problem=None)
        meta = dict(self.options.meta)
        if content is not None:
            problem = f"{self.path.name}: its header is damaged (the meta is lost)"
            return _Header(meta, _VERSION, problem)
        write_atomically(self.path, _dump_header(meta), fsync=self.options.fsync)
        return _Header(meta, _VERSION, problem=None)

    def _segment_paths(self) -> list[tuple[int, Path]]:
        return segment_files(self.path)

    def _rewrite(self, segment: _Segment) -> None:
        """Write the intact frames of a damaged segment again, into a sealed file of its own."""
        with segment.path.open("rb") as file:
            content = file.read()
        frames = b"".join(
            content[offset : offset + _FRAME.size + _FRAME.unpack_from(content, offset)[0]]
            for offset in segment.offsets
        )
        size = _FIRST_FRAME + len(frames)
        rewritten = _segment_header(segment.number, size) + frames
        write_atomically(segment.path, rewritten, fsync=self.options.fsync)
        segment.size = segment.end = size
        segment.summarized = None
        segment.offsets = array("Q")
        offset = _FIRST_FRAME
        for _ in segment.keys:
            segment.offsets.append(offset)
            offset += _FRAME.size + _FRAME.unpack_from(rewritten, offset)[0]

    def _make_segment(
        self, size: int, number: int | None = None, *, populate: bool = True
    ) -> _Segment:
        """Create, allocate and map a new segment: in the thread, or, without pre-faulting
        its pages (which would hold up the loop longer than the faults it saves), on the
        loop if need be."""
        if number is None:
            number, self._next_number = self._next_number, self._next_number + 1
        path = self.path.with_name(f"{self.path.name}{_SEGMENT_PREFIX}{number:010d}")
        return _create_segment(path, number, size, fsync=self.options.fsync, populate=populate)

    def blocking_close(self) -> None:
        if self._holdings() != self._as_opened:  # a queue only read is left as it was
            self._write_summaries()
        for segment in self._segments:
            if segment.mm is not None:
                self._files.unmap(segment.path, segment.mm, flush=self.options.fsync)
                segment.mm = None
        if self._next is not None:
            assert self._next.mm is not None
            self._next.mm.close()
        self._files.close()
        self._segments, self._writer, self._next, self._reader = [], None, None, None

    def _holdings(self) -> list[tuple[int, int, int]]:
        """Each segment's number, frames and live frames: they tell whether the queue
        changed (see `_Segment.summarized`)."""
        return [(segment.number, len(segment.keys), segment.live) for segment in self._segments]

    def _write_summaries(self) -> None:
        """Write the summary of each segment that its summary no longer describes, if it
        has one, after making a queue of version 1 one of version 2."""
        if self._version < _VERSION:
            follow = self._lock.follow if self._lock is not None else None
            header = _dump_header(self._meta)
            write_atomically(self.path, header, fsync=self.options.fsync, before_replace=follow)
            self._version = _VERSION
        for segment in self._segments:
            if segment.summarized != (len(segment.keys), segment.live):
                _write_summary(segment)

    async def close(self) -> None:
        while self._jobs:  # the last flush, whose callers wait for it, and the others
            await asyncio.wait(set(self._jobs))
        await super().close()

    # Reading (on the loop: the records are in memory)

    async def read(self, after: int, limit: int) -> list[Record]:
        return self.read_now(after, limit)

    def read_now(self, after: int, limit: int) -> list[Record]:
        self._running()
        records: list[Record] = []
        for segment in self._segments:
            if not segment.keys or segment.keys[-1] <= after:
                continue
            mm = self._mapped(segment)
            self._reader = segment
            first = bisect.bisect_right(segment.keys, after)
            for offset in itertools.islice(segment.offsets, first, None):
                length, _, key, state = _FRAME.unpack_from(mm, offset)
                if state == REMOVED:
                    continue
                start = offset + _FRAME.size
                records.append(Record(key, mm[start : start + length]))
                if len(records) == limit:
                    self._unmap_idle()
                    return records
        self._unmap_idle()
        return records

    def works_in_background(self) -> bool:
        return bool(self._jobs)

    # Committing (on the loop)

    async def commit(self, appends: Sequence[Record], removals: Sequence[int]) -> None:
        flushed = self.commit_now(appends, removals)
        if flushed is not None:
            await flushed

    def commit_now(
        self, appends: Sequence[Record], removals: Sequence[int]
    ) -> Awaitable[None] | None:
        if self._thread is None:
            self._running()  # raises
        if not removals and len(appends) == 1:  # a put or a get: the usual changes, made directly
            self._append(appends[0])
        elif not appends and len(removals) == 1:
            if (found := self._find(removals[0])) is not None:
                self._remove(*found)
        else:
            written: list[tuple[_Segment, int]] = []
            try:
                for record in appends:
                    written.append(self._append(record))
                frames = [found for key in removals if (found := self._find(key)) is not None]
            except BaseException:
                for segment, offset in reversed(written):
                    self._unappend(segment, offset)
                raise
            for segment, offset in frames:
                self._remove(segment, offset)
        if self.options.fsync:
            return self._flush()
        return None

    def _append(self, record: Record) -> tuple[_Segment, int]:
        size = _FRAME.size + len(record.data)
        segment = self._writer
        if segment is None or segment.end + size > segment.size:
            segment = self._next_segment(size)
        elif segment.end > segment.size - segment.size // _PREPARE_WHEN_LEFT:
            self._prepare()  # the next segment, before the writer needs it
        mm, offset = segment.mm, segment.end
        assert mm is not None
        mm[offset + _FRAME.size : offset + size] = record.data
        # The header last: a frame torn by a crash fails its checksum.
        _FRAME.pack_into(mm, offset, size - _FRAME.size, checksum(*record), record.key, STORED)
        segment.keys.append(record.key)
        segment.offsets.append(offset)
        segment.live += 1
        segment.end += size
        if self.options.fsync:
            self._dirty.add(segment)
        return segment, offset

    def _unappend(self, segment: _Segment, offset: int) -> None:
        """Wipe the last frame written, of a commit that failed."""
        assert segment.mm is not None
        segment.mm[offset : segment.end] = bytes(segment.end - offset)
        segment.keys.pop()
        segment.offsets.pop()
        segment.live -= 1
        segment.end = offset

    def _next_segment(self, size: int) -> _Segment:
        """Move the writer to the next segment: the one the thread prepared, if it is there
        and large enough, else one made now, on the loop."""
        needed = _FIRST_FRAME + size
        prepared, self._next = self._next, None
        if prepared is not None and prepared.size >= needed:
            segment = prepared
        else:
            if prepared is not None:
                self._retire(prepared)
            logger.debug("%s: making a segment on the event loop", self.path)
            self.segments_made_on_the_loop += 1
            try:
                segment = self._make_segment(max(self.segment_size, needed), populate=False)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"no room for the next segment of {self.path} ({exc.strerror}): "
                    "the item was not stored; the queue goes on once there is room",
                ) from exc
        previous, self._writer = self._writer, segment
        self._segments.append(segment)
        if previous is not None and not previous.live:
            self._retire(previous)
        elif previous is not None and previous is not self._reader:
            self._unmap(previous)
        return segment

    def _prepare(self) -> None:
        """Have the thread make the next segment ready, unless it is making one already."""
        if self._preparing or self._next is not None:
            return
        self._preparing = True
        number, self._next_number = self._next_number, self._next_number + 1
        self._in_thread(self._make_segment, self.segment_size, number).add_done_callback(
            _weakly(self._prepared)
        )

    def _prepared(self, done: asyncio.Future[Any]) -> None:
        self._preparing = False
        if done.cancelled():
            return
        if done.exception() is not None:  # the writer makes one itself and reports why not
            logger.debug("%s: preparing a segment failed: %r", self.path, done.exception())
            return
        segment = done.result()
        if self._thread is None:
            assert segment.mm is not None
            segment.mm.close()  # its file is an empty segment: reopening drops it
        elif self._writer is not None and segment.number < self._writer.number:
            self._retire(segment)  # the writer made one itself meanwhile
        else:
            self._next = segment

    def _find(self, key: int) -> tuple[_Segment, int] | None:
        for segment in self._segments:
            keys = segment.keys
            if keys and keys[0] <= key <= keys[-1]:
                index = bisect.bisect_left(keys, key)
                if keys[index] != key:
                    return None
                if segment.mm is None:
                    self._mapped(segment)
                return segment, segment.offsets[index]
        return None

    def _remove(self, segment: _Segment, offset: int) -> None:
        mm = segment.mm
        assert mm is not None
        if mm[offset + _STATE] == REMOVED:
            return
        mm[offset + _STATE] = REMOVED
        segment.live -= 1
        if self.options.fsync:
            self._dirty.add(segment)
        if not segment.live and segment is not self._writer:
            self._retire(segment)

    # Mapping, flushing and deleting (in the thread)

    def _mapped(self, segment: _Segment) -> mmap.mmap:
        if segment.mm is None:
            segment.mm = _map(segment.path, segment.size)
        return segment.mm

    def _unmap(self, segment: _Segment) -> None:
        mm, segment.mm = segment.mm, None
        if mm is not None:
            self._dirty.discard(segment)  # flushed by its unmapping, before any later flush
            self._in_thread(self._files.unmap, segment.path, mm, flush=self.options.fsync)

    def _unmap_idle(self) -> None:
        """Unmap the segments that neither the writer nor the reader is in."""
        for segment in self._segments:
            if segment.mm is not None and segment not in (self._reader, self._writer):
                self._unmap(segment)

    def _retire(self, segment: _Segment) -> None:
        """Delete a segment whose records are all removed (in the thread)."""
        if segment in self._segments:
            self._segments.remove(segment)
        self._dirty.discard(segment)
        if self._reader is segment:
            self._reader = None
        mm, segment.mm = segment.mm, None
        self._in_thread(self._files.delete, segment.path, mm, fsync=self.options.fsync)

    def _flush(self) -> asyncio.Future[None]:
        """Return a future of a flush of every change made so far, shared with the others."""
        if self._flush_waiters is None:
            loop = asyncio.get_running_loop()
            self._flush_waiters = loop.create_future()
            if not self._flushing:
                # At the loop's next turn: the changes of the callers it runs meanwhile
                # join this flush.
                loop.call_soon(self._start_flush)
        return self._flush_waiters

    def _start_flush(self) -> None:
        waiters, self._flush_waiters = self._flush_waiters, None
        if waiters is None or self._flushing:
            self._flush_waiters = waiters
            return
        self._flushing = True
        paths = [segment.path for segment in self._dirty]
        self._dirty.clear()

        def flushed(done: asyncio.Future[None]) -> None:
            self._flushing = False
            if not waiters.done():
                if done.cancelled() or done.exception() is None:
                    waiters.set_result(None)
                else:
                    waiters.set_exception(done.exception())  # type: ignore[arg-type]
            self._start_flush()  # the changes made during this flush

        self._in_thread(self._files.flush, paths).add_done_callback(flushed)

    def _in_thread(
        self, function: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> asyncio.Future[Any]:
        if inspect.ismethod(function):  # a job must not keep a dropped engine alive
            function = _weakly(function)
        job = self._running().submit(functools.partial(function, *args, **kwargs))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return job


def _weakly(method: Callable[..., Any]) -> Callable[..., Any]:
    """`method`, held by a weak reference: once its engine is collected, calling it does
    nothing. A job in the engine's thread, or its callback, then keeps no dropped engine
    alive, so that its lock is released at once (see `ThreadOwningEngine.__del__`)."""
    reference = weakref.WeakMethod(method)

    def call(*args: Any, **kwargs: Any) -> Any:
        bound = reference()
        return None if bound is None else bound(*args, **kwargs)

    return call


def _create_segment(path: Path, number: int, size: int, *, fsync: bool, populate: bool) -> _Segment:
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE)
    try:
        _allocate(descriptor, size)
        os.pwrite(descriptor, _segment_header(number, size), 0)
        if fsync:
            os.fsync(descriptor)
        mm = mmap.mmap(descriptor, size)
    except BaseException:
        os.close(descriptor)
        temporary.unlink()
        raise
    os.close(descriptor)
    if populate:
        _populate_for_writing(mm)
    os.replace(temporary, path)
    if fsync:
        fsync_directory(path.parent)
    return _Segment(path, number, size, mm)


def _populate_for_writing(mm: mmap.mmap) -> None:
    """Fault the pages of a new mapping in for writing, so that the event loop's stores into
    it fault no more: ``MADV_POPULATE_WRITE`` (Linux 5.14), through `ctypes`, which lets go of
    the GIL while the kernel works. Where that fails, the pages fault on the loop instead."""
    madvise = _madvise()
    if madvise is None:
        return
    import ctypes  # imported already, by _madvise()

    pages = (ctypes.c_char * len(mm)).from_buffer(mm)
    try:
        madvise(ctypes.addressof(pages), len(mm), _MADV_POPULATE_WRITE)
    finally:
        del pages  # lets go of the mapping's buffer, which must be free to close it


@functools.cache
def _madvise() -> Callable[[int, int, int], int] | None:
    """The C library's ``madvise``, looked up once; None where `ctypes` cannot reach it."""
    try:
        import ctypes

        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (ImportError, OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def _allocate(descriptor: int, size: int) -> None:
    """Give the file `size` bytes of disk, so that a store into its mapping never fails."""
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(descriptor, 0, size)
        return
    chunk = bytes(2**20)  # without fallocate (macOS), zeros written are blocks allocated
    for offset in range(0, size, len(chunk)):
        os.pwrite(descriptor, chunk[: size - offset], offset)


def _map(path: Path, size: int) -> mmap.mmap:
    descriptor = os.open(path, os.O_RDWR)
    try:
        return mmap.mmap(descriptor, size)
    finally:
        os.close(descriptor)


class _SegmentFiles:
    """Flushes, unmaps and deletes segment files: in the engine's thread, which alone uses it.

    A segment file flushed once stays open until it is unmapped or deleted, so that a flush
    is one system call, not three. `os.fdatasync` writes back the pages that the mappings
    dirtied and, unlike `mmap.flush`, lets go of the GIL while it waits.
    """

    def __init__(self) -> None:
        self._descriptors: dict[Path, int] = {}

    def flush(self, paths: list[Path]) -> None:
        """Flush the segment files `paths` to the disk (skipping those deleted)."""
        for path in paths:
            descriptor = self._descriptors.get(path)
            if descriptor is None:
                try:
                    descriptor = self._descriptors[path] = os.open(path, os.O_RDONLY)
                except FileNotFoundError:  # deleted, every record in it removed
                    continue
            os.fdatasync(descriptor)  # the size never changes: the data is enough

    def unmap(self, path: Path, mm: mmap.mmap, *, flush: bool) -> None:
        """Unmap a segment, after flushing its file to the disk if `flush`."""
        if flush:
            self.flush([path])
        self._forget(path)
        mm.close()

    def delete(self, path: Path, mm: mmap.mmap | None, *, fsync: bool) -> None:
        """Delete a segment file (unmapping it first), and with `fsync` its directory entry."""
        if mm is not None:
            self.unmap(path, mm, flush=fsync)
        self._forget(path)
        path.unlink(missing_ok=True)
        if fsync:
            fsync_directory(path.parent)

    def close(self) -> None:
        """Close every file kept open."""
        for path in list(self._descriptors):
            self._forget(path)

    def _forget(self, path: Path) -> None:
        descriptor = self._descriptors.pop(path, None)
        if descriptor is not None:
            os.close(descriptor)


def _wipe(path: Path, start: int, end: int) -> None:
    with path.open("r+b") as file:
        file.seek(start)
        file.write(bytes(end - start))
    fsync_file(path)


def _segment_header(number: int, size: int) -> bytes:
    header = _SEGMENT_HEADER.pack(SEGMENT_MAGIC, _SEGMENT_VERSION, number, size)
    return (header + _CRC.pack(zlib.crc32(header))).ljust(_FIRST_FRAME, b"\0")


def _dump_header(meta: dict[str, str]) -> bytes:
    meta_json = json.dumps(meta).encode()
    header = _HEADER.pack(_MAGIC, _VERSION, len(meta_json)) + meta_json
    return header + _CRC.pack(zlib.crc32(header))


def _load_header(content: bytes) -> tuple[dict[str, str], int] | None:
    """The meta in a queue's header file and the format's version; None if the file is
    damaged."""
    if len(content) < _HEADER.size + _CRC.size:
        return None
    magic, version, meta_size = _HEADER.unpack_from(content)
    end = _HEADER.size + meta_size
    if magic != _MAGIC or end + _CRC.size != len(content):
        return None
    if _CRC.unpack_from(content, end)[0] != zlib.crc32(content[:end]):
        return None
    if not 1 <= version <= _VERSION:
        raise ValueError(f"unsupported LogEngine format version {version}")
    meta: dict[str, str] = json.loads(content[_HEADER.size : end])
    return meta, version


def _read_segment(path: Path, number: int, *, summaries: bool) -> tuple[int, _Scanned]:
    """Return a segment's size (0: its header is damaged) and what its frames are: as its
    summary says, if it has one that still holds (`summaries`: the queue's version has
    them), else as a check of every frame finds."""
    content = path.read_bytes()
    size = _segment_size(content, number, summaries=summaries)
    if not size:
        scan = _scan(content, 0)
        return 0, scan._replace(skipped=bool(content))
    if size < len(content):
        summarized = _load_summary(content, size)
        if summarized is not None:
            return size, summarized
    return size, _scan(content[:size], _FIRST_FRAME)


def _segment_size(content: bytes, number: int, *, summaries: bool) -> int:
    """The size that a segment's header gives, or 0 if the header is damaged or the file
    has not that many bytes (or more, with `summaries`: a summary follows them)."""
    if len(content) < _FIRST_FRAME:
        return 0
    header = content[: _SEGMENT_HEADER.size]
    if _CRC.unpack_from(content, _SEGMENT_HEADER.size)[0] != zlib.crc32(header):
        return 0
    magic, version, found, size = _SEGMENT_HEADER.unpack(header)
    if (magic, version, found) != (SEGMENT_MAGIC, _SEGMENT_VERSION, number):
        return 0
    if size == len(content) or (summaries and _FIRST_FRAME <= size < len(content)):
        return int(size)
    return 0


def _write_summary(segment: _Segment) -> None:
    """Write a segment's summary after its `size` bytes (in the thread, at close, when
    nothing else changes the segment). Without one, opening checks every frame."""
    try:
        descriptor = os.open(segment.path, os.O_RDWR)
        try:
            checksum = zlib.crc32(os.pread(descriptor, segment.size, 0))
            summary = _SUMMARY.pack(
                SUMMARY_MAGIC, len(segment.keys), segment.live, segment.end, checksum
            )
            summary += _little_endian(segment.keys) + _little_endian(segment.offsets)
            summary += _CRC.pack(zlib.crc32(summary))
            os.pwrite(descriptor, summary, segment.size)
            os.ftruncate(descriptor, segment.size + len(summary))
        finally:
            os.close(descriptor)
    except OSError as exc:  # a full disk, say: the summary only saves time
        logger.debug("%s: no summary written: %r", segment.path, exc)


def _load_summary(content: bytes, size: int) -> _Scanned | None:
    """What the summary after a segment's `size` bytes says of its frames; None if it is
    damaged or cut short, or the segment's bytes changed since it was written."""
    summary = memoryview(content)[size:]
    if len(summary) < _SUMMARY.size:
        return None
    magic, frames, live, end, checksum = _SUMMARY.unpack_from(summary)
    offsets_start = _SUMMARY.size + 8 * frames
    tables_end = offsets_start + 8 * frames
    if magic != SUMMARY_MAGIC or len(summary) != tables_end + _CRC.size:
        return None
    if _CRC.unpack_from(summary, tables_end)[0] != zlib.crc32(summary[:tables_end]):
        return None
    if zlib.crc32(memoryview(content)[:size]) != checksum:
        return None
    keys = _from_little_endian("q", summary[_SUMMARY.size : offsets_start])
    offsets = _from_little_endian("Q", summary[offsets_start:tables_end])
    return _Scanned(keys, offsets, live, end, tail=False, skipped=False, from_summary=True)


def _little_endian(numbers: array[int]) -> bytes:
    if sys.byteorder == "big":
        numbers = array(numbers.typecode, numbers)
        numbers.byteswap()
    return numbers.tobytes()


def _from_little_endian(typecode: str, data: memoryview) -> array[int]:
    numbers = array(typecode)
    numbers.frombytes(data)
    if sys.byteorder == "big":
        numbers.byteswap()
    return numbers


def _scan(content: bytes, start: int) -> _Scanned:
    """Find the intact frames in `content` from `start`: one after the other, then, past
    damage, by searching on byte by byte up to the last byte that is not zero."""
    keys: array[int] = array("q")
    offsets: array[int] = array("Q")
    live = 0
    size, offset, end, previous = len(content), start, start, 0
    view = memoryview(content)
    content_end = -1  # where the zeros that end `content` begin; found when first needed
    skipped = False
    # Opening a queue runs this loop once per record: it makes as few calls as it can.
    unpack, crc32 = _FRAME.unpack_from, zlib.crc32
    while offset + _FRAME.size <= size:
        length, crc, key, state = unpack(content, offset)
        data = offset + _FRAME.size
        data_end = data + length
        if (
            key > previous
            and data_end <= size
            and state in (STORED, REMOVED)
            # `framing.checksum`, of the key's 8 bytes as the frame holds them
            and crc32(view[data:data_end], crc32(view[offset + 8 : offset + 16])) == crc
        ):
            skipped = skipped or offset != end
            keys.append(key)
            offsets.append(offset)
            live += state == STORED
            offset = end = data_end
            previous = key
            continue
        if content_end < 0:
            content_end = _content_end(content, offset)
        if offset >= content_end:
            break
        offset += 1
    if content_end < 0:  # the last frame ends within a frame header's size of the end
        content_end = _content_end(content, end)
    return _Scanned(keys, offsets, live, end, end < content_end, skipped)


def _content_end(content: bytes, start: int) -> int:
    """Where the zeros that end `content` begin, or `start` if they begin before it."""
    if content.endswith(bytes(len(content) - start)):  # a comparison at C speed
        return start
    return len(content.rstrip(b"\0"))


def _problem(size: int, scan: _Scanned) -> str:
    if size == 0:
        return "its header is damaged, or the file is empty or cut short"
    if scan.skipped:
        return "bytes overwritten between records"
    return "bytes after the last record"
