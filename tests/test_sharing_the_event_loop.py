"""Tasks whose puts and gets never wait share the event loop (`Turns`).

On an engine that commits in place a put completes without yielding, so the queue yields
for it: once the loop has run nothing else for a while, counted once for every busy task.
Time here is a fake clock that each call moves on, so the tests count, never time.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from aiodiskqueue.waiting import HAND_OVER, Turns

CALL = 0.01  # the fake time each call takes


async def gaps_between_turns_of_the_loop(busy_tasks: int, calls: int) -> list[float]:
    """Run busy tasks that call `Turns` and a task that notes the time each time it runs;
    return the fake time between its runs."""
    now = [0.0]
    turns = Turns(after=1.0, clock=lambda: now[0])
    seen: list[float] = []

    async def busy() -> None:
        for _ in range(calls):
            now[0] += CALL
            if turns.due():
                await turns.take()

    async def note() -> None:
        while True:
            seen.append(now[0])
            await asyncio.sleep(0)

    noting = asyncio.create_task(note())
    await asyncio.wait_for(asyncio.gather(*(busy() for _ in range(busy_tasks))), 10)
    noting.cancel()
    return [later - earlier for earlier, later in itertools.pairwise(seen)]


async def test_a_busy_task_lets_the_loop_run_others_once_it_held_it_for_the_time_given() -> None:
    gaps = await gaps_between_turns_of_the_loop(busy_tasks=1, calls=1000)
    assert 1.0 <= max(gaps) <= 1.0 + Turns.CHECK_EVERY * CALL


async def test_five_busy_tasks_hold_the_loop_about_as_long_as_one() -> None:
    gaps = await gaps_between_turns_of_the_loop(busy_tasks=5, calls=1000)
    assert max(gaps) <= 1.0 + 5 * Turns.CHECK_EVERY * CALL  # not five times 1.0


async def turns_taken_by_a_busy_task(
    thread_waits: bool, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, list[float]]:
    """Run a busy task for 10 fake seconds beside a thread that waits (or not); return how
    often the loop came round and the naps it took."""
    now = [0.0]
    naps: list[float] = []
    monkeypatch.setattr(time, "sleep", naps.append)
    turns = Turns(after=1.0, clock=lambda: now[0], thread_waits=lambda: thread_waits)
    for _ in range(1000):
        now[0] += CALL
        if turns.due():
            await turns.take()
            await turns.take()  # a second call in the same round of the loop
    return turns._round, naps


async def test_a_busy_task_lets_go_of_the_gil_once_a_turn_while_a_thread_waits_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CPython hands the GIL to a waiting thread only after the switch interval, and hardly
    ever while the loop keeps letting go of it and taking it back at once (at each select):
    the engine's thread would fall behind for as long as the loop is busy."""
    rounds, naps = await turns_taken_by_a_busy_task(True, monkeypatch)
    assert rounds >= 9
    assert naps == [HAND_OVER] * rounds


async def test_a_busy_task_does_not_nap_while_no_thread_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rounds, naps = await turns_taken_by_a_busy_task(False, monkeypatch)
    assert rounds >= 9
    assert naps == []
