"""A producer or a consumer process on a shared queue, for the multi-process tests.

Run as ``python shared_worker.py ENGINE ADDRESS produce NAME COUNT`` to put the items
``"<NAME>-<number>"`` for numbers from 0 up to COUNT, or as
``python shared_worker.py ENGINE ADDRESS consume OUTPUT`` to get items until the item
``"stop"`` and then write the items got to the file OUTPUT, one per line. ENGINE is the name
of a class in `aiodiskqueue.engines`. Any error ends the process with a traceback and a
status other than 0.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aiodiskqueue import Queue, engines

STOP = "stop"


async def produce(queue: Queue[str], name: str, count: int) -> None:
    for number in range(count):
        await queue.put(f"{name}-{number}")


async def consume(queue: Queue[str], output: Path) -> None:
    got = []
    while (item := await queue.get()) != STOP:
        got.append(item)
    output.write_text("".join(f"{item}\n" for item in got))


async def main(engine: str, address: str, role: str, *arguments: str) -> None:
    async with await Queue.create(address, cls_storage_engine=getattr(engines, engine)) as queue:
        if role == "produce":
            await produce(queue, arguments[0], int(arguments[1]))
        else:
            await consume(queue, Path(arguments[0]))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
