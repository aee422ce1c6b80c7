"""A queue's threads never keep a program from exiting, whatever state it is left in."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aiodiskqueue import Queue

from .conftest import ENGINES

PROGRAM = textwrap.dedent(
    """
    import asyncio, functools, json, sys
    from aiodiskqueue import Queue
    from aiodiskqueue.engines import DbmEngine, LogEngine, PickledList, SqliteEngine

    engine = {engine}

    async def main():
        queue = await Queue.create(sys.argv[1], cls_storage_engine=engine)
        for item in range(100):
            await queue.put(item)
        getter = asyncio.ensure_future(queue.get())
        putter = asyncio.ensure_future(queue.put("put while cancelled"))
        await asyncio.sleep(0)
        getter.cancel()
        putter.cancel()
        outcomes = await asyncio.gather(getter, putter, return_exceptions=True)
        print(json.dumps([repr(outcome) for outcome in outcomes]))
        queue.put_nowait("not awaited")
        global left_open
        left_open = queue  # never closed, still referenced at exit

    asyncio.run(main())
    """
)

ENGINE_SOURCES = {
    name: f"functools.partial(DbmEngine, backend={name[10:-1]!r})"
    if name.startswith("DbmEngine")
    else name
    for name in ENGINES
}


@pytest.mark.parametrize("engine_name", list(ENGINE_SOURCES))
async def test_a_program_that_leaves_a_queue_open_exits_and_keeps_its_items(
    engine_name: str, path: Path
) -> None:
    program = PROGRAM.format(engine=ENGINE_SOURCES[engine_name])
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", program, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    got, put = json.loads(done.stdout)
    async with await Queue.create(path, cls_storage_engine=ENGINES[engine_name]) as queue:
        items = [queue.get_nowait() for _ in range(queue.qsize())]
    # Each cancelled call either took effect whole or not at all; nothing else changed (a
    # get cancelled while its removal was stored stores its item again, at the tail).
    expected = list(range(1, 100)) if got == "0" else list(range(100))
    if put == "None":
        expected.append("put while cancelled")
    assert sorted(map(repr, items)) in (
        sorted(map(repr, expected)),
        sorted(map(repr, [*expected, "not awaited"])),
    )
