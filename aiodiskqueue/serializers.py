"""How items become the bytes that engines store, and back.

A serializer is any object with `dumps(item) -> bytes` and `loads(data) -> item`. `Queue`
calls `dumps` when an item is put, so an item that cannot be stored is refused at once,
before anything changes, and `loads` when an item is handed out.
"""

from __future__ import annotations

import pickle
from typing import Any, Protocol, TypeVar

from .exceptions import SerializationError

__all__ = ["PickleSerializer", "Serializer"]

T = TypeVar("T")


class Serializer(Protocol[T]):
    """Turns items into bytes and back; `loads(dumps(item))` must equal `item`."""

    def dumps(self, item: T) -> bytes:
        """Return `item` as bytes; raise `SerializationError` if it cannot be."""

    def loads(self, data: bytes) -> T:
        """Return the item that `dumps` turned into `data`."""


class PickleSerializer:
    """Stores any picklable object with `pickle`'s highest protocol (the default).

    Unpickling runs code chosen by whoever wrote the data: open only queue files that
    you or your own programs wrote.
    """

    def dumps(self, item: Any) -> bytes:
        try:
            return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise SerializationError(
                f"cannot store an item of type {type(item).__name__}: {exc}"
            ) from exc

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)
