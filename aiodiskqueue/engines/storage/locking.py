"""Who may open a queue's files: one owner, or several sharers, never both.

A queue has one lock, whatever name it is reached by. It is held at three levels:

- In this process, a registry of the locks that engines hold, keyed by the queue's path
  with symbolic links resolved and by the identity (device and inode) of its file: an
  opener finds there a queue that an engine of this process holds, and which engine.
- A POSIX ``flock`` on the lock file, ``<name>.aiodiskqueue-lock`` beside the queue's path
  with symbolic links resolved (`files.auxiliary_path`), for other processes. An exclusive
  owner writes its process id and its engine's name into it.
- Where the system has open-file-description locks (Linux), an exclusive owner also locks
  one byte of the queue's file itself, far beyond its data and the bytes SQLite locks, so
  that a process reaching the same file through a hard link, with another lock file, is
  refused too. The lock moves with the file when the owner replaces it (`follow`): a hard
  link to a file replaced since names an old copy, which is not the queue and not locked.
  Sharers take no such lock (closing a descriptor of an SQLite file would drop the locks
  that SQLite holds on it in this process), so an exclusive owner in another process that
  reaches their file through a hard link is not refused.

The operating system releases its locks when their holder closes them or dies, so a killed
process never leaves a stale lock behind. An engine dropped without being closed releases
its lock from its own thread after its last call: an opener in this process that finds the
lock held by such an engine waits for that, up to `ABANDONED_PATIENCE` seconds.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import logging
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

from ...exceptions import QueueLockedError
from .files import auxiliary_path, open_auxiliary

OWNER_GRACE = 1.0
"""Seconds a sharer keeps trying while an owner's process id is in the lock file."""
ABANDONED_PATIENCE = 10.0
"""Seconds an opener waits for an engine of this process, dropped without `close()`, to
release the queue from its thread (it does once its last call ends)."""
LIVE_GRACE = 0.5
"""Seconds an opener gives a holder in this process that looks alive to turn out dropped
(collected, or released by the event loop's pending callbacks) before refusing."""
_LIVE_GRACE_STEP = 0.02

logger = logging.getLogger(__name__)

_FILE_LOCK = getattr(fcntl, "F_OFD_SETLK", None)  # None where there are none (macOS)
_FILE_BYTE = 2**62  # the byte of the queue's file that an owner locks: beyond any data


