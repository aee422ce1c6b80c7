"""Several producers and consumers sharing one bounded queue, stopped with shutdown().

Run with ``python examples/multiple_consumers.py``. The queue file lives in a temporary
directory, so every run starts from an empty queue.
"""

import asyncio
import tempfile
from collections import Counter
from pathlib import Path

from aiodiskqueue import Queue, QueueShutDown

PRODUCERS = 3
CONSUMERS = 4
ITEMS_PER_PRODUCER = 50
MAXSIZE = 10


async def produce(queue: Queue[str], producer: int) -> None:
    for number in range(ITEMS_PER_PRODUCER):
        # With maxsize set, put() waits while the queue is full.
        await queue.put(f"producer-{producer} item-{number:02}")
    print(f"producer {producer}: put {ITEMS_PER_PRODUCER} items")


async def consume(queue: Queue[str], consumer: int) -> list[str]:
    taken: list[str] = []
    while True:
        try:
            item = await queue.get()
        except QueueShutDown:
            print(f"consumer {consumer}: queue shut down after {len(taken)} items")
            return taken
        taken.append(item)
        queue.task_done()


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "work.queue"
        async with await Queue.create(path, maxsize=MAXSIZE) as queue:
            consumers = [asyncio.create_task(consume(queue, n)) for n in range(CONSUMERS)]
            producers = [asyncio.create_task(produce(queue, n)) for n in range(PRODUCERS)]

            await asyncio.gather(*producers)
            await queue.join()
            print("every item has been handled")

            # Consumers waiting in get() on the now empty queue raise QueueShutDown.
            queue.shutdown()
            taken = await asyncio.gather(*consumers)

    consumed = Counter(item for items in taken for item in items)
    expected = {
        f"producer-{producer} item-{number:02}"
        for producer in range(PRODUCERS)
        for number in range(ITEMS_PER_PRODUCER)
    }
    assert set(consumed) == expected, "an item was lost"
    assert all(count == 1 for count in consumed.values()), "an item was consumed twice"
    print(f"{len(consumed)} items, each consumed exactly once")


if __name__ == "__main__":
    asyncio.run(main())
