"""The ``aiodiskqueue`` command, run for real in a subprocess: each command, each failure.

Queues are made and read back through the library in the test process; the command runs as
``python -m aiodiskqueue`` in the queue's directory. Every failure must print one line on
standard error, exit with 1 and leave the queue's files as they were.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import importlib.metadata
import json
import os
import pickle
import pty
import re
import select
import subprocess
import sys
import sysconfig
import types
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from aiodiskqueue import JsonSerializer, Queue, __version__, engines
from aiodiskqueue.engines import (
    DbmEngine,
    OpenOptions,
    PickledList,
    SharedSqliteEngine,
    SqliteEngine,
    StorageEngine,
)
from aiodiskqueue.engines.storage.detect import detect

from .conftest import DBM_BACKENDS, ENGINES, FILE_ENGINES
from .servers import postgres_queue, redis_queue

TIMEOUT = 60
"""Seconds any one run of the command may take before the test fails."""

COMMANDS = ("info", "peek", "export", "import", "migrate", "purge", "drop")
JSON_ITEMS: list[Any] = [{"job": 1}, "two", 3, 4.5, None, True, [1, "a"], {"nested": {"x": []}}]
NOT_JSON_ITEMS: list[Any] = [(1, 2), {1, 2}, datetime.date(2024, 2, 29), b"bytes", {1: "int key"}]
BIG = 2500  # items: more than the progress bar's threshold


class Unimportable:
    """An object the command cannot unpickle: its module exists in this process only."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unimportable)

    def __hash__(self) -> int:
        return 0


_ONLY_HERE = types.ModuleType("aiodiskqueue_cli_tests_only_here")
_ONLY_HERE.Unimportable = Unimportable  # type: ignore[attr-defined]
Unimportable.__module__ = _ONLY_HERE.__name__
sys.modules[_ONLY_HERE.__name__] = _ONLY_HERE


# Running the command


def _environment() -> dict[str, str]:
    """The command's environment: this one, plus, while coverage measures the tests, what
    makes it measure the command too (each process writes a data file, combined at the end)."""
    environment = dict(os.environ)
    try:
        import coverage
    except ImportError:  # pragma: no cover - installed with the test extras
        return environment
    current = coverage.Coverage.current()
    if current is not None:
        config = copy.copy(current.config)
        config.parallel = True
        environment["COVERAGE_PROCESS_CONFIG"] = config.serialize()
    return environment


ENVIRONMENT = _environment()


