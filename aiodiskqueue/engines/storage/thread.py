"""A thread that owns an engine's files: blocking calls go to it and results come back.

Calls travel to the thread as (future, function, arguments) on a `SimpleQueue`, and results
return to the caller's event loop with `call_soon_threadsafe`, as aiosqlite does. Only this
thread ever touches the engine's files, so they need no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

from .locking import QueueLock

R = TypeVar("R")

_Call = tuple["asyncio.Future[Any] | None", Callable[..., Any], tuple[Any, ...]]


class Worker:
    """One daemon thread that runs blocking calls one at a time, in the order they came.

    The thread is a daemon, so it never keeps the interpreter from exiting, even with a
    call in progress or a queue left open.
    """

    def __init__(self, name: str) -> None:
        self._calls: SimpleQueue[_Call | None] = SimpleQueue()
        # The thread gets the call queue, not `self`, so an abandoned worker can be collected.
        self._thread = threading.Thread(target=_serve, args=(self._calls,), name=name, daemon=True)
        self._thread.start()

    async def call(self, function: Callable[..., R], *args: Any) -> R:
        """Run `function(*args)` in the thread and return its result or raise its exception.

        Cancelling the caller does not stop a call that has started: it runs to its end.
        """
        return await self.submit(function, *args)

    def submit(self, function: Callable[..., R], *args: Any) -> asyncio.Future[R]:
        """Have the thread run `function(*args)`; return a future of its result.

        Unlike `call`, it makes no task: the result reaches the future's callbacks with one
        turn of the event loop fewer at each end, which a caller that waits for the thread
        on every change (a flush) feels. Cancelling the future does not stop the call.
        """
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._calls.put((future, function, args))
        return future

    def stop(self, last: Callable[[], object] | None = None) -> None:
        """Let the thread finish the calls it has, run `last` if given, then end."""
        if last is not None:
            self._calls.put((None, last, ()))
        self._calls.put(None)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (it ends after `stop()`)."""
        self._thread.join(timeout)


def _serve(calls: SimpleQueue[_Call | None]) -> None:
    while (call := calls.get()) is not None:
        future, function, args = call
        # Hold nothing of the call once it has run, before the caller hears of it: the
        # caller may then drop the engine, which is collected at once and releases its lock.
        del call
        result, exc = _run(function, args)
        del function, args
        _settle(future, result, exc)
        del future, result, exc


def _run(function: Callable[..., Any], args: Any) -> tuple[Any, BaseException | None]:
    try:
        return function(*args), None
    except BaseException as exc:  # handed to the caller, whatever it is
        return None, exc


def _settle(future: asyncio.Future[Any] | None, result: Any, exc: BaseException | None) -> None:
    if future is None:
        return
    with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody to tell
        future.get_loop().call_soon_threadsafe(_set, future, result, exc)


def _set(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the caller was cancelled
        return
    if exc is None:
        future.set_result(result)
    else:
        future.set_exception(exc)


class EngineThread:
    """The thread that an open engine runs its blocking code in, and the lock on its files.

    The engine's blocking code sets `lock` once it has taken one, and `opened` once its
    files are open (in the thread); `close()` and `abandon()` close the files if they are
    open, then release the lock, in the thread.
    """

    def __init__(self, name: str) -> None:
        self._worker = Worker(name)
        self._lock: QueueLock | None = None
        self._abandoned = False
        self.opened = False

    @property
    def lock(self) -> QueueLock | None:
        return self._lock

    @lock.setter
    def lock(self, lock: QueueLock | None) -> None:
        self._lock = lock
        # A cancelled open takes its lock after `abandon()`: its release is still to come.
        if lock is not None and self._abandoned:
            lock.abandon()

    async def call(self, function: Callable[..., R], *args: Any) -> R:
        """Run `function(*args)` in the thread (see `Worker.call`)."""
        return await self._worker.call(function, *args)

    def submit(self, function: Callable[..., R], *args: Any) -> asyncio.Future[R]:
        """Have the thread run `function(*args)`; return a future of its result (see
        `Worker.submit`)."""
        return self._worker.submit(function, *args)

    async def close(self, close_files: Callable[[], object]) -> None:
        """Run `close_files` in the thread, release the lock, and end the thread."""
        try:
            await self._worker.call(self._release, close_files)
        finally:
            self._worker.stop()

    def abandon(self, close_files: Callable[[], object]) -> None:
        """For an engine that was never closed, or whose opening failed or was cancelled:
        close its files, if they were opened, and end, after the last call."""
        self._abandoned = True
        if self._lock is not None:  # openers in this process wait for its release
            self._lock.abandon()
        self._worker.stop(last=functools.partial(self._release, close_files))

    def unlock(self) -> None:
        """Release the lock, if the engine holds one (in the thread)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _release(self, close_files: Callable[[], object]) -> None:
        try:
            if self.opened:
                self.opened = False
                close_files()
        finally:
            self.unlock()
