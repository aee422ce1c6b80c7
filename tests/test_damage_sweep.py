"""Damage anywhere in a queue's files is reported, never silent, never a raw exception.

For each local format (every dbm backend this Python has, PickledList, the SQLite format,
LogEngine's), a queue of known items, with some removed, is written and closed. Then, one
trial at a time, one bit is flipped at a stride of offsets across every one of its files,
or a file is cut short at several lengths, and the queue is opened again through the engine
API, with each `on_corruption`. Whatever the damage:

- no item comes back damaged: each one read is one that was put, unchanged, in key order;
- no item is lost silently: opening returns every stored item and nothing else, or a
  warning is logged ("recover"), or `QueueCorruptedError` is raised ("raise", which then
  changes no file);
- nothing else is raised.

There are two exceptions. An emptied file at the queue's path, where the queue has no other
file, is a new queue (what ``tempfile.mkstemp()`` leaves), so it opens empty, without a
warning. And LogEngine's last put, damaged, is one that a crash tore (see
`aiodiskqueue.engines.log`): it is dropped without a warning.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import pytest

from aiodiskqueue import QueueCorruptedError
from aiodiskqueue.engines import (
    DbmEngine,
    LogEngine,
    OpenOptions,
    PickledList,
    Record,
    SqliteEngine,
    StorageEngine,
)

from .conftest import DBM_BACKENDS

FLIPS_PER_FILE = 120  # twice: across the whole file and across its bytes that are not zero
MODES: tuple[Literal["raise", "recover"], ...] = ("raise", "recover")
COUNTS = re.compile(r"(\d+) item\(s\) recovered, (\d+|an unknown number) lost")

ENGINES: dict[str, Callable[[Path], StorageEngine]] = {
    # Small pages, so that the items span several pages and their headers.
    **{
        f"DbmEngine[{backend}]": functools.partial(DbmEngine, backend=backend, page_size=1024)
        for backend in DBM_BACKENDS
    },
    "PickledList": PickledList,
    "SqliteEngine": SqliteEngine,
    # Small segments, so that the items span several, the last of them partly filled.
    "LogEngine": functools.partial(LogEngine, segment_size=4096),
}


def item(key: int) -> Record:
    # About 11 kB in all: LogEngine's smallest segments hold 4 kB, and here several.
    return Record(key, (b"%d:" % key) * (5 + key % 23) * 3)


PUT = {record.key: record for record in map(item, range(1, 62))}
TORN_TAIL = {"LogEngine"}  # engines whose last put, damaged, is taken for a torn one
REMOVED = [*range(1, 7), 20, 33, 34, 47, 55]  # the head, and some out of order


async def write_queue(make: Callable[[Path], StorageEngine], path: Path) -> list[Record]:
    """Put 61 items in batches, remove 11, close; return the items the queue holds.

    Its last commit puts an item and the one before removes one, so that a queue gone
    back one commit or two is told from the whole one.
    """
    store = make(path)
    await store.open()
    for first in range(1, 61, 12):
        await store.commit([PUT[key] for key in range(first, first + 12)], [])
        await store.commit([], [key for key in REMOVED if first <= key < first + 12])
    await store.commit([PUT[61]], [])
    await store.close()
    return [record for key, record in PUT.items() if key not in REMOVED]


def damages(name: str, content: bytes) -> Iterator[tuple[str, Callable[[bytearray], None]]]:
    """Bit flips at a stride across a file, and again across its bytes that are not zero
    (where most of the meaning is), and cuts at several lengths."""
    size = len(content)
    meaningful = [offset for offset, byte in enumerate(content) if byte]
    offsets = {*_stride(range(size)), *_stride(meaningful)}
    for number, offset in enumerate(sorted(offsets)):
        bit = 1 << (number % 8)

        def flip(data: bytearray, offset: int = offset, bit: int = bit) -> None:
            data[offset] ^= bit

        yield f"{name}: bit {bit:#04x} flipped at {offset}", flip
    for length in sorted({0, 1, size // 3, size // 2, max(0, size - 4096), size - 1}):

        def cut(data: bytearray, length: int = length) -> None:
            del data[length:]

        yield f"{name}: cut to {length} of {size} bytes", cut


def _stride(offsets: Sequence[int]) -> list[int]:
    """About `FLIPS_PER_FILE` of `offsets`, evenly spread, not all at the same alignment."""
    step = max(1, len(offsets) // FLIPS_PER_FILE)
    return [
        offsets[min(len(offsets) - 1, start + start // step * 7 % step)]
        for start in range(0, len(offsets), step)
    ]


def files_of(directory: Path) -> dict[str, bytes]:
    return {
        file.name: file.read_bytes()
        for file in sorted(directory.iterdir())
        if not file.name.endswith(".aiodiskqueue-lock")
    }


def restore(directory: Path, files: dict[str, bytes]) -> None:
    shutil.rmtree(directory)
    directory.mkdir()
    for name, content in files.items():
        (directory / name).write_bytes(content)


async def open_and_read(
    make: Callable[[Path], StorageEngine], path: Path, options: OpenOptions
) -> list[Record]:
    store = make(path)
    await store.open(options)
    try:
        return await store.read(0, 1000)
    finally:
        await store.close()


@pytest.mark.parametrize("engine", list(ENGINES))
async def test_damage_anywhere_is_reported_and_never_returns_a_damaged_item(
    engine: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make = ENGINES[engine]
    original = tmp_path / "original"
    original.mkdir()
    stored = await write_queue(make, original / "queue")
    healthy = files_of(original)
    directory = tmp_path / "trial"
    directory.mkdir()
    path = directory / "queue"
    failures: list[str] = []
    trials = 0
    caplog.set_level(logging.WARNING, logger="aiodiskqueue")
    for name, content in healthy.items():
        for description, damage in damages(name, content):
            trials += 1
            damaged = bytearray(content)
            damage(damaged)
            new_queue = name == path.name and not damaged and len(healthy) == 1
            torn = engine in TORN_TAIL and PUT[61].data in content
            for mode in MODES:
                restore(directory, {**healthy, name: bytes(damaged)})
                caplog.clear()
                problem = await trial(make, path, mode, stored, new_queue, torn, caplog)
                if problem is not None:
                    failures.append(f"{description}, {mode}: {problem}")
    assert trials >= 40
    assert not failures, f"{len(failures)} of {2 * trials} trials failed:\n" + "\n".join(
        failures[:40]
    )


async def trial(
    make: Callable[[Path], StorageEngine],
    path: Path,
    mode: Literal["raise", "recover"],
    stored: list[Record],
    new_queue: bool,
    torn: bool,
    caplog: pytest.LogCaptureFixture,
) -> str | None:
    """Open the damaged queue; return what went wrong, or None."""
    before = files_of(path.parent)
    try:
        records = await open_and_read(make, path, OpenOptions(on_corruption=mode))
    except QueueCorruptedError:
        if mode == "recover":
            return "QueueCorruptedError with recover"
        if files_of(path.parent) != before:
            return "raise changed the files"
        return None
    except Exception as exc:  # what the sweep looks for: any other exception fails it
        return f"raw {type(exc).__name__}: {exc}"
    warnings = [
        record.getMessage() for record in caplog.records if record.name.startswith("aiodiskqueue")
    ]
    warned = bool(warnings)
    if new_queue:
        return None if records == [] and not warned else f"not a new queue: {len(records)}"
    if torn and records == stored[:-1] and not warned:
        return None
    if any(PUT.get(record.key) != record for record in records):
        return "a damaged item was returned"
    if [record.key for record in records] != sorted({record.key for record in records}):
        return "items out of order"
    if records != stored and not warned:
        return f"{len(records)} of {len(stored)} items returned, without a warning"
    for warning in warnings:
        counts = COUNTS.search(warning)
        if counts is None:
            return f"a warning without counts: {warning}"
        if int(counts[1]) != len(records):
            return f"{len(records)} items returned, but the warning says {counts[1]}"
        lost = len(set(stored) - set(records))
        if counts[2].isdigit() and int(counts[2]) != lost:
            return f"{lost} items lost, but the warning says {counts[2]}"
    return None
