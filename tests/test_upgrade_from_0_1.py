"""Queues written by aiodiskqueue 0.1.2 open in place, upgraded, with every item in order.

The fixtures are real files of 0.1.2 (see ``fixtures/v0_1/make_fixtures.py``): one queue per
0.1 engine and per dbm module that 0.1.2 ran with. ``manifest.json`` lists each one's items
in order. A test runs with every fixture whose dbm module this Python has, and with every
engine of today that opens its files.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import importlib
import json
import logging
import os
import pickle
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import aiodiskqueue
from aiodiskqueue import JsonSerializer, Queue, QueueCorruptedError
from aiodiskqueue.engines import (
    DbmEngine,
    OpenOptions,
    PickledList,
    PickleSequence,
    SharedSqliteEngine,
    SqliteEngine,
)
from aiodiskqueue.engines.storage import legacy
from aiodiskqueue.engines.storage.detect import detect

from .helpers import within
from .test_cli import failed, run, succeeded

FIXTURES = Path(__file__).parent / "fixtures" / "v0_1"
MANIFEST: dict[str, dict[str, Any]] = json.loads((FIXTURES / "manifest.json").read_text())

TODAYS_ENGINES: dict[str, dict[str, Callable[[Path], Any]]] = {
    "DbmEngine": {"DbmEngine": DbmEngine},
    "PickledList": {"PickledList": PickledList},
    "PickleSequence": {"PickleSequence": PickleSequence, "PickledList": PickledList},
    "SqliteEngine": {"SqliteEngine": SqliteEngine, "SharedSqliteEngine": SharedSqliteEngine},
}
"""The engines that open the files of each 0.1 engine: its own name first."""


def _readable_here(fixture: dict[str, Any]) -> bool:
    if "backend" not in fixture:
        return True
    try:
        importlib.import_module(fixture["backend"])
    except ImportError:
        return False
    return True


HERE = sorted(name for name, fixture in MANIFEST.items() if _readable_here(fixture))
"""The fixtures that this Python can read."""
CASES = [
    pytest.param(name, engine, id=f"{name}-{engine}")
    for name in HERE
    for engine in TODAYS_ENGINES[MANIFEST[name]["engine"]]
]
UPGRADED = [name for name in HERE if legacy.find(FIXTURES / name / "queue") is not None]
"""The fixtures that are upgraded. The others are emptied dbm databases without a key,
which nothing tells from a new database's: they open as new queues."""


def expected(name: str) -> list[Any]:
    """The items of fixture `name`, in order."""
    return [_untagged(item) for item in MANIFEST[name]["items"]]


def _untagged(tagged: dict[str, Any]) -> Any:
    ((kind, value),) = tagged.items()
    return bytes.fromhex(value) if kind == "bytes" else value


def engine_of(name: str, engine: str | None = None) -> Callable[[Path], Any]:
    """Today's engine `engine` for fixture `name`: by default, the one of its 0.1 name."""
    engines = TODAYS_ENGINES[MANIFEST[name]["engine"]]
    return engines[engine or MANIFEST[name]["engine"]]


@pytest.fixture
def copy(tmp_path: Path) -> Callable[[str], Path]:
    """Copies a fixture into the test's directory; returns its queue's path."""

    def copy_fixture(name: str) -> Path:
        shutil.copytree(FIXTURES / name, tmp_path / name)
        return tmp_path / name / "queue"

    return copy_fixture


def files(folder: Path) -> dict[str, bytes]:
    """The content of each file in `folder` but lock files, by name."""
    return {
        file.name: file.read_bytes()
        for file in sorted(folder.iterdir())
        if not file.name.endswith(".aiodiskqueue-lock")
    }


async def items_in(path: Path, engine: Callable[[Path], Any], **options: Any) -> list[Any]:
    """Get every item of the queue at `path`, in order."""
    queue: Queue[Any] = await Queue.create(path, cls_storage_engine=engine, **options)
    async with queue:
        return [await within(queue.get()) for _ in range(queue.qsize())]


async def stored_items(path: Path) -> list[Any]:
    """The items stored at `path` in today's format, read without changing them."""
    store = detect(path).single_owner_engine(path)
    await store.open(OpenOptions(on_corruption="raise"))
    try:
        return [pickle.loads(record.data) for record in await store.read(0, 1000)]
    finally:
        await store.close()


# Opening


@pytest.mark.parametrize(("name", "engine"), CASES)
async def test_a_0_1_queue_opens_with_every_item_in_order(
    name: str, engine: str, copy: Callable[[str], Path]
) -> None:
    path = copy(name)
    assert await items_in(path, engine_of(name, engine)) == expected(name)


