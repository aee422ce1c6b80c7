"""The program that the acknowledgement tests kill: it processes items that finish in random order.

Run as ``python acknowledging_worker.py PATH ENGINE PATTERN SEED``. It opens the queue at PATH
with at-least-once delivery, puts the items 0 to 19, then gets them all and hands each to a
handler, the way PATTERN says:

- ``dispatcher``: one handler task per item, created by the getter right after its get;
- ``pool``: four worker tasks fed through an `asyncio.Queue`, which call ``task_done()``;
- ``receipts``: the same pool, which calls ``task_done(receipt)``.

Handlers finish in an order shuffled by SEED. Once half of them have finished (their
``task_done()`` awaited), it prints as JSON the items whose ``task_done()`` was called and
those whose ``task_done()`` returned, and kills itself with SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from typing import Any

from conftest import FILE_ENGINES

from aiodiskqueue import Queue

ITEMS = 20


async def main(path: str, engine: str, pattern: str, seed: int) -> None:
    queue: Queue[int] = await Queue.create(
        path, cls_storage_engine=FILE_ENGINES[engine], delivery="at-least-once"
    )
    for item in range(ITEMS):
        await queue.put(item)
    go = {item: asyncio.Event() for item in range(ITEMS)}
    called: list[int] = []
    finished: list[int] = []
    half_finished = asyncio.Event()

    async def handle(item: int, receipt: Any = None) -> None:
        await go[item].wait()
        called.append(item)
        await queue.task_done(receipt)
        finished.append(item)
        if len(finished) == ITEMS // 2:
            half_finished.set()

    running = []
    if pattern == "dispatcher":
        for _ in range(ITEMS):
            running.append(asyncio.create_task(handle(await queue.get())))
    else:
        feed: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

        async def work() -> None:
            while True:
                await handle(*await feed.get())

        running = [asyncio.create_task(work()) for _ in range(4)]
        for _ in range(ITEMS):
            item, receipt = await queue.get_with_receipt()
            feed.put_nowait((item, receipt if pattern == "receipts" else None))
    order = list(range(ITEMS))
    random.Random(seed).shuffle(order)
    for item in order:
        go[item].set()
        await asyncio.sleep(0)  # let the handlers that can finish run
        if half_finished.is_set():
            break
    await asyncio.wait_for(half_finished.wait(), 10)
    print(json.dumps({"called": called, "finished": finished}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
