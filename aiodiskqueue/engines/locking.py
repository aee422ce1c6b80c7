"""Who may open a queue's files: one owner, or several sharers, never both.

The lock is a POSIX `flock` on ``<queue path>.lock``. An engine with one owner takes it
exclusively and writes its process id into it; a second opener, in the same process or
another, gets `QueueLockedError` naming the path and the owner. Engines that several
queues use at once share it, so that an exclusive opener is refused while they have the
file open, and they are refused while it does. The operating system releases the lock when
its holder closes it or dies, so a killed process never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from ..exceptions import QueueLockedError
from .files import PRIVATE_MODE

OWNER_GRACE = 1.0
"""Seconds a sharer keeps trying while an owner's process id is in the lock file."""


class QueueLock:
    """An exclusive lock on the queue stored at a path."""

    def __init__(self, queue_path: Path) -> None:
        self.queue_path = queue_path
        self.path = queue_path.with_name(queue_path.name + ".lock")
        self._descriptor: int | None = None
        self._owner = False  # holds the lock exclusively, with its process id in the file

    def acquire(self) -> None:
        """Take the lock, or raise `QueueLockedError` at once if someone holds it."""
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, PRIVATE_MODE)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise self._locked() from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._descriptor = descriptor
        self._owner = True

    def acquire_shared(self, patience: float) -> bool:
        """Take the lock to share it; return True if this is the first sharer.

        The first sharer holds the lock exclusively, so that it can check the files alone,
        until it calls `share()`; later sharers wait up to `patience` seconds for that, and
        one of them becomes the first sharer if the first one fails or dies meanwhile.
        Raises `QueueLockedError` if an exclusive owner holds the lock: at once, once its
        process id has been in the file for `OWNER_GRACE` seconds (it may be an earlier
        owner's, until a first sharer replaces it), else after `patience`.
        """
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, PRIVATE_MODE)
        start = time.monotonic()
        owner_seen: float | None = None
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:
                os.ftruncate(descriptor, 0)  # no owner's process id: the lock is shared
                self._descriptor = descriptor
                return True
            try:
                fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                now = time.monotonic()
                has_owner = bool(os.pread(descriptor, 1, 0))
                owner_seen = (owner_seen or now) if has_owner else None
                waited_out = now - start > patience
                if waited_out or (owner_seen is not None and now - owner_seen > OWNER_GRACE):
                    os.close(descriptor)
                    raise self._locked() from None
                time.sleep(0.01)
                continue
            self._descriptor = descriptor
            return False

    def share(self) -> None:
        """Let other sharers in, once the first sharer is done checking the files."""
        if self._descriptor is not None:
            fcntl.flock(self._descriptor, fcntl.LOCK_SH)

    def _locked(self) -> QueueLockedError:
        owner = recorded_owner(self.queue_path)
        holder = (
            f"process {owner}"
            if owner is not None
            else "shared by SharedSqliteEngine queues, which this engine cannot join"
        )
        return QueueLockedError(f"{self.queue_path} is already open in another Queue ({holder})")

    def release(self) -> None:
        """Let the lock go (the lock file stays: removing it would race with a new owner)."""
        if self._descriptor is not None:
            if self._owner:  # the next opener must not take this process for its owner
                os.ftruncate(self._descriptor, 0)
                self._owner = False
            os.close(self._descriptor)
            self._descriptor = None


def recorded_owner(queue_path: Path) -> int | None:
    """Return the process id that the exclusive owner of the queue at `queue_path` wrote in
    its lock file; None if the file holds none (sharers hold the lock, or nobody ever did).

    It reads the file and takes no lock, so it is meaningful only while the lock is known to
    be held, such as right after `QueueLock.acquire()` failed: an owner's id stays in the
    file after the owner lets go, until the next owner or first sharer replaces it.
    """
    path = queue_path.with_name(queue_path.name + ".lock")
    try:
        text = path.read_text(errors="replace").strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdecimal() else None
