"""LogEngine: a put or get is a store into a mapped segment, and what that format promises.

Tests of every engine (the asyncio.Queue API, persistence, errors, damage, kills) run on
LogEngine too, from conftest's ENGINES; these are its own: segments, a torn tail, a full
disk, fairness and flushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import mmap
import os
import stat
import zlib
from pathlib import Path
from typing import Any

import pytest

from aiodiskqueue import Queue, QueueCorruptedError
from aiodiskqueue.engines import LogEngine, Record, log
from aiodiskqueue.engines.storage.detect import detect

from .helpers import drain, within
from .test_engine_that_commits_in_place import completes_at_once

SEGMENT = 4096
Small = functools.partial(LogEngine, segment_size=SEGMENT)


def segments(path: Path) -> list[Path]:
    return [segment for _, segment in log.segment_files(path)]


async def filled(path: Path, items: list[Any], **options: Any) -> None:
    async with await Queue.create(path, cls_storage_engine=Small, **options) as queue:
        for item in items:
            await queue.put(item)


async def reopened(path: Path, **options: Any) -> list[Any]:
    async with await Queue.create(path, cls_storage_engine=Small, **options) as queue:
        return await drain(queue)


async def settled(queue: Queue[Any]) -> None:
    """Wait until the engine's thread has done what it was given (deleting segments)."""
    jobs = queue._backend.engine._jobs  # type: ignore[union-attr]
    while jobs:
        await within(asyncio.wait(set(jobs)))


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


ITEMS = [f"item {n:04d} " + "x" * 200 for n in range(60)]  # about four segments


async def test_put_and_get_complete_without_yielding_to_the_event_loop(path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=Small) as queue:
        completes_at_once(queue.put("item"))
        assert completes_at_once(queue.get()) == "item"


async def test_items_come_back_in_order_across_segments_after_reopening(path: Path) -> None:
    await filled(path, ITEMS)
    assert len(segments(path)) >= 4
    assert await reopened(path) == ITEMS


async def test_segments_are_deleted_once_every_record_in_them_is_removed(path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=Small) as queue:
        for item in ITEMS * 3:
            await queue.put(item)
            await queue.get()
        await queue.put("last")
        await settled(queue)
        # The segment being written, and the next one made ready.
        assert len(segments(path)) <= 2
    assert await reopened(path) == ["last"]


async def test_disk_use_is_the_backlog_and_at_most_two_segments(path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=Small) as queue:
        for item in ITEMS:
            await queue.put(item)
        for _ in range(len(ITEMS) - 10):
            await queue.get()
        await settled(queue)
        backlog = sum(len(item) + 40 for item in ITEMS[-10:])
        used = sum(file.stat().st_size for file in segments(path))
        assert used <= backlog + 3 * SEGMENT  # the backlog's first segment is partly consumed


async def test_records_removed_out_of_order_stay_removed_after_reopening(path: Path) -> None:
    engine = Small(path)
    await engine.open()
    await engine.commit([Record(key, bytes([key]) * 300) for key in range(1, 21)], [])
    await engine.commit([], [3, 17, 9])
    await engine.close()
    engine = Small(path)
    stored = await engine.open()
    assert [record.key for record in await engine.read(0, 100)] == [
        key for key in range(1, 21) if key not in (3, 9, 17)
    ]
    assert (stored.size, stored.last_key) == (17, 20)
    await engine.close()


async def test_its_files_are_private_to_their_owner(path: Path) -> None:
    await filled(path, ITEMS)
    for file in [path, *segments(path)]:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


async def test_its_queues_are_told_from_their_first_bytes(path: Path) -> None:
    await filled(path, ITEMS)
    found = detect(path)
    assert (found.format, found.engine_names, found.single_owner_engine) == (
        "log",
        ("LogEngine",),
        LogEngine,
    )
    assert set(found.files) == {path, *segments(path)}


# Damage


