"""Wake-up delay and idle CPU of a getter on each shared engine.

For each shared engine (SharedSqliteEngine always; RedisEngine and PostgresEngine when their server
answers), on a queue of its own:

* **wake-up**: process B waits in ``await get()`` on the empty queue; this process, A, puts an
  item and notes when ``put()`` returns; B notes when its ``get()`` returns. The difference,
  on the monotonic clock that both processes read (CLOCK_MONOTONIC), is the wake-up delay.
  Each of ``--rounds`` puts comes after a random pause of 0.1 to 0.3 s, so that B is surely
  waiting and the puts fall at every phase of a polling engine's interval. A delay can be
  below zero: B may get the item before A has read the server's reply to its put.
* **idle CPU**: process C waits in ``await get()`` on the empty queue for ``--idle-seconds``;
  its user plus system CPU time (``getrusage``: every thread of the process), divided by
  the wall time, is the idle CPU in % of one core. The row ``ref: asyncio.sleep`` is a
  process that only sleeps as long, the floor of any idle process.

Run it with the Python whose aiodiskqueue you want to measure, from a directory where a
source checkout does not shadow the installed package::

    python measurements/wakeup.py
    python measurements/wakeup.py --engines SharedSqliteEngine --rounds 200 --idle-seconds 30

It prints a table, appends it to ``results/wakeup.csv``, and draws this run's delays and
idle CPU in ``results/wakeup.png``. The target: a wake-up within TARGET_MS, and an idle
getter that costs next to nothing. The exit status is 1 if a delay exceeded TARGET_MS.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import servers
import tables
from run import default_label

from aiodiskqueue import Queue, engines

TARGET_MS = 50.0
PAUSE_SECONDS = (0.1, 0.3)
STOP = -1
IDLE_REFERENCE = "ref: asyncio.sleep"
SHARED_ENGINES = ("SharedSqliteEngine", *servers.SERVER_ENGINES)
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCRIPT = str(Path(__file__).resolve())
HEADERS = (
    "date",
    "label",
    "engine",
    "rounds",
    "median ms",
    "p95 ms",
    "max ms",
    f"over {TARGET_MS:g} ms",
    "idle s",
    "idle CPU %",
)


@dataclass
class Result:
    """What was measured of one engine (or of the idle reference)."""

    engine: str
    delays_ms: list[float] = field(default_factory=list)
    idle_seconds: float | None = None
    idle_cpu_percent: float | None = None

    def percentile(self, fraction: float) -> float:
        """The nearest-rank percentile of the delays."""
        ordered = sorted(self.delays_ms)
        return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]

    def over_target(self) -> int:
        return sum(delay > TARGET_MS for delay in self.delays_ms)


# --- the processes B and C ----------------------------------------------------------------


async def wait_in_get(engine: str, address: str) -> None:
    """Process B: say "waiting", wait in get(), say what came and when; until STOP comes."""
    async with await Queue.create(address, cls_storage_engine=getattr(engines, engine)) as queue:
        print("ready", flush=True)
        while True:
            print("waiting", flush=True)
            item = await queue.get()
            woke = time.monotonic_ns()
            print(f"{item} {woke}", flush=True)
            if item == STOP:
                return


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def idle(engine: str, address: str, seconds: float) -> dict[str, float]:
    """Process C: the CPU time used while get() waits `seconds` on an empty queue."""
    queue = None
    if engine != IDLE_REFERENCE:
        queue = await Queue.create(address, cls_storage_engine=getattr(engines, engine))
    cpu, start = cpu_seconds(), time.monotonic()
    try:
        if queue is None:
            await asyncio.sleep(seconds)
        else:
            item = await asyncio.wait_for(queue.get(), seconds)
            raise RuntimeError(f"the queue was to stay empty, but {item!r} came")
    except asyncio.TimeoutError:
        pass
    cpu, wall = cpu_seconds() - cpu, time.monotonic() - start
    if queue is not None:
        await queue.close()
    return {"cpu_s": cpu, "wall_s": wall}


# --- process A: measuring ------------------------------------------------------------------


async def line_of(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    line = await process.stdout.readline()
    if not line:
        raise RuntimeError(f"the waiting process ended with status {await process.wait()}")
    return line.decode().strip()


async def expect(process: asyncio.subprocess.Process, expected: str) -> None:
    line = await line_of(process)
    if line != expected:
        raise RuntimeError(f"the waiting process said {line!r}, not {expected!r}")


async def measure_wake_ups(engine: str, address: str, rounds: int, seed: int) -> list[float]:
    """The wake-up delays in ms of `rounds` puts in this process to a get in another."""
    pauses = random.Random(seed)
    delays = []
    async with await Queue.create(address, cls_storage_engine=getattr(engines, engine)) as queue:
        waiter = await asyncio.create_subprocess_exec(
            sys.executable, SCRIPT, "--waiter", engine, address, stdout=asyncio.subprocess.PIPE
        )
        try:
            await expect(waiter, "ready")
            for number in [*range(rounds), STOP]:
                await expect(waiter, "waiting")
                await asyncio.sleep(pauses.uniform(*PAUSE_SECONDS))
                await queue.put(number)
                put_returned = time.monotonic_ns()
                got, woke = (await line_of(waiter)).split()
                if int(got) != number:
                    raise RuntimeError(f"put {number}, but the waiting process got {got}")
                if number != STOP:
                    delays.append((int(woke) - put_returned) / 1e6)
            if await waiter.wait() != 0:
                raise RuntimeError(f"the waiting process ended with status {waiter.returncode}")
        finally:
            if waiter.returncode is None:
                waiter.kill()
                await waiter.wait()
    return delays


async def measure_idle(engine: str, address: str, seconds: float) -> tuple[float, float]:
    """Wall seconds and CPU % of one core of a process whose get() waits `seconds`."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        SCRIPT,
        "--idle",
        engine,
        address,
        str(seconds),
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"the idle process ended with status {child.returncode}")
    report = json.loads(stdout.decode().splitlines()[-1])
    return report["wall_s"], 100 * report["cpu_s"] / report["wall_s"]


