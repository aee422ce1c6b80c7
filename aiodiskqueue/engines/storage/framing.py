"""Framed records: each record carries its length and a checksum, so damage is detected.

A frame is a 16-byte header, then the record's data::

    length   4 bytes, little-endian: the length of data
    checksum 4 bytes, little-endian: CRC-32 of the key's 8 bytes followed by data
    key      8 bytes, little-endian
    data     length bytes

Frames stand one after the other, in increasing key order: consecutive keys, or with gaps
where a store allows them. Only frames that pass their checksum are read. Where a frame is
damaged, cut short or carries a key out of line (a torn write, overwritten bytes, or the
zero padding after the last frame), reading searches on, byte by byte, for the next intact
frame: damage costs the records it touches and no others.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from ..contracts.local import Record

_HEADER = struct.Struct("<IIQ")
_KEY = struct.Struct("<Q")
HEADER_SIZE = _HEADER.size
MAX_KEY = 2**63 - 1


def checksum(key: int, data: bytes | memoryview) -> int:
    """Return the CRC-32 that a frame of the record `key`, `data` carries."""
    return zlib.crc32(data, zlib.crc32(_KEY.pack(key)))


def frame(record: Record) -> bytes:
    """Return `record` as a frame."""
    return _HEADER.pack(len(record.data), checksum(*record), record.key) + record.data


def scan(
    buffer: bytes, first_key: int, *, gaps: bool = False, last_key: int = MAX_KEY
) -> Iterator[tuple[int, bytes, int]]:
    """Yield ``(key, data, end)`` for each intact frame in `buffer`, in order.

    The first key is `first_key`, and each frame's key is one more than the one before it;
    with `gaps`, keys from `first_key` on increase by any step. No key exceeds `last_key`.
    `end` is the offset just past the frame. After damage, the search for the next intact
    frame accepts, without `gaps`, as many skipped keys as frames could fit in the skipped
    bytes, so a stray match far off is refused.
    """
    view, size = memoryview(buffer), len(buffer)
    offset = resumed = 0  # where the frame being read begins, and where the search began
    previous = first_key - 1
    content_end = -1  # where trailing zero bytes begin; found when first needed
    while offset + HEADER_SIZE <= size:
        length, crc, key = _HEADER.unpack_from(buffer, offset)
        start = offset + HEADER_SIZE
        highest = (
            last_key if gaps else min(last_key, previous + 1 + (offset - resumed) // HEADER_SIZE)
        )
        if previous < key <= highest and start + length <= size:
            data = view[start : start + length]
            if checksum(key, data) == crc:
                yield key, bytes(data), start + length
                offset = resumed = start + length
                previous = key
                continue
        if content_end < 0:
            # A frame's header holds a key above 0, so no frame starts in the zeros at the end.
            content_end = len(bytes(view[offset:]).rstrip(b"\0")) + offset
        offset += 1
        if offset >= content_end:
            return


def unframe(
    buffer: bytes, first_key: int, *, gaps: bool = False, last_key: int = MAX_KEY
) -> Iterator[Record]:
    """Yield the intact records framed in `buffer` (see `scan`)."""
    for key, data, _ in scan(buffer, first_key, gaps=gaps, last_key=last_key):
        yield Record(key, data)
