"""Waiting in a queue: getters and putters parked on futures, and the count of unfinished tasks.

These are `asyncio.Queue`'s mechanisms, taken out of the queue so that the part of a queue that
knows its storage (a backend) can wake waiters and count tasks without holding the queue.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from contextlib import suppress
from typing import Any, TypeVar

__all__ = [
    "HAND_OVER",
    "Completion",
    "Tasks",
    "Turns",
    "Waiters",
    "cancel_again",
    "cancel_at_next_await",
]

R = TypeVar("R")


class Waiters:
    """Tasks waiting for something (an item, room), each parked on a future of its own."""

    def __init__(self) -> None:
        self._futures: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return len(self._futures)

    async def wait(self, still_ready: Callable[[], bool]) -> None:
        """Wait until woken (the caller checks again what it waits for).

        A waiter woken and cancelled before it ran passes its wake-up on to the next one if
        `still_ready()`, so that nothing it was woken for is stranded.
        """
        waiter = asyncio.get_running_loop().create_future()
        self._futures.append(waiter)
        try:
            await waiter
        except:
            waiter.cancel()  # in case it was not done yet
            with suppress(ValueError):
                self._futures.remove(waiter)
            if still_ready() and not waiter.cancelled():
                self.wake_one()
            raise

    def wake_one(self) -> None:
        """Wake the longest waiting task, if any."""
        while self._futures:
            waiter = self._futures.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def wake_all(self) -> None:
        """Wake every waiting task."""
        while self._futures:
            waiter = self._futures.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def fail_all(self, exc: BaseException) -> None:
        """Make every waiting task raise `exc`."""
        while self._futures:
            waiter = self._futures.popleft()
            if not waiter.done():
                waiter.set_exception(exc)


HAND_OVER = 20e-6
"""How long, in seconds, the event loop lets go of the GIL at a turn for a thread that
waits for it (see `Turns`): long enough for the thread to wake and take it."""


class Turns:
    """Shares the event loop among tasks whose calls complete without waiting, and the GIL
    with a thread that works for them.

    A queue whose engine commits in place stores a put or a get without yielding to the
    event loop, so a task putting in a tight loop would keep every other task from running.
    Once the loop has run nothing else for `after` seconds, each such call yields to it
    (`due()`, then ``await take()``). The time is counted from when the loop came round to
    the first call that yielded, for every task: however many tasks are busy, the loop runs
    its other callbacks about every `after` seconds (and `CHECK_EVERY` calls per busy task).
    The clock is read once every `CHECK_EVERY` calls.

    A busy loop starves a thread too: CPython hands the GIL to a waiting thread only after
    the switch interval (5 ms), and hardly ever while the loop keeps letting go of it and
    taking it back at once, as it does at each ``select``. So once a round, while
    `thread_waits()` says that a thread has work, the loop sleeps for `HAND_OVER` seconds.
    """

    CHECK_EVERY = 16

    def __init__(
        self,
        after: float,
        clock: Callable[[], float] = time.perf_counter,
        thread_waits: Callable[[], bool] = lambda: False,
    ) -> None:
        self.after = after
        self._clock = clock
        self._thread_waits = thread_waits
        self._calls = 0
        self._round = 0  # how often the loop came round to a yielded call
        self._turned = clock()  # when it last did

    def due(self) -> bool:
        """True if the caller should yield to the event loop now."""
        self._calls += 1
        return not self._calls % self.CHECK_EVERY and self._clock() - self._turned >= self.after

    async def take(self) -> None:
        """Yield to the event loop: return once it has run the callbacks that were ready."""
        round_ = self._round
        await asyncio.sleep(0)
        if self._round == round_:  # the first call back since the loop came round
            self._round += 1
            if self._thread_waits():
                time.sleep(HAND_OVER)  # noqa: ASYNC251 (the point: the GIL, briefly)
            self._turned = self._clock()


class Tasks:
    """The count of unfinished tasks that `task_done()` and `join()` work with.

    An item adds a task when it enters the queue (put, or restored when the queue opened)
    and when it is taken by a queue that did not add it (on a shared store, another process
    put it); `task_done()` finishes one. So the unfinished tasks are the items added or taken
    here, whichever are more, less those done: in a lone queue, as in `asyncio.Queue`.
    """

    def __init__(self, restored: int = 0) -> None:
        self.added = restored
        self.taken = 0
        self.done = 0
        self._finished = asyncio.Event()
        self._update()

    @property
    def unfinished(self) -> int:
        """Tasks not yet marked done."""
        return max(self.added, self.taken) - self.done

    def add(self, count: int = 1) -> None:
        """Count items entering the queue (a negative count: a put taken back)."""
        self.added += count
        self._update()

    def take(self, count: int = 1) -> None:
        """Count items taken from the queue (a negative count: a get given back)."""
        self.taken += count
        self._update()

    def finish(self) -> None:
        """Mark one task done; raise `ValueError` if none is unfinished."""
        if self.unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self.done += 1
        self._update()

    def forget_waiting(self) -> None:
        """Count the items added here and not yet taken as done (an immediate shutdown)."""
        self.added = min(self.added, self.taken)
        self._update()

    def restart(self, waiting: int) -> None:
        """Count anew after storage returned to what it holds: `waiting` items are in the queue."""
        self.added = self.taken + waiting
        self._update()

    async def join(self) -> None:
        """Wait until no task is unfinished."""
        await self._finished.wait()

    def _update(self) -> None:
        if max(self.added, self.taken) > self.done:
            self._finished.clear()
        else:
            self._finished.set()


def cancel_again(task: asyncio.Task[Any]) -> None:
    """Deliver again a cancellation that a task swallowed to complete what it had begun.

    Python 3.11+ counts cancellation requests, and a timeout that fired withdraws its own
    (`uncancel`) when it exits: then there is nothing left to deliver. Otherwise the request
    is still counted, so it is delivered again without counting it twice, which would turn
    the `TimeoutError` of `asyncio.timeout()` into a `CancelledError`.
    """
    if sys.version_info < (3, 11):
        task.cancel()
    elif task.cancelling():
        task.uncancel()
        task.cancel()


class Completion(Awaitable[None]):
    """What `put_nowait()` and `task_done()` return: awaiting it waits until the change is stored.

    Nobody need await it; each await waits on its own, so cancelling one cancels no other.
    """

    __slots__ = ("_done",)

    def __init__(self, done: asyncio.Future[None]) -> None:
        self._done = done

    def __await__(self) -> Generator[Any, None, None]:
        if self._done.done():  # nothing to wait for, nothing to shield
            return self._done.__await__()
        return asyncio.shield(self._done).__await__()

    @classmethod
    def at_once(cls) -> Completion:
        """A completion of nothing: awaiting it returns at once."""
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return cls(done)


async def despite_cancellation(future: asyncio.Future[R]) -> R:
    """Wait until `future` is done, through any cancellation of the caller; return its result.

    For a caller that must see the end of what it began before it raises its cancellation.
    """
    while not future.done():
        with suppress(asyncio.CancelledError):
            await asyncio.shield(future)
    return future.result()


def cancel_at_next_await() -> None:
    """Deliver the cancellation that the current task swallowed at its next ``await``."""
    task = asyncio.current_task()
    if task is not None:
        task.get_loop().call_soon(cancel_again, task)
