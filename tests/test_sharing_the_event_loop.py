"""Tasks whose puts and gets never wait share the event loop (`Turns`).

On an engine that commits in place a put completes without yielding, so the queue yields
for it: once the loop has run nothing else for a while, counted once for every busy task.
Time here is a fake clock that each call moves on, so the tests count, never time.
"""

from __future__ import annotations

import asyncio
import itertools

from aiodiskqueue.waiting import Turns

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
