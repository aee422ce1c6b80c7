"""Put items, get them back, and find unfinished work again after reopening the queue.

Run with ``python examples/basic_usage.py``. The queue file lives in a temporary directory,
so every run starts from an empty queue.
"""

import asyncio
import tempfile
from pathlib import Path

from aiodiskqueue import Queue


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "basic.queue"

        async with await Queue.create(path) as queue:
            for item in ("apple", "banana", "cherry"):
                await queue.put(item)
                print(f"put {item!r}")

            while not queue.empty():
                item = await queue.get()
                print(f"got {item!r}")
                queue.task_done()
            await queue.join()
            print("every item got and marked done")

            # When put() returns, the item is stored: it outlives this process.
            for item in ("durian", "elderberry"):
                await queue.put(item)
                print(f"put {item!r} and close the queue without getting it")

        async with await Queue.create(path) as queue:
            print(f"reopened {path.name}: {queue.qsize()} items restored")
            while not queue.empty():
                item = await queue.get()
                print(f"got {item!r}")
                queue.task_done()
            # Restored items count as unfinished tasks, so join() waits for them too.
            await queue.join()
            print("every restored item got and marked done")


if __name__ == "__main__":
    asyncio.run(main())