class QueueLock:
    """The lock on the queue stored at `queue_path`, taken for `holder` (an engine).

    `data_suffixes` say where the queue's file is: the first of ``<queue_path><suffix>``
    that exists (a `dbm` queue's file name depends on its backend).
    """

    def __init__(
        self,
        queue_path: Path,
        holder: object | None = None,
        data_suffixes: Sequence[str] = ("",),
    ) -> None:
        self.queue_path = queue_path
        self._canonical = Path(os.path.realpath(queue_path))
        self.path = auxiliary_path(self._canonical, "lock")
        self._data_suffixes = data_suffixes
        self._claim = _Claim(holder if holder is not None else self)
        self._descriptor: int | None = None
        self._owner = False  # holds the lock exclusively, with its process id in the file
        self._file: tuple[int, Hashable] | None = None  # descriptor and identity of the file

    def acquire(self) -> None:
        """Take the lock, or raise `QueueLockedError` if someone holds it.

        It waits only for an engine of this process that was dropped without being closed,
        while that engine's thread releases the lock.
        """
        self._claim.enter(self._keys(), shared=False, locked=self._locked)
        try:
            descriptor = open_auxiliary(self.path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                raise self._locked(None) from None
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()} {self._claim.name}\n".encode())
            self._descriptor = descriptor
            self._owner = True
            self.cover_file()
        except BaseException:
            self.release()
            raise

    def acquire_shared(self, patience: float) -> bool:
        """Take the lock to share it; return True if this is the first sharer.

        The first sharer holds the lock exclusively, so that it can check the files alone,
        until it calls `share()`; later sharers wait up to `patience` seconds for that, and
        one of them becomes the first sharer if the first one fails or dies meanwhile.
        Raises `QueueLockedError` if an exclusive owner holds the lock: at once if it is in
        this process, once its process id has been in the file for `OWNER_GRACE` seconds
        (it may be an earlier owner's, until a first sharer replaces it), else after
        `patience`.
        """
        self._claim.enter(self._keys(), shared=True, locked=self._locked)
        try:
            descriptor = open_auxiliary(self.path, os.O_RDWR | os.O_CREAT)
        except BaseException:
            self._claim.leave()
            raise
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
                    self._claim.leave()
                    raise self._locked(None) from None
                time.sleep(0.01)
                continue
            self._descriptor = descriptor
            return False

    def share(self) -> None:
        """Let other sharers in, once the first sharer is done checking the files."""
        if self._descriptor is not None:
            fcntl.flock(self._descriptor, fcntl.LOCK_SH)
        self._claim.rekey(self._keys())  # the file may have been created or replaced

    def cover_file(self) -> None:
        """Lock the queue's file as it is now: call it when an exclusive owner has created
        or replaced the file. Raises `QueueLockedError` if it is held through another name."""
        data = self._data_file()
        if data is None:
            return
        descriptor = os.open(data, os.O_RDWR)
        try:
            self.follow(descriptor)
        finally:
            os.close(descriptor)

    def follow(self, descriptor: int) -> None:
        """Move the lock on the queue's file to the file open (for writing) at `descriptor`:
        an exclusive owner calls it before it renames a new file over the queue's file."""
        status = os.fstat(descriptor)
        identity = ("file", status.st_dev, status.st_ino)
        if self._file is not None and self._file[1] == identity:
            return
        self._claim.enter([identity], shared=False, locked=self._locked)
        if _FILE_LOCK is not None:
            descriptor = os.dup(descriptor)
            try:
                fcntl.fcntl(descriptor, _FILE_LOCK, _lock_request(fcntl.F_WRLCK))
            except OSError as exc:
                os.close(descriptor)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    # A file system without these locks: the lock file still holds.
                    logger.debug("%s: cannot lock the queue's file: %s", self.queue_path, exc)
                    descriptor = -1
                else:
                    self._claim.leave([identity])
                    raise self._locked(None, through_another_name=True) from None
        else:
            descriptor = -1
        self._let_file_go()
        self._file = (descriptor, identity)

    def release(self) -> None:
        """Let the lock go, if it is held (the lock file stays: removing it would race with
        a new owner)."""
        self._let_file_go()
        if self._descriptor is not None:
            if self._owner:  # the next opener must not take this process for its owner
                os.ftruncate(self._descriptor, 0)
                self._owner = False
            os.close(self._descriptor)
            self._descriptor = None
        self._claim.leave()

    def abandon(self) -> None:
        """Say that the holder was dropped and releases the lock from its thread: openers in
        this process wait for that rather than refuse."""
        self._claim.abandoned = True

    def _let_file_go(self) -> None:
        if self._file is not None:
            descriptor, identity = self._file
            self._file = None
            if descriptor >= 0:
                os.close(descriptor)
            self._claim.leave([identity])

    def _keys(self) -> list[Hashable]:
        keys: list[Hashable] = [("path", str(self._canonical))]
        data = self._data_file()
        if data is not None:
            status = data.stat()
            keys.append(("file", status.st_dev, status.st_ino))
        return keys

    def _data_file(self) -> Path | None:
        for suffix in self._data_suffixes:
            candidate = Path(os.path.realpath(f"{self._canonical}{suffix}"))
            if candidate.is_file():
                return candidate
        return None

    def _locked(
        self, here: _Claim | None, *, through_another_name: bool = False
    ) -> QueueLockedError:
        """The error for a lock held by `here` (in this process), or by another process."""
        if here is not None:
            holder = (
                f"shared by {here.name} queues in this process, which this engine cannot join"
                if here.shared
                else f"open in this process by {here.name}"
            )
        elif through_another_name:
            holder = "open through another name of the same file, such as a hard link"
        else:
            owner = _read_owner(self.path)
            holder = (
                f"process {owner[0]}, {owner[1]}"
                if owner is not None
                else "shared by SharedSqliteEngine queues, which this engine cannot join"
            )
        return QueueLockedError(f"{self.queue_path} is already open in another Queue ({holder})")


