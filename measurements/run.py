"""Throughput benchmark of aiodiskqueue's storage engines.

Runs the load profiles of the original aiodiskqueue against each engine and item count, and
reports puts plus gets per second, the peak RSS, the bytes on disk per item, the worst event
loop lag and whether every item came out exactly once.

Run it with the Python whose aiodiskqueue you want to measure (3.10 or newer), from a directory
where a source checkout does not shadow the installed package::

    python measurements/run.py --quick
    python measurements/run.py --profiles minimal,medium,heavy --items 1000,10000,100000
    python measurements/run.py --engines SqliteEngine --label "aiodiskqueue 0.1.2"

Each row (engine, profile, item count) runs in a fresh child process, this script in its hidden
``--one`` mode, with a fresh temporary directory: so the peak RSS belongs to that row alone, and
a row that exceeds ``--timeout`` is killed and reported as TIMEOUT while the others go on.
Rows are appended to a CSV file, so runs of different versions can be combined; the chart is
redrawn from the whole file. The exit status is 1 if any row did not come out "ok".

Only the API that aiodiskqueue 0.1.2 also has is used, so one script compares releases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import inspect
import itertools
import json
import random
import resource
import string
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import aiodiskqueue
from aiodiskqueue import Queue, engines

ENGINE_NAMES = ("DbmEngine", "PickledList", "SqliteEngine")
ITEM_LENGTH = 256
LAG_PROBE_SECONDS = 0.001
STALL_SECONDS = 30.0
RESULTS_DIR = Path(__file__).resolve().parent / "results"
HEADERS = (
    "label",
    "engine",
    "profile",
    "items",
    "seconds",
    "ops/s",
    "peak RSS MB",
    "bytes/item",
    "worst loop lag ms",
    "exactly-once",
)
NUMERIC_HEADERS = frozenset(HEADERS[3:9])
LINE_STYLES = ("-", "--", ":", "-.")

T = TypeVar("T")


@dataclass(frozen=True)
class Profile:
    """How many tasks put items into the queue and how many get them out, concurrently."""

    producers: int
    consumers: int


PROFILES = {
    "minimal": Profile(producers=1, consumers=1),
    "medium": Profile(producers=5, consumers=1),
    "heavy": Profile(producers=20, consumers=2),
    "producers": Profile(producers=2, consumers=0),
    "consumers": Profile(producers=0, consumers=2),
}


@dataclass
class Measurement:
    """What one child process measured; every number is None when the row did not finish."""

    seconds: float | None = None
    ops_per_s: float | None = None
    peak_rss_mb: float | None = None
    bytes_per_item: float | None = None
    worst_loop_lag_ms: float | None = None
    exactly_once: str = ""


@dataclass
class Row:
    """One line of the results table."""

    label: str
    engine: str
    profile: str
    items: int
    measurement: Measurement

    @property
    def passed(self) -> bool:
        return self.measurement.exactly_once == "ok"


# --- the measurement, run in a child process ---------------------------------------------


class Delivery:
    """Checks that every put item comes out exactly once as items come out, keeping none of
    the items gotten: the peak RSS should show the queue's memory, not the benchmark's."""

    def __init__(self, items: list[str]) -> None:
        self.expected = len(items)
        self.gotten = 0
        self._unseen = set(items)
        self._extra = 0

    def record(self, item: str) -> None:
        self.gotten += 1
        if item in self._unseen:
            self._unseen.remove(item)
        else:
            self._extra += 1

    def verdict(self) -> str:
        if not self._unseen and not self._extra:
            return "ok"
        return f"FAILED: {len(self._unseen)} missing, {self._extra} extra of {self.expected}"


class Consumers:
    """Tasks that get items until as many came out as were put. The one that gets the last
    item cancels the others, which can then only be waiting for an item that will not come.
    A watchdog stops them all if no item comes for STALL_SECONDS, so lost items are reported
    as missing instead of leaving the consumers waiting forever."""

    def __init__(self, queue: Queue[str], delivery: Delivery, count: int) -> None:
        self._queue = queue
        self._delivery = delivery
        self.tasks = [asyncio.create_task(self._consume()) for _ in range(count)]
        if count:
            self.tasks.append(asyncio.create_task(self._watch()))

    async def _consume(self) -> None:
        while self._delivery.gotten < self._delivery.expected:
            self._delivery.record(await self._queue.get())
            await mark_done(self._queue)
        self._stop_others()

    async def _watch(self) -> None:
        seen = -1
        while self._delivery.gotten != seen:
            seen = self._delivery.gotten
            await asyncio.sleep(STALL_SECONDS)
        self._stop_others()

    def _stop_others(self) -> None:
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()


class LoopLag:
    """The worst lateness of a short sleep: how long the event loop was kept from a task."""

    def __init__(self) -> None:
        self.worst_ms = 0.0
        # Due from the start: the probe's first sleep begins only once the loop lets it run.
        self._due = time.perf_counter() + LAG_PROBE_SECONDS

    async def probe(self) -> None:
        while True:
            await asyncio.sleep(max(0.0, self._due - time.perf_counter()))
            self.record_lateness()
            self._due = time.perf_counter() + LAG_PROBE_SECONDS

    def record_lateness(self) -> None:
        self.worst_ms = max(self.worst_ms, (time.perf_counter() - self._due) * 1000)


@contextlib.asynccontextmanager
async def watching_loop_lag() -> AsyncIterator[LoopLag]:
    lag = LoopLag()
    probe = asyncio.create_task(lag.probe())
    try:
        yield lag
    finally:
        probe.cancel()
        # A probe still asleep when the row ends may be overdue: a loop blocked throughout
        # would otherwise look like no lag at all.
        lag.record_lateness()


def make_items(count: int) -> list[str]:
    """Distinct strings of ITEM_LENGTH: a counter keeps them unique, random letters fill up."""
    items = []
    for number in range(count):
        prefix = f"{number}-"
        filler = random.choices(string.ascii_letters, k=ITEM_LENGTH - len(prefix))
        items.append(prefix + "".join(filler))
    return items


def split(items: list[str], parts: int) -> list[list[str]]:
    return [items[start::parts] for start in range(parts)]


async def mark_done(queue: Queue[str]) -> None:
    # 0.1.2's task_done is a coroutine function, asyncio.Queue's is a plain method.
    done = queue.task_done()
    if inspect.isawaitable(done):
        await done


async def put_all(queue: Queue[str], items: list[str]) -> None:
    for item in items:
        await queue.put(item)


async def wait_for_all(tasks: list[asyncio.Task[None]]) -> None:
    """Wait until every task is done or cancelled. If one fails, cancel the rest and raise its
    error, so that a failure cannot leave the others waiting forever (TaskGroup needs 3.11)."""
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in pending:
        task.cancel()
    for task in done:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error


async def run_workers(
    queue: Queue[str], items: list[str], profile: Profile, delivery: Delivery
) -> None:
    """Run the profile's producers, which share the items, and its consumers, until every
    item is put and, if there are consumers, has come out."""
    shares = split(items, profile.producers)
    producers = [asyncio.create_task(put_all(queue, share)) for share in shares]
    consumers = Consumers(queue, delivery, profile.consumers)
    await wait_for_all(producers + consumers.tasks)


async def close(queue: Queue[str]) -> None:
    close_queue = getattr(queue, "close", None)
    if inspect.iscoroutinefunction(close_queue):
        await close_queue()


def disk_bytes_per_item(directory: Path, count: int) -> float:
    size = sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())
    return size / count


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kibibytes, macOS bytes.
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


async def measure(engine: type, profile: Profile, count: int, directory: Path) -> Measurement:
    """Time one profile; fill the queue beforehand for consumers alone, and empty it
    afterwards for producers alone, so that every row can check exactly-once delivery."""
    queue: Queue[str] = await Queue.create(directory / "queue", cls_storage_engine=engine)
    items = make_items(count)
    delivery = Delivery(items)
    bytes_per_item = None
    if not profile.producers:
        await put_all(queue, items)
        bytes_per_item = disk_bytes_per_item(directory, count)
    async with watching_loop_lag() as lag:
        start = time.perf_counter()
        await run_workers(queue, items, profile, delivery)
        seconds = time.perf_counter() - start
    if not profile.consumers:
        bytes_per_item = disk_bytes_per_item(directory, count)
        await run_workers(queue, [], Profile(producers=0, consumers=1), delivery)
    await close(queue)
    operations = count * (bool(profile.producers) + bool(profile.consumers))
    return Measurement(
        seconds=seconds,
        ops_per_s=operations / seconds,
        peak_rss_mb=peak_rss_mb(),
        bytes_per_item=bytes_per_item,
        worst_loop_lag_ms=lag.worst_ms,
        exactly_once=delivery.verdict(),
    )


def run_one(engine_name: str, profile_name: str, count: str, directory: str) -> int:
    """The child's side: measure one row and print it as JSON on the last line."""
    engine = getattr(engines, engine_name)
    coroutine = measure(engine, PROFILES[profile_name], int(count), Path(directory))
    print(json.dumps(asdict(asyncio.run(coroutine))))
    return 0


