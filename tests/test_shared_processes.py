"""Producer and consumer processes on one shared queue: every item is delivered exactly once.

Four producer processes and four consumer processes share one queue, on every shared
engine: 50,000 items on SharedSqliteEngine, as its issue asks; fewer on the server engines, whose
round trips make each process slower (measurements/ runs them at full size). Once the
producers have ended, one ``"stop"`` item per consumer is put, after all of theirs; each
consumer writes down what it got. No process may fail (an error such as SQLite's "database
is locked" ends it with a status other than 0), and the items got, all consumers together,
must be exactly the items put.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from aiodiskqueue import Queue

from .conftest import SharedStore
from .shared_worker import STOP

WORKER = Path(__file__).with_name("shared_worker.py")
PRODUCERS = CONSUMERS = 4
ITEMS = {"SharedSqliteEngine": 50_000, "RedisEngine": 10_000, "PostgresEngine": 5_000}
DEADLINE = 240.0
"""Seconds the processes may take, all together, before the test fails."""


async def run(store: SharedStore, *arguments: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        store.engine.__name__,
        store.address,
        *arguments,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(process: asyncio.subprocess.Process) -> None:
    _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()


def kill(processes: list[asyncio.subprocess.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            process.kill()


@pytest.mark.timeout(DEADLINE + 30)
async def test_producer_and_consumer_processes_deliver_every_item_exactly_once(
    shared: SharedStore, tmp_path: Path
) -> None:
    outputs = [tmp_path / f"consumer-{number}.txt" for number in range(CONSUMERS)]
    per_producer = ITEMS[shared.engine.__name__] // PRODUCERS
    processes: list[asyncio.subprocess.Process] = []

    async def produce_and_consume() -> None:
        consumers = [await run(shared, "consume", str(output)) for output in outputs]
        processes.extend(consumers)
        producers = [
            await run(shared, "produce", f"p{number}", str(per_producer))
            for number in range(PRODUCERS)
        ]
        processes.extend(producers)
        await asyncio.gather(*map(finish, producers))
        async with await Queue.create(shared.address, cls_storage_engine=shared.engine) as queue:
            for _ in consumers:
                await queue.put(STOP)
        await asyncio.gather(*map(finish, consumers))

    try:
        await asyncio.wait_for(produce_and_consume(), DEADLINE)
    finally:
        kill(processes)
    got = [line for output in outputs for line in output.read_text().splitlines()]
    put = [
        f"p{producer}-{number}" for producer in range(PRODUCERS) for number in range(per_producer)
    ]
    assert len(got) == len(put), "an item was lost or delivered twice"
    assert sorted(got) == sorted(put)
    for output in outputs:  # each producer's items reach each consumer in the order put
        for producer in range(PRODUCERS):
            numbers = [
                int(line.split("-")[1])
                for line in output.read_text().splitlines()
                if line.startswith(f"p{producer}-")
            ]
            assert numbers == sorted(numbers)
