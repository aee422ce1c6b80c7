"""Damaged data files, on every engine: nothing intact is lost, nothing damaged is returned.

Each test stores known records (each record's data is its key repeated), damages the files
on disk, and opens the store again through the engine API. With ``on_corruption="recover"``
the store opens with every intact record, in order, and no damaged one; the damaged files
are kept as ``<name>.damaged-<time>``; one warning says how many records were recovered and how many
were lost; and the store is healthy afterwards. With ``on_corruption="raise"`` opening
raises `QueueCorruptedError` and no file changes.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import logging
import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
from aiodiskqueue.engines.storage import framing, recovery

from .conftest import ENGINES as ALL_ENGINES
from .conftest import FILE_ENGINES

RECOVER = OpenOptions(on_corruption="recover")
RAISE = OpenOptions(on_corruption="raise")
REMOVED = (3, 7)  # removed out of order: PickledList then has gaps in its keys
WARNING = re.compile(r"(\d+) item\(s\) recovered, (\d+|an unknown number) lost")


@dataclass(frozen=True)
class Engine:
    """An engine under test, and what a test needs to know about its files."""

    name: str
    make: Callable[[Path], StorageEngine]
    data_suffix: str  # the file that holds the records: <path><data_suffix>
    companions: tuple[str, ...]  # other files backed up with it when damaged
    unit: int | None  # records are lost by the page of this size, or (None) by the frame
    frame_header: int = framing.HEADER_SIZE  # bytes of a frame before its data

    def data(self, path: Path) -> Path:
        return Path(f"{path}{self.data_suffix}")


ENGINES = {
    engine.name: engine
    for engine in (
        Engine(
            "DbmEngine[dbm.dumb]",
            functools.partial(DbmEngine, backend="dbm.dumb"),
            ".dat",
            (".dir",),
            None,
        ),
        Engine("SqliteEngine", SqliteEngine, "", (), 4096),
        Engine("PickledList", PickledList, "", (), None),
        Engine(
            "LogEngine",
            functools.partial(LogEngine, segment_size=16384),
            ".aiodiskqueue-seg-0000000001",
            (),
            None,
            frame_header=20,
        ),
    )
}


@pytest.fixture(params=list(ENGINES))
def engine(request: pytest.FixtureRequest) -> Engine:
    return ENGINES[request.param]


def stored_records() -> list[Record]:
    return [Record(key, bytes([key]) * 100) for key in range(1, 41) if key not in REMOVED]


async def store_records(engine: Engine, path: Path) -> list[Record]:
    """Commit records 1 to 40 in four batches, remove two, close; return what is stored."""
    store = engine.make(path)
    await store.open()
    for first in range(1, 41, 10):
        await store.commit(
            [Record(key, bytes([key]) * 100) for key in range(first, first + 10)], []
        )
    await store.commit([], list(REMOVED))
    await store.close()
    return stored_records()


# Damage: each function damages the data file and returns the byte range it changed.


def truncated_tail(data: bytearray, offsets: dict[int, int]) -> range:
    """The file cut in the middle of the record stored last in it."""
    cut = max(offsets.values()) + 50
    del data[cut:]
    return range(cut, 2**63)


def overwritten_middle(data: bytearray, offsets: dict[int, int]) -> range:
    """200 bytes from the middle of record 20 on replaced by random ones."""
    start = offsets[20] + 50
    data[start : start + 200] = os.urandom(200)
    return range(start, start + 200)


def flipped_bit(data: bytearray, offsets: dict[int, int]) -> range:
    """One bit flipped in the data of record 20."""
    data[offsets[20] + 50] ^= 0x01
    return range(offsets[20] + 50, offsets[20] + 51)


def garbage(data: bytearray, offsets: dict[int, int]) -> range:
    """The whole file replaced by random bytes."""
    data[:] = os.urandom(len(data))
    return range(0, 2**63)


def truncated_by_a_page(data: bytearray, offsets: dict[int, int]) -> range:
    """The file's last 4096 bytes (an SQLite page) cut off."""
    cut = len(data) - 4096
    del data[cut:]
    return range(cut, 2**63)


def zero_length(data: bytearray, offsets: dict[int, int]) -> range:
    """The file emptied."""
    data.clear()
    return range(0, 2**63)


