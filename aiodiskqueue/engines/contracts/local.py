"""The storage engine contract: what `Queue` asks of the place its items live.

An engine stores *records*: `Record(key, data)`, where `data` is an item already turned into
bytes and `key` a positive integer that `Queue` gives it. Keys increase in the order items
were put, so the records in key order are the queue, oldest first. `Queue` talks to an
engine in batches: many puts and gets that wait at the same moment become one `commit()`,
so an engine can write them in one transaction (group commit).

`Queue` is an engine's only user while it is open, and calls it one call at a time: an
engine never sees two calls at once, and never a call after `close()` began.

Write an engine by subclassing `ThreadedStorageEngine` (blocking code, run in the engine's
own thread) or, for a natively asynchronous backend, `StorageEngine` itself.
"""

from __future__ import annotations

import abc
import errno
import os
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from ..storage.files import AUXILIARY_MARKER
from ..storage.locking import QueueLock
from ..storage.recovery import backup_problem
from ..storage.thread import EngineThread

__all__ = [
    "FifoStorageEngine",
    "OpenOptions",
    "Record",
    "StorageEngine",
    "Stored",
    "ThreadOwningEngine",
    "ThreadedStorageEngine",
]


def not_open(engine: object) -> RuntimeError:
    """The error of a call to an engine that is not open (a bug of its caller's)."""
    return RuntimeError(f"{engine!r} is not open")


def check_queue_path(path: str | os.PathLike[str]) -> Path:
    """Return `path` as a `Path`; raise `ValueError` if it is one that a queue's auxiliary
    files (`files.AUXILIARY_MARKER` in the name) or its backups (see `recovery`) take."""
    checked = Path(path)
    if AUXILIARY_MARKER in checked.name:
        raise ValueError(
            f"queue path {str(checked)!r} has {AUXILIARY_MARKER!r} in its name, "
            "which is reserved for the lock and temporary files of queues"
        )
    problem = backup_problem(checked)
    if problem is not None:
        raise ValueError(f"queue path {str(checked)!r} {problem}: it is reserved for them")
    return checked


def check_not_a_directory(path: Path) -> None:
    """Raise `IsADirectoryError` naming `path` if it is a directory, which holds no queue, and
    `FileNotFoundError` naming its directory if that does not exist."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a queue's path must not be a directory", str(path))
    if not path.absolute().parent.is_dir():
        raise FileNotFoundError(
            errno.ENOENT,
            "the directory of the queue's path does not exist: create it first",
            str(path.absolute().parent),
        )


class Record(NamedTuple):
    """One item as an engine stores it."""

    key: int
    """Its position in the queue: greater than the key of every item put before it."""
    data: bytes
    """The item, serialised."""


@dataclass(frozen=True)
class OpenOptions:
    """What `Queue` asks of an engine when it opens it."""

    fsync: bool = False
    """Make a commit survive an operating-system crash or a power loss, not only the process
    being killed: flush it to the disk (and the directory, when files are created or
    renamed) before `commit()` returns."""
    on_corruption: Literal["recover", "raise"] = "recover"
    """What to do with data that cannot be read: keep a backup and go on with what can be
    read (see `recovery.damaged`), or raise `QueueCorruptedError` and change nothing."""
    meta: Mapping[str, str] = field(default_factory=dict)
    """Facts about the queue to keep with it, written once, when the store is created."""


DEFAULT_OPTIONS = OpenOptions()


class Stored(NamedTuple):
    """What an engine holds when it is opened."""

    size: int
    """How many records it holds."""
    last_key: int
    """Number new records from `last_key + 1`: at least the greatest key it holds (0 if none)."""
    meta: Mapping[str, str]
    """The `OpenOptions.meta` that the store was created with."""


class StorageEngine(abc.ABC):
    """Stores a queue's records in key order; the source of truth for the queue.

    The contract, which `Queue` relies on and every engine must keep:

    - `open(options)` makes the stored records available, creating an empty store (with
      `options.meta`) if there is none, and says what it holds. Data that cannot be read
      is never silently dropped: hand it to `recovery.damaged`, which keeps a backup and
      logs it, or raises, as `options.on_corruption` asks.
    - `read(after, limit)` returns up to `limit` stored records with keys greater than
      `after`, in key order. It never returns a removed record.
    - `commit(appends, removals)` stores `appends`, whose keys are greater than every key
      stored before, and removes the records whose keys are in `removals` (which may name
      records in `appends`), all or nothing: when it returns, the whole change has been
      handed to the operating system, so it survives the process being killed (with
      `options.fsync`: it is on the disk); when it raises, the stored records are as they
      were before the call.
    - `close()` releases files and connections. It is called once, after the last commit.

    Every call may block only in a thread of the engine's own, never on the event loop.

    An engine whose commit is a store into memory that outlives the process (a
    memory-mapped file, say) sets `commits_in_place` and implements `commit_now` and
    `read_now`: the queue then stores each put and get at once, on the event loop, with no
    batch and no thread round trip, never calls `commit()`, and reads ahead as items are
    taken, keeping few of them in memory. If it has a thread that works meanwhile, it says
    so with `works_in_background`.
    """

    commits_in_place = False
    """True if `commit_now` stores a change, and `read_now` reads, on the event loop without
    blocking."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = check_queue_path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @abc.abstractmethod
    async def open(self, options: OpenOptions = DEFAULT_OPTIONS) -> Stored:
        """Open or create the store and say what it holds."""

    @abc.abstractmethod
    async def read(self, after: int, limit: int) -> list[Record]:
        """Return up to `limit` records with keys greater than `after`, in key order."""

    @abc.abstractmethod
    async def commit(self, appends: Sequence[Record], removals: Sequence[int]) -> None:
        """Store `appends` and remove `removals` as one change, durable when this returns."""

    def commit_now(
        self, appends: Sequence[Record], removals: Sequence[int]
    ) -> Awaitable[None] | None:
        """Store a change as `commit()` does, but at once, on the event loop, without blocking.

        Only for an engine that sets `commits_in_place`. When it returns, the change survives
        the process being killed. It returns None; with `options.fsync`, an awaitable of the
        flush to the disk instead, which many changes may share. It raises as `commit()`
        does, changing nothing.
        """
        raise NotImplementedError(f"{type(self).__name__} does not commit in place")

    def read_now(self, after: int, limit: int) -> list[Record]:
        """Read as `read()` does, but at once, on the event loop, without blocking.

        Only for an engine that sets `commits_in_place`.
        """
        raise NotImplementedError(f"{type(self).__name__} does not read in place")

    def works_in_background(self) -> bool:
        """True while a thread of the engine's own has work in hand.

        Only for an engine that sets `commits_in_place` (making its next file ready, say):
        while puts and gets keep the event loop busy, the queue then lets go of the GIL for
        a moment each time it yields to the loop, so that the thread is not starved.
        """
        return False

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the engine's files and connections."""


