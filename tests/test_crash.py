"""Nothing is lost when the process is killed: SIGKILL at random moments, then a clean drain.

Each round starts `crash_worker.py` on the same queue and kills it with SIGKILL after a
random delay. Then a clean process drains the queue, and the logs are checked: every item
whose `put()` returned came out exactly once, in its producer's order, with its content
whole. The one item a log cannot account for is the item the consumer held when it was
killed (its `get()` returned, its log line not yet written); the check allows exactly
that: at most one missing item per kill, and only the item that stood at the head of the
queue when the kill came.

Set AIODISKQUEUE_KILL_ROUNDS for a longer soak (default 12 rounds per engine).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from aiodiskqueue import Queue

from .conftest import ENGINES

ROUNDS = int(os.environ.get("AIODISKQUEUE_KILL_ROUNDS", "12"))
WORKER = Path(__file__).with_name("crash_worker.py")


async def run_and_kill(path: Path, engine: str, round_number: int, log: Path, delay: float) -> None:
    """Run one worker round and SIGKILL it `delay` seconds after it has opened the queue."""
    worker = await asyncio.create_subprocess_exec(
        *(sys.executable, str(WORKER), str(path), engine, str(round_number), str(log)),
        cwd=WORKER.parent,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert worker.stdout is not None
        started = await asyncio.wait_for(worker.stdout.readline(), timeout=30)
        assert started == b"started\n", "the worker failed to start"
        await asyncio.sleep(delay)  # the point of the test: a kill at a random moment
    finally:
        worker.send_signal(signal.SIGKILL)
        await asyncio.wait_for(worker.wait(), timeout=30)


def parse(item: str) -> tuple[int, int, int]:
    round_number, producer, number = (int(part) for part in item.split("-"))
    return round_number, producer, number


@pytest.mark.parametrize("engine", list(ENGINES))
async def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    engine: str, tmp_path: Path
) -> None:
    path = tmp_path / "queue.db"
    randomness = random.Random(f"{engine}-{ROUNDS}")
    consumed: list[tuple[int, str]] = []  # (round in which it came out, item)
    put: set[str] = set()
    for round_number in range(ROUNDS):
        log = tmp_path / f"round-{round_number}.log"
        await run_and_kill(path, engine, round_number, log, randomness.uniform(0.05, 0.3))
        for line in log.read_text().splitlines()[1:]:
            kind, item = line.split(" ")
            if kind == "P":
                put.add(item)
            else:
                consumed.append((round_number, item))
    async with await Queue.create(path, cls_storage_engine=ENGINES[engine]) as queue:
        drained = [await queue.get() for _ in range(queue.qsize())]
    consumed += [(ROUNDS, item) for item in drained]

    came_out = [item for _, item in consumed]
    assert len(came_out) == len(set(came_out)), "an item came out twice"
    unknown = [item for item in came_out if parse(item)[2] < 0]
    assert not unknown
    assert len(put) > ROUNDS, "the workers did too little to test anything"

    # Per producer, items come out in the order they were put, with no gap except the
    # item in the consumer's hands at a kill.
    by_producer: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for round_consumed, item in consumed:
        round_number, producer, number = parse(item)
        by_producer[round_number, producer].append((number, round_consumed))
    gaps = []
    for producer, numbers in by_producer.items():
        assert [n for n, _ in numbers] == sorted(n for n, _ in numbers), f"{producer} reordered"
        previous_number, previous_round = -1, producer[0]
        for number, round_consumed in numbers:
            for missing in range(previous_number + 1, number):
                gaps.append((producer, missing, previous_round, round_consumed))
            previous_number, previous_round = number, round_consumed
        last_put = max((parse(item)[2] for item in put if parse(item)[:2] == producer), default=-1)
        for missing in range(previous_number + 1, last_put + 1):
            gaps.append((producer, missing, previous_round, ROUNDS))
    # A gap is the consumer's item in hand only if it spans a kill, one per kill at most.
    for producer, missing, before, after in gaps:
        assert before < after, f"{producer} lost {missing} without a kill in between"
    kills = [before for _, _, before, _ in gaps]
    assert len(kills) == len(set(kills)), "more than one item lost at one kill"
