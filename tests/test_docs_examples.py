"""The code shown in the documentation runs, so that it cannot rot."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

from aiodiskqueue import Queue

DOCS = Path(__file__).parent.parent / "docs"


def load_example(name: str) -> object:
    spec = importlib.util.spec_from_file_location(name, DOCS / "examples" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def test_the_custom_engine_guide_example_keeps_a_queue_across_reopens(
    tmp_path: Path,
) -> None:
    engine = load_example("memory_engine").MemoryEngine  # type: ignore[attr-defined]
    path = tmp_path / "jobs"
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        for item in range(5):
            await queue.put(item)
        assert await queue.get() == 0
    async with await Queue.create(path, cls_storage_engine=engine) as queue:
        assert [await queue.get() for _ in range(4)] == [1, 2, 3, 4]
        assert queue.empty()


async def test_the_shared_engine_guide_example_lets_two_queues_share_items() -> None:
    engine = load_example("memory_shared_engine").MemorySharedEngine  # type: ignore[attr-defined]
    producer = await Queue.create("jobs", 2, cls_storage_engine=engine)
    consumer = await Queue.create("jobs", cls_storage_engine=engine)

    async def put_all() -> None:
        for item in range(5):
            await producer.put(item)
            assert producer.qsize() <= 2

    putting = asyncio.create_task(asyncio.wait_for(put_all(), 5))
    got = [await asyncio.wait_for(consumer.get(), 5) for _ in range(5)]
    await putting
    assert got == [0, 1, 2, 3, 4]
    assert producer.qsize() == consumer.qsize() == 0
    await producer.close()
    await consumer.close()
