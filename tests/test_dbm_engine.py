"""DbmEngine's own promises: O(1) space reuse, and a whole queue after crashes and damage.

Most tests use `dbm.dumb`, which every Python has and which is the most fragile backend.
"""

from __future__ import annotations

import ast
import functools
import json
import logging
import os
from pathlib import Path

import pytest

from aiodiskqueue import QueueCorruptedError
from aiodiskqueue.engines import DbmEngine, OpenOptions, Record, Stored

from .conftest import DBM_BACKENDS

dumb = functools.partial(DbmEngine, backend="dbm.dumb")
RAISE = OpenOptions(on_corruption="raise")


def records(first: int, last: int, size: int = 100) -> list[Record]:
    return [Record(key, bytes([key % 256]) * size) for key in range(first, last + 1)]


async def held(path: Path, options: OpenOptions | None = None) -> tuple[Stored, list[Record]]:
    store = dumb(path)
    stored = await store.open(options or OpenOptions())
    content = await store.read(0, 1_000_000)
    await store.close()
    return stored, content


async def test_slots_are_reused_so_the_files_stop_growing(path: Path) -> None:
    store = dumb(path, page_size=1024)
    await store.open()
    key = 0
    for _ in range(50):  # warm up to the queue's longest length
        await store.commit(records(key + 1, key + 20), [])
        await store.commit([], list(range(key + 1, key + 21)))
        key += 20
    size = Path(f"{path}.dat").stat().st_size
    for _ in range(500):
        await store.commit(records(key + 1, key + 20), [])
        await store.commit([], list(range(key + 1, key + 21)))
        key += 20
    await store.close()
    assert Path(f"{path}.dat").stat().st_size == size


async def test_no_key_is_ever_deleted_so_the_index_is_only_appended(path: Path) -> None:
    store = dumb(path)
    await store.open()
    index = Path(f"{path}.dir")
    await store.commit(records(1, 10), [])
    before = index.read_text()
    await store.commit(records(11, 20), list(range(1, 11)))
    assert index.read_text().startswith(before)
    await store.close()