async def test_a_frame_torn_at_the_tail_is_wiped_without_a_warning(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await filled(path, ITEMS[:5])
    (segment,) = [s for s in segments(path) if b"item 0004" in s.read_bytes()]
    data = bytearray(segment.read_bytes())
    end = data.index(b"item 0004") + 250
    data[end : end + 100] = b"\x01" * 100  # a frame whose header never got written
    segment.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        assert await reopened(path) == ITEMS[:5]
    assert not warnings_of(caplog)


async def test_a_damaged_segment_keeps_the_intact_records_of_the_others_with_a_warning(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await filled(path, ITEMS)
    first = segments(path)[0]
    data = bytearray(first.read_bytes())
    start = data.index(b"item 0001")
    data[start : start + 20] = os.urandom(20)
    first.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        assert await reopened(path) == [ITEMS[0], *ITEMS[2:]]
    (warning,) = warnings_of(caplog)
    assert "overwritten" in warning
    (backup,) = first.parent.glob(f"{first.name}.damaged-*")
    assert backup.read_bytes() == bytes(data)


async def test_bytes_after_the_last_frame_too_few_for_a_frame_are_damage(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = Small(path)
    await engine.open()
    # The first segment's one frame ends 5 bytes before its end; the next goes on.
    await engine.commit([Record(1, b"a" * (SEGMENT - 32 - 20 - 5))], [])
    await engine.commit([Record(2, b"b" * 100)], [])
    await engine.close()
    first = segments(path)[0]
    with first.open("r+b") as file:
        file.seek(SEGMENT - 5)
        file.write(b"\x01" * 5)
    engine = Small(path)
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        await engine.open()
    assert [record.key for record in await engine.read(0, 10)] == [1, 2]
    await engine.close()
    (warning,) = warnings_of(caplog)
    assert "bytes after the last record" in warning


@pytest.mark.parametrize("size", [0, 10, 1000])
async def test_a_segment_cut_short_is_reported_and_the_others_kept(
    path: Path, size: int, caplog: pytest.LogCaptureFixture
) -> None:
    await filled(path, ITEMS)
    second = segments(path)[1]
    kept = [item for item in ITEMS if item.encode() not in second.read_bytes()]
    os.truncate(second, size)
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        got = await reopened(path)
    assert set(kept) <= set(got)
    assert got == sorted(got)
    assert len(warnings_of(caplog)) == 1


async def test_a_damaged_segment_opened_with_raise_raises_and_changes_nothing(
    path: Path,
) -> None:
    await filled(path, ITEMS)
    first = segments(path)[0]
    os.truncate(first, 100)
    before = {file: file.read_bytes() for file in [path, *segments(path)]}
    with pytest.raises(QueueCorruptedError, match="cut short"):
        await Queue.create(path, cls_storage_engine=Small, on_corruption="raise")
    assert {file: file.read_bytes() for file in [path, *segments(path)]} == before


async def test_a_damaged_header_file_is_replaced_with_a_warning_and_no_item_lost(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await filled(path, ITEMS)
    path.write_bytes(b"AQLG garbage")
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        assert await reopened(path) == ITEMS
    (warning,) = warnings_of(caplog)
    assert f"{len(ITEMS)} item(s) recovered, 0 lost" in warning


# Summaries (format version 2)


def segment_size(segment: Path) -> int:
    """The size in a segment's header: its bytes before its summary."""
    return int.from_bytes(segment.read_bytes()[16:24], "little")


def strip_summaries(path: Path) -> None:
    for segment in segments(path):
        os.truncate(segment, segment_size(segment))


def as_version_1(path: Path) -> None:
    """Make the closed queue at `path` one that aiodiskqueue 0.3.0 wrote: a segment's bytes
    are the same, there are no summaries, and the header says version 1."""
    strip_summaries(path)
    header = bytearray(path.read_bytes())
    header[4:8] = (1).to_bytes(4, "little")
    header[-4:] = zlib.crc32(header[:-4]).to_bytes(4, "little")
    path.write_bytes(bytes(header))


def snapshot(path: Path, into: Path) -> Path:
    """Copy the queue's files, as a process killed now would leave them; return the path
    of the copy."""
    into.mkdir()
    for file in path.parent.iterdir():
        if file.name.startswith(path.name) and not file.name.endswith("-lock"):
            (into / file.name).write_bytes(file.read_bytes())
    return into / path.name


async def test_a_queue_closed_cleanly_opens_without_checking_each_frame(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await filled(path, ITEMS)
    assert all(segment.stat().st_size > segment_size(segment) for segment in segments(path)[:-1])
    checked = []
    scan = log._scan

    def checking_each_frame(*args: Any) -> Any:
        checked.append(scan(*args))
        return checked[-1]

    monkeypatch.setattr(log, "_scan", checking_each_frame)
    assert await reopened(path) == ITEMS
    assert not any(found.keys for found in checked)  # only the empty segment made ready


async def test_a_summary_says_what_checking_each_frame_finds(path: Path) -> None:
    engine = Small(path)
    await engine.open()
    await engine.commit([Record(key, bytes([key]) * 300) for key in range(1, 41)], [])
    await engine.commit([], [1, 2, 17, 30, 31, 40])
    await engine.close()

    async def opened() -> tuple[Any, list[Record]]:
        engine = Small(path)
        stored = await engine.open()
        records = await engine.read(0, 100)
        await engine.close()
        return stored, records

    summarized = await opened()
    strip_summaries(path)
    assert await opened() == summarized


async def test_changes_made_after_a_summary_was_written_are_found_after_a_kill(
    path: Path, tmp_path: Path
) -> None:
    await filled(path, ITEMS)
    async with await Queue.create(path, cls_storage_engine=Small) as queue:
        for item in ["after 1", "after 2"]:
            await queue.put(item)  # into the last segment, whose summary the close wrote
        assert await queue.get() == ITEMS[0]  # a frame of the first, removed
        await settled(queue)  # the next segment made ready: a copy is not taken at an instant
        killed = snapshot(path, tmp_path / "killed")
    assert await reopened(killed) == [*ITEMS[1:], "after 1", "after 2"]


async def test_a_damaged_summary_is_passed_over_without_a_warning(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await filled(path, ITEMS)
    first = segments(path)[0]
    data = bytearray(first.read_bytes())
    data[segment_size(first) + 40] ^= 0x01  # a key in the summary's table
    first.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        assert await reopened(path) == ITEMS
    assert not warnings_of(caplog)


def files_of(path: Path) -> dict[str, bytes]:
    return {file.name: file.read_bytes() for file in [path, *segments(path)]}


@pytest.mark.parametrize("version", [1, 2])
async def test_a_queue_opened_and_closed_unchanged_is_left_as_it_was(
    path: Path, version: int
) -> None:
    await filled(path, ITEMS)
    if version == 1:
        as_version_1(path)
    before = files_of(path)
    engine = Small(path)
    await engine.open()
    assert len(await engine.read(0, 100)) == len(ITEMS)
    await engine.close()
    assert files_of(path) == before


async def test_a_queue_of_version_1_becomes_one_of_version_2_once_changed(
    path: Path,
) -> None:
    await filled(path, ITEMS)
    as_version_1(path)
    async with await Queue.create(path, cls_storage_engine=Small) as queue:
        await queue.put("more")
    assert path.read_bytes()[4:8] == (2).to_bytes(4, "little")
    assert all(segment.stat().st_size > segment_size(segment) for segment in segments(path)[:-1])
    assert await reopened(path) == [*ITEMS, "more"]


async def test_in_a_queue_of_version_1_bytes_after_a_segment_are_damage(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await filled(path, ITEMS)
    as_version_1(path)
    with segments(path)[0].open("ab") as file:
        file.write(b"after")
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        assert await reopened(path) == ITEMS
    (warning,) = warnings_of(caplog)
    assert "its header is damaged, or the file is empty or cut short" in warning


# A full disk


async def test_a_full_disk_fails_the_put_that_cannot_fit_loses_nothing_and_passes(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(descriptor: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    async with await Queue.create(path, cls_storage_engine=Small) as queue:
        await within(queue.put("first"))  # a segment, and the next one made ready
        await within(queue.put("second"))
        monkeypatch.setattr(os, "posix_fallocate", no_space)
        stored: list[str] = ["first", "second"]
        failure = None
        for item in ITEMS:
            try:
                await within(queue.put(item))
            except OSError as exc:
                failure = exc
                break
            stored.append(item)
        assert failure is not None
        assert failure.errno == errno.ENOSPC
        assert "no room for the next segment" in str(failure)
        assert queue.qsize() == len(stored) > 0
        monkeypatch.undo()
        await within(queue.put("after"))
        assert await drain(queue) == [*stored, "after"]
    assert await reopened(path) == []


# Flushes


async def test_with_power_loss_durability_puts_made_meanwhile_share_a_flush(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushes = []
    flush = log._SegmentFiles.flush
    monkeypatch.setattr(
        log._SegmentFiles, "flush", lambda files, paths: (flushes.append(1), flush(files, paths))
    )
    async with await Queue.create(
        path, cls_storage_engine=LogEngine, durability="power-loss"
    ) as queue:
        await within(asyncio.gather(*(queue.put(n) for n in range(100))))
        assert 1 <= len(flushes) <= 2
        assert queue.qsize() == 100


def segments_held_open(path: Path) -> list[str]:
    """The segment files of the queue at `path` that this process has open (Linux)."""
    targets = []
    for descriptor in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the descriptor listing the folder
            targets.append(os.readlink(f"/proc/self/fd/{descriptor}"))
    return [target for target in targets if target.startswith(f"{path}{log._SEGMENT_PREFIX}")]


async def test_with_power_loss_durability_no_segment_is_held_open_once_deleted_or_closed(
    path: Path,
) -> None:
    async with await Queue.create(path, cls_storage_engine=Small, durability="power-loss") as queue:
        for item in ITEMS * 2:
            await queue.put(item)
            await queue.get()
        await settled(queue)
        held = segments_held_open(path)
        assert held
        assert not [target for target in held if target.endswith(" (deleted)")]
    assert segments_held_open(path) == []


async def test_a_segment_too_small_is_refused(path: Path) -> None:
    with pytest.raises(ValueError, match="segment_size"):
        LogEngine(path, segment_size=100)


async def test_join_returns_once_every_item_is_done_after_a_get_whose_removal_failed(
    path: Path,
) -> None:
    async with await Queue.create(path, cls_storage_engine=Small) as queue:
        await queue.put("a")
        engine = queue._backend.engine  # type: ignore[union-attr]
        commit_now = engine.commit_now
        engine.commit_now = lambda *_: (_ for _ in ()).throw(OSError("disk full"))
        with pytest.raises(OSError, match="disk full"):
            await within(queue.get())
        engine.commit_now = commit_now
        assert await within(queue.get()) == "a"
        queue.task_done()
        await within(queue.join())


async def test_the_next_segment_is_allocated_only_once_the_last_is_seven_eighths_full(
    path: Path,
) -> None:
    """Disk use stays within the records and 2 1/8 segments: the next segment is not
    allocated ahead while the writer has more than 1/8 of its own left."""
    item = "x" * 100  # a frame of about 140 bytes: 29 fill a 4 KiB segment
    async with await Queue.create(path, cls_storage_engine=Small) as queue:
        for _ in range(20):  # about 2/3 of the first segment
            await queue.put(item)
        await settled(queue)
        assert len(segments(path)) == 1
        for _ in range(8):  # past 7/8
            await queue.put(item)
        await settled(queue)
        assert len(segments(path)) == 2
        # Into the next, made ready by the thread: the loop made only the first segment,
        # which a new queue makes when its first put needs it.
        await queue.put(item)
        assert len(segments(path)) == 2
        assert queue._backend.engine.segments_made_on_the_loop == 1  # type: ignore[union-attr]


async def test_the_thread_keeps_up_with_a_task_that_keeps_the_loop_busy(path: Path) -> None:
    """Segments are made ready and deleted while one task puts and gets without pause: the
    loop lets go of the GIL for the thread at its turns (see `Turns`). Starved, the thread
    fell behind by 12 to 19 segments here, each of them still on the disk."""
    most = 0
    engine = functools.partial(LogEngine, segment_size=64 * SEGMENT)
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        for n in range(40_000):  # about 45 segments through
            await queue.put("x" * 200)
            if n >= 100:
                await queue.get()
            if n % 100 == 0:
                most = max(most, len(segments(path)))
        await settled(queue)
        assert not queue._backend.engine.works_in_background()  # type: ignore[union-attr]
    assert most <= 5  # 3 at most when the thread is on time


def test_a_populated_mapping_is_free_to_close() -> None:
    """Faulting pages in borrows the mapping's buffer for the call only: closing it after
    raises no `BufferError`, whether or not the system has ``MADV_POPULATE_WRITE``."""
    mm = mmap.mmap(-1, 16 * SEGMENT)
    log._populate_for_writing(mm)
    mm.close()


async def test_segments_are_made_where_pages_cannot_be_faulted_in_ahead(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``madvise`` (no `ctypes`, or a libc without it) a segment's pages fault as
    the writer stores into them, and nothing else changes."""
    monkeypatch.setattr(log, "_madvise", lambda: None)
    async with await Queue.create(path, cls_storage_engine=Small) as queue:
        for item in ITEMS:
            await queue.put(item)
        assert len(segments(path)) > 2
    assert await reopened(path) == ITEMS
