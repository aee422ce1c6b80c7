"""With at-least-once delivery, `task_done()` never removes an item whose processing goes on.

Handlers that finish in any order, workers fed through another queue, explicit receipts: a
process killed mid-work finds every unfinished item again after the restart. Items already
done may come back too (at-least-once allows it), except with receipts, which name their item.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aiodiskqueue import Queue, Receipt
from aiodiskqueue.acknowledgements import Acknowledgements
from aiodiskqueue.acknowledgements import _claims as claims

from .conftest import ENGINES, FILE_ENGINES
from .helpers import drain, within

WORKER = Path(__file__).with_name("acknowledging_worker.py")
LOCAL_ENGINES = [name for name in FILE_ENGINES if name != "SharedSqliteEngine"]


async def open_at_least_once(path: Path, engine: Any) -> Queue[Any]:
    return await Queue.create(path, cls_storage_engine=engine, delivery="at-least-once")


async def killed_mid_work(path: Path, engine: str, pattern: str, seed: int) -> dict[str, list[int]]:
    """Run the worker until it kills itself; return the items whose `task_done()` it called
    (``"called"``) and those whose `task_done()` returned (``"finished"``)."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(WORKER), str(path), engine, pattern, str(seed)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=WORKER.parent,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    calls: dict[str, list[int]] = json.loads(done.stdout)
    return calls


@pytest.mark.parametrize("engine", LOCAL_ENGINES)
@pytest.mark.parametrize("pattern", ["dispatcher", "pool", "receipts"])
@pytest.mark.parametrize("seed", range(3))
async def test_a_kill_mid_work_loses_no_unfinished_item(
    tmp_path: Path, engine: str, pattern: str, seed: int
) -> None:
    path = tmp_path / "queue.db"
    calls = await killed_mid_work(path, engine, pattern, seed)
    async with await open_at_least_once(path, FILE_ENGINES[engine]) as queue:
        left = await drain(queue)
    unfinished = set(range(20)) - set(calls["called"])
    assert unfinished <= set(left), f"lost unfinished items {sorted(unfinished - set(left))}"
    assert len(left) == len(set(left)), "an item came back twice"
    if pattern == "receipts":  # each returned task_done(receipt) removed exactly its item
        assert not set(left) & set(calls["finished"])


@pytest.fixture(params=list(ENGINES))
async def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    queue = await open_at_least_once(tmp_path / "queue.db", ENGINES[request.param])
    for item in ("a", "b", "c"):
        await queue.put(item)
    yield queue
    await queue.close()


async def stored(queue: Queue[Any]) -> list[Any]:
    """The items stored, after the queue closes."""
    await queue.close()
    engine = queue._backend.engine
    async with await open_at_least_once(engine.path, type(engine)) as reopened:
        return await drain(reopened)


async def test_task_done_in_the_getter_removes_the_item_it_got(queue: Queue[Any]) -> None:
    assert await queue.get() == "a"
    await queue.task_done()
    assert await stored(queue) == ["b", "c"]


async def test_task_done_in_a_handler_created_after_the_get_removes_its_item(
    queue: Queue[Any],
) -> None:
    async def handle() -> None:
        await queue.task_done()

    await queue.get()
    await within(asyncio.create_task(handle()))
    assert await stored(queue) == ["b", "c"]


async def test_a_handler_finishing_before_an_older_one_removes_nothing_until_it_proves_its_item(
    queue: Queue[Any],
) -> None:
    finish_a = asyncio.Event()

    async def handle(wait: asyncio.Event | None = None) -> None:
        if wait is not None:
            await wait.wait()
        await queue.task_done()

    await queue.get()
    handling_a = asyncio.create_task(handle(finish_a))
    await queue.get()
    await within(asyncio.create_task(handle()))  # "b" finished, while "a" goes on
    assert len(list(queue._acks.keys)) == 2  # neither is proven yet
    finish_a.set()
    await within(handling_a)
    assert await stored(queue) == ["c"]


async def test_anonymous_task_done_calls_remove_items_once_they_match_every_item_got(
    queue: Queue[Any],
) -> None:
    feed: asyncio.Queue[Any] = asyncio.Queue()

    async def worker() -> None:
        await feed.get()
        await queue.task_done()

    workers = [asyncio.create_task(worker()) for _ in range(2)]
    for _ in range(2):
        feed.put_nowait(await queue.get_with_receipt())
    await within(asyncio.gather(*workers))
    assert await stored(queue) == ["c"]