_Refusal = Callable[["_Claim | None"], QueueLockedError]


class _Claim:
    """A lock that an engine of this process holds, in the process-wide registry."""

    def __init__(self, holder: object) -> None:
        self.holder = weakref.ref(holder)
        self.name = type(holder).__name__
        self.shared = False
        self.abandoned = False  # its holder was dropped: it is releasing the lock
        self.keys: set[Hashable] = set()
        self.released = threading.Event()

    def enter(self, keys: Sequence[Hashable], *, shared: bool, locked: _Refusal) -> None:
        """Claim `keys`, or raise `locked(claim)` if a live engine of this process has one.

        An engine that was collected without being closed releases its claims from its
        thread: wait for that. One that only a reference cycle keeps is collected first.
        """
        deadline = time.monotonic() + ABANDONED_PATIENCE
        grace_over = time.monotonic() + LIVE_GRACE
        while True:
            with _registry_lock:
                others = [
                    claim
                    for key in keys
                    for claim in _registry.get(key, ())
                    if claim is not self and not (shared and claim.shared)
                ]
                if not others:
                    self.shared = shared
                    for key in keys:
                        if key not in self.keys:
                            self.keys.add(key)
                            _registry.setdefault(key, []).append(self)
                    self.released.clear()
                    return
            live = [c for c in others if not c.abandoned and c.holder() is not None]
            if live and time.monotonic() < grace_over:
                # The holder may be garbage in a reference cycle, or kept a moment longer by
                # a callback that the event loop (free: this runs in a thread) has yet to run.
                gc.collect()
                live[0].released.wait(_LIVE_GRACE_STEP)
                continue
            if live:
                raise locked(live[0])
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not others[0].released.wait(remaining):
                raise QueueLockedError(
                    f"a {others[0].name} that was dropped without close() still holds "
                    f"the queue after {ABANDONED_PATIENCE} seconds: its last call has not ended"
                )

    def rekey(self, keys: Sequence[Hashable]) -> None:
        """Claim `keys` instead, which nobody else may claim meanwhile (a first sharer's,
        whose file may have been created or replaced while it held the lock alone)."""
        with _registry_lock:
            for key in self.keys - set(keys):
                self._drop(key)
            for key in keys:
                if key not in self.keys:
                    self.keys.add(key)
                    _registry.setdefault(key, []).append(self)

    def leave(self, keys: Sequence[Hashable] | None = None) -> None:
        """Give up `keys` (default: every key), and tell waiting openers."""
        with _registry_lock:
            for key in list(self.keys if keys is None else keys):
                if key in self.keys:
                    self._drop(key)
            if not self.keys:
                self.released.set()

    def _drop(self, key: Hashable) -> None:
        self.keys.discard(key)
        claims = _registry[key]
        claims.remove(self)
        if not claims:
            del _registry[key]


_registry_lock = threading.Lock()
_registry: dict[Hashable, list[_Claim]] = {}


def _lock_request(kind: int) -> bytes:
    """A ``struct flock`` for one byte at `_FILE_BYTE` (``l_pid`` 0, as OFD locks want)."""
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, _FILE_BYTE, 1, 0)


def _read_owner(lock_file: Path) -> tuple[int, str] | None:
    try:
        descriptor = open_auxiliary(lock_file, os.O_RDONLY)
    except OSError:  # none, or not one of ours
        return None
    with os.fdopen(descriptor, "rb") as file:
        text = file.read(100).decode(errors="replace").split()
    if not text or not text[0].isdecimal():
        return None
    return int(text[0]), text[1] if len(text) > 1 else "an engine"


def recorded_owner(queue_path: Path) -> int | None:
    """Return the process id that the exclusive owner of the queue at `queue_path` wrote in
    its lock file; None if the file holds none (sharers hold the lock, or nobody ever did).

    It reads the file and takes no lock, so it is meaningful only while the lock is known to
    be held, such as right after `QueueLock.acquire()` failed: an owner's id stays in the
    file after the owner lets go, until the next owner or first sharer replaces it.
    """
    owner = _read_owner(auxiliary_path(Path(os.path.realpath(queue_path)), "lock"))
    return None if owner is None else owner[0]
