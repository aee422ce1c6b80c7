"""Dead letters: the items a queue could not deserialise, kept beside it.

A `get()` that meets bytes its serializer cannot read raises `SerializationError` (with the
bytes in its `data`), and the item leaves the queue, so that the items behind it flow. It is
not deleted: it is appended to the queue's dead-letter file,
``<queue path>.aiodiskqueue-dead-letters`` (a name no queue can have), a file of JSON lines,
one per item::

    {"at": "2026-12-03T08:55:00+00:00", "serializer": "json", "error": "...", "data": "<base64>"}

Each line is written whole, with one ``write()``, and handed to the operating system (and
flushed to the disk with ``durability="power-loss"``) before the item's removal is stored:
a crash in between leaves the item in both places, never in neither. A line cut short by a
crash is passed over when the file is read. The file is private to its owner (0600), and
``aiodiskqueue dead-letters PATH`` lists what it holds.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .engines.storage.files import auxiliary_path, open_auxiliary

__all__ = ["DeadLetter", "append", "dead_letters_path", "read"]

DeadLetter = dict[str, Any]
"""One line of the file: ``at``, ``serializer``, ``error`` and ``data`` (the raw bytes)."""


def dead_letters_path(queue_path: Path) -> Path:
    """The dead-letter file of the queue stored at `queue_path`."""
    return auxiliary_path(queue_path, "dead-letters")


def append(path: Path, data: bytes, *, serializer: str, error: str, fsync: bool) -> None:
    """Append one dead letter to the file at `path` (blocking: run it off the event loop)."""
    line = json.dumps(
        {
            "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "serializer": serializer,
            "error": error,
            "data": base64.b64encode(data).decode("ascii"),
        }
    )
    descriptor = open_auxiliary(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(descriptor, f"{line}\n".encode())
        if fsync:
            os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read(path: Path) -> Iterator[DeadLetter]:
    """The dead letters in the file at `path`, oldest first, with ``data`` as bytes.

    Lines that are not whole (cut short by a crash) are passed over.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    with os.fdopen(descriptor, "rb") as file:
        for line in file:
            try:
                letter = json.loads(line)
                letter["data"] = base64.b64decode(letter["data"], validate=True)
            except (ValueError, KeyError, TypeError, binascii.Error):
                continue
            yield letter
