"""Mistakes get an error that names the problem and the fix, before anything changes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from aiodiskqueue import (
    AioDiskQueueError,
    JsonSerializer,
    Queue,
    QueueUsageError,
    SerializationError,
    SerializerMismatchError,
)
from aiodiskqueue.engines import SharedSqliteEngine

from .helpers import within


async def test_a_json_queue_opened_with_the_default_serializer_names_json_serializer(
    path: Path,
) -> None:
    async with await Queue.create(path, serializer=JsonSerializer()) as queue:
        await queue.put(1)
    with pytest.raises(SerializerMismatchError, match=r"pass serializer=JsonSerializer\(\)"):
        await Queue.create(path)
    async with await Queue.create(path, serializer=JsonSerializer()) as queue:
        assert await within(queue.get()) == 1


def test_a_serializer_mismatch_is_a_value_error_of_the_library() -> None:
    assert issubclass(SerializerMismatchError, ValueError)
    assert issubclass(SerializerMismatchError, AioDiskQueueError)


async def test_the_serializer_class_instead_of_an_instance_says_what_to_pass(path: Path) -> None:
    with pytest.raises(QueueUsageError, match=r"pass serializer=JsonSerializer\(\)"):
        await Queue.create(path, serializer=JsonSerializer)  # type: ignore[arg-type]


async def test_a_path_in_a_missing_directory_names_the_directory(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match="create it first") as raised:
        await Queue.create(missing / "q.queue")
    assert raised.value.filename == str(missing)
    assert not missing.exists()


@pytest.mark.parametrize("maxsize", ["3", 2.5, None])
async def test_a_maxsize_that_is_no_int_is_refused_at_create(path: Path, maxsize: object) -> None:
    with pytest.raises(TypeError, match="maxsize must be an int"):
        await Queue.create(path, maxsize=maxsize)  # type: ignore[arg-type]


async def test_an_item_nested_too_deep_raises_serialization_error(path: Path) -> None:
    item: list[object] = []
    for _ in range(100_000):
        item = [item]
    async with await Queue.create(path) as queue:
        with pytest.raises(SerializationError):
            await queue.put(item)
        assert queue.qsize() == 0


def run(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiodiskqueue", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


def test_importing_a_directory_says_it_is_one(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    done = run("import", "new.queue", "adir", cwd=tmp_path)
    assert done.returncode == 1
    assert "adir is a directory, not a file of JSON lines" in done.stderr
    assert "Errno" not in done.stderr


def test_importing_into_a_shared_sqlite_queue_in_use_suggests_the_engine(tmp_path: Path) -> None:
    (tmp_path / "items.jsonl").write_text('{"a": 1}\n')

    async def import_while_shared() -> subprocess.CompletedProcess[str]:
        async with await Queue.create(tmp_path / "s.sqlite", cls_storage_engine=SharedSqliteEngine):
            return await asyncio.to_thread(run, "import", "s.sqlite", "items.jsonl", cwd=tmp_path)

    done = asyncio.run(import_while_shared())
    assert done.returncode == 1
    assert "pass --engine SharedSqliteEngine" in done.stderr
