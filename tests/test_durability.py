"""Durability levels: with fsync a returned commit is on the disk; without, nothing is flushed.

A power cut cannot be staged in a test, so these tests watch what can be seen: each call of
`os.fsync` (and of `os.fdatasync`, with which LogEngine flushes its segments), with the file
it flushed and what that file held at that moment. A file is on the disk when its last flush
saw exactly what it holds now, and its name is on the disk when the last flush of its
directory saw that name lead to it. SQLite flushes from C, out of `os.fsync`'s sight: for
it, the tests check the setting that makes it flush.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aiodiskqueue import Queue
from aiodiskqueue.engines import (
    DbmEngine,
    LogEngine,
    OpenOptions,
    PickledList,
    Record,
    SqliteEngine,
    StorageEngine,
    log,
)

FSYNC = OpenOptions(fsync=True)
NO_FSYNC = OpenOptions(fsync=False)


@dataclass
class FsyncSpy:
    """Calls the real `os.fsync` and records, for each call, what it flushed."""

    real: Callable[[int], None]
    flushes: list[tuple[tuple[int, int], bytes | dict[str, int]]] = field(default_factory=list)

    def __call__(self, descriptor: int) -> None:
        self.real(descriptor)
        info = os.fstat(descriptor)
        seen: bytes | dict[str, int]
        if stat.S_ISDIR(info.st_mode):  # a directory: its names and the files they lead to
            with os.scandir(descriptor) as entries:
                seen = {entry.name: entry.inode() for entry in entries}
        else:
            try:
                seen = os.pread(descriptor, info.st_size, 0)
            except OSError:  # opened for writing only: read it through a descriptor of our own
                with open(f"/proc/self/fd/{descriptor}", "rb") as file:
                    seen = file.read()
        self.flushes.append(((info.st_dev, info.st_ino), seen))

    def last_seen(self, path: Path) -> bytes | dict[str, int] | None:
        info = path.stat()
        seen = [content for file, content in self.flushes if file == (info.st_dev, info.st_ino)]
        return seen[-1] if seen else None

    def on_disk(self, path: Path) -> bool:
        """Whether `path`, its content and its name, were all flushed as they are now."""
        directory = self.last_seen(path.parent)
        return (
            self.last_seen(path) == path.read_bytes()
            and isinstance(directory, dict)
            and directory.get(path.name) == path.stat().st_ino
        )


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> FsyncSpy:
    spy = FsyncSpy(os.fsync)
    monkeypatch.setattr(os, "fsync", spy)
    return spy


def dumb(path: Path) -> StorageEngine:
    return DbmEngine(path, backend="dbm.dumb", page_size=2048)


# The engines whose flushes os.fsync sees, and the files that hold their data.
FLUSHED_FILES: dict[str, tuple[Callable[[Path], StorageEngine], tuple[str, ...]]] = {
    "DbmEngine[dbm.dumb]": (dumb, (".dat", ".dir")),
    "PickledList": (PickledList, ("",)),
}
ENGINES: dict[str, Callable[[Path], StorageEngine]] = {
    "DbmEngine[dbm.dumb]": dumb,
    "SqliteEngine": SqliteEngine,
    "PickledList": PickledList,
}


def records(first: int, last: int, size: int = 700) -> list[Record]:
    return [Record(key, bytes([key % 256]) * size) for key in range(first, last + 1)]


# A series of commits that adds records within a page, adds pages (new keys for dbm.dumb),
# removes records only, and does both.
COMMITS = [
    (records(1, 1), []),
    (records(2, 3), []),
    (records(4, 9), []),
    ([], [1, 2]),
    (records(10, 12), [3, 5]),
    ([], [4, 6, 7, 8, 9, 10]),
]


@pytest.mark.parametrize("name", list(FLUSHED_FILES))
async def test_with_fsync_every_commit_is_on_the_disk_when_it_returns(
    name: str, path: Path, spy: FsyncSpy
) -> None:
    make, suffixes = FLUSHED_FILES[name]
    store = make(path)
    await store.open(FSYNC)
    for appends, removals in COMMITS:
        await store.commit(appends, removals)
        for suffix in suffixes:
            assert spy.on_disk(Path(f"{path}{suffix}")), (suffix, appends, removals)
    await store.close()
    for suffix in suffixes:
        assert spy.on_disk(Path(f"{path}{suffix}")), suffix


async def test_dbm_pages_are_on_the_disk_before_the_state_that_makes_them_live(
    path: Path, spy: FsyncSpy
) -> None:
    store = DbmEngine(path, backend="dbm.dumb", page_size=2048)
    await store.open(FSYNC)
    write_state = store._write_state
    checked = []

    def check_then_write_state(state: object) -> None:
        for suffix in (".dat", ".dir"):
            assert spy.on_disk(Path(f"{path}{suffix}")), suffix
        checked.append(state)
        write_state(state)  # type: ignore[arg-type]

    store._write_state = check_then_write_state  # type: ignore[method-assign]
    for appends, removals in COMMITS:
        await store.commit(appends, removals)
    await store.close()
    assert len(checked) == len(COMMITS)


@pytest.mark.parametrize("name", list(ENGINES))
async def test_without_fsync_nothing_is_flushed(name: str, path: Path, spy: FsyncSpy) -> None:
    store = ENGINES[name](path)
    await store.open(NO_FSYNC)
    for appends, removals in COMMITS:
        await store.commit(appends, removals)
    await store.close()
    assert spy.flushes == []


@pytest.mark.parametrize("options", [FSYNC, NO_FSYNC], ids=["fsync", "no fsync"])
@pytest.mark.parametrize("name", list(ENGINES))
async def test_records_round_trip_at_both_levels(
    name: str, options: OpenOptions, path: Path
) -> None:
    store = ENGINES[name](path)
    await store.open(options)
    for appends, removals in COMMITS:
        await store.commit(appends, removals)
    await store.close()
    again = ENGINES[name](path)
    stored = await again.open(options)
    assert await again.read(0, 100) == records(11, 12)
    assert (stored.size, stored.last_key) == (2, 12)
    await again.close()


@pytest.mark.parametrize(
    ("options", "level"), [(FSYNC, 2), (NO_FSYNC, 1)], ids=["fsync", "no fsync"]
)
async def test_sqlite_flushes_its_log_at_every_commit_with_fsync_only(
    options: OpenOptions, level: int, path: Path
) -> None:
    store = SqliteEngine(path)
    await store.open(options)

    def settings() -> tuple[int, str]:  # the connection belongs to the engine's thread
        (synchronous,) = store._db.execute("PRAGMA synchronous").fetchone()
        (journal_mode,) = store._db.execute("PRAGMA journal_mode").fetchone()
        return synchronous, journal_mode

    # FULL (2) flushes the write-ahead log at every commit; NORMAL (1) only at checkpoints.
    assert await store._running().call(settings) == (level, "wal")
    await store.close()


@pytest.mark.parametrize("name", list(ENGINES))
async def test_with_fsync_a_new_store_is_on_the_disk_when_it_opens(
    name: str, path: Path, spy: FsyncSpy
) -> None:
    store = ENGINES[name](path)
    await store.open(FSYNC)
    suffixes = FLUSHED_FILES[name][1] if name in FLUSHED_FILES else ("",)
    for suffix in suffixes:
        assert spy.on_disk(Path(f"{path}{suffix}")), suffix
    await store.close()


@pytest.mark.parametrize("name", list(FLUSHED_FILES))
async def test_a_put_with_power_loss_durability_is_on_the_disk_when_it_returns(
    name: str, path: Path, spy: FsyncSpy
) -> None:
    make, suffixes = FLUSHED_FILES[name]
    queue: Queue[str] = await Queue.create(path, cls_storage_engine=make, durability="power-loss")
    await queue.put("kept")
    assert all(spy.on_disk(Path(f"{path}{suffix}")) for suffix in suffixes)
    assert await queue.get() == "kept"
    assert all(spy.on_disk(Path(f"{path}{suffix}")) for suffix in suffixes)
    await queue.close()


async def test_log_engine_puts_and_gets_with_power_loss_durability_are_on_the_disk_when_they_return(
    path: Path, spy: FsyncSpy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "fdatasync", FsyncSpy(os.fdatasync, spy.flushes))
    small = functools.partial(LogEngine, segment_size=4096)  # a dozen items a segment
    queue: Queue[str] = await Queue.create(path, cls_storage_engine=small, durability="power-loss")
    written: set[Path] = set()

    def check() -> None:
        # Every segment with records in it, as it is now; the others (deleted, every
        # record removed) gone from the directory. A segment prepared ahead holds none.
        segments = {
            segment for _, segment in log.segment_files(path) if any(segment.read_bytes()[32:])
        }
        written.update(segments)
        assert all(spy.on_disk(segment) for segment in segments)
        listed = spy.last_seen(path.parent)
        assert isinstance(listed, dict)
        assert not any(segment.name in listed for segment in written - segments)

    items = [f"item {n:02d} " + "x" * 300 for n in range(40)]
    for item in items:
        await queue.put(item)
        check()
    for item in items:
        assert await queue.get() == item
        check()
    assert len(written) >= 3
    await queue.close()
