"""One producer, one consumer, and join() to wait until every item has been handled.

Run with ``python examples/single_consumer.py``. The queue file lives in a temporary
directory, so every run starts from an empty queue.
"""

import asyncio
import contextlib
import tempfile
from pathlib import Path

from aiodiskqueue import Queue

JOBS = 100


async def produce(queue: Queue[str]) -> None:
    for number in range(JOBS):
        await queue.put(f"job-{number:03}")
    print(f"producer: put {JOBS} jobs")


async def consume(queue: Queue[str], handled: list[str]) -> None:
    while True:
        job = await queue.get()
        handled.append(job)
        queue.task_done()


async def main() -> None:
    handled: list[str] = []
    with tempfile.TemporaryDirectory() as directory:
        async with await Queue.create(Path(directory) / "jobs.queue") as queue:
            consumer = asyncio.create_task(consume(queue, handled))
            producer = asyncio.create_task(produce(queue))

            await producer
            await queue.join()
            print(f"consumer: handled {len(handled)} jobs, first {handled[0]}, last {handled[-1]}")

            # The consumer now waits in get() on an empty queue. Cancelling a get() never
            # loses an item, so stopping the consumer this way is safe.
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            print("consumer stopped")

    assert handled == [f"job-{number:03}" for number in range(JOBS)], "jobs out of order"
    print("all jobs handled once, in the order they were put")


if __name__ == "__main__":
    asyncio.run(main())