DAMAGE = {
    damage.__name__: damage
    for damage in (
        truncated_tail,
        truncated_by_a_page,
        overwritten_middle,
        flipped_bit,
        garbage,
        zero_length,
    )
}
# An emptied file at the queue's path is a new queue (see test_an_empty_file_at_the_path_...).
CASES = [
    (engine, damage)
    for engine in ENGINES
    for damage in DAMAGE
    if not (damage == "zero_length" and ENGINES[engine].data_suffix == "")
]
# Damage after which an engine must know how many records were lost.
LOST_IS_KNOWN = {
    "DbmEngine[dbm.dumb]": {
        "truncated_tail",
        "truncated_by_a_page",
        "overwritten_middle",
        "flipped_bit",
    },
    "PickledList": {"truncated_tail", "truncated_by_a_page", "overwritten_middle", "flipped_bit"},
    "SqliteEngine": {"flipped_bit"},
    # Its removals are marks in the frames: a damaged frame may have been removed already.
    "LogEngine": set(),
}


def damage_data(engine: Engine, path: Path, damage: Callable[..., range]) -> list[Record]:
    """Damage the engine's data file; return the stored records that damage left intact."""
    data_file = engine.data(path)
    data = bytearray(data_file.read_bytes())
    offsets = {record.key: data.index(record.data) for record in stored_records()}
    assert all(data.count(record.data) == 1 for record in stored_records())
    damaged = damage(data, offsets)
    data_file.write_bytes(bytes(data))

    def touched(start: int, end: int) -> bool:
        return start < damaged.stop and damaged.start < end

    intact = []
    for record in stored_records():
        offset = offsets[record.key]
        if engine.unit is None:  # a frame: its header, then its data
            start, end = offset - engine.frame_header, offset + len(record.data)
        else:  # the page that holds it
            start = offset // engine.unit * engine.unit
            end = start + engine.unit
        if not touched(start, end):
            intact.append(record)
    return intact


def backup_of(file: Path) -> Path:
    """The one backup kept of a damaged `file`."""
    (backup,) = file.parent.glob(f"{file.name}.damaged-*")
    return backup


def files_of(path: Path) -> dict[str, bytes]:
    """The queue's files and their bytes (the lock file aside)."""
    return {
        file.name: file.read_bytes()
        for file in sorted(path.parent.iterdir())
        if file.name.startswith(path.name) and not file.name.endswith(".aiodiskqueue-lock")
    }


async def open_and_read(engine: Engine, path: Path, options: OpenOptions = RECOVER) -> list[Record]:
    store = engine.make(path)
    await store.open(options)
    try:
        return await store.read(0, 1000)
    finally:
        await store.close()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.WARNING and record.name.startswith("aiodiskqueue")
    ]


def check_warning(
    caplog: pytest.LogCaptureFixture, recovered: list[Record], lost_is_known: bool
) -> None:
    """Exactly one warning, which states how many records were recovered and lost.

    A count of lost records must be right; where it cannot always be known, "unknown" is
    allowed too.
    """
    (message,) = warnings_of(caplog)
    match = WARNING.search(message)
    assert match is not None, message
    assert int(match[1]) == len(recovered)
    if match[2].isdigit():
        assert int(match[2]) == len(stored_records()) - len(recovered)
    else:
        assert not lost_is_known, message


