"""The export format: one JSON object per line for each item, and how items become lines.

A line is one of::

    {"item": <the item as a JSON value>}
    {"serialized": "<base64 of the stored bytes>", "serializer": "<the queue's serializer>"}

An item is written in the first form when its value is plain JSON (dicts with string keys,
lists, strings, numbers, booleans, None, with no container twice) so that importing it gives
back an equal value of the same types; any other item (a tuple, a set, an object, one that
cannot be decoded here, or every item with ``raw``) is written in the second form, whose
bytes an import appends as they are. So nothing is dropped or changed by an export and an
import.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from typing import Any

from ..exceptions import SerializationError
from ..serializers import JsonSerializer, PickleSerializer, Serializer

__all__ = ["DEFAULT_SERIALIZER", "BadLine", "ItemCodec"]

DEFAULT_SERIALIZER = "pickle"
"""The serializer of a queue whose meta names none, as `Queue.create` treats it."""

_SERIALIZERS: dict[str, Serializer[Any]] = {
    "pickle": PickleSerializer(),
    "json": JsonSerializer(),
}


class BadLine(ValueError):
    """A line of an export file that cannot be imported; the message says why."""


class ItemCodec:
    """Turns a queue's stored items into export lines and text, and export lines into bytes.

    `serializer` is the name a queue keeps in its meta. Items of a serializer this module
    does not know are never decoded: they are exported as their bytes. With `raw`, no item
    is decoded (and so no pickle is loaded).
    """

    def __init__(self, serializer: str, *, raw: bool = False) -> None:
        self.name = serializer
        self._serializer = _SERIALIZERS.get(serializer)
        self._raw = raw

    @classmethod
    def of(cls, meta: Mapping[str, str], *, raw: bool = False) -> ItemCodec:
        """The codec for a queue with `meta`."""
        return cls(meta.get("serializer", DEFAULT_SERIALIZER), raw=raw)

    # Export

    def line(self, data: bytes) -> str:
        """Return the export line (without its newline) of an item stored as `data`."""
        value = self._decode(data)
        if value is not _UNDECODED and _plain_json(value):
            try:
                return '{"item": ' + _dumps(value) + "}"
            except (TypeError, ValueError, RecursionError):
                pass  # too deep to write: keep its bytes
        encoded = base64.b64encode(data).decode("ascii")
        return _dumps({"serialized": encoded, "serializer": self.name})

    def text(self, data: bytes) -> str:
        """Return the `repr` of the item stored as `data`, or a note saying why there is none."""
        if self._raw:
            return repr(data)
        value = self._decode(data)
        if value is _UNDECODED:
            return f"<{len(data)} bytes of {self.name!r} that cannot be decoded here>"
        return repr(value)

    def _decode(self, data: bytes) -> Any:
        if self._raw or self._serializer is None:
            return _UNDECODED
        try:
            return self._serializer.loads(data)
        except Exception:  # anything unpickling raises: a class that is not importable here
            return _UNDECODED

    # Import

    def parse(self, text: str) -> bytes:
        """Return the bytes to store for the export line `text`; raise `BadLine` if it is not one.

        An ``item`` is serialised with this codec's serializer; ``serialized`` bytes must
        have been stored with it.
        """
        try:
            content = json.loads(text, parse_constant=_refuse_constant)
        except ValueError as exc:  # JSONDecodeError included
            raise BadLine(f"not JSON ({exc})") from None
        if not isinstance(content, dict):
            raise BadLine("not a JSON object")
        if content.keys() == {"item"}:
            return self._serialize(content["item"])
        if content.keys() == {"serialized", "serializer"}:
            return self._bytes(content["serialized"], content["serializer"])
        raise BadLine(
            'expected {"item": ...} or {"serialized": ..., "serializer": ...}, '
            f"not an object with the keys {sorted(content)}"
        )

    def _serialize(self, value: Any) -> bytes:
        if self._serializer is None:
            raise BadLine(
                f"the queue's serializer {self.name!r} is not one this command knows: "
                'only {"serialized": ...} lines can be imported into it'
            )
        try:
            return self._serializer.dumps(value)
        except SerializationError as exc:
            raise BadLine(str(exc)) from None

    def _bytes(self, encoded: object, serializer: object) -> bytes:
        if serializer != self.name:
            raise BadLine(
                f"its bytes were stored with the {serializer!r} serializer, "
                f"and the queue's is {self.name!r}"
            )
        if not isinstance(encoded, str):
            raise BadLine('"serialized" is not a string')
        try:
            return base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise BadLine(f'"serialized" is not base64 ({exc})') from None


_UNDECODED = object()


def _dumps(value: Any) -> str:
    # ASCII only, so that every line survives any terminal or file encoding unchanged,
    # lone surrogates included.
    return json.dumps(value, ensure_ascii=True, allow_nan=False)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _plain_json(value: Any) -> bool:
    """True if JSON gives `value` back equal and of the same types, with nothing shared.

    Exact types only: a tuple would come back a list, an `OrderedDict` a dict, an `IntEnum`
    an int. A container that appears twice would come back as two.
    """
    seen: set[int] = set()
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is float:
            if not math.isfinite(item):
                return False
        elif kind in (dict, list):
            if id(item) in seen:
                return False
            seen.add(id(item))
            if kind is dict:
                if any(type(key) is not str for key in item):
                    return False
                pending.extend(item.values())
            else:
                pending.extend(item)
        elif kind not in (str, int, bool, type(None)):
            return False
    return True