# --- the parent: one child per row, then table, CSV and chart -------------------------------


def run_row(engine_name: str, profile_name: str, count: int, timeout: float) -> Measurement:
    # The parent owns the directory, so it is removed even when the child is killed.
    with tempfile.TemporaryDirectory(prefix="aiodiskqueue-measure-") as directory:
        script = str(Path(__file__).resolve())
        command = [sys.executable, script, "--one", engine_name, profile_name, str(count)]
        try:
            child = subprocess.run(
                [*command, directory], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return Measurement(exactly_once="TIMEOUT")
    sys.stderr.write(child.stderr)
    if child.returncode != 0:
        last_line = child.stderr.strip().splitlines()[-1:] or [f"exit {child.returncode}"]
        return Measurement(exactly_once=f"ERROR: {last_line[0]}")
    return Measurement(**json.loads(child.stdout.splitlines()[-1]))


def available_engines(names: Sequence[str]) -> list[str]:
    available = []
    for name in names:
        if hasattr(engines, name):
            available.append(name)
        else:
            print(f"note: skipping {name}, which this aiodiskqueue does not have")
    return available


def run_rows(args: argparse.Namespace) -> list[Row]:
    rows = []
    plan = itertools.product(available_engines(args.engines), args.profiles, args.items)
    for engine_name, profile_name, count in plan:
        print(f"running {engine_name} {profile_name} {count} ...", file=sys.stderr, flush=True)
        measurement = run_row(engine_name, profile_name, count, args.timeout)
        rows.append(Row(args.label, engine_name, profile_name, count, measurement))
    return rows


def number(value: float | None, decimals: int) -> str:
    return "" if value is None else f"{value:.{decimals}f}"


def cells(row: Row) -> list[str]:
    measured = row.measurement
    return [
        row.label,
        row.engine,
        row.profile,
        str(row.items),
        number(measured.seconds, 3),
        number(measured.ops_per_s, 0),
        number(measured.peak_rss_mb, 1),
        number(measured.bytes_per_item, 1),
        number(measured.worst_loop_lag_ms, 2),
        measured.exactly_once,
    ]


def print_table(rows: list[Row]) -> None:
    lines = [list(HEADERS), *(cells(row) for row in rows)]
    widths = [max(len(line[column]) for line in lines) for column in range(len(HEADERS))]
    for line in lines:
        aligned = [
            text.rjust(width) if header in NUMERIC_HEADERS else text.ljust(width)
            for header, text, width in zip(HEADERS, line, widths, strict=True)
        ]
        print("  ".join(aligned).rstrip())


def append_csv(path: Path, rows: list[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    is_new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as file:
        writer = csv.writer(file)
        if is_new:
            writer.writerow(HEADERS)
        writer.writerows(cells(row) for row in rows)


Series = dict[tuple[str, str], dict[int, float]]


def throughput_series(records: list[dict[str, str]]) -> tuple[str, Series]:
    """Ops/s by item count for each (label, engine), of the medium profile if measured, else
    of the first profile in the file; a later run of the same point replaces an earlier one."""
    measured = [record for record in records if record["ops/s"]]
    profiles = [record["profile"] for record in measured]
    profile = "medium" if "medium" in profiles else profiles[0]
    series: Series = defaultdict(dict)
    for record in measured:
        if record["profile"] == profile:
            line = series[(record["label"], record["engine"])]
            line[int(record["items"])] = float(record["ops/s"])
    return profile, series


def draw_chart(csv_path: Path, chart_path: Path) -> None:
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        print("note: matplotlib is not installed, so no chart was drawn")
        return
    matplotlib.use("Agg")
    from matplotlib import pyplot

    with csv_path.open(newline="") as file:
        records = list(csv.DictReader(file))
    if not any(record["ops/s"] for record in records):
        print("note: no finished rows to chart")
        return
    profile, series = throughput_series(records)
    figure, axes = pyplot.subplots(figsize=(9, 5.5))
    # One colour per engine and one line style per label, so versions compare at a glance.
    colours = {engine: f"C{index}" for index, engine in enumerate(sorted({e for _, e in series}))}
    labels = sorted({label for label, _ in series})
    for (label, engine), points in sorted(series.items()):
        counts = sorted(points)
        axes.plot(
            counts,
            [points[count] for count in counts],
            color=colours[engine],
            linestyle=LINE_STYLES[labels.index(label) % len(LINE_STYLES)],
            marker="o",
            label=f"{label} {engine}",
        )
    axes.set_xscale("log")
    # Versions can differ by orders of magnitude; a linear axis would flatten the slow ones.
    axes.set_yscale("log")
    axes.set_xlabel("items")
    axes.set_ylabel("puts + gets per second")
    axes.set_title(f"aiodiskqueue throughput, {profile} profile")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    chart_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(chart_path, dpi=120, bbox_inches="tight")
    pyplot.close(figure)
    print(f"chart: {chart_path}")


def comma_separated(convert: Callable[[str], T]) -> Callable[[str], list[T]]:
    def parse(text: str) -> list[T]:
        try:
            return [convert(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"invalid value in {text!r}: {error}") from error

    return parse


def known_profile(name: str) -> str:
    if name not in PROFILES:
        raise ValueError(f"{name} (choose from {', '.join(PROFILES)})")
    return name


def positive_int(text: str) -> int:
    count = int(text)
    if count < 1:
        raise ValueError(f"{count} is not a positive count")
    return count


def default_label() -> str:
    version = getattr(aiodiskqueue, "__version__", None)
    return f"aiodiskqueue {version}" if version else "aiodiskqueue"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--profiles",
        type=comma_separated(known_profile),
        default=["medium"],
        help=f"comma-separated, from {', '.join(PROFILES)} (default: medium)",
    )
    parser.add_argument(
        "--items",
        type=comma_separated(positive_int),
        default=[10_000],
        help="comma-separated item counts (default: 10000)",
    )
    parser.add_argument(
        "--engines",
        type=comma_separated(str),
        default=list(ENGINE_NAMES),
        help="comma-separated names in aiodiskqueue.engines (default: all three)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="medium profile, 2000 items, every engine (overrides the above)",
    )
    parser.add_argument(
        "--csv",
        type=Path,
        default=RESULTS_DIR / "results.csv",
        help="file the rows are appended to (default: results/results.csv here)",
    )
    parser.add_argument(
        "--chart",
        type=Path,
        default=RESULTS_DIR / "throughput.png",
        help="chart drawn from the whole CSV file (default: results/throughput.png here)",
    )
    parser.add_argument(
        "--label",
        default=default_label(),
        help="free text naming this run, e.g. a version (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds a row may take (default: 600)"
    )
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.profiles, args.items, args.engines = ["medium"], [2000], list(ENGINE_NAMES)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        return run_one(*args.one)
    rows = run_rows(args)
    print_table(rows)
    if rows:
        append_csv(args.csv, rows)
        print(f"results appended to {args.csv}")
        draw_chart(args.csv, args.chart)
    return 0 if all(row.passed for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