@pytest.mark.parametrize(("engine", "damage"), CASES, indirect=["engine"])
async def test_a_damaged_store_opens_with_every_intact_record_in_order(
    engine: Engine, damage: str, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stored = await store_records(engine, path)
    intact = damage_data(engine, path, DAMAGE[damage])
    damaged_files = files_of(path)
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        recovered = await open_and_read(engine, path)
    assert [record for record in recovered if record in intact] == intact
    assert all(record in stored for record in recovered), "a damaged record was returned"
    assert [record.key for record in recovered] == sorted({record.key for record in recovered})
    for suffix in (engine.data_suffix, *engine.companions):
        name = f"{path.name}{suffix}"
        assert backup_of(path.parent / name).read_bytes() == damaged_files[name]
    check_warning(caplog, recovered, damage in LOST_IS_KNOWN[engine.name])


@pytest.mark.parametrize(("engine", "damage"), CASES, indirect=["engine"])
async def test_a_recovered_store_is_healthy_again(
    engine: Engine, damage: str, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await store_records(engine, path)
    damage_data(engine, path, DAMAGE[damage])
    recovered = await open_and_read(engine, path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        store = engine.make(path)
        stored = await store.open(RECOVER)
        assert await store.read(0, 1000) == recovered
        assert stored.size == len(recovered)
        added = Record(stored.last_key + 1, b"after the damage")
        await store.commit([added], [])
        await store.close()
        assert await open_and_read(engine, path) == [*recovered, added]
    assert warnings_of(caplog) == []


@pytest.mark.parametrize(("engine", "damage"), CASES, indirect=["engine"])
async def test_a_damaged_store_opened_with_raise_raises_and_changes_nothing(
    engine: Engine, damage: str, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await store_records(engine, path)
    damage_data(engine, path, DAMAGE[damage])
    before = files_of(path)
    with pytest.raises(QueueCorruptedError, match=path.name):
        await open_and_read(engine, path, RAISE)
    assert files_of(path) == before
    assert warnings_of(caplog) == []


# Missing and left-over companion files


DUMB = ENGINES["DbmEngine[dbm.dumb]"]


async def test_dbm_dumb_without_its_index_recovers_every_record_from_the_data_file(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stored = await store_records(DUMB, path)
    Path(f"{path}.dir").unlink()
    Path(f"{path}.bak").unlink()  # dbm.dumb's copy of its previous index
    data = Path(f"{path}.dat").read_bytes()
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        assert await open_and_read(DUMB, path) == stored
    assert backup_of(Path(f"{path}.dat")).read_bytes() == data
    check_warning(caplog, stored, lost_is_known=True)
    assert "queue.db.dir is missing" in caplog.text
    caplog.clear()
    assert await open_and_read(DUMB, path) == stored
    assert warnings_of(caplog) == []


async def test_dbm_dumb_with_an_empty_index_recovers_every_record_from_the_data_file(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stored = await store_records(DUMB, path)
    Path(f"{path}.dir").write_bytes(b"")
    Path(f"{path}.bak").unlink()
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        assert await open_and_read(DUMB, path) == stored
    check_warning(caplog, stored, lost_is_known=True)


async def test_dbm_dumb_with_an_unreadable_index_recovers_every_record_from_the_data_file(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stored = await store_records(DUMB, path)
    index = Path(f"{path}.dir")
    index.write_bytes(os.urandom(len(index.read_bytes())))
    Path(f"{path}.bak").unlink()
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        assert await open_and_read(DUMB, path) == stored
    check_warning(caplog, stored, lost_is_known=True)
    assert "unreadable" in caplog.text


async def test_dbm_dumb_index_lost_while_being_rewritten_is_restored_without_a_warning(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stored = await store_records(DUMB, path)
    Path(f"{path}.dir").unlink()  # killed between dbm.dumb's rename and its rewrite
    with caplog.at_level(logging.INFO, logger="aiodiskqueue"):
        assert await open_and_read(DUMB, path) == stored
    assert warnings_of(caplog) == []
    assert "repaired" in caplog.text


async def test_dbm_dumb_without_its_data_file_opens_empty_with_a_backup_and_a_warning(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await store_records(DUMB, path)
    Path(f"{path}.dat").unlink()
    index = Path(f"{path}.dir").read_bytes()
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        assert await open_and_read(DUMB, path) == []
    assert backup_of(Path(f"{path}.dir")).read_bytes() == index
    check_warning(caplog, [], lost_is_known=False)
    assert "queue.db.dat is missing" in caplog.text


@pytest.mark.parametrize("lost", [".dir", ".dat"])
async def test_dbm_dumb_with_a_missing_file_opened_with_raise_changes_nothing(
    path: Path, lost: str
) -> None:
    await store_records(DUMB, path)
    Path(f"{path}{lost}").unlink()
    Path(f"{path}.bak").unlink()
    before = files_of(path)
    with pytest.raises(QueueCorruptedError):
        await open_and_read(DUMB, path, RAISE)
    assert files_of(path) == before


async def test_dbm_a_lost_newer_state_is_reported_not_replaced_by_an_older_one(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    every = [Record(key, bytes([key % 256]) * 100) for key in range(1, 201)]
    store = DUMB.make(path)
    await store.open()
    await store.commit(every, [])
    # Enough removals out of order that the state record moves to a larger pair of keys,
    # at the end of the data file, and the old pair is blanked.
    await store.commit([], list(range(2, 201, 2)))
    await store.close()
    assert await open_and_read(DUMB, path) == every[::2]
    index = dict(ast.literal_eval(line) for line in Path(f"{path}.dir").read_text().splitlines())
    moved = min(offset for key, (offset, _) in index.items() if key.startswith("state.1024."))
    os.truncate(f"{path}.dat", moved)
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        recovered = await open_and_read(DUMB, path)
    # The removals are lost with the state: the removed records come back, with a warning,
    # rather than the queue going back silently to the state before the removals.
    assert recovered == every
    assert "no state record" in caplog.text
    (message,) = warnings_of(caplog)
    assert "200 item(s) recovered, an unknown number lost" in message


async def test_a_file_that_is_no_dbm_database_is_kept_and_replaced_by_an_empty_queue(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    content = os.urandom(2000)
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        assert await open_and_read(DUMB, path) == []
    assert backup_of(path).read_bytes() == content
    assert not path.exists()
    check_warning(caplog, [], lost_is_known=False)
    assert "not a dbm database" in caplog.text


async def test_an_sqlite_database_is_not_taken_for_a_damaged_dbm_database(path: Path) -> None:
    await store_records(ENGINES["SqliteEngine"], path)
    content = path.read_bytes()
    with pytest.raises(ValueError, match="SQLite database"):
        await DbmEngine(path).open()
    assert path.read_bytes() == content


async def test_sqlite_commits_in_the_log_of_a_killed_process_are_kept(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sqlite = ENGINES["SqliteEngine"]
    store = sqlite.make(path)
    await store.open()
    await store.commit(stored_records()[:20], [])
    await store.commit(stored_records()[20:], [])
    # What a killed process leaves: the database and its write-ahead log, not checkpointed.
    snapshot = path.parent / "snapshot"
    snapshot.mkdir()
    for suffix in ("", "-wal"):
        shutil.copy2(f"{path}{suffix}", snapshot)
    await store.close()
    for suffix in ("", "-wal"):
        shutil.copy2(snapshot / f"{path.name}{suffix}", path.parent)
    main_file_only = f"{(snapshot / path.name).as_uri()}?immutable=1"
    with contextlib.closing(sqlite3.connect(main_file_only, uri=True)) as database:
        count = database.execute("SELECT count(*) FROM queue").fetchone()
    assert count == (0,), "the records should be in the log only"
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        assert await open_and_read(sqlite, path, RAISE) == stored_records()
    assert warnings_of(caplog) == []
    assert not list(path.parent.glob("*.damaged-*"))


async def test_pickled_list_with_a_damaged_header_keeps_every_record(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pickled = ENGINES["PickledList"]
    stored = await store_records(pickled, path)
    data = bytearray(path.read_bytes())
    data[30] ^= 0x01  # in the meta, which the header's checksum covers
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        assert await open_and_read(pickled, path) == stored
    assert "header is damaged" in caplog.text
    check_warning(caplog, stored, lost_is_known=False)


async def test_pickled_list_file_left_by_a_killed_commit_is_passed_over(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pickled = ENGINES["PickledList"]
    stored = await store_records(pickled, path)
    Path(f"{path}.tmp").write_bytes(path.read_bytes()[:300])  # killed while writing it
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        assert await open_and_read(pickled, path, RAISE) == stored
    assert warnings_of(caplog) == []


# Framing: what the engines' formats rely on


def frames(*keys: int) -> bytes:
    return b"".join(framing.frame(Record(key, bytes([key]) * 20)) for key in keys)


def test_consecutive_frames_refuse_a_key_out_of_line() -> None:
    assert [record.key for record in framing.unframe(frames(1, 2, 4), 1)] == [1, 2]


def test_frames_with_gaps_accept_any_increasing_key() -> None:
    keys = [record.key for record in framing.unframe(frames(1, 2, 4, 9, 3), 1, gaps=True)]
    assert keys == [1, 2, 4, 9]


@pytest.mark.parametrize("gaps", [False, True])
def test_reading_frames_goes_on_after_a_damaged_one(gaps: bool) -> None:
    buffer = bytearray(frames(1, 2, 3, 4))
    buffer[framing.HEADER_SIZE + 20 + 3] ^= 0xFF  # the length of frame 2
    records = list(framing.unframe(bytes(buffer), 1, gaps=gaps))
    assert [record.key for record in records] == [1, 3, 4]


# Files of aiodiskqueue 0.2, written before records carried checksums


async def test_an_sqlite_queue_of_0_2_keeps_its_records_and_gets_checksums(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as database:
        database.executescript(
            "CREATE TABLE queue (key INTEGER PRIMARY KEY, data BLOB NOT NULL);"
            "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
        )
        database.executemany("INSERT INTO queue VALUES (?, ?)", stored_records())
    sqlite = ENGINES["SqliteEngine"]
    assert await open_and_read(sqlite, path, RAISE) == stored_records()
    # Its records now carry checksums, so damage to them is found.
    data = bytearray(path.read_bytes())
    data[data.index(bytes([20]) * 100) + 50] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(QueueCorruptedError, match="1 record"):
        await open_and_read(sqlite, path, RAISE)


# New queues and the names of backups


@pytest.mark.parametrize("make", list(ALL_ENGINES))
async def test_an_empty_file_at_the_path_is_a_new_queue(
    make: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    descriptor, name = tempfile.mkstemp(dir=tmp_path)  # what tests and scripts often do
    os.close(descriptor)
    path = Path(name)
    engine = Engine(make, ALL_ENGINES[make], "", (), None)
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        store = engine.make(path)
        assert (await store.open(RAISE)).size == 0
        await store.commit([Record(1, b"one")], [])
        await store.close()
        assert await open_and_read(engine, path, RAISE) == [Record(1, b"one")]
    assert warnings_of(caplog) == []
    assert not list(tmp_path.glob("*.damaged-*"))


async def test_backups_take_names_that_no_queue_file_can_have(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await store_records(DUMB, path)
    own_index_backup = Path(f"{path}.bak").read_bytes()  # dbm.dumb's, beside every queue
    damage_data(DUMB, path, flipped_bit)
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        await open_and_read(DUMB, path)
        await open_and_read(DUMB, path)
    backups = sorted(path.parent.glob("*.damaged-*"))
    assert {re.sub(r"\.damaged-\d{8}T\d{6}Z$", "", backup.name) for backup in backups} == {
        f"{path.name}.dat",
        f"{path.name}.dir",
        f"{path.name}.bak",
    }
    assert backup_of(Path(f"{path}.bak")).read_bytes() == own_index_backup
    for backup in backups:
        with pytest.raises(ValueError, match="backups"):
            DbmEngine(backup)
        for make in ALL_ENGINES.values():
            with pytest.raises(ValueError, match="backups"):
                make(backup)
    # A second backup of the same file in the same second does not replace the first.
    first = backup_of(Path(f"{path}.dat"))
    assert recovery.keep_backup(first.with_name(f"{path.name}.dat"), recovered=0, problem="x")
    assert first.exists()


# SQLite: damage to the parts that hold no records


SQLITE = ENGINES["SqliteEngine"]


def change_sqlite(path: Path, *statements: str) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as database:
        for statement in statements:
            database.execute(statement)


def meta_without_not_null(path: Path) -> None:
    """A meta row whose value is NULL, as a damaged page may read."""
    schema = "UPDATE sqlite_master SET sql = replace(sql, {}, {}) WHERE name = 'meta'"
    change_sqlite(path, "PRAGMA writable_schema=ON", schema.format("'TEXT NOT NULL'", "'TEXT'"))
    change_sqlite(path, "INSERT INTO meta VALUES ('lost', NULL)")
    change_sqlite(
        path, "PRAGMA writable_schema=ON", schema.format("'value TEXT'", "'value TEXT NOT NULL'")
    )


def meta_that_is_no_text(path: Path) -> None:
    change_sqlite(path, "INSERT INTO meta VALUES ('garbled', CAST(x'ff00fe' AS TEXT))")


def schema_with_a_flipped_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[data.index(b"meta (name TEXT")] ^= 0x01  # "meta" becomes "leta"
    data[data.index(b"(name TEXT")] ^= 0x01  # and its column "name" "oame"
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage", [meta_without_not_null, meta_that_is_no_text, schema_with_a_flipped_bit]
)
async def test_sqlite_damage_outside_the_records_keeps_every_record(
    path: Path, damage: Callable[[Path], None], caplog: pytest.LogCaptureFixture
) -> None:
    stored = await store_records(SQLITE, path)
    damage(path)
    before = files_of(path)
    with pytest.raises(QueueCorruptedError, match=path.name):
        await open_and_read(SQLITE, path, RAISE)
    assert files_of(path) == before
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        assert await open_and_read(SQLITE, path) == stored
    assert len(warnings_of(caplog)) == 1
    caplog.clear()
    assert await open_and_read(SQLITE, path, RAISE) == stored


@pytest.mark.parametrize("make", [*ALL_ENGINES, "SharedSqliteEngine"])
async def test_a_directory_at_the_path_is_refused_and_left_alone(make: str, tmp_path: Path) -> None:
    engine = FILE_ENGINES[make](tmp_path)
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        await engine.open()
    assert list(tmp_path.iterdir()) == []