def measure(engine: str, url: str, args: argparse.Namespace) -> Result:
    """Both measurements of `engine`, on a queue of its own that is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="aiodiskqueue-wakeup-") as directory:
        address = str(Path(directory) / "queue")
        if engine in servers.SERVER_ENGINES:
            address = servers.queue_address(url, servers.unique_name())
        try:
            result = Result(engine)
            result.delays_ms = asyncio.run(
                measure_wake_ups(engine, address, args.rounds, args.seed)
            )
            result.idle_seconds, result.idle_cpu_percent = asyncio.run(
                measure_idle(engine, address, args.idle_seconds)
            )
        finally:
            if engine in servers.SERVER_ENGINES:
                try:
                    servers.drop_queue(engine, address)
                except Exception as error:  # the figures stand; say what is left behind
                    print(f"note: could not remove the queue {address}: {error}")
    return result


def measure_reference(args: argparse.Namespace) -> Result:
    wall, cpu = asyncio.run(measure_idle(IDLE_REFERENCE, "", args.idle_seconds))
    return Result(IDLE_REFERENCE, idle_seconds=wall, idle_cpu_percent=cpu)


# --- table, CSV and chart --------------------------------------------------------------------


def number(value: float | None, decimals: int) -> str:
    return "" if value is None else f"{value:.{decimals}f}"


def cells(result: Result, date: str, label: str) -> list[str]:
    delays = result.delays_ms
    return [
        date,
        label,
        result.engine,
        str(len(delays)) if delays else "",
        number(statistics.median(delays), 2) if delays else "",
        number(result.percentile(0.95), 2) if delays else "",
        number(max(delays), 2) if delays else "",
        str(result.over_target()) if delays else "",
        number(result.idle_seconds, 1),
        number(result.idle_cpu_percent, 2),
    ]


def print_table(lines: list[list[str]]) -> None:
    tables.print_table(HEADERS, lines, HEADERS[3:])


def append_csv(path: Path, lines: list[list[str]]) -> None:
    tables.append_csv(path, HEADERS, lines)


def draw(results: list[Result], title: str, path: Path) -> None:
    """This run's delays, one dot each, and the idle CPU, if matplotlib is installed."""
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        print("note: matplotlib is not installed, so no chart was drawn")
        return
    matplotlib.use("Agg")
    from matplotlib import pyplot

    floor = 0.01  # the delays are drawn on a log scale: a delay below it is drawn at it
    figure, (delays, cpu) = pyplot.subplots(1, 2, figsize=(13, 5))
    measured = [result for result in results if result.delays_ms]
    jitter = random.Random(0)
    for index, result in enumerate(measured):
        xs = [index + jitter.uniform(-0.2, 0.2) for _ in result.delays_ms]
        ys = [max(delay, floor) for delay in result.delays_ms]
        delays.scatter(xs, ys, s=12, alpha=0.6, color=f"C{index}")
        median = statistics.median(result.delays_ms)
        delays.hlines(max(median, floor), index - 0.3, index + 0.3, color="black")
    delays.axhline(TARGET_MS, color="red", linestyle="--", label=f"target: {TARGET_MS:g} ms")
    delays.set_xticks(
        range(len(measured)), [result.engine for result in measured], rotation=15, ha="right"
    )
    delays.set_yscale("log")
    delays.set_ylabel(f"put() returns in A to get() returns in B, ms (drawn at least {floor:g})")
    delays.set_title("wake-up delay of a waiting get() in another process (bar: median)")
    delays.grid(True, which="both", axis="y", alpha=0.3)
    delays.legend(loc="upper right", fontsize="small")
    idle_rows = [result for result in results if result.idle_cpu_percent is not None]
    bars = cpu.bar(
        range(len(idle_rows)),
        [result.idle_cpu_percent or 0.0 for result in idle_rows],
        color=[
            "0.6" if result.engine == IDLE_REFERENCE else f"C{index}"
            for index, result in enumerate(idle_rows)
        ],
    )
    cpu.bar_label(bars, fmt="%.2f %%", fontsize="small")
    cpu.set_xticks(
        range(len(idle_rows)), [result.engine for result in idle_rows], rotation=15, ha="right"
    )
    cpu.set_ylabel("CPU time / wall time, % of one core")
    cpu.set_title("CPU of a process whose get() waits on an empty queue")
    cpu.grid(True, axis="y", alpha=0.3)
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    pyplot.close(figure)
    print(f"chart: {path}")