async def test_a_torn_last_index_line_is_dropped(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = dumb(path)
    await store.open()
    await store.commit(records(1, 5), [])
    await store.close()
    with open(f"{path}.dir", "a", encoding="latin-1") as index:
        index.write("'page.99', (1")  # a crash while dbm.dumb appended a key
    with caplog.at_level(logging.INFO, logger="aiodiskqueue"):
        assert await held(path) == (Stored(5, 5, {}), records(1, 5))
    assert "repaired" in caplog.text


async def test_an_unfinished_index_rewrite_is_completed_from_the_previous_index(
    path: Path,
) -> None:
    store = dumb(path)
    await store.open()
    await store.commit(records(1, 5), [])
    await store.close()  # dbm.dumb rewrites its index: <path>.dir, old one as <path>.bak
    index, previous = Path(f"{path}.dir"), Path(f"{path}.bak")
    index.replace(previous)
    index.write_text("")  # killed right after starting the rewrite
    assert await held(path) == (Stored(5, 5, {}), records(1, 5))


async def test_an_existing_queue_is_reopened_with_its_own_backend(path: Path) -> None:
    store = dumb(path)
    await store.open()
    await store.close()
    reopened = DbmEngine(path)
    await reopened.open()
    assert reopened.backend == "dbm.dumb"
    await reopened.close()
    meta = json.loads(_dumb_value(path, b"meta"))
    assert meta["backend"] == "dbm.dumb"


async def test_asking_for_another_backend_than_the_files_have_is_refused(path: Path) -> None:
    store = dumb(path)
    await store.open()
    await store.close()
    with pytest.raises(ValueError, match=r"dbm\.dumb"):
        await DbmEngine(path, backend="dbm.gnu").open()


async def test_a_dbm_database_of_something_else_is_refused(path: Path) -> None:
    import dbm.dumb

    with dbm.dumb.open(str(path), "c") as other:
        other[b"config"] = b"value"
    with pytest.raises(ValueError, match="something else"):
        await dumb(path).open()
    with dbm.dumb.open(str(path), "r") as other:
        assert other[b"config"] == b"value"


async def test_pages_of_a_failed_commit_never_hide_a_later_commit(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = dumb(path, page_size=1024)
    await store.open()
    await store.commit(records(1, 3), [])

    def fail(state: object) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(store, "_write_state", fail)
        with pytest.raises(OSError, match="disk full"):
            await store.commit(records(4, 30, size=200), [])
    retried = [Record(key, b"second try") for key in range(4, 31)]
    await store.commit(retried, [])
    assert await store.read(0, 100) == [*records(1, 3), *retried]
    await store.close()
    assert (await held(path))[1] == [*records(1, 3), *retried]


async def test_a_failed_commit_leaves_the_stored_records_unchanged(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = dumb(path)
    await store.open()
    await store.commit(records(1, 3), [])

    def fail(state: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "_write_state", fail)
    with pytest.raises(OSError, match="disk full"):
        await store.commit(records(4, 5), [1])
    monkeypatch.undo()
    assert await store.read(0, 100) == records(1, 3)
    await store.close()
    assert await held(path) == (Stored(3, 3, {}), records(1, 3))


async def test_a_damaged_record_is_dropped_with_a_backup_and_a_warning(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = dumb(path, page_size=1024)
    await store.open()
    await store.commit(records(1, 30), [])
    await store.close()
    data = Path(f"{path}.dat")
    original = data.read_bytes()
    damaged = bytearray(original)
    damaged[damaged.index(bytes([20]) * 100) + 50] ^= 0x01  # flip one bit in record 20
    data.write_bytes(bytes(damaged))
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        stored, content = await held(path)
    assert Record(20, bytes([20]) * 100) not in content
    assert [record for record in content if record.key < 20] == records(1, 19)
    assert stored.size == len(content)
    (backup,) = path.parent.glob("queue.db.dat.damaged-*")
    assert backup.read_bytes() == bytes(damaged)
    assert "1 record(s) missing or damaged" in caplog.text
    assert backup.name in caplog.text


async def test_lost_state_records_are_rebuilt_from_the_pages(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = dumb(path)
    await store.open()
    await store.commit(records(1, 5), [])
    await store.close()
    index = Path(f"{path}.dir")
    lines = index.read_text().splitlines(keepends=True)
    index.write_text("".join(line for line in lines if "state." not in line))
    Path(f"{path}.bak").unlink()
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        assert (await held(path))[1] == records(1, 5)
    assert "no state record" in caplog.text


def _dumb_value(path: Path, key: bytes) -> bytes:
    import dbm.dumb

    with dbm.dumb.open(str(path), "r") as database:
        return database[key]


# Damage to the commit records, the index and the path


async def newest_state_block(path: Path) -> tuple[int, int]:
    """Where in the data file the newest commit record of a closed dbm.dumb queue is, and
    how long its content is (without its zero padding)."""
    index = dict(ast.literal_eval(line) for line in Path(f"{path}.dir").read_text().splitlines())
    data = Path(f"{path}.dat").read_bytes()
    blocks = [index[key] for key in index if key.startswith("state.")]
    offset, size = max(blocks, key=lambda block: data[block[0] + 4 : block[0] + 12][::-1])
    return offset, len(data[offset : offset + size].rstrip(b"\0"))


@pytest.mark.parametrize("last_commit", ["put", "get"])
async def test_a_damaged_newest_commit_record_is_reported_never_rolled_back(
    path: Path, last_commit: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = dumb(path)
    await store.open()
    await store.commit(records(1, 10), [])
    await store.commit([], [1, 2, 5])
    if last_commit == "put":
        await store.commit(records(11, 11), [])
    else:
        await store.commit([], [3])
    await store.close()
    put = records(1, 11 if last_commit == "put" else 10)
    expected = [record for record in put if record.key not in (1, 2, 3, 5)]
    if last_commit == "put":
        expected.insert(0, records(3, 3)[0])
    offset, length = await newest_state_block(path)
    healthy = Path(f"{path}.dat").read_bytes()
    for position in range(offset, offset + length):
        damaged = bytearray(healthy)
        damaged[position] ^= 1 << position % 8
        Path(f"{path}.dat").write_bytes(bytes(damaged))
        with pytest.raises(QueueCorruptedError, match="commit record"):
            await held(path, RAISE)
        assert Path(f"{path}.dat").read_bytes() == damaged
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
            _, content = await held(path)
        assert "commit record" in caplog.text, position
        # What the newest commit put is kept; what it got may come back, but nothing else.
        assert [record for record in content if record in expected] == expected, position
        assert set(content) <= set(put) - set(records(1, 2)), position
        assert set(content) - set(expected) <= set(records(3, 3)), position
        for backup in path.parent.glob("*.damaged-*"):
            backup.unlink()


async def test_a_damaged_older_commit_record_loses_nothing(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = dumb(path)
    await store.open()
    await store.commit(records(1, 10), [])
    await store.commit([], [1, 2])
    await store.close()
    newest, _ = await newest_state_block(path)
    index = dict(ast.literal_eval(line) for line in Path(f"{path}.dir").read_text().splitlines())
    (older,) = (
        index[key][0] for key in index if key.startswith("state.") and index[key][0] != newest
    )
    data = bytearray(Path(f"{path}.dat").read_bytes())
    data[older + 20] ^= 0x10
    Path(f"{path}.dat").write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        assert (await held(path))[1] == records(3, 10)


@pytest.mark.parametrize(
    "line",
    [
        "'page.0', 512",  # a position that is no pair
        "b'meta', (0, 10)",  # a key that is no text
        "'meta', (0, 10, 3)",
        "",
        "'page.x', (512, 512)",  # a key no queue has
        "'state.512.0', (513, 512)",  # not at a block boundary
        "'state.512.0', (0, 512)",  # where another value is
    ],
)
@pytest.mark.parametrize("index", [".dir", ".bak"])
async def test_a_damaged_dbm_dumb_index_line_is_reported_or_passed_over(
    path: Path, line: str, index: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = dumb(path)
    await store.open()
    await store.commit(records(1, 10), [])
    await store.close()
    lines = Path(f"{path}{index}").read_text().splitlines()
    lines.insert(len(lines) - 1, line)  # not the last line, which a crash may tear
    Path(f"{path}{index}").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        assert await held(path) == (Stored(10, 10, {}), records(1, 10))
    if index == ".dir":  # dbm.dumb's previous index is a copy: its damage loses nothing
        assert "could not be read in full" in caplog.text


async def test_a_directory_at_the_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        await dumb(tmp_path).open()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("backend", DBM_BACKENDS)
@pytest.mark.parametrize("cut", [0, 4096, 0.5])
async def test_a_data_file_cut_short_or_emptied_is_reported_on_every_backend(
    path: Path, backend: str, cut: float, caplog: pytest.LogCaptureFixture
) -> None:
    store = DbmEngine(path, backend=backend, page_size=1024)
    await store.open()
    await store.commit(records(1, 100), [])
    await store.commit([], [1, 2])
    await store.close()
    data = max(path.parent.glob(f"{path.name}*"), key=lambda file: file.stat().st_size)
    if data == path and cut == 0:  # an empty file at the path is a new queue
        cut = 1
    size = int(cut * data.stat().st_size) if isinstance(cut, float) else int(cut)
    os.truncate(data, size)
    with pytest.raises(QueueCorruptedError):
        await held_on(backend, path, RAISE)
    with caplog.at_level(logging.WARNING, logger="aiodiskqueue"):
        content = await held_on(backend, path)
    assert set(content) <= set(records(3, 100))
    assert "could not be read in full" in caplog.text
    caplog.clear()
    assert await held_on(backend, path, RAISE) == content


async def held_on(backend: str, path: Path, options: OpenOptions | None = None) -> list[Record]:
    store = DbmEngine(path, backend=backend)
    await store.open(options or OpenOptions())
    content = await store.read(0, 1000)
    await store.close()
    return content
