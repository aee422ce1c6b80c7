"""File operations that engines share: private files, atomic replacement, flushing to the disk."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_MODE = 0o600
"""Queue files hold users' data: readable and writable by their owner only."""


def write_atomically(path: Path, data: bytes, *, fsync: bool = False) -> None:
    """Replace `path` with `data`, so that a crash leaves either the old or the new file.

    The data goes to a temporary file beside `path`, is flushed to the operating system,
    then renamed over `path` (an atomic step on POSIX and Windows). With `fsync`, the data
    is on the disk before the rename and the rename is on the disk when this returns, so a
    power loss too leaves the old or the new file.
    """
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
        if fsync:
            file.flush()
            os.fsync(file.fileno())
    replace(temporary, path, fsync=fsync)


def replace(source: Path, target: Path, *, fsync: bool = False) -> None:
    """Rename `source` over `target`; with `fsync`, the new directory entry is on the disk."""
    os.replace(source, target)
    if fsync:
        fsync_directory(target.parent)


def fsync_file(path: Path) -> None:
    """Flush what was written to `path`, through any descriptor, to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_directory(path: Path) -> None:
    """Flush the entries of directory `path` (files created, renamed or removed) to the disk."""
    fsync_file(path)


def create_private(path: Path) -> None:
    """Create `path` empty and private to its owner, unless it exists."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