# --- options -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--engines",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=list(SHARED_ENGINES),
        help="comma-separated shared engines; those on a server run if it answers "
        f"(default: {','.join(SHARED_ENGINES)})",
    )
    parser.add_argument("--rounds", type=int, default=50, help="puts (default: 50)")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=10.0,
        help="how long the idle getter waits (default: 10)",
    )
    parser.add_argument("--redis-url", default=servers.DEFAULT_URLS[servers.REDIS])
    parser.add_argument("--postgres-url", default=servers.DEFAULT_URLS[servers.POSTGRES])
    parser.add_argument("--seed", type=int, default=0, help="of the pauses (default: 0)")
    parser.add_argument("--csv", type=Path, default=RESULTS_DIR / "wakeup.csv")
    parser.add_argument("--chart", type=Path, default=RESULTS_DIR / "wakeup.png")
    parser.add_argument("--label", default=default_label())
    parser.add_argument("--waiter", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--idle", nargs=3, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.waiter:
        asyncio.run(wait_in_get(*args.waiter))
        return 0
    if args.idle:
        engine, address, seconds = args.idle
        print(json.dumps(asyncio.run(idle(engine, address, float(seconds)))))
        return 0
    urls = {servers.REDIS: args.redis_url, servers.POSTGRES: args.postgres_url}
    results = []
    for engine in args.engines:
        reason = None
        if not isinstance(getattr(engines, "SharedStorageEngine", None), type):
            reason = "this aiodiskqueue has no shared engines"
        elif engine in servers.SERVER_ENGINES:
            reason = servers.problem(engine, urls[engine])
        if reason is not None:
            print(f"note: skipping {engine}: {reason}")
            continue
        print(f"measuring {engine} ...", file=sys.stderr, flush=True)
        results.append(measure(engine, urls.get(engine, ""), args))
    if not results:
        return 1
    results.append(measure_reference(args))
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    lines = [cells(result, date, args.label) for result in results]
    print_table(lines)
    append_csv(args.csv, lines)
    print(f"results appended to {args.csv}")
    draw(results, f"{args.label}, {date} UTC", args.chart)
    return 1 if any(result.over_target() for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