async def test_task_done_with_a_receipt_removes_exactly_its_item(queue: Queue[Any]) -> None:
    _, receipt_a = await queue.get_with_receipt()
    _, receipt_b = await queue.get_with_receipt()
    await queue.task_done(receipt_b)
    assert await stored(queue) == ["a", "c"]
    assert isinstance(receipt_a, Receipt)


async def test_a_receipt_used_twice_raises_value_error(queue: Queue[Any]) -> None:
    _, receipt = await queue.get_with_receipt()
    await queue.task_done(receipt)
    with pytest.raises(ValueError, match="already marked done"):
        queue.task_done(receipt)


async def test_a_receipt_of_another_queue_raises_value_error(
    queue: Queue[Any], tmp_path: Path
) -> None:
    async with await open_at_least_once(tmp_path / "other.db", ENGINES["SqliteEngine"]) as other:
        await other.put("x")
        _, receipt = await other.get_with_receipt()
        with pytest.raises(ValueError, match="another queue"):
            queue.task_done(receipt)


# How the calls that name no item exactly prove items done


def acknowledgements(*keys: int) -> tuple[Acknowledgements, dict[int, Receipt]]:
    acks = Acknowledgements(tracking=True)
    return acks, {key: acks.delivered(key, claim=False) for key in keys}


def finish_holding(acks: Acknowledgements, receipts: list[Receipt]) -> list[int]:
    """A task_done() in a context that holds claims to `receipts`."""
    context = contextvars.copy_context()
    context.run(claims.set, tuple(receipts))
    return context.run(acks.finish, None)


def test_a_call_holding_one_unfinished_claim_proves_its_item() -> None:
    acks, receipts = acknowledgements(1, 2)
    assert finish_holding(acks, [receipts[1]]) == [1]


def test_a_call_holding_two_claims_proves_nothing_until_another_proves_one_of_them() -> None:
    acks, receipts = acknowledgements(1, 2, 3)
    assert finish_holding(acks, [receipts[1], receipts[2]]) == []
    assert sorted(acks.finish(receipts[1])) == [1, 2]


def test_as_many_calls_as_the_items_they_name_prove_those_items() -> None:
    acks, receipts = acknowledgements(1, 2, 3)
    assert finish_holding(acks, [receipts[1], receipts[2]]) == []
    assert sorted(finish_holding(acks, [receipts[1], receipts[2]])) == [1, 2]
    assert list(acks.keys) == [3]


def test_anonymous_calls_prove_every_item_once_they_are_as_many() -> None:
    acks, _ = acknowledgements(1, 2)
    assert acks.finish(None) == []
    assert sorted(acks.finish(None)) == [1, 2]


def test_a_call_whose_candidates_others_proved_is_dropped() -> None:
    acks, receipts = acknowledgements(1, 2, 3)
    assert finish_holding(acks, [receipts[1], receipts[2]]) == []
    assert acks.finish(receipts[1]) == [1, 2]  # the first call was 2's
    assert acks.finish(receipts[3]) == [3]
    assert list(acks.keys) == []


def test_at_most_once_keeps_no_record_of_the_items_it_delivered() -> None:
    """Memory does not grow with the items got: with at-most-once delivery an item left
    storage when it was got, and nothing about it need be kept."""
    acks = Acknowledgements(tracking=False)
    for key in range(1, 1001):
        acks.delivered(key, claim=True)
        assert acks.finish(None) == []
    receipt = acks.delivered(1001, claim=False)
    assert acks.finish(receipt) == []
    assert list(acks.keys) == []


def test_at_most_once_refuses_a_receipt_used_twice_or_of_another_queue() -> None:
    acks = Acknowledgements(tracking=False)
    receipt = acks.delivered(1, claim=False)
    acks.finish(receipt)
    with pytest.raises(ValueError, match="already marked done"):
        acks.finish(receipt)
    with pytest.raises(ValueError, match="another queue"):
        acks.finish(Acknowledgements(tracking=False).delivered(1, claim=False))
