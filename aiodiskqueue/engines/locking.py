"""One queue, one owner: an exclusive lock on a queue's files while it is open.

The lock is a POSIX `flock` on ``<queue path>.lock``, which holds the owner's process id.
The operating system releases it when the owner closes it or dies, so a killed process
never leaves a stale lock behind. A second opener, in the same process or another, gets
`QueueLockedError` naming the path and the owner.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..exceptions import QueueLockedError
from .files import PRIVATE_MODE


class QueueLock:
    """An exclusive lock on the queue stored at a path."""

    def __init__(self, queue_path: Path) -> None:
        self.queue_path = queue_path
        self.path = queue_path.with_name(queue_path.name + ".lock")
        self._descriptor: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise `QueueLockedError` at once if someone holds it."""
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, PRIVATE_MODE)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(descriptor, 32).decode(errors="replace").strip()
            os.close(descriptor)
            raise QueueLockedError(
                f"{self.queue_path} is already open in another Queue"
                + (f" (process {owner})" if owner else "")
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._descriptor = descriptor

    def release(self) -> None:
        """Let the lock go (the lock file stays: removing it would race with a new owner)."""
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None
