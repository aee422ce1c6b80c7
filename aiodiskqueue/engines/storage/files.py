"""File operations that engines share: auxiliary file names, private files, atomic
replacement, flushing to the disk."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

PRIVATE_MODE = 0o600
"""Queue files hold users' data: readable and writable by their owner only."""

AUXILIARY_MARKER = ".aiodiskqueue-"
"""What the name of every auxiliary file of a queue has, and no queue's name may have."""
AUXILIARY_KINDS = {
    "lock": "the one-owner lock (see `locking`)",
    "tmp": "a new file being written, renamed over the queue's when complete",
    "dead-letters": "the items that could not be deserialised (see `aiodiskqueue.dead_letters`)",
}
"""Every kind of auxiliary file of the queue at ``<name>``: ``<name>.aiodiskqueue-<kind>``."""


def auxiliary_path(path: Path, kind: str) -> Path:
    """Where the queue at `path` keeps its auxiliary file of `kind` (see `AUXILIARY_KINDS`).

    No queue can be at that path, since `base.check_queue_path` refuses every name that has
    `AUXILIARY_MARKER`; nor at the files that tools make beside it (SQLite's ``-wal``).
    """
    if kind not in AUXILIARY_KINDS:
        raise ValueError(f"unknown kind of auxiliary file: {kind!r}")
    return path.with_name(f"{path.name}{AUXILIARY_MARKER}{kind}")


def open_auxiliary(path: Path, flags: int) -> int:
    """Open the auxiliary file `path`, private to its owner if created, never through a
    symbolic link: one there raises `OSError` (ELOOP), and its target is left alone."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, PRIVATE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(
                errno.ELOOP,
                "is a symbolic link, which aiodiskqueue does not follow for its own files",
                str(path),
            ) from None
        raise


def create_temporary(path: Path) -> int:
    """Create the temporary file `path` afresh, private to its owner, and return its
    descriptor open for writing.

    A file left there (by a killed process, or a symbolic link planted there) is removed
    first, never followed or reused, so no one else can read what is written, and so are
    SQLite's logs of such a file, which SQLite would otherwise apply to the new one.
    """
    for suffix in ("", "-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    # O_EXCL: if a file appears again meanwhile, fail rather than write into it.
    return open_auxiliary(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)


def write_atomically(
    path: Path,
    data: bytes,
    *,
    fsync: bool = False,
    before_replace: Callable[[int], object] | None = None,
) -> None:
    """Replace `path` with `data`, so that a crash leaves either the old or the new file.

    The data goes to a new temporary file beside `path` (`auxiliary_path` ``"tmp"``), is
    flushed to the operating system, then renamed over `path` (an atomic step on POSIX and
    Windows). With `fsync`, the data is on the disk before the rename and the rename is on
    the disk when this returns, so a power loss too leaves the old or the new file.
    `before_replace` is called with the new file's descriptor just before the rename.
    """
    temporary = auxiliary_path(path, "tmp")
    with os.fdopen(create_temporary(temporary), "wb") as file:
        file.write(data)
        file.flush()
        if fsync:
            os.fsync(file.fileno())
        if before_replace is not None:
            before_replace(file.fileno())
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
