"""`LocalBackend`: a queue kept by an engine that it owns alone (`StorageEngine`).

The engine is the source of truth; the backend numbers the items (keys that increase in the
order they were put), keeps the first ones in memory (the read-ahead window), and stores
changes in batches: puts and gets that wait at the same moment become one `commit()` (group
commit), made by one storage task at a time, which also reads ahead. If storing a batch
fails, every caller waiting for it raises the error and the backend returns to what the
engine holds.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from pathlib import Path
from typing import Generic, TypeVar

from .. import dead_letters
from ..engines import Record, StorageEngine, Stored
from ..exceptions import QueueEmpty, SerializationError
from ..serializers import Serializer
from ..waiting import (
    Completion,
    Tasks,
    Turns,
    Waiters,
    cancel_at_next_await,
    despite_cancellation,
)
from .batch import Batch
from .window import Window

__all__ = ["LocalBackend"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

YIELD_AFTER = 0.001
"""With an engine that commits in place, puts and gets yield to the event loop once it has
run nothing else for this many seconds (see `Turns`): about 50 puts of a small item here."""

IN_PLACE_WINDOW = 2**20
"""The most bytes of items read ahead from an engine that commits in place: it reads at
once, on the event loop, each time the window is half empty, so a small window is enough."""


class LocalBackend(Generic[T]):
    """The items of a queue whose engine has one owner: a window in memory, the rest stored."""

    can_get_nowait = True
    can_deliver_at_least_once = True

    def __init__(
        self,
        engine: StorageEngine,
        stored: Stored,
        *,
        serializer: Serializer[T],
        readahead: int | None,
        readahead_bytes: int,
        at_least_once: bool,
        fsync: bool,
        getters: Waiters,
        putters: Waiters,
        tasks: Tasks,
    ) -> None:
        self.engine = engine
        self._serializer = serializer
        self._at_least_once = at_least_once
        self._getters = getters
        self._putters = putters
        self._tasks = tasks
        self._count = self._stored_count = stored.size  # as callers see it / as stored
        self._last_key = self._stored_last_key = stored.last_key
        self._in_place = engine.commits_in_place
        # Changes stored at once, with nothing to wait for: no batch, no future.
        self._at_once = self._in_place and not fsync
        if self._in_place:
            readahead_bytes = min(readahead_bytes, IN_PLACE_WINDOW)
        self._window = Window(readahead, readahead_bytes)
        # Puts and gets take turns apart, so that busy producers leave a consumer its share.
        self._put_turns = Turns(YIELD_AFTER, thread_waits=engine.works_in_background)
        self._get_turns = Turns(YIELD_AFTER, thread_waits=engine.works_in_background)
        # Stored items that read-ahead must pass over: delivered but not yet removed
        # (at-least-once), or given back to the head of the window under a new key.
        self._held: set[int] = set()
        self._moved: set[int] = set()
        self._batch = Batch()
        self._stored_now = Batch()  # what a change committed in place at once waits for
        self._stored_now.sent = True
        self._stored_now.settle()
        self._storage_task: asyncio.Task[None] | None = None
        self._fsync = fsync
        self._burials: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return repr(self.engine)

    async def fill(self) -> None:
        """Read the first items into the window (when the queue opens)."""
        while self._needs_readahead():
            limit = self._window.room_for()
            self._window_read(await self.engine.read(self._window.end, limit), limit)

    # What the queue asks

    def size(self) -> int:
        return self._count

    def ready(self) -> bool:
        """True if an item can be taken at once."""
        return bool(self._window)

    def expect_items(self) -> None:
        """A getter waits: make sure the next stored items are being read."""
        if self._count:
            self._run_storage()

    def expect_room(self) -> None:
        """A putter waits: getters make room, and wake it themselves."""

    # Putting

    def put_nowait(self, data: bytes) -> Completion:
        """Place an item at the tail; return an awaitable that completes once it is stored."""
        return Completion(self._place(data)[1].done)

    async def put(self, data: bytes) -> bool:
        """Place an item at the tail and wait until it is stored.

        Cancelled, it takes its item out again (and waits until that is stored) and raises
        `CancelledError`, unless a getter has taken the item meanwhile: then it returns, and
        the cancellation is delivered at the task's next ``await``.
        """
        record, batch = self._place(data)
        if batch is self._stored_now and not self._put_turns.due():
            return True
        try:
            await self._stored(batch, self._put_turns)
        except asyncio.CancelledError:
            if not batch.sent:
                batch.appends.remove(record)
                self._unplace(record)
                raise
            await despite_cancellation(batch.done)
            removal = self._take_back(record)
            if removal is None:
                cancel_at_next_await()
                return True
            await despite_cancellation(removal.done)
            raise
        return True

    def _place(self, data: bytes) -> tuple[Record, Batch]:
        record = Record(self._last_key + 1, data)
        if self._at_once:
            try:
                self._store_at_once((record,), ())
            except Exception as exc:
                return record, self._failed_at_once(exc, puts=1)
        if self._window.end == self._last_key and self._window.has_room():
            self._window.append(record)
            self._getters.wake_one()
        self._last_key = record.key
        self._count += 1
        self._tasks.add()
        return record, self._stored_now if self._at_once else self._change(append=record)

    def _unplace(self, record: Record) -> None:
        """Forget an item placed by a put cancelled before its batch was sent."""
        with suppress(ValueError):
            self._window.remove(record)
        self._count -= 1
        self._tasks.add(-1)
        self._putters.wake_one()

    def _take_back(self, record: Record) -> Batch | None:
        """Remove a stored item that a cancelled put placed; return the batch that stores its
        removal, or None if a getter has taken it already."""
        if record in self._window:
            self._window.remove(record)
        elif record.key > self._window.end:
            self._moved.add(record.key)  # read-ahead must pass over it until it is removed
        else:
            return None
        self._count -= 1
        self._tasks.add(-1)
        self._putters.wake_one()
        return self._change(removal=record.key)

    # Getting

    def get_nowait(self) -> tuple[T, int]:
        """Take the head item at once; its removal is stored in the background.

        Returns the item and its key. Raises `QueueEmpty` if no item is in the window.
        """
        if not self._window:
            raise QueueEmpty
        item, record = self._take()
        if not self._at_least_once:
            self._change(removal=record.key)
        return item, record.key

    async def get(self) -> tuple[T, int] | None:
        """Take the head item (the caller saw it `ready()`), and wait until its removal is stored.

        With at-least-once delivery the item stays stored (see `finish()`): nothing to wait
        for. Cancelled, it puts the item back at the head and raises `CancelledError`; if its
        removal was already stored, the item is stored again first.
        """
        item, record = self._take()
        if self._at_least_once:
            return item, record.key
        if self._at_once:
            try:
                self._store_at_once((), (record.key,))
            except Exception as exc:
                self._give_back(record)
                self._failed_at_once(exc, gets=1)
                raise
            if not self._get_turns.due():
                return item, record.key
            batch = self._stored_now
        else:
            self._batch.awaited_gets += 1  # before the change: a commit in place fails at once
            batch = self._change(removal=record.key)
        try:
            await self._stored(batch, self._get_turns)
        except asyncio.CancelledError:
            if batch.sent:
                await despite_cancellation(batch.done)
                again, storing = self._stored_again(record)
                self._give_back(again)
                await despite_cancellation(storing.done)
            else:
                batch.removals.remove(record.key)
                batch.awaited_gets -= 1
                self._give_back(record)
            raise
        return item, record.key

    async def _stored(self, batch: Batch, turns: Turns) -> None:
        """Wait until `batch` is stored; after a change stored in place at once, yield to the
        event loop instead (see `Turns`)."""
        if batch is self._stored_now:
            await turns.take()
        else:
            await asyncio.shield(batch.done)

    def _take(self) -> tuple[T, Record]:
        record = self._window.head()
        try:
            item = self._serializer.loads(record.data)
        except Exception as exc:
            self._bury(exc)
            raise SerializationError(
                f"an item of {self.engine!r} cannot be read by the {self._serializer.name!r} "
                f"serializer ({exc!r}): it was moved to {self._dead_letters}",
                record.data,
            ) from exc
        self._window.popleft()
        self._count -= 1
        self._tasks.take()
        self._putters.wake_one()
        if self._at_least_once:
            self._held.add(record.key)
        if self._in_place and self._needs_readahead():
            self._read_now()
        return item, record

    def _bury(self, exc: Exception) -> None:
        """Take the head item, which cannot be deserialised, out of the queue: into the dead
        letters, then its removal into storage (see `aiodiskqueue.dead_letters`)."""
        record = self._window.popleft()
        self._count -= 1
        self._tasks.add(-1)
        self._putters.wake_one()
        burial = asyncio.get_running_loop().create_task(self._store_dead_letter(record, exc))
        self._burials.add(burial)
        burial.add_done_callback(self._burials.discard)

    async def _store_dead_letter(self, record: Record, exc: Exception) -> None:
        try:
            await asyncio.to_thread(
                dead_letters.append,
                self._dead_letters,
                record.data,
                serializer=self._serializer.name,
                error=repr(exc),
                fsync=self._fsync,
            )
        except OSError as failure:
            logger.error(
                "keeping an unreadable item of %r in %s failed (%r): it stays in the queue",
                self.engine,
                self._dead_letters,
                failure,
            )
            self._window.appendleft(record)
            self._count += 1
            self._tasks.add()
            self._getters.wake_one()
            return
        logger.warning("moved an unreadable item of %r to %s", self.engine, self._dead_letters)
        self._change(removal=record.key)

    @property
    def _dead_letters(self) -> Path:
        return dead_letters.dead_letters_path(self.engine.path)

    def _stored_again(self, record: Record) -> tuple[Record, Batch]:
        """Store again, under a new key, an item whose removal was stored; return its new
        record and the batch that stores it."""
        again = Record(self._last_key + 1, record.data)
        if self._window.end == self._last_key:
            self._window.end = again.key
        else:
            self._moved.add(again.key)
        self._last_key = again.key
        return again, self._change(append=again)

    def _give_back(self, record: Record) -> None:
        """Put a taken item back at the head of the window."""
        self._window.appendleft(record)
        self._count += 1
        self._tasks.take(-1)
        self._getters.wake_one()

    # Acknowledging

    def finish(self, keys: list[int]) -> Completion:
        """Remove delivered items that are done; return an awaitable of their removal."""
        if not keys:
            return Completion(self._stored_now.done)
        if self._at_once:
            try:
                self._store_at_once((), tuple(keys))
            except Exception as exc:  # they stay stored, delivered again after a restart
                return Completion(self._failed_at_once(exc, gets=len(keys)).done)
            self._held.difference_update(keys)
            return Completion(self._stored_now.done)
        for key in keys:
            self._held.discard(key)
            self._batch.removals.append(key)
        return Completion(self._store_batch().done)

    # Closing

    async def close(self) -> None:
        """Store the pending changes, then close the engine."""
        while self._burials:
            await asyncio.wait(set(self._burials))
        while self._storage_task is not None:
            with suppress(Exception):
                await asyncio.shield(self._storage_task)
        await self.engine.close()

    # Storage: one task at a time writes batches and reads ahead, in order.

    def _change(self, *, append: Record | None = None, removal: int | None = None) -> Batch:
        """Add a change to the next batch, and make sure it will be stored: at once by an
        engine that commits in place, else by the storage task, with the changes made
        meanwhile."""
        if append is not None:
            self._batch.appends.append(append)
        if removal is not None:
            self._batch.removals.append(removal)
        return self._store_batch()

    def _store_batch(self) -> Batch:
        """Make sure the current batch will be stored; return it."""
        if self.engine.commits_in_place:
            return self._commit_in_place()
        self._run_storage()
        return self._batch

    def _run_storage(self) -> None:
        if self._storage_task is None:
            self._storage_task = asyncio.get_running_loop().create_task(self._store())

    async def _store(self) -> None:
        try:
            while True:
                if self._batch:
                    await self._commit()
                elif not (self._needs_readahead() and await self._read_ahead()):
                    return
        finally:
            self._storage_task = None

    async def _commit(self) -> None:
        batch, self._batch = self._batch, Batch()
        batch.sent = True
        try:
            await self.engine.commit(batch.appends, batch.removals)
        except asyncio.CancelledError:
            batch.settle(asyncio.CancelledError())
            raise
        except Exception as exc:
            self._fail(batch, exc)
            return
        self._committed(batch)
        batch.settle()

    def _store_at_once(self, appends: tuple[Record, ...], removals: tuple[int, ...]) -> None:
        """Store a put or a get in place, now, with nothing to wait for: the usual change on
        an engine that commits in place, made with no batch. Raises, having changed nothing,
        if storing fails."""
        self.engine.commit_now(appends, removals)
        if appends:
            self._stored_last_key = appends[-1].key
        self._stored_count += len(appends) - len(removals)

    def _failed_at_once(self, exc: Exception, *, puts: int = 0, gets: int = 0) -> Batch:
        """Log a change that failed to be stored at once (nothing changed); return a batch
        that failed with `exc`."""
        logger.error(
            "storing %d put(s) and %d get(s) in %r failed: %r", puts, gets, self.engine, exc
        )
        failed = Batch()
        failed.sent = True
        failed.settle(exc)
        return failed

    def _commit_in_place(self) -> Batch:
        """Store the change of the current batch on the event loop, now (`commit_now`).

        When that is all (no flush to wait for), the batch is emptied and kept for the next
        change, and the caller gets `_stored_now`, a batch stored already: no future is made
        per change, which is most of the time a change takes on such an engine.
        """
        batch = self._batch
        try:
            flushed = self.engine.commit_now(batch.appends, batch.removals)
        except Exception as exc:
            self._batch = Batch()
            batch.sent = True
            self._fail(batch, exc)
            return batch
        self._committed(batch)
        if flushed is None:
            batch.appends.clear()
            batch.removals.clear()
            batch.awaited_gets = 0
            return self._stored_now
        # Durable against a process crash now; the caller waits for the flush too.
        self._batch = Batch()
        batch.sent = True
        asyncio.ensure_future(flushed).add_done_callback(
            lambda done: batch.settle(None if done.cancelled() else done.exception())
        )
        return batch

    def _committed(self, batch: Batch) -> None:
        if batch.appends:
            self._stored_last_key = max(self._stored_last_key, batch.appends[-1].key)
        self._stored_count += len(batch.appends) - len(batch.removals)

    def _fail(self, batch: Batch, exc: Exception) -> None:
        """Fail `batch` and the changes made since, and return to what the engine holds."""
        logger.error(
            "storing %d put(s) and %d get(s) in %r failed: %r",
            len(batch.appends),
            len(batch.removals),
            self.engine,
            exc,
        )
        failed, self._batch = (batch, self._batch), Batch()
        for each in failed:
            each.sent = True
            each.settle(exc)
        # Failed puts' items are gone; items got with get_nowait() or finished with
        # task_done() come back, and are delivered again; items of failed get()s come back,
        # never delivered.
        self._count = self._stored_count - len(self._held)
        self._last_key = self._stored_last_key
        self._tasks.take(-sum(each.awaited_gets for each in failed))
        self._tasks.restart(self._count)
        self._moved.clear()
        self._window.clear()  # and read it again
        self._getters.wake_all()
        self._putters.wake_all()

    def _needs_readahead(self) -> bool:
        return self._window.end < self._stored_last_key and self._window.wants_more()

    def _read_now(self) -> None:
        """Read the next items into the window at once, from an engine that commits in place.

        If that fails, the window is read by the storage task once getters wait, which
        reports the error to them.
        """
        limit = self._window.room_for()
        try:
            records = self.engine.read_now(self._window.end, limit)
        except Exception as exc:
            logger.debug("reading from %r at once failed: %r", self.engine, exc)
            return
        self._window_read(records, limit)

    async def _read_ahead(self) -> bool:
        """Read the next items into the window; False if reading failed."""
        limit = self._window.room_for()
        try:
            records = await self.engine.read(self._window.end, limit)
        except Exception as exc:
            logger.error("reading from %r failed: %r", self.engine, exc)
            self._getters.fail_all(exc)  # let waiting getters raise rather than wait for ever
            return False
        self._window_read(records, limit)
        for _ in records:
            self._getters.wake_one()
        return True

    def _window_read(self, records: list[Record], limit: int) -> None:
        """Add records read from the engine to the window, passing over those in hand."""
        skip = self._held | self._moved
        self._window.extend(records if not skip else [r for r in records if r.key not in skip])
        self._window.end = records[-1].key if len(records) == limit else self._stored_last_key
        self._moved = {key for key in self._moved if key > self._window.end}
