"""A producer process and worker processes sharing one queue file, with SharedSqliteEngine.

Run with ``python examples/worker_processes.py``. The main process starts three worker
processes, each with its own `Queue` on the same SQLite file, then puts jobs into it; each
job is done by exactly one worker. A ``None`` per worker, put after the jobs, tells the
workers to stop. The file lives in a temporary directory, so every run starts afresh.
"""

import asyncio
import multiprocessing
import os
import tempfile
from pathlib import Path

from aiodiskqueue import Queue, SharedSqliteEngine

WORKERS = 3
JOBS = 30


async def work(path: Path) -> None:
    done = 0
    async with await Queue.create(path, cls_storage_engine=SharedSqliteEngine) as queue:
        while (job := await queue.get()) is not None:
            await asyncio.sleep(0.02)  # the work the job asks for
            done += 1
            print(f"worker {os.getpid()}: did job {job['job']}")
            queue.task_done()  # counts what this process got
    print(f"worker {os.getpid()}: did {done} jobs")


def worker(path: Path) -> None:
    asyncio.run(work(path))


async def produce(path: Path) -> None:
    async with await Queue.create(path, cls_storage_engine=SharedSqliteEngine) as queue:
        for number in range(JOBS):
            await queue.put({"job": number})
        for _ in range(WORKERS):
            await queue.put(None)
    print(f"producer {os.getpid()}: put {JOBS} jobs")


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "jobs.sqlite"
        context = multiprocessing.get_context("spawn")
        workers = [context.Process(target=worker, args=(path,)) for _ in range(WORKERS)]
        for process in workers:
            process.start()
        asyncio.run(produce(path))
        for process in workers:
            process.join(timeout=60)
            if process.exitcode != 0:
                raise SystemExit(f"worker {process.pid} failed ({process.exitcode})")
        print("every job was done by one worker")


if __name__ == "__main__":
    main()
