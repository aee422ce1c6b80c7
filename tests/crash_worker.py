"""The program that the crash tests kill: it puts and gets as fast as it can, and logs each call.

Run as ``python crash_worker.py PATH ENGINE DELIVERY ROUND LOG``. Two producers put the items
``"<round>-<producer>-<number>"`` with numbers counting up from 0; one consumer gets them,
and with at-least-once delivery also marks each done. Each call that returned is logged
with one unbuffered `os.write` of one line (``P item``, ``G item``, ``D item``), so a
SIGKILL never leaves a line half written. It prints ``started`` once the queue is open,
and runs until it is killed.
"""

from __future__ import annotations

import asyncio
import os
import sys

from conftest import FILE_ENGINES

from aiodiskqueue import Queue


async def main(path: str, engine: str, delivery: str, round_number: int, log: int) -> None:
    queue: Queue[str] = await Queue.create(
        path,
        cls_storage_engine=FILE_ENGINES[engine],
        delivery=delivery,  # type: ignore[arg-type]
    )

    async def produce(producer: int) -> None:
        number = 0
        while True:
            item = f"{round_number}-{producer}-{number}"
            await queue.put(item)
            os.write(log, f"P {item}\n".encode())
            number += 1

    async def consume() -> None:
        while True:
            item = await queue.get()
            os.write(log, f"G {item}\n".encode())
            if delivery == "at-least-once":
                await queue.task_done()
                os.write(log, f"D {item}\n".encode())

    print("started", flush=True)
    await asyncio.gather(produce(0), produce(1), consume())


if __name__ == "__main__":
    path, engine, delivery, round_number, log_path = sys.argv[1:]
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    asyncio.run(main(path, engine, delivery, int(round_number), log))
