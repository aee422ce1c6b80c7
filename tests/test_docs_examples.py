"""The code shown in the documentation runs, so that it cannot rot."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from aiodiskqueue import Queue

from . import servers

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


def code_blocks() -> list[Any]:
    """Every ``.. code-block:: python`` of the documentation and the README, as a param."""
    blocks = []
    for page in [*sorted(DOCS.glob("*.rst")), DOCS.parent / "README.rst"]:
        text = page.read_text()
        for found in re.finditer(r"\.\. code-block:: python\n\n((?:   .*\n|\n)+)", text):
            code = textwrap.dedent(found.group(1))
            line = text.count("\n", 0, found.start()) + 1
            blocks.append(pytest.param(code, id=f"{page.name}:{line}"))
    return blocks


async def run_twice(arguments: list[str], cwd: Path) -> None:
    """Run a Python program twice in `cwd`: the second run finds what the first left."""
    for run in ("first", "second"):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *arguments,
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(DOCS / "examples")},
            stderr=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, f"{run} run: {stderr.decode()}"


@pytest.mark.parametrize("code", code_blocks())
async def test_a_code_block_of_the_docs_runs_twice_in_a_row(code: str, tmp_path: Path) -> None:
    """Each block runs on its own, twice, in a fresh directory; a block that defines
    `main()` and does not run it is run with it. Queues on the servers get names of the
    test's own."""
    async with contextlib.AsyncExitStack() as stack:
        for server in ("redis", "postgresql"):
            for address in set(re.findall(rf'"({server}://[^"]*/jobs)"', code)):
                on_server = servers.redis_queue if server == "redis" else servers.postgres_queue
                own = await stack.enter_async_context(on_server(address.rpartition("/")[0]))
                code = code.replace(f'"{address}"', f'"{own}"')
        if "async def main" in code and "asyncio.run(main())" not in code:
            code += "\nimport asyncio\n\nasyncio.run(main())\n"
        await run_twice(["-c", code], tmp_path)


@pytest.mark.parametrize(
    "example", sorted(path.name for path in (DOCS.parent / "examples").glob("*.py"))
)
async def test_an_example_runs_twice_in_a_row(example: str, tmp_path: Path) -> None:
    await run_twice([str(DOCS.parent / "examples" / example)], tmp_path)


@pytest.mark.parametrize("chart", ["throughput.png", "shared-engines.png"])
def test_the_docs_show_the_charts_that_the_measurements_drew(chart: str) -> None:
    drawn = DOCS.parent / "measurements" / "results" / chart
    assert (DOCS / "_static" / chart).read_bytes() == drawn.read_bytes(), (
        f"copy measurements/results/{chart} to docs/_static/ after measuring"
    )
