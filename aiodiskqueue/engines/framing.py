"""Framed records: each record carries its length and a checksum, so damage is detected.

A frame is a 16-byte header, then the record's data::

    length   4 bytes, little-endian: the length of data
    checksum 4 bytes, little-endian: CRC-32 of the key's 8 bytes followed by data
    key      8 bytes, little-endian
    data     length bytes

Frames stand one after the other. A frame that fails its checksum is never returned as a
record; reading stops at the first frame that is cut short or does not carry the expected
key (a torn write, damage to a header, or the zero padding after the last frame).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from .base import Record

_HEADER = struct.Struct("<IIQ")
_KEY = struct.Struct("<Q")
HEADER_SIZE = _HEADER.size


def frame(record: Record) -> bytes:
    """Return `record` as a frame."""
    checksum = zlib.crc32(record.data, zlib.crc32(_KEY.pack(record.key)))
    return _HEADER.pack(len(record.data), checksum, record.key) + record.data


def scan(buffer: bytes, first_key: int) -> Iterator[tuple[int, bytes | None, int]]:
    """Yield ``(key, data, end)`` for the frames at the start of `buffer`, keys from `first_key`.

    `data` is None for a frame whose checksum fails: its header is whole, so the frames
    after it are still found. `end` is the offset just past the frame. Stops before the
    first frame that is incomplete or does not carry the next key.
    """
    offset, expected_key, end = 0, first_key, len(buffer)
    view = memoryview(buffer)
    while offset + HEADER_SIZE <= end:
        length, checksum, key = _HEADER.unpack_from(buffer, offset)
        start = offset + HEADER_SIZE
        if key != expected_key or start + length > end:
            return
        data = bytes(view[start : start + length])
        intact = zlib.crc32(data, zlib.crc32(_KEY.pack(key))) == checksum
        offset, expected_key = start + length, key + 1
        yield key, data if intact else None, offset


def unframe(buffer: bytes, first_key: int) -> Iterator[Record]:
    """Yield the intact records framed at the start of `buffer`, keys from `first_key`."""
    for key, data, _ in scan(buffer, first_key):
        if data is not None:
            yield Record(key, data)


def first_key(buffer: bytes) -> int:
    """Return the key in the first frame's header of `buffer` (0 if there is none)."""
    if len(buffer) < HEADER_SIZE:
        return 0
    return int(_HEADER.unpack_from(buffer)[2])