def run(*args: object, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m aiodiskqueue ARGS`` in `cwd` and return what it did."""
    return subprocess.run(
        [sys.executable, "-m", "aiodiskqueue", *map(str, args)],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=ENVIRONMENT,
        check=False,
    )


def failed(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Check that the command failed with one error line holding `fragments`; return it."""
    assert result.returncode == 1, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("aiodiskqueue: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    """Check that the command succeeded quietly on stderr; return its output."""
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


# Queues


def fill(
    path: Path,
    items: Iterable[Any],
    engine: Callable[[Path], Any] = DbmEngine,
    serializer: Any = None,
) -> None:
    """Put `items` into the queue at `path`."""

    async def put_all() -> None:
        queue: Queue[Any] = await Queue.create(
            path, cls_storage_engine=engine, serializer=serializer
        )
        async with queue:  # stored when the queue closes, in one batch on a local engine
            for item in items:
                queue.put_nowait(item)

    asyncio.run(put_all())


def stored(path: Path, engine: Callable[[Path], StorageEngine] | None = None) -> list[bytes]:
    """The stored bytes of the items of the queue at `path`, read without changing them."""

    async def read_all() -> list[bytes]:
        store = (engine or detect(path).single_owner_engine)(path)
        await store.open(OpenOptions(on_corruption="raise"))
        try:
            return [record.data for record in await store.read(0, 1_000_000)]
        finally:
            await store.close()

    return asyncio.run(read_all())


def items(path: Path) -> list[Any]:
    """The items of the pickle queue at `path`, in order."""
    return [pickle.loads(data) for data in stored(path)]


def files(directory: Path) -> dict[str, bytes]:
    """The content of every file in `directory` but lock files, by name."""
    return {
        file.name: file.read_bytes()
        for file in sorted(directory.iterdir())
        if file.is_file() and not file.name.endswith(".aiodiskqueue-lock")
    }


@pytest.fixture
def queue(tmp_path: Path) -> Path:
    """A DbmEngine queue holding `JSON_ITEMS`."""
    path = tmp_path / "jobs.queue"
    fill(path, JSON_ITEMS)
    return path


def damage(path: Path, marker: bytes) -> None:
    """Flip a byte of `marker` in whichever of the queue's files holds it."""
    for file in detect(path).files:
        content = bytearray(file.read_bytes())
        at = content.find(marker)
        if at >= 0:
            content[at + len(marker) // 2] ^= 0xFF
            file.write_bytes(bytes(content))
            return
    raise AssertionError(f"{marker!r} is in none of the files of {path}")


# The command itself


def test_help_lists_every_command(tmp_path: Path) -> None:
    output = succeeded(run("--help", cwd=tmp_path))
    for command in COMMANDS:
        assert command in output


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_its_help(tmp_path: Path, command: str) -> None:
    output = succeeded(run(command, "--help", cwd=tmp_path))
    assert output.startswith(f"usage: aiodiskqueue {command}")
    assert "example:" in output


def test_version_is_the_package_version(tmp_path: Path) -> None:
    assert succeeded(run("--version", cwd=tmp_path)).strip() == f"aiodiskqueue {__version__}"


def test_console_script_is_installed_and_runs_the_command(tmp_path: Path) -> None:
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name="aiodiskqueue")
    assert entry.value == "aiodiskqueue.cli:main"
    script = Path(sysconfig.get_path("scripts")) / "aiodiskqueue"
    result = subprocess.run(
        [script, "--version"], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert succeeded(result).strip() == f"aiodiskqueue {__version__}"


def test_a_command_line_that_does_not_parse_exits_with_2(tmp_path: Path) -> None:
    result = run("peek", cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: aiodiskqueue peek" in result.stderr


# info


@pytest.mark.parametrize("engine", list(ENGINES))
def test_info_tells_the_engine_from_the_files_and_counts_items_and_bytes(
    tmp_path: Path, engine: str
) -> None:
    path = tmp_path / "jobs.queue"
    fill(path, JSON_ITEMS, ENGINES[engine])
    output = succeeded(run("info", path.name, cwd=tmp_path))
    facts = dict(re.findall(r"^([^:]+): +(.*)$", output, re.MULTILINE))
    assert engine.split("[")[0] in facts["engine"]
    if engine.startswith("DbmEngine"):
        assert facts["dbm backend"] == engine[len("DbmEngine[") : -1]
    else:
        assert "dbm backend" not in facts
    assert facts["items"] == str(len(JSON_ITEMS))
    assert facts["serializer"] == "pickle"
    size = sum(file.stat().st_size for file in detect(path).files)
    assert facts["bytes on disk"].startswith(f"{size} (")
    assert facts["open by another process"] == "no"


@pytest.mark.parametrize("engine", list(ENGINES))
def test_info_changes_no_file(tmp_path: Path, engine: str) -> None:
    fill(tmp_path / "jobs.queue", JSON_ITEMS, ENGINES[engine])
    before = files(tmp_path)
    succeeded(run("info", "jobs.queue", cwd=tmp_path))
    assert files(tmp_path) == before


def test_info_json_gives_the_facts_as_one_object(queue: Path) -> None:
    facts = json.loads(succeeded(run("info", queue, "--json", cwd=queue.parent)))
    assert facts["engines"] == ["DbmEngine"]
    assert facts["items"] == len(JSON_ITEMS)
    assert facts["serializer"] == "pickle"
    assert facts["bytes"] == sum(file.stat().st_size for file in detect(queue).files)
    assert facts["open_elsewhere"] is False
    assert facts["owner_process"] is None


def test_info_names_the_process_that_holds_the_queue(queue: Path) -> None:
    async def look_while_open() -> subprocess.CompletedProcess[str]:
        async with await Queue.create(queue):
            return await asyncio.to_thread(run, "info", queue, cwd=queue.parent)

    output = succeeded(asyncio.run(look_while_open()))
    assert f"open by another process: yes, by process {os.getpid()}" in output
    assert "items:                   unknown" in output


def test_info_counts_a_sqlite_queue_that_other_processes_share(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    fill(path, JSON_ITEMS, SharedSqliteEngine)

    async def look_while_shared() -> subprocess.CompletedProcess[str]:
        async with await Queue.create(path, cls_storage_engine=SharedSqliteEngine):
            return await asyncio.to_thread(run, "info", path, "--json", cwd=tmp_path)

    facts = json.loads(succeeded(asyncio.run(look_while_shared())))
    assert facts["engines"] == ["SqliteEngine", "SharedSqliteEngine"]
    assert facts["items"] == len(JSON_ITEMS)
    assert facts["open_elsewhere"] is True
    assert facts["owner_process"] is None


# peek


def test_peek_prints_the_first_items_with_repr(queue: Path) -> None:
    output = succeeded(run("peek", queue, "-n", "3", cwd=queue.parent))
    assert output.splitlines() == [repr(item) for item in JSON_ITEMS[:3]]


def test_peek_prints_ten_items_unless_told(tmp_path: Path) -> None:
    fill(tmp_path / "q", range(15))
    output = succeeded(run("peek", "q", cwd=tmp_path))
    assert output.splitlines() == [str(n) for n in range(10)]


def test_peek_leaves_the_items_in_the_queue(queue: Path) -> None:
    before = files(queue.parent)
    succeeded(run("peek", queue, cwd=queue.parent))
    assert files(queue.parent) == before
    assert items(queue) == JSON_ITEMS


def test_peek_json_prints_the_lines_of_export(tmp_path: Path) -> None:
    fill(tmp_path / "q", [*JSON_ITEMS, *NOT_JSON_ITEMS])
    peeked = succeeded(run("peek", "q", "--json", "-n", "100", cwd=tmp_path))
    assert peeked == succeeded(run("export", "q", cwd=tmp_path))


def test_peek_says_which_items_cannot_be_decoded(tmp_path: Path) -> None:
    fill(tmp_path / "q", [Unimportable(), "after"])
    size = len(stored(tmp_path / "q")[0])
    output = succeeded(run("peek", "q", cwd=tmp_path)).splitlines()
    assert output == [f"<{size} bytes of 'pickle' that cannot be decoded here>", "'after'"]


def test_peek_raw_unpickles_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    fill(tmp_path / "q", [_Trap(str(marker))])
    output = succeeded(run("peek", "q", "--raw", cwd=tmp_path))
    assert output.strip() == repr(stored(tmp_path / "q")[0])
    assert not marker.exists()
    succeeded(run("peek", "q", cwd=tmp_path))
    assert marker.exists(), "without --raw, the item is unpickled"


class _Trap:
    """Makes a directory when unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.path,))


# export


def test_export_writes_each_item_as_a_json_line(queue: Path) -> None:
    output = succeeded(run("export", queue, cwd=queue.parent))
    assert [json.loads(line) for line in output.splitlines()] == [
        {"item": item} for item in JSON_ITEMS
    ]


def test_export_writes_items_json_cannot_hold_as_base64_of_their_bytes(tmp_path: Path) -> None:
    fill(tmp_path / "q", [*NOT_JSON_ITEMS, Unimportable()])
    output = succeeded(run("export", "q", cwd=tmp_path))
    lines = [json.loads(line) for line in output.splitlines()]
    assert [base64.b64decode(line["serialized"]) for line in lines] == stored(tmp_path / "q")
    assert {line["serializer"] for line in lines} == {"pickle"}


def test_export_to_a_file_leaves_the_queue_unchanged(queue: Path) -> None:
    before = files(queue.parent)
    assert succeeded(run("export", queue, "-o", "out.jsonl", cwd=queue.parent)) == ""
    exported = (queue.parent / "out.jsonl").read_text().splitlines()
    assert [json.loads(line)["item"] for line in exported] == JSON_ITEMS
    assert {**before, "out.jsonl": (queue.parent / "out.jsonl").read_bytes()} == files(queue.parent)


def test_export_raw_writes_every_item_as_its_bytes(queue: Path) -> None:
    output = succeeded(run("export", queue, "--raw", cwd=queue.parent))
    exported = [base64.b64decode(json.loads(line)["serialized"]) for line in output.splitlines()]
    assert exported == stored(queue)


# import


@pytest.mark.parametrize("serializer", [None, JsonSerializer()], ids=["pickle", "json"])
def test_export_then_import_stores_the_very_same_bytes(
    tmp_path: Path, serializer: JsonSerializer | None
) -> None:
    originals = JSON_ITEMS if serializer else [*JSON_ITEMS, *NOT_JSON_ITEMS, Unimportable()]
    fill(tmp_path / "src", originals, serializer=serializer)
    succeeded(run("export", "src", "-o", "export.jsonl", cwd=tmp_path))
    result = run(
        "import",
        "dst",
        "export.jsonl",
        "--serializer",
        "json" if serializer else "pickle",
        cwd=tmp_path,
    )
    assert result.stdout == f"imported {len(originals)} item(s) into dst\n"
    assert stored(tmp_path / "dst") == stored(tmp_path / "src")


def test_import_appends_after_the_items_already_there(queue: Path) -> None:
    (queue.parent / "more.jsonl").write_text('{"item": "more"}\n\n{"item": ["and", "more"]}\n')
    succeeded(run("import", queue, "more.jsonl", cwd=queue.parent))
    assert items(queue) == [*JSON_ITEMS, "more", ["and", "more"]]


@pytest.mark.parametrize("engine", ["DbmEngine", "SqliteEngine", "PickledList"])
def test_import_creates_a_missing_queue_with_the_named_engine(tmp_path: Path, engine: str) -> None:
    (tmp_path / "items.jsonl").write_text('{"item": 1}\n{"item": 2}\n')
    succeeded(run("import", "new", "items.jsonl", "--engine", engine, cwd=tmp_path))
    assert engine in detect(tmp_path / "new").engine_names
    assert items(tmp_path / "new") == [1, 2]


def test_import_reads_standard_input(tmp_path: Path) -> None:
    succeeded(run("import", "q", "-", cwd=tmp_path, stdin='{"item": "piped"}\n'))
    assert items(tmp_path / "q") == ["piped"]


@pytest.mark.parametrize("backend", DBM_BACKENDS)
def test_import_creates_a_dbm_queue_with_the_named_backend(tmp_path: Path, backend: str) -> None:
    (tmp_path / "items.jsonl").write_text('{"item": 1}\n')
    succeeded(run("import", "new", "items.jsonl", "--dbm-backend", backend, cwd=tmp_path))
    assert detect(tmp_path / "new").backend == backend


def test_an_unknown_dbm_backend_is_reported(tmp_path: Path) -> None:
    (tmp_path / "items.jsonl").write_text('{"item": 1}\n')
    result = run("import", "new", "items.jsonl", "--dbm-backend", "dbm.nosuch", cwd=tmp_path)
    failed(result, "'dbm.nosuch' is not a dbm module")
    assert files(tmp_path) == {"items.jsonl": b'{"item": 1}\n'}


def test_peek_decodes_the_items_of_a_json_queue(tmp_path: Path) -> None:
    fill(tmp_path / "q", JSON_ITEMS, serializer=JsonSerializer())
    output = succeeded(run("peek", "q", "-n", "100", cwd=tmp_path))
    assert output.splitlines() == [repr(item) for item in JSON_ITEMS]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"item": 1, "extra": 2}', "not an object with the keys"),
        ('{"serialized": "***", "serializer": "pickle"}', "not base64"),
        ('{"serialized": "AA==", "serializer": "json"}', "stored with the 'json' serializer"),
        ('{"item": NaN}', "not JSON"),
    ],
)
def test_import_reports_a_bad_line_by_its_number_and_changes_nothing(
    queue: Path, line: str, reason: str
) -> None:
    (queue.parent / "bad.jsonl").write_text(f'{{"item": "fine"}}\n{line}\n{{"item": 3}}\n')
    before = files(queue.parent)
    failed(run("import", queue, "bad.jsonl", cwd=queue.parent), "bad.jsonl line 2: ", reason)
    assert files(queue.parent) == before


def test_import_of_a_bad_file_creates_no_queue(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"item": 1}\n{"item": 2\n')
    failed(run("import", "new", "bad.jsonl", cwd=tmp_path), "line 2")
    assert sorted(file.name for file in tmp_path.iterdir()) == ["bad.jsonl"]


def test_import_refuses_a_serializer_other_than_the_queues(queue: Path) -> None:
    (queue.parent / "items.jsonl").write_text('{"item": 1}\n')
    before = files(queue.parent)
    result = run("import", queue, "items.jsonl", "--serializer", "json", cwd=queue.parent)
    failed(result, "'pickle' serializer, not 'json'")
    assert files(queue.parent) == before


def test_import_of_a_missing_file_is_reported(queue: Path) -> None:
    failed(run("import", queue, "nowhere.jsonl", cwd=queue.parent), "no file nowhere.jsonl")


# migrate

PAIRS = [
    ("DbmEngine", "SqliteEngine"),
    ("SqliteEngine", "PickledList"),
    ("PickledList", "DbmEngine"),
    ("DbmEngine", "SharedSqliteEngine"),
]
LOCAL = {
    "DbmEngine": DbmEngine,
    "SqliteEngine": SqliteEngine,
    "PickledList": PickledList,
}


@pytest.mark.parametrize(("source", "destination"), PAIRS)
def test_migrate_copies_every_item_in_order_and_leaves_the_source(
    tmp_path: Path, source: str, destination: str
) -> None:
    originals = [*JSON_ITEMS, *NOT_JSON_ITEMS, *range(1200)]  # more than one batch
    fill(tmp_path / "src", originals, LOCAL[source])
    before = stored(tmp_path / "src")
    output = succeeded(run("migrate", "src", "dst", "--engine", destination, cwd=tmp_path))
    assert output == f"copied {len(originals)} item(s) from src to dst\n"
    assert destination in detect(tmp_path / "dst").engine_names
    assert stored(tmp_path / "dst") == before
    assert stored(tmp_path / "src") == before


def test_migrate_move_empties_the_source_once_copied(queue: Path) -> None:
    before = stored(queue)
    output = succeeded(
        run("migrate", queue, "dst", "--engine", "PickledList", "--move", cwd=queue.parent)
    )
    assert output.startswith(f"moved {len(JSON_ITEMS)} item(s)")
    assert stored(queue.parent / "dst") == before
    assert stored(queue) == []


def test_migrate_refuses_a_destination_that_holds_items(queue: Path) -> None:
    fill(queue.parent / "dst", ["already"], PickledList)
    before = files(queue.parent)
    result = run("migrate", queue, "dst", "--engine", "PickledList", "--move", cwd=queue.parent)
    failed(result, "already holds 1 item(s)", "--append")
    assert files(queue.parent) == before


def test_migrate_append_adds_after_the_destinations_items(queue: Path) -> None:
    fill(queue.parent / "dst", ["already"], PickledList)
    result = run("migrate", queue, "dst", "--engine", "PickledList", "--append", cwd=queue.parent)
    succeeded(result)
    assert items(queue.parent / "dst") == ["already", *JSON_ITEMS]


def test_migrate_appends_to_a_sqlite_queue_that_other_processes_share(queue: Path) -> None:
    destination = queue.parent / "dst.sqlite"
    fill(destination, ["already"], SharedSqliteEngine)

    async def migrate_while_shared() -> subprocess.CompletedProcess[str]:
        async with await Queue.create(destination, cls_storage_engine=SharedSqliteEngine):
            arguments = (
                "migrate",
                queue,
                destination,
                "--engine",
                "SharedSqliteEngine",
                "--append",
            )
            return await asyncio.to_thread(run, *arguments, cwd=queue.parent)

    succeeded(asyncio.run(migrate_while_shared()))
    assert items(destination) == ["already", *JSON_ITEMS]


def test_migrate_refuses_an_engine_that_cannot_open_the_destination(queue: Path) -> None:
    fill(queue.parent / "dst", ["already"], PickledList)
    result = run("migrate", queue, "dst", "--engine", "DbmEngine", cwd=queue.parent)
    failed(result, "dst is a queue of PickledList, which DbmEngine cannot open")


def test_migrate_refuses_to_copy_a_queue_onto_itself(queue: Path) -> None:
    failed(run("migrate", queue, queue, "--engine", "DbmEngine", cwd=queue.parent), "same queue")


SERVERS = {"RedisEngine": redis_queue, "PostgresEngine": postgres_queue}


@pytest.mark.parametrize("engine", list(SERVERS))
async def test_migrate_move_copies_a_queue_to_a_server_in_order(queue: Path, engine: str) -> None:
    async with SERVERS[engine]() as address:
        arguments = ("migrate", queue, address, "--engine", engine, "--move")
        succeeded(await asyncio.to_thread(run, *arguments, cwd=queue.parent))
        assert await server_items(address, engine) == JSON_ITEMS
    assert await asyncio.to_thread(stored, queue) == []


@pytest.mark.parametrize("engine", list(SERVERS))
async def test_import_appends_to_a_queue_on_a_server(tmp_path: Path, engine: str) -> None:
    (tmp_path / "items.jsonl").write_text('{"item": 1}\n{"item": [2]}\n')
    async with SERVERS[engine]() as address:
        arguments = ("import", address, "items.jsonl", "--engine", engine)
        succeeded(await asyncio.to_thread(run, *arguments, cwd=tmp_path))
        assert await server_items(address, engine) == [1, [2]]


async def server_items(address: str, engine: str) -> list[Any]:
    """Get every item of the queue at `address` on a server."""
    cls = getattr(engines, engine)
    async with await Queue.create(address, cls_storage_engine=cls) as remote:
        got = []
        while not remote.empty():
            got.append(await asyncio.wait_for(remote.get(), TIMEOUT))
        return got


@pytest.mark.parametrize(
    ("destination", "engine", "reason"),
    [
        ("redis://127.0.0.1:6379/0/jobs", "DbmEngine", "is a queue of RedisEngine, not of Dbm"),
        ("postgresql://u@h/db/jobs", "RedisEngine", "is a queue of PostgresEngine, not of Redis"),
        ("http://127.0.0.1/0/jobs", "RedisEngine", "is not a queue address: it starts with"),
        ("dst", "RedisEngine", "RedisEngine needs the address of a queue on its server"),
    ],
)
def test_a_server_engine_goes_with_a_server_address_only(
    queue: Path, destination: str, engine: str, reason: str
) -> None:
    result = run("migrate", queue, destination, "--engine", engine, cwd=queue.parent)
    failed(result, reason)


# purge


def test_purge_without_yes_refuses_and_changes_nothing(queue: Path) -> None:
    before = files(queue.parent)
    failed(run("purge", queue, cwd=queue.parent), "--yes")
    assert files(queue.parent) == before


@pytest.mark.parametrize("engine", list(ENGINES))
def test_purge_yes_removes_every_item(tmp_path: Path, engine: str) -> None:
    fill(tmp_path / "q", JSON_ITEMS, ENGINES[engine])
    output = succeeded(run("purge", "q", "--yes", cwd=tmp_path))
    assert output == f"removed {len(JSON_ITEMS)} item(s) from q\n"
    assert stored(tmp_path / "q", ENGINES[engine]) == []


# Failures

READERS = [("info",), ("peek",), ("export",), ("purge", "--yes")]


def arguments(command: tuple[str, ...], path: object) -> list[object]:
    """The command line of `command` on the queue at `path`."""
    if command[0] == "migrate":
        return ["migrate", path, "elsewhere", "--engine", "PickledList"]
    if command[0] == "import":
        return ["import", path, "items.jsonl"]
    return [command[0], path, *command[1:]]


ALL = [*READERS, ("migrate",)]


@pytest.mark.parametrize("command", ALL, ids=lambda command: command[0])
def test_a_missing_queue_is_reported_and_nothing_is_created(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    failed(run(*arguments(command, "nowhere"), cwd=tmp_path), "no queue at nowhere")
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_no_queue_is_reported(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    failed(run("peek", "notes.txt", cwd=tmp_path), "notes.txt", "format is unknown")
    assert files(tmp_path) == {"notes.txt": b"hello"}


@pytest.mark.parametrize("command", ["import", "migrate"])
def test_an_unknown_engine_is_reported(queue: Path, command: str) -> None:
    (queue.parent / "items.jsonl").write_text('{"item": 1}\n')
    place = "items.jsonl" if command == "import" else "dst"
    before = files(queue.parent)
    result = run(command, queue, place, "--engine", "NoSuchEngine", cwd=queue.parent)
    failed(result, "unknown engine 'NoSuchEngine'", "DbmEngine")
    assert files(queue.parent) == before


@pytest.mark.parametrize("command", [*ALL, ("import",)], ids=lambda command: command[0])
def test_a_queue_open_in_another_process_is_refused_naming_it(
    queue: Path, command: tuple[str, ...]
) -> None:
    (queue.parent / "items.jsonl").write_text('{"item": 1}\n')
    before = files(queue.parent)

    async def run_while_open() -> subprocess.CompletedProcess[str]:
        async with await Queue.create(queue):
            return await asyncio.to_thread(run, *arguments(command, queue), cwd=queue.parent)

    result = asyncio.run(run_while_open())
    if command[0] == "info":
        assert f"yes, by process {os.getpid()}" in succeeded(result)
    else:
        failed(result, f"{queue} is open in process {os.getpid()}")
    assert files(queue.parent) == before


def test_a_sqlite_queue_that_other_processes_share_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    fill(path, JSON_ITEMS, SharedSqliteEngine)

    async def export_while_shared() -> subprocess.CompletedProcess[str]:
        async with await Queue.create(path, cls_storage_engine=SharedSqliteEngine):
            return await asyncio.to_thread(run, "export", path, cwd=tmp_path)

    failed(asyncio.run(export_while_shared()), "open in other processes (shared)")


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("command", [*ALL, ("import",)], ids=lambda command: command[0])
def test_a_damaged_queue_is_reported_and_left_as_it_was(
    tmp_path: Path, engine: str, command: tuple[str, ...]
) -> None:
    path = tmp_path / "q"
    fill(path, ["intact", "damaged-item-0123456789", "intact"], ENGINES[engine])
    damage(path, b"damaged-item-0123456789")
    (tmp_path / "items.jsonl").write_text('{"item": 1}\n')
    before = files(tmp_path)
    failed(run(*arguments(command, "q"), cwd=tmp_path), "is damaged", "nothing was changed")
    assert files(tmp_path) == before


def test_an_export_whose_reader_leaves_ends_without_a_word(tmp_path: Path) -> None:
    fill(tmp_path / "q", ["x" * 100] * BIG)  # more than a pipe holds
    process = subprocess.Popen(
        [sys.executable, "-m", "aiodiskqueue", "export", "q"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENVIRONMENT,
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith(b'{"item": "xxx')
    process.stdout.close()
    _, errors = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 1
    assert errors == b""


# Progress


def test_a_long_export_is_quiet_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    fill(tmp_path / "q", range(BIG))
    assert succeeded(run("export", "q", "-o", "out.jsonl", cwd=tmp_path)) == ""
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == BIG


def test_a_long_import_and_migrate_are_quiet_when_stderr_is_not_a_terminal(
    tmp_path: Path,
) -> None:
    (tmp_path / "items.jsonl").write_text("".join(f'{{"item": {n}}}\n' for n in range(BIG)))
    succeeded(run("import", "q", "items.jsonl", cwd=tmp_path))
    succeeded(run("migrate", "q", "copy", "--engine", "PickledList", cwd=tmp_path))
    assert items(tmp_path / "copy") == list(range(BIG))


@pytest.mark.parametrize(("count", "drawn"), [(BIG, True), (100, False)])
def test_export_draws_a_progress_bar_on_a_terminal_for_long_queues_only(
    tmp_path: Path, count: int, drawn: bool
) -> None:
    fill(tmp_path / "q", range(count))
    shown = on_terminal(["export", "q", "-o", "out.jsonl"], cwd=tmp_path)
    if drawn:
        assert "\rexport [" in shown
        assert f"100% {count:,}/{count:,}" in shown
    else:
        assert shown == ""


def on_terminal(args: list[str], cwd: Path) -> str:
    """Run the command with its stderr on a pseudo-terminal; return what it showed there."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "aiodiskqueue", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        env=ENVIRONMENT,
    )
    os.close(terminal)
    shown = b""
    try:
        while select.select([controller], [], [], TIMEOUT)[0]:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the command ended and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        assert process.wait(timeout=TIMEOUT) == 0
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
    return shown.decode()


# drop (local queues)


def test_drop_without_yes_refuses_and_changes_nothing(queue: Path) -> None:
    before = files(queue.parent)
    failed(run("drop", queue.name, cwd=queue.parent), "--yes")
    assert files(queue.parent) == before


@pytest.mark.parametrize("engine", list(FILE_ENGINES))
def test_drop_yes_deletes_every_file_of_the_queue(tmp_path: Path, engine: str) -> None:
    fill(tmp_path / "q", JSON_ITEMS, FILE_ENGINES[engine])
    (tmp_path / "other").write_text("not the queue's")
    queue_files = {file.name for file in detect(tmp_path / "q").files} | {"q.bak"}  # dbm.dumb's
    output = succeeded(run("drop", "q", "--yes", cwd=tmp_path))
    assert output.startswith("dropped q: deleted ")
    deleted = output.strip().split(": deleted ")[1].split(", ")
    assert "q" in deleted or "q.dat" in deleted
    assert set(deleted) <= queue_files
    assert files(tmp_path) == {"other": b"not the queue's"}  # the lock file stays
    failed(run("info", "q", cwd=tmp_path), "no queue at q")


def test_drop_refuses_a_queue_open_in_another_process(queue: Path) -> None:
    before = files(queue.parent)

    async def drop_while_open() -> subprocess.CompletedProcess[str]:
        async with await Queue.create(queue):
            return await asyncio.to_thread(run, "drop", queue.name, "--yes", cwd=queue.parent)

    failed(asyncio.run(drop_while_open()), f"is open in process {os.getpid()}")
    assert files(queue.parent) == before


def test_drop_refuses_a_sqlite_queue_that_other_processes_share(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    fill(path, JSON_ITEMS, SharedSqliteEngine)

    async def drop_while_shared() -> subprocess.CompletedProcess[str]:
        async with await Queue.create(path, cls_storage_engine=SharedSqliteEngine):
            return await asyncio.to_thread(run, "drop", path.name, "--yes", cwd=tmp_path)

    failed(asyncio.run(drop_while_shared()), "open in other processes (shared)")
    assert items(path) == JSON_ITEMS


def test_drop_deletes_a_damaged_queue(tmp_path: Path) -> None:
    fill(tmp_path / "q", ["intact", "damaged-item-0123456789"])
    damage(tmp_path / "q", b"damaged-item-0123456789")
    succeeded(run("drop", "q", "--yes", cwd=tmp_path))
    assert files(tmp_path) == {}


# Queues on servers: every command works on them as on files


@pytest.fixture(params=list(SERVERS))
async def on_server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    """A server engine's name and the address of a queue of the test's own on its server."""
    async with SERVERS[request.param]() as address:
        yield request.param, address


async def put_on_server(address: str, engine: str, values: Iterable[Any], **options: Any) -> None:
    cls = getattr(engines, engine)
    async with await Queue.create(address, cls_storage_engine=cls, **options) as remote:
        for value in values:
            await asyncio.wait_for(remote.put(value), TIMEOUT)


async def listed_on_server(address: str, engine: str) -> list[bytes] | None:
    """The stored bytes of the items of the queue at `address`, taking none; None if there is
    no queue there."""
    store = getattr(engines, engine)(address)
    if not await store.exists():
        return None
    await store.open()
    try:
        return [data async for data in store.items()]
    finally:
        await store.close()


async def command(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run, *args, cwd=cwd)


async def test_info_describes_a_queue_on_a_server(
    on_server: tuple[str, str], tmp_path: Path
) -> None:
    engine, address = on_server
    await put_on_server(address, engine, JSON_ITEMS, serializer=JsonSerializer())
    output = succeeded(await command("info", address, cwd=tmp_path))
    facts = dict(re.findall(r"^([^:]+): +(.*)$", output, re.MULTILINE))
    assert facts == {
        "address": address,
        "engine": engine,
        "serializer": "json",
        "items": str(len(JSON_ITEMS)),
    }
    as_json = json.loads(succeeded(await command("info", address, "--json", cwd=tmp_path)))
    assert as_json["engines"] == [engine]
    assert (as_json["path"], as_json["items"], as_json["serializer"]) == (
        address,
        len(JSON_ITEMS),
        "json",
    )


async def test_peek_prints_the_first_items_of_a_queue_on_a_server_and_leaves_them(
    on_server: tuple[str, str], tmp_path: Path
) -> None:
    engine, address = on_server
    await put_on_server(address, engine, JSON_ITEMS)
    before = await listed_on_server(address, engine)
    output = succeeded(await command("peek", address, "-n", "3", cwd=tmp_path))
    assert output.splitlines() == [repr(item) for item in JSON_ITEMS[:3]]
    peeked = succeeded(await command("peek", address, "--json", "-n", "100", cwd=tmp_path))
    assert peeked == succeeded(await command("export", address, cwd=tmp_path))
    assert await listed_on_server(address, engine) == before


async def test_export_then_import_copies_a_queue_between_servers_and_files(
    on_server: tuple[str, str], tmp_path: Path
) -> None:
    engine, address = on_server
    originals = [*JSON_ITEMS, *NOT_JSON_ITEMS]
    await put_on_server(address, engine, originals)
    before = await listed_on_server(address, engine)
    assert succeeded(await command("export", address, "-o", "out.jsonl", cwd=tmp_path)) == ""
    assert await listed_on_server(address, engine) == before
    succeeded(await command("import", "copy", "out.jsonl", cwd=tmp_path))
    assert await asyncio.to_thread(stored, tmp_path / "copy") == before


async def test_migrate_copies_a_queue_on_a_server_to_a_file_and_leaves_it(
    on_server: tuple[str, str], tmp_path: Path
) -> None:
    engine, address = on_server
    originals = [*JSON_ITEMS, *range(1200)]  # more than one batch
    await put_on_server(address, engine, originals)
    before = await listed_on_server(address, engine)
    output = succeeded(
        await command("migrate", address, "dst", "--engine", "PickledList", cwd=tmp_path)
    )
    assert output == f"copied {len(originals)} item(s) from {address} to dst\n"
    assert await asyncio.to_thread(stored, tmp_path / "dst") == before
    assert await listed_on_server(address, engine) == before


async def test_migrate_move_moves_a_queue_from_one_server_to_the_other(tmp_path: Path) -> None:
    async with redis_queue() as on_redis, postgres_queue() as on_postgres:
        await put_on_server(on_redis, "RedisEngine", JSON_ITEMS)
        before = await listed_on_server(on_redis, "RedisEngine")
        arguments = ("migrate", on_redis, on_postgres, "--engine", "PostgresEngine", "--move")
        output = succeeded(await command(*arguments, cwd=tmp_path))
        assert output.startswith(f"moved {len(JSON_ITEMS)} item(s)")
        assert await listed_on_server(on_postgres, "PostgresEngine") == before
        assert await listed_on_server(on_redis, "RedisEngine") == []


async def test_purge_empties_a_queue_on_a_server_and_keeps_its_serializer(
    on_server: tuple[str, str], tmp_path: Path
) -> None:
    engine, address = on_server
    await put_on_server(address, engine, JSON_ITEMS, serializer=JsonSerializer())
    output = succeeded(await command("purge", address, "--yes", cwd=tmp_path))
    assert output == f"removed {len(JSON_ITEMS)} item(s) from {address}\n"
    assert await listed_on_server(address, engine) == []
    (tmp_path / "items.jsonl").write_text('{"item": 1}\n')
    failed(
        await command("import", address, "items.jsonl", "--serializer", "pickle", cwd=tmp_path),
        "'json' serializer, not 'pickle'",
    )


async def test_drop_deletes_a_queue_on_a_server(on_server: tuple[str, str], tmp_path: Path) -> None:
    engine, address = on_server
    await put_on_server(address, engine, JSON_ITEMS)
    failed(await command("drop", address, cwd=tmp_path), "--yes")
    assert await listed_on_server(address, engine) is not None
    output = succeeded(await command("drop", address, "--yes", cwd=tmp_path))
    assert output == f"dropped {address}, which held {len(JSON_ITEMS)} item(s)\n"
    assert await listed_on_server(address, engine) is None


@pytest.mark.parametrize("command_line", [*READERS, ("drop", "--yes"), ("migrate",)])
async def test_a_missing_queue_on_a_server_is_reported_and_not_created(
    on_server: tuple[str, str], tmp_path: Path, command_line: tuple[str, ...]
) -> None:
    engine, address = on_server
    failed(await command(*arguments(command_line, address), cwd=tmp_path), f"no queue at {address}")
    assert await listed_on_server(address, engine) is None
    assert list(tmp_path.iterdir()) == []


async def test_migrate_refuses_the_same_server_queue_however_its_address_is_written(
    tmp_path: Path,
) -> None:
    async with redis_queue() as address:
        other_form = address.replace("redis://", "redis://:pw@") + "?socket_timeout=5"
        result = await command(
            "migrate", address, other_form, "--engine", "RedisEngine", cwd=tmp_path
        )
        failed(result, "are the same queue")


async def test_a_move_from_a_server_stops_when_another_user_took_an_item_meanwhile(
    tmp_path: Path,
) -> None:
    from aiodiskqueue.cli.stores import CliError, reading

    async with redis_queue() as address:
        await put_on_server(address, "RedisEngine", ["one", "two", "three"])
        other = engines.RedisEngine(address)
        await other.open()
        try:
            async with reading(address) as source:
                read = [batch async for batch in source.batches(remember=True)]
                assert await other.get() == read[0][0]  # another user takes the first
                with pytest.raises(CliError, match="changed while its items were moved") as raised:
                    await source.remove_read()
            assert "0 of the 3 item(s) copied were removed" in str(raised.value)
        finally:
            await other.close()
        # Nothing is lost: the item found instead of the first is back, at the tail.
        assert await listed_on_server(address, "RedisEngine") == [read[0][2], read[0][1]]


async def test_a_server_that_refuses_the_connection_is_reported_in_one_line(
    tmp_path: Path,
) -> None:
    async with postgres_queue() as address:
        elsewhere = re.sub(r"/[^/]+/([^/]+)$", r"/no_such_database/\1", address)
        line = failed(await command("info", elsewhere, cwd=tmp_path))
        assert 'database "no_such_database" does not exist' in line
