"""LogEngine beside DbmEngine and a raw file append, side by side in one run (issue 12).

Run ``python measurements/log_engine.py`` (about two minutes). Every figure is held against
the raw, unsafe file append that the same run measures: one pickled, length-prefixed
``os.write`` per item on the event loop (``workload.append_record``), ops = appends. The
queue rows run the medium profile (5 producer tasks, 1 consumer, 256-character strings),
ops = puts + gets. Each row is the median of ``--repeat`` runs. It prints a table of ratios
and writes ``results/log-engine.csv`` and ``results/log-engine.png``.

The million-item row, the stall row and the system-call count run in child processes of
their own (this script with ``--child``), so that their peak RSS and system calls are theirs:
system calls of the event-loop thread are counted with ``strace -ff`` at two item counts, and
the difference divided by the difference of put+get pairs, so start-up does not count.
The reopen row's ratio is to reading the same queue's segment files with
``Path.read_bytes``, just before, in the same child.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tables
import workload

from aiodiskqueue import Queue
from aiodiskqueue.backends import local
from aiodiskqueue.engines import DbmEngine, LogEngine, Record, log

RESULTS = Path(__file__).resolve().parent / "results"
PRODUCERS = 5
ITEMS = 20_000
FSYNC_ITEMS = 2_000
MILLION = 1_000_000
BACKLOG = 100_000  # left in the queue to time a reopen


async def medium(
    make: Callable[[Path], Any],
    items: int,
    *,
    consumers: int = 1,
    delivery: str = "at-most-once",
    durability: str = "process-crash",
    sample: Callable[[Queue[str]], None] | None = None,
) -> float:
    """Run the medium profile on a new queue; return puts + gets per second."""
    with tempfile.TemporaryDirectory() as directory:
        queue: Queue[str] = await Queue.create(
            Path(directory) / "queue",
            cls_storage_engine=make,
            delivery=delivery,  # type: ignore[arg-type]
            durability=durability,  # type: ignore[arg-type]
        )
        left = [items]

        async def produce(first: int) -> None:
            for number in range(first, items, PRODUCERS):
                await queue.put(workload.make_item(number))

        async def consume() -> None:
            while left[0] > 0:
                left[0] -= 1
                item = await queue.get()
                if delivery == "at-least-once":
                    await queue.task_done()
                if sample is not None and left[0] % 10_000 == 0:
                    sample(queue)
                del item

        start = time.perf_counter()
        await asyncio.gather(
            *(produce(p) for p in range(PRODUCERS)), *(consume() for _ in range(consumers))
        )
        seconds = time.perf_counter() - start
        await queue.close()
    return 2 * items / seconds


async def engine_alone(items: int) -> float:
    """The medium profile on `LogEngine.commit_now` with none of the queue around it: each
    item pickled, stored as the next record and kept in a deque, and each get takes the
    head, unpickles it and removes its record; tasks yield every 50 calls. No window
    budget, task count, cancellation or maxsize: the most the engine leaves to a queue."""
    with tempfile.TemporaryDirectory() as directory:
        engine = LogEngine(Path(directory) / "queue")
        await engine.open()
        records: collections.deque[Record] = collections.deque()
        keys = itertools.count(1)
        calls = itertools.count()
        arrived: list[asyncio.Future[None]] = []

        async def put(item: str) -> None:
            record = Record(next(keys), pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
            engine.commit_now((record,), ())
            records.append(record)
            while arrived:
                arrived.pop().set_result(None)
            if not next(calls) % 50:
                await asyncio.sleep(0)

        async def get() -> str:
            while not records:
                arrived.append(asyncio.get_running_loop().create_future())
                await arrived[-1]
            record = records.popleft()
            engine.commit_now((), (record.key,))
            if not next(calls) % 50:
                await asyncio.sleep(0)
            item: str = pickle.loads(record.data)
            return item

        async def produce(first: int) -> None:
            for number in range(first, items, PRODUCERS):
                await put(workload.make_item(number))

        async def consume() -> None:
            for _ in range(items):
                await get()

        start = time.perf_counter()
        await asyncio.gather(*(produce(p) for p in range(PRODUCERS)), consume())
        seconds = time.perf_counter() - start
        await engine.close()
    return 2 * items / seconds


def file_append(items: int, *, fsync: bool = False) -> float:
    """The reference: appends per second of the raw, unsafe in-loop file append."""
    with tempfile.TemporaryDirectory() as directory:
        descriptor = os.open(Path(directory) / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        start = time.perf_counter()
        for number in range(items):
            workload.append_record(descriptor, workload.framed(number), fsync)
        seconds = time.perf_counter() - start
        os.close(descriptor)
    return items / seconds


def median(repeat: int, run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(repeat))


def queue_rate(repeat: int, make: Callable[[Path], Any], items: int, **options: Any) -> float:
    return median(repeat, lambda: asyncio.run(medium(make, items, **options)))


def in_turns(repeat: int, runs: dict[str, Callable[[], float]]) -> dict[str, float]:
    """The median of each of `runs`, run `repeat` times taking turns: a slow spell of this
    shared machine's disk (other processes flushing) then falls on each of them, not on
    the one that ran during it."""
    results: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            results[name].append(run())
    return {name: statistics.median(values) for name, values in results.items()}


def power_loss_rates(repeat: int) -> dict[str, float]:
    """Appends + fsync per second, and LogEngine's and DbmEngine's medium profile with
    ``durability="power-loss"``, in turns."""

    def queue(make: Callable[[Path], Any]) -> Callable[[], float]:
        return lambda: asyncio.run(medium(make, FSYNC_ITEMS, durability="power-loss"))

    return in_turns(
        repeat,
        {
            "append+fsync": lambda: file_append(FSYNC_ITEMS, fsync=True),
            "LogEngine": queue(LogEngine),
            "DbmEngine": queue(DbmEngine),
        },
    )


# Children


async def million() -> dict[str, float]:
    """1,000,000 items through the medium profile: rate, peak RSS, disk use beyond the
    backlog, then the time to reopen a queue left with BACKLOG items, and to read its
    segment files (the reopen's reference)."""
    worst_extra = [-1.0]
    directory = Path(tempfile.mkdtemp())
    path = directory / "queue"

    frame = 20 + len(workload.framed(0)) - 4  # a frame's header, then the pickled item

    def sample(queue: Queue[str]) -> None:
        disk = disk_use(queue._backend.engine.path)  # type: ignore[union-attr]
        beyond = (disk - queue.qsize() * frame) / log.DEFAULT_SEGMENT_SIZE
        worst_extra[0] = max(worst_extra[0], beyond)

    rate = await medium(LogEngine, MILLION, sample=sample)
    queue: Queue[str] = await Queue.create(path, cls_storage_engine=LogEngine)
    for number in range(BACKLOG):
        await queue.put(workload.make_item(number))
    await queue.close()
    start = time.perf_counter()
    for _, segment in log.segment_files(path):
        segment.read_bytes()
    read = time.perf_counter() - start
    start = time.perf_counter()
    queue = await Queue.create(path, cls_storage_engine=LogEngine)
    reopen = time.perf_counter() - start
    await queue.close()
    return {
        "rate": rate,
        "rss_mb": workload.peak_rss_mb(),
        "extra_segments": worst_extra[0],
        "reopen_s": reopen,
        "read_s": read,
    }


def disk_use(queue_path: Path) -> int:
    """Bytes in the segment files of the queue at `queue_path`."""
    used = 0
    for _, segment in log.segment_files(queue_path):
        with contextlib.suppress(FileNotFoundError):  # deleted meanwhile, by the engine's thread
            used += segment.stat().st_size
    return used


async def stall(items: int, readahead_bytes: int = 64 * 2**20) -> dict[str, float]:
    """The worst lateness of a 1 ms sleeper while 5 producers put flat out (into the
    queue's read-ahead window in memory, up to `readahead_bytes`, then only to storage)."""
    worst = [0.0]
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            worst[0] = max(worst[0], time.perf_counter() - start - 0.001)

    with tempfile.TemporaryDirectory() as directory:
        queue: Queue[str] = await Queue.create(
            Path(directory) / "queue", cls_storage_engine=LogEngine, readahead_bytes=readahead_bytes
        )
        prober = asyncio.create_task(probe())
        await asyncio.sleep(0.01)

        async def produce(first: int) -> None:
            for number in range(first, items, PRODUCERS):
                await queue.put(workload.make_item(number))

        await asyncio.gather(*(produce(p) for p in range(PRODUCERS)))
        done.set()
        await prober
        on_loop = queue._backend.engine.segments_made_on_the_loop  # type: ignore[union-attr]
        await queue.close()
    return {"stall_ms": worst[0] * 1000, "segments_made_on_the_loop": on_loop}


def busy_loop_stall() -> float:
    """The worst lateness of a 1 ms sleeper beside a task that yields every 50 us: what
    this machine's scheduling adds to every stall figure."""

    async def run() -> float:
        worst, done = [0.0], asyncio.Event()

        async def probe() -> None:
            while not done.is_set():
                start = time.perf_counter()
                await asyncio.sleep(0.001)
                worst[0] = max(worst[0], time.perf_counter() - start - 0.001)

        prober = asyncio.create_task(probe())
        end = time.perf_counter() + 2
        while time.perf_counter() < end:
            spin = time.perf_counter()
            while time.perf_counter() - spin < 0.00005:
                pass
            await asyncio.sleep(0)
        done.set()
        await prober
        return worst[0] * 1000

    return asyncio.run(run())


def child(kind: str, items: int, yield_after: float) -> None:
    local.YIELD_AFTER = yield_after
    if kind == "million":
        result = asyncio.run(million())
    elif kind == "stall":
        result = asyncio.run(stall(items))
    elif kind == "stall-small-window":
        result = asyncio.run(stall(items, readahead_bytes=2**20))
    else:  # the medium profile, for strace to count
        result = {"rate": asyncio.run(medium(LogEngine, items))}
    print(json.dumps(result))


def run_child(
    kind: str, items: int = 0, yield_after: float = local.YIELD_AFTER
) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", kind, str(items), str(yield_after)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=150)
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


def loop_syscalls(items: int) -> int:
    """System calls made by the event-loop (main) thread of a child running `items` items."""
    with tempfile.TemporaryDirectory() as directory:
        prefix = Path(directory) / "trace"
        command = [
            sys.executable,
            __file__,
            "--child",
            "medium",
            str(items),
            str(local.YIELD_AFTER),
        ]
        done = subprocess.run(
            ["strace", "-ff", "-o", str(prefix), *command],
            capture_output=True,
            text=True,
            check=True,
            timeout=150,
        )
        main = int(done.stdout and min(int(p.suffix[1:]) for p in Path(directory).iterdir()))
        return sum(1 for _ in Path(f"{prefix}.{main}").open())


# The run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), float(args.child[2]))
        return 0
    repeat = args.repeat
    rows: list[tuple[str, float, float, str]] = []  # name, value, ratio, target

    def add(name: str, value: float, reference: float, target: str) -> None:
        rows.append((name, value, value / reference, target))

    append = median(repeat, lambda: file_append(ITEMS))
    add("ref: file append (ops/s)", append, append, "1")
    add("LogEngine medium", queue_rate(repeat, LogEngine, ITEMS), append, ">= 0.6")
    add("DbmEngine medium", queue_rate(repeat, DbmEngine, ITEMS), append, "-")
    add(
        "LogEngine at-least-once",
        queue_rate(repeat, LogEngine, ITEMS, delivery="at-least-once"),
        append,
        ">= 0.5",
    )
    add(
        "LogEngine 4 consumers", queue_rate(repeat, LogEngine, ITEMS, consumers=4), append, ">= 0.6"
    )
    alone = median(repeat, lambda: asyncio.run(engine_alone(ITEMS)))
    add("LogEngine alone, no Queue", alone, append, "-")
    big = run_child("million")
    own = rows[1][1]
    rows.append(("LogEngine 1M items (vs its 20k)", big["rate"], big["rate"] / own, ">= 0.8"))
    rows.append(("1M: peak RSS MB", big["rss_mb"], big["rss_mb"], "< 64"))
    rows.append(("1M: disk beyond backlog (segments)", big["extra_segments"], 0, "<= 2"))
    reopen = big["reopen_s"]
    rows.append((f"reopen s, {BACKLOG:,} backlog", reopen, reopen / big["read_s"], "< 0.5"))
    power_loss = power_loss_rates(repeat)
    fsync_append, log_fsync = power_loss["append+fsync"], power_loss["LogEngine"]
    dbm_fsync = power_loss["DbmEngine"]
    rows.append(("power-loss: LogEngine vs DbmEngine", log_fsync, log_fsync / dbm_fsync, ">= 1.5"))
    rows.append(
        ("power-loss: LogEngine vs append+fsync", log_fsync, log_fsync / fsync_append, ">= 3")
    )
    # The fairness trade-off: how long the loop may run puts alone, against their rate.
    for after in (0.0005, local.YIELD_AFTER, 0.004, 1e9):
        stalled = run_child("stall", 100_000, after)
        rate = run_child("medium", ITEMS, after)["rate"]
        label = "never" if after > 1 else f"after {after * 1000:g} ms"
        rows.append((f"stall ms, yield {label}", stalled["stall_ms"], 0, "<= 10"))
        rows.append((f"  rate, yield {label}", rate, rate / append, "-"))
    small = run_child("stall-small-window", 100_000)["stall_ms"]
    rows.append(("stall ms, 1 MB read-ahead window", small, 0, "<= 10"))
    rows.append(("ref: busy loop stall ms (machine noise)", busy_loop_stall(), 0, "-"))
    low, high = 5_000, 25_000
    per_op = (loop_syscalls(high) - loop_syscalls(low)) / (high - low)
    rows.append(("loop-thread syscalls per put+get", per_op, 0, "about 0"))

    headers = ("measurement", "value", "ratio", "target")
    table = [
        [name, f"{value:,.2f}", f"{ratio:.2f}" if ratio else "", target]
        for name, value, ratio, target in rows
    ]
    tables.print_table(headers, table, {"value", "ratio"})
    RESULTS.mkdir(exist_ok=True)
    csv = RESULTS / "log-engine.csv"
    csv.unlink(missing_ok=True)
    tables.append_csv(csv, headers, table)
    chart(rows[:6], RESULTS / "log-engine.png")
    return 0


def chart(rows: list[tuple[str, float, float, str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name.replace(" (ops/s)", "") for name, *_ in rows]
    figure, axes = plt.subplots(figsize=(8, 3.5))
    axes.barh(names[::-1], [ratio for _, _, ratio, _ in rows][::-1], color="#4c72b0")
    axes.axvline(0.6, color="#c44e52", linestyle="--", label="target 0.6x")
    axes.set_xlabel("ops/s as a ratio of a raw in-loop file append, same run (medium profile)")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