@pytest.mark.parametrize(("name", "engine"), CASES)
async def test_the_upgraded_queue_is_stored_in_todays_format_and_works_on(
    name: str, engine: str, copy: Callable[[str], Path]
) -> None:
    path = copy(name)
    queue: Queue[Any] = await Queue.create(path, cls_storage_engine=engine_of(name, engine))
    async with queue:
        await queue.put("after the upgrade")
        first = await queue.get()
    assert legacy.find(path) is None
    assert not detect(path).from_0_1
    everything = [*expected(name), "after the upgrade"]
    assert first == everything[0]
    assert await stored_items(path) == everything[1:]


@pytest.mark.parametrize("name", UPGRADED)
async def test_the_upgrade_keeps_the_0_1_files_unchanged_as_the_backup(
    name: str, copy: Callable[[str], Path]
) -> None:
    path = copy(name)
    before = files(path.parent)
    await items_in(path, engine_of(name))
    after = files(path.parent)
    for file, content in before.items():
        assert after[file.replace("queue", "queue.v0.1", 1)] == content
    assert not [file for file in after if file.endswith("-upgrade")]


@pytest.mark.parametrize("name", UPGRADED)
async def test_the_upgrade_says_at_info_how_many_items_it_kept(
    name: str, copy: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    path = copy(name)
    with caplog.at_level(logging.INFO, logger="aiodiskqueue"):
        await items_in(path, engine_of(name))
    upgraded = [record for record in caplog.records if "upgraded" in record.getMessage()]
    assert [record.levelno for record in upgraded] == [logging.INFO]
    assert f"{len(expected(name))} item(s)" in upgraded[0].getMessage()
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


@pytest.mark.parametrize("name", UPGRADED)
async def test_a_0_1_queue_opened_with_another_serializer_is_refused_and_left_as_it_was(
    name: str, copy: Callable[[str], Path]
) -> None:
    path = copy(name)
    before = files(path.parent)
    with pytest.raises(ValueError, match="pickle serializer"):
        await items_in(path, engine_of(name), serializer=JsonSerializer())
    assert files(path.parent) == before


async def test_a_0_1_dbm_queue_opened_with_another_dbm_module_is_refused_and_left_as_it_was(
    copy: Callable[[str], Path],
) -> None:
    path = copy("dbm-dumb")
    before = files(path.parent)
    with pytest.raises(ValueError, match=r"is a dbm\.dumb database, not dbm\.gnu"):
        await items_in(path, lambda path: DbmEngine(path, backend="dbm.gnu"))
    assert files(path.parent) == before


# What is no 0.1 queue, or one that cannot be read


async def test_a_dbm_database_with_other_keys_is_refused_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    import dbm.dumb

    path = tmp_path / "queue"
    with dbm.dumb.open(str(path), "c") as db:
        db[b"head_id"], db[b"tail_id"], db[b"item-1"] = pickle.dumps(1), pickle.dumps(1), b"x"
        db[b"settings"] = b"not a queue's"
    before = files(tmp_path)
    with pytest.raises(ValueError, match="is a dbm database of something else"):
        await items_in(path, DbmEngine)
    assert files(tmp_path) == before


async def test_a_0_1_dbm_queue_whose_numbers_are_not_numbers_is_refused_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    import dbm.dumb

    path = tmp_path / "queue"
    with dbm.dumb.open(str(path), "c") as db:
        db[b"head_id"], db[b"tail_id"] = pickle.dumps(1), pickle.dumps(os.getcwd)
        db[b"item-1"] = pickle.dumps("one")
    before = files(tmp_path)
    with pytest.raises(QueueCorruptedError, match=r"0\.1 that cannot be read"):
        await items_in(path, DbmEngine)
    assert files(tmp_path) == before


async def test_a_0_1_pickled_list_whose_items_cannot_be_unpickled_is_refused_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    path = tmp_path / "queue"
    content = pickle.dumps(["fine", Missing()]).replace(
        b"test_upgrade_from_0_1", b"gone_upgrade_from_0_1"
    )
    path.write_bytes(content)
    with pytest.raises(QueueCorruptedError, match=r"0\.1 that cannot be read"):
        await items_in(path, PickledList)
    assert files(tmp_path) == {"queue": content}


class Missing:
    """An item whose class cannot be found when it is unpickled (see its test)."""


async def test_a_sqlite_database_of_0_1_with_a_row_that_holds_no_pickle_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "queue"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE queue (item BLOB)")
        db.executemany("INSERT INTO queue VALUES (?)", [(pickle.dumps(1),), ("text",)])
    db.close()
    before = files(tmp_path)
    with pytest.raises(QueueCorruptedError, match="holds no pickle"):
        await items_in(path, SqliteEngine)
    assert files(tmp_path) == before


# A crash during the upgrade


class Crash(Exception):
    """Stands for the process dying at a step of the upgrade."""


class Crashing:
    """Counts the steps that change files (renames and removals), and fails one of them."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, at: int | None, on: Path | None = None
    ) -> None:
        """Fail step number `at`, or the first step that changes the file `on`."""
        self.steps, self.at, self.on = 0, at, on
        for name in ("replace", "rename", "unlink"):
            monkeypatch.setattr(os, name, self._step(getattr(os, name)))

    def _step(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def step(*args: Any, **kwargs: Any) -> Any:
            self.steps += 1
            if self.steps - 1 == self.at or (self.on is not None and Path(args[0]) == self.on):
                raise Crash(f"crash at step {self.at}: {function.__name__}{args}")
            return function(*args, **kwargs)

        return step


def _steps_of_an_upgrade(name: str, engine: str, folder: Path) -> int:
    """How many steps that change files opening fixture `name` with `engine` takes."""
    shutil.copytree(FIXTURES / name, folder)
    with pytest.MonkeyPatch.context() as monkeypatch:
        crashing = Crashing(monkeypatch, at=None)
        asyncio.run(open_and_close(folder / "queue", engine_of(name, engine)))
    return crashing.steps


async def open_and_close(path: Path, engine: Callable[[Path], Any]) -> None:
    queue: Queue[Any] = await Queue.create(path, cls_storage_engine=engine)
    await queue.close()


CRASH_CASES = [
    *(pytest.param(name, MANIFEST[name]["engine"], id=name) for name in UPGRADED),
    pytest.param("sqlite", "SharedSqliteEngine", id="sqlite-SharedSqliteEngine"),
]


@pytest.mark.parametrize(("name", "engine"), CRASH_CASES)
def test_a_crash_at_any_step_of_the_upgrade_leaves_the_0_1_files_or_the_upgraded_queue(
    name: str, engine: str, tmp_path: Path
) -> None:
    steps = _steps_of_an_upgrade(name, engine, tmp_path / "counting")
    assert steps > 3
    for at in range(steps):
        folder = tmp_path / f"crash-{at}"
        shutil.copytree(FIXTURES / name, folder)
        with pytest.MonkeyPatch.context() as crash:
            Crashing(crash, at)
            with pytest.raises(Crash):
                asyncio.run(open_and_close(folder / "queue", engine_of(name, engine)))
        gc.collect()  # a database left open by the crash closes now, not during the reopening
        path = folder / "queue"
        reopened = asyncio.run(items_in(path, engine_of(name, engine)))
        assert reopened == expected(name), f"crash at step {at}"
        assert legacy.find(path) is None


# The command line


@pytest.mark.parametrize("name", UPGRADED)
def test_info_shows_a_0_1_queue_and_changes_no_file(name: str, copy: Callable[[str], Path]) -> None:
    path = copy(name)
    before = files(path.parent)
    facts = json.loads(succeeded(run("info", "--json", path.name, cwd=path.parent)))
    assert facts["from_0_1"] is True
    assert facts["items"] == len(expected(name))
    assert facts["serializer"] == "pickle"
    assert facts["dbm_backend"] == MANIFEST[name].get("backend")
    text = succeeded(run("info", path.name, cwd=path.parent))
    assert "aiodiskqueue 0.1" in text
    assert files(path.parent) == before


@pytest.mark.parametrize("name", UPGRADED)
def test_peek_shows_the_items_of_a_0_1_queue_and_changes_no_file(
    name: str, copy: Callable[[str], Path]
) -> None:
    path = copy(name)
    before = files(path.parent)
    shown = succeeded(run("peek", "-n", "100", path.name, cwd=path.parent))
    assert shown.splitlines() == [repr(item) for item in expected(name)]
    assert files(path.parent) == before


@pytest.mark.parametrize("name", UPGRADED)
def test_migrate_copies_a_0_1_queue_and_changes_no_file_of_it(
    name: str, copy: Callable[[str], Path]
) -> None:
    path = copy(name)
    before = files(path.parent)
    copied = path.parent.parent / "copy"
    succeeded(run("migrate", "--engine", "PickledList", path, copied, cwd=path.parent))
    assert files(path.parent) == before
    assert asyncio.run(stored_items(copied)) == expected(name)


@pytest.mark.parametrize("name", UPGRADED)
def test_migrate_move_upgrades_a_0_1_queue_then_empties_it(
    name: str, copy: Callable[[str], Path]
) -> None:
    path = copy(name)
    moved = path.parent.parent / "moved"
    succeeded(run("migrate", "--move", "--engine", "DbmEngine", path, moved, cwd=path.parent))
    assert asyncio.run(stored_items(moved)) == expected(name)
    assert asyncio.run(stored_items(path)) == []
    assert not detect(path).from_0_1
    assert Path(f"{path}.v0.1{MANIFEST[name]['files'][0][len('queue') :]}").exists()


# The dbm modules of other Pythons


_UPGRADE_AND_LIST = """
import asyncio, json, os, sys
from aiodiskqueue import Queue

def tagged(item):
    kind = {bytes: "bytes", str: "str", int: "int"}.get(type(item), "json")
    return {kind: item.hex() if kind == "bytes" else item}

async def main(path):
    queue = await Queue.create(path, delivery="at-least-once")
    async with queue:
        items = [await asyncio.wait_for(queue.get(), 10) for _ in range(queue.qsize())]
    print(json.dumps({"items": [tagged(item) for item in items]}))

asyncio.run(main(sys.argv[1]))
"""


def _other_pythons() -> dict[str, str]:
    """A Python of this machine, 3.10 or later, for each dbm module this one lacks."""
    lacking = {fixture["backend"] for fixture in MANIFEST.values() if not _readable_here(fixture)}
    candidates = [
        "/usr/bin/python3",
        *sorted(str(path) for path in Path("/root/.pyenv/versions").glob("3.*/bin/python")),
    ]
    found: dict[str, str] = {}
    for python in candidates:
        if not lacking - set(found) or not os.access(python, os.X_OK):
            continue
        probe = subprocess.run(
            [python, "-c", _HAS_MODULES, *sorted(lacking - set(found))],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        for module in probe.stdout.split():
            found.setdefault(module, python)
    return found


_HAS_MODULES = """
import importlib, sys
if sys.version_info >= (3, 10):
    for name in sys.argv[1:]:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        print(name)
"""

OTHER_PYTHONS = _other_pythons()
ELSEWHERE = [
    pytest.param(name, OTHER_PYTHONS[fixture["backend"]], id=name)
    for name, fixture in sorted(MANIFEST.items())
    if not _readable_here(fixture) and fixture["backend"] in OTHER_PYTHONS
]
"""The fixtures of dbm modules that this Python lacks and another on this machine has."""


@pytest.mark.parametrize(("name", "python"), ELSEWHERE)
def test_a_python_with_the_dbm_module_of_a_0_1_queue_upgrades_it(
    name: str, python: str, copy: Callable[[str], Path]
) -> None:
    path = copy(name)
    before = files(path.parent)
    result = subprocess.run(
        [python, "-c", _UPGRADE_AND_LIST, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(aiodiskqueue.__file__).parent.parent)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["items"] == MANIFEST[name]["items"]
    after = files(path.parent)
    if name.endswith("-emptied"):  # no key tells it from a new database: opened as one
        assert not [file for file in after if ".v0.1" in file]
    else:
        for file, content in before.items():
            assert after[file.replace("queue", "queue.v0.1", 1)] == content


class _Runs:
    """An item whose unpickling makes a directory: the sign that unpickling ran its code."""

    def __init__(self, sign: Path) -> None:
        self.sign = sign

    def __reduce__(self) -> tuple[Any, ...]:
        return os.mkdir, (str(self.sign),)


def test_info_counts_the_items_of_a_0_1_pickled_list_without_unpickling_them(
    tmp_path: Path,
) -> None:
    path, sign = tmp_path / "queue", tmp_path / "unpickled"
    path.write_bytes(pickle.dumps(["one", _Runs(sign), {"three": _Runs(sign)}]))
    facts = json.loads(succeeded(run("info", "--json", path.name, cwd=tmp_path)))
    assert (facts["items"], facts["from_0_1"]) == (3, True)
    assert not sign.exists()


def test_peek_raw_refuses_a_0_1_pickled_list_whose_items_only_unpickling_can_split(
    copy: Callable[[str], Path],
) -> None:
    path = copy("pickled-list")
    before = files(path.parent)
    failed(run("peek", "--raw", path.name, cwd=path.parent), "leave out --raw")
    assert files(path.parent) == before


def test_peek_raw_shows_the_pickles_of_a_0_1_pickle_sequence_as_they_are(
    copy: Callable[[str], Path],
) -> None:
    path = copy("pickle-sequence")
    shown = succeeded(run("peek", "--raw", "-n", "100", path.name, cwd=path.parent))
    pickles = [ast.literal_eval(line) for line in shown.splitlines()]
    assert [pickle.loads(data) for data in pickles] == expected("pickle-sequence")


def test_an_interrupted_upgrade_is_finished_only_by_an_engine_of_its_format(
    copy: Callable[[str], Path],
) -> None:
    path = copy("pickled-list")
    with pytest.MonkeyPatch.context() as crash:
        Crashing(crash, at=None, on=path)  # the backup and the marker are written before
        with pytest.raises(Crash):
            asyncio.run(open_and_close(path, PickledList))
    assert Path(f"{path}.v0.1-upgrade").exists()
    with pytest.raises(ValueError, match="being upgraded from a PickledList queue"):
        asyncio.run(open_and_close(path, DbmEngine))
    assert asyncio.run(items_in(path, PickledList)) == expected("pickled-list")