FifoStorageEngine = StorageEngine
"""The name `StorageEngine` had in aiodiskqueue 0.1."""


class ThreadOwningEngine(StorageEngine):
    """An engine that opens and closes its files in a thread that it owns.

    Subclasses implement `blocking_open` and `blocking_close`, which run in that thread (the
    options given to `open()` are in `self.options`), and may hand it more blocking work with
    `self._running().call(...)`. The thread is a daemon: it never keeps the interpreter from
    exiting.

    An engine whose files must have a single owner sets `exclusive`: it then holds a
    `QueueLock` while it is open, and a second opener gets `QueueLockedError`, whatever
    name it reaches the file by. `data_suffixes` say which file the lock follows: the first
    of ``<path><suffix>`` that exists. An engine that replaces that file calls
    ``self._lock.follow(descriptor)`` with the new file's descriptor before the rename.
    """

    exclusive = False
    data_suffixes: tuple[str, ...] = ("",)
    options = DEFAULT_OPTIONS
    _thread: EngineThread | None = None
    _lock: QueueLock | None = None

    async def open(self, options: OpenOptions = DEFAULT_OPTIONS) -> Stored:
        self.options = options
        thread = EngineThread(name=f"aiodiskqueue {self.path.name}")
        try:
            stored = await thread.call(self._lock_and_open, thread)
        except BaseException:  # a cancelled open may yet open the files: close them then
            thread.abandon(self.blocking_close)
            raise
        self._thread = thread
        return stored

    def _lock_and_open(self, thread: EngineThread) -> Stored:
        check_not_a_directory(self.path)
        if self.exclusive:
            lock = QueueLock(self.path, self, self.data_suffixes)
            # The thread knows of the lock before it is taken, so that if the open is
            # cancelled meanwhile, openers in this process wait for its release.
            thread.lock = self._lock = lock
            lock.acquire()
        try:
            stored = self.blocking_open()
        except BaseException:
            thread.unlock()
            raise
        thread.opened = True
        if self._lock is not None:
            # A new queue's file exists only now: lock it, unless another name reached it first.
            self._lock.cover_file()
        return stored

    async def close(self) -> None:
        thread = self._running()
        self._thread = None
        await thread.close(self.blocking_close)

    def __del__(self) -> None:
        # A queue that was never closed: let the thread close the files after its last call.
        if self._thread is not None:
            self._thread.abandon(self.blocking_close)

    def _running(self) -> EngineThread:
        if self._thread is None:
            raise not_open(self)
        return self._thread

    @abc.abstractmethod
    def blocking_open(self) -> Stored:
        """Open or create the store and say what it holds (runs in the engine's thread)."""

    @abc.abstractmethod
    def blocking_close(self) -> None:
        """Release files and connections (runs in the engine's thread)."""


class ThreadedStorageEngine(ThreadOwningEngine):
    """An engine written as blocking code, which runs in a thread that the engine owns.

    Subclasses implement `blocking_open`, `blocking_read`, `blocking_commit` and
    `blocking_close` with the contract of `StorageEngine`'s methods of the same name; the
    options given to `open()` are in `self.options`. They
    all run in one thread, in the order `Queue` calls them, so they need no locks. The thread
    is a daemon: it never keeps the interpreter from exiting.

    An engine whose files must have a single owner sets `exclusive`: it then holds a
    `QueueLock` while it is open, and a second opener gets `QueueLockedError`.
    """

    async def read(self, after: int, limit: int) -> list[Record]:
        return await self._running().call(self.blocking_read, after, limit)

    async def commit(self, appends: Sequence[Record], removals: Sequence[int]) -> None:
        await self._running().call(self.blocking_commit, appends, removals)

    @abc.abstractmethod
    def blocking_read(self, after: int, limit: int) -> list[Record]:
        """Return up to `limit` records with keys above `after` (runs in the engine's thread)."""

    @abc.abstractmethod
    def blocking_commit(self, appends: Sequence[Record], removals: Sequence[int]) -> None:
        """Store `appends`, remove `removals`, all or nothing (runs in the engine's thread)."""
