"""How items become the bytes that engines store, and back.

A serializer is any object with a `name` and the methods `dumps(item) -> bytes` and
`loads(data) -> item`. `Queue` calls `dumps` when an item is put, so an item that cannot
be stored is refused at once, before anything changes, and `loads` when an item is handed
out. A queue keeps its serializer's `name` and refuses to be opened with another one.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol, TypeVar

from .exceptions import QueueUsageError, SerializationError

__all__ = ["JsonSerializer", "PickleSerializer", "Serializer", "check_serializer"]

T = TypeVar("T")


class Serializer(Protocol[T]):
    """Turns items into bytes and back; `loads(dumps(item))` must equal `item`."""

    @property
    def name(self) -> str:
        """Names the format, which a queue keeps: change it when the format changes."""

    def dumps(self, item: T) -> bytes:
        """Return `item` as bytes; raise `SerializationError` if it cannot be."""

    def loads(self, data: bytes) -> T:
        """Return the item that `dumps` turned into `data`."""


def check_serializer(serializer: Any) -> Any:
    """Return `serializer` if it is one; raise `TypeError` saying what is wrong if not."""
    if isinstance(serializer, type):
        raise QueueUsageError(
            f"serializer must be an instance, not the class {serializer.__name__}: "
            f"pass serializer={serializer.__name__}()"
        )
    missing = [
        attribute for attribute in ("name", "dumps", "loads") if not hasattr(serializer, attribute)
    ]
    if missing or not isinstance(serializer.name, str):
        raise TypeError(
            f"{serializer!r} is not a serializer: it needs a str `name`, `dumps(item) -> bytes` "
            f"and `loads(data) -> item` (missing: {', '.join(missing) or 'a str name'})"
        )
    return serializer


class PickleSerializer:
    """Stores any picklable object with `pickle`'s highest protocol (the default).

    Unpickling runs code chosen by whoever wrote the data: a queue file written by someone
    you do not trust can run anything when an item is got. Use `JsonSerializer` then.
    """

    name = "pickle"

    def dumps(self, item: Any) -> bytes:
        try:
            return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            raise SerializationError(
                f"cannot store an item of type {type(item).__name__}: {exc}"
            ) from exc

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)


class JsonSerializer:
    """Stores JSON values (dicts, lists, strings, numbers, booleans, None) as UTF-8 JSON.

    Safe with queue files that someone else may have written: reading JSON runs no code.
    Tuples come back as lists, as `json` does.
    """

    name = "json"

    def dumps(self, item: Any) -> bytes:
        try:
            return json.dumps(item, ensure_ascii=False, allow_nan=False).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(
                f"cannot store an item of type {type(item).__name__} as JSON: {exc}"
            ) from exc

    def loads(self, data: bytes) -> Any:
        return json.loads(data)
