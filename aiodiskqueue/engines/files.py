"""File operations that engines share."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_MODE = 0o600
"""Queue files hold users' data: readable and writable by their owner only."""


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, so that a crash leaves either the old or the new file.

    The data goes to a temporary file beside `path`, is flushed to the operating system,
    then renamed over `path` (an atomic step on POSIX and Windows).
    """
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


def create_private(path: Path) -> None:
    """Create `path` empty and private to its owner, unless it exists."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
