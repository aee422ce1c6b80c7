"""An item that cannot be deserialised leaves the queue for its dead letters; the rest flow.

Nothing is deleted without a trace: the bytes are in `SerializationError.data` and in the
queue's dead-letter file, which `aiodiskqueue.dead_letters.read` (and the command line) lists.
"""

from __future__ import annotations

import base64
import json
import logging
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from aiodiskqueue import JsonSerializer, Queue, SerializationError, dead_letters
from aiodiskqueue.engines import OpenOptions, Record, StorageEngine

from .helpers import drain, within

Engine = Callable[[Path], StorageEngine]
NOT_JSON = b"\xff not json"


async def store(engine: Engine, path: Path, serializer: str, *data: bytes) -> None:
    """Store `data` as the queue's items, as a writer with another serializer might have."""
    stored = engine(path)
    await stored.open(OpenOptions(meta={"serializer": serializer}))
    await stored.commit([Record(key, each) for key, each in enumerate(data, start=1)], [])
    await stored.close()


async def open_json(engine: Engine, path: Path) -> Queue[object]:
    return await Queue.create(path, cls_storage_engine=engine, serializer=JsonSerializer())


async def test_get_raises_serialization_error_carrying_the_bytes(
    engine: Engine, path: Path
) -> None:
    await store(engine, path, "json", NOT_JSON, b'"next"')
    async with await open_json(engine, path) as queue:
        with pytest.raises(SerializationError) as raised:
            await within(queue.get())
        assert raised.value.data == NOT_JSON


async def test_the_items_behind_an_unreadable_item_flow(engine: Engine, path: Path) -> None:
    await store(engine, path, "json", NOT_JSON, b'"next"')
    async with await open_json(engine, path) as queue:
        with pytest.raises(SerializationError):
            queue.get_nowait()
        assert queue.qsize() == 1
        assert await within(queue.get()) == "next"


async def test_an_unreadable_item_is_kept_in_the_dead_letters_not_in_the_queue(
    engine: Engine, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await store(engine, path, "json", b'"first"', NOT_JSON, b'"last"')
    async with await open_json(engine, path) as queue:
        assert queue.get_nowait() == "first"
        with (
            caplog.at_level(logging.WARNING, logger="aiodiskqueue"),
            pytest.raises(SerializationError, match="dead-letters"),
        ):
            queue.get_nowait()
    letters = list(dead_letters.read(dead_letters.dead_letters_path(path)))
    assert [(letter["data"], letter["serializer"]) for letter in letters] == [(NOT_JSON, "json")]
    assert "moved an unreadable item" in caplog.text
    async with await open_json(engine, path) as queue:
        assert await drain(queue) == ["last"]


async def test_a_pickled_object_whose_class_is_gone_goes_to_the_dead_letters(
    engine: Engine, path: Path
) -> None:
    gone = pickle.dumps(Path("x")).replace(b"pathlib", b"nolib__")
    await store(engine, path, "pickle", gone, pickle.dumps("next"))
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        with pytest.raises(SerializationError):
            await within(queue.get())
        assert await within(queue.get()) == "next"
    assert [
        letter["data"] for letter in dead_letters.read(dead_letters.dead_letters_path(path))
    ] == [gone]


async def test_an_unreadable_item_counts_as_no_task(engine: Engine, path: Path) -> None:
    await store(engine, path, "json", NOT_JSON)
    async with await open_json(engine, path) as queue:
        with pytest.raises(SerializationError):
            queue.get_nowait()
        await within(queue.join())


def test_a_dead_letter_line_cut_short_is_passed_over(tmp_path: Path) -> None:
    path = tmp_path / "q.aiodiskqueue-dead-letters"
    dead_letters.append(path, b"kept", serializer="json", error="bad", fsync=False)
    with path.open("ab") as file:
        file.write(b'{"at": "2026-')
    assert [letter["data"] for letter in dead_letters.read(path)] == [b"kept"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_the_command_line_lists_the_dead_letters_as_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "jobs.queue"
    dead_letters.append(
        dead_letters.dead_letters_path(path), NOT_JSON, serializer="json", error="bad", fsync=False
    )
    done = subprocess.run(
        [sys.executable, "-m", "aiodiskqueue", "dead-letters", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (line,) = done.stdout.splitlines()
    letter = json.loads(line)
    assert (base64.b64decode(letter["data"]), letter["serializer"]) == (NOT_JSON, "json")
