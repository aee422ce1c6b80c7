"""What one child process of `run.py` measures: a load profile on one queue, or a reference.

Everything here runs in a child process of its own, so that its peak RSS belongs to one row.
Items are made from their number when they are put and checked when they come out, so the
benchmark holds no copy of them: the peak RSS shows the queue, not the benchmark.

The ``processes`` profile, for shared engines, runs its producers and consumers in processes
of their own: the child that measures the row starts them, each as
``python workload.py ROLE NUMBER JOB``, and merges what the consumers got.

Only the API that aiodiskqueue 0.1.2 also has is used (options it lacks are passed only when
asked for), so the same code measures both releases.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import pickle
import random
import resource
import string
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiodiskqueue import Queue, engines

ITEM_LENGTH = 256
LAG_PROBE_SECONDS = 0.001
STALL_SECONDS = 30.0
DEFAULT_DURABILITY = "process-crash"
GROUP_COMMIT = "group"
PER_ITEM_COMMIT = "per-item"
FILL_PRODUCERS = 5  # the medium profile's producers fill a queue for the fill and consumers rows

# The references: what the queue's figures can be held against.
MEMORY_QUEUE = "ref: asyncio.Queue"
FILE_APPEND = "ref: file append"
FILE_APPEND_HOP = "ref: file append, hop/op"
PERSIST_QUEUE = "ref: persist-queue"
REFERENCES = (MEMORY_QUEUE, FILE_APPEND, FILE_APPEND_HOP, PERSIST_QUEUE)
QUEUE_REFERENCES = (MEMORY_QUEUE, PERSIST_QUEUE)  # run the profiles, as the engines do

_FILLER_SPAN = 1 << 16
# Seeded, so that every run and every release puts the same bytes.
_FILLER = "".join(random.Random(0).choices(string.ascii_letters, k=_FILLER_SPAN + ITEM_LENGTH))
_LENGTH_PREFIX = struct.Struct("<I")


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
FILL = "fill"
"""Not a load profile: put every item, close, then reopen the queue and drain it."""
PROCESSES = "processes"
"""For shared engines: producer and consumer processes, each with one task, on one queue."""
PROCESS_PROFILE = Profile(producers=4, consumers=4)
STOP = "stop"
"""Put once per consumer process after every item: a consumer that gets it ends."""
WORKER_SCRIPT = str(Path(__file__).resolve())


@dataclass
class Measurement:
    """What a child measured; a number is None when the row did not get that far."""

    seconds: float | None = None
    ops_per_s: float | None = None
    peak_rss_mb: float | None = None
    bytes_per_item: float | None = None
    worst_loop_lag_ms: float | None = None
    reopen_seconds: float | None = None
    reopen_rss_mb: float | None = None
    drain_ops_per_s: float | None = None
    exactly_once: str = ""


@dataclass(frozen=True)
class Job:
    """One row's work, as the parent hands it to a child (as JSON)."""

    engine: str
    durability: str
    commit: str
    profile: str
    items: int
    directory: str
    phase: str = "run"  # "run", or for FILL: "fill" then "reopen" in a second child
    address: str = ""  # a server engine's queue; the others keep theirs in `directory`

    @property
    def location(self) -> str:
        """What `Queue.create` is given: the address, or a path in the row's directory."""
        return self.address or str(Path(self.directory) / "queue")

    @property
    def has_files(self) -> bool:
        """Whether the queue is in local files, which `bytes_per_item` can measure."""
        return not self.address and self.engine != MEMORY_QUEUE


# --- items and their check -------------------------------------------------------------


def make_item(number: int) -> str:
    """The item numbered `number`: the number, then a filler that differs from item to item."""
    prefix = f"{number}-"
    start = (number * 2_654_435_761) % _FILLER_SPAN
    return prefix + _FILLER[start : start + ITEM_LENGTH - len(prefix)]


class Delivery:
    """Checks that every item comes out exactly once and unchanged, in one bit per item:
    a bytearray indexed by the number in the item, not a set of items."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.gotten = 0
        self._seen = bytearray(expected)
        self._missing = expected
        self._extra = 0
        self._damaged = 0

    def record(self, item: str) -> None:
        self.gotten += 1
        number_text, _, _ = item.partition("-")
        number = int(number_text) if number_text.isdigit() else -1
        if not 0 <= number < self.expected or make_item(number) != item:
            self._damaged += 1
        elif self._seen[number]:
            self._extra += 1
        else:
            self._seen[number] = 1
            self._missing -= 1

    def save(self, path: Path) -> dict[str, int]:
        """Write down which items came out, for `merge` in another process, and return the
        counts that go with it."""
        path.write_bytes(self._seen)
        return {"gotten": self.gotten, "extra": self._extra, "damaged": self._damaged}

    def merge(self, path: Path, counts: dict[str, int]) -> None:
        """Add what another process's `Delivery` saved: an item both got is a duplicate."""
        self.gotten += counts["gotten"]
        self._extra += counts["extra"]
        self._damaged += counts["damaged"]
        seen = path.read_bytes()
        for number in (index for index, flag in enumerate(seen) if flag):
            if self._seen[number]:
                self._extra += 1
            else:
                self._seen[number] = 1
                self._missing -= 1

    def verdict(self) -> str:
        if not (self._missing or self._extra or self._damaged):
            return "ok"
        return (
            f"FAILED: {self._missing} missing, {self._extra} duplicated, "
            f"{self._damaged} damaged of {self.expected}"
        )


# --- the load profiles -------------------------------------------------------------------


class Consumers:
    """Tasks that get items until as many came out as were put. The one that gets the last
    item cancels the others, which can then only be waiting for an item that will not come.
    A watchdog stops them all if no item comes for STALL_SECONDS, so lost items are reported
    as missing instead of leaving the consumers waiting forever."""

    def __init__(self, queue: Any, delivery: Delivery, count: int) -> None:
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


async def mark_done(queue: Any) -> None:
    # 0.1.2's task_done is a coroutine function, asyncio.Queue's a plain method.
    done = queue.task_done()
    if inspect.isawaitable(done):
        await done


async def put_all(queue: Any, numbers: Iterable[int]) -> None:
    for number in numbers:
        await queue.put(make_item(number))


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


async def run_workers(queue: Any, count: int, profile: Profile, delivery: Delivery) -> None:
    """Run the profile's producers, which share the items 0 to `count` - 1, and its consumers,
    until every item is put and, if there are consumers, has come out."""
    parts = profile.producers
    producers = [asyncio.create_task(put_all(queue, range(p, count, parts))) for p in range(parts)]
    consumers = Consumers(queue, delivery, profile.consumers)
    await wait_for_all(producers + consumers.tasks)


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


# --- opening a queue ------------------------------------------------------------------------


def engine_class(job: Job) -> Any:
    """The engine class to measure: the named one, wrapped for one transaction per item."""
    engine = getattr(engines, job.engine)
    return engine if job.commit == GROUP_COMMIT else one_transaction_per_item(engine)


def one_transaction_per_item(engine: Any) -> Any:
    """A subclass of `engine` that stores each record and each removal of a batch in a
    transaction of its own: no group commit. Appends go first, since a batch's removals may
    name records appended in the same batch."""

    def blocking_commit(self: Any, appends: Any, removals: Any) -> None:
        for record in appends:
            engine.blocking_commit(self, [record], [])
        for key in removals:
            engine.blocking_commit(self, [], [key])

    return type(f"PerItem{engine.__name__}", (engine,), {"blocking_commit": blocking_commit})


async def open_queue(job: Job) -> Any:
    if job.engine == MEMORY_QUEUE:
        return asyncio.Queue()
    if job.engine == PERSIST_QUEUE:
        # Its defaults: one SQLite transaction per put and per get, flushed to the disk.
        import persistqueue  # type: ignore[import-not-found, unused-ignore]

        return persistqueue.AsyncSQLiteQueue(job.location)
    options: dict[str, Any] = {}
    if job.durability != DEFAULT_DURABILITY:  # 0.1.2 has no such parameter
        options["durability"] = job.durability
    return await Queue.create(job.location, cls_storage_engine=engine_class(job), **options)


async def close(queue: Any) -> None:
    close_queue = getattr(queue, "close", None)
    if inspect.iscoroutinefunction(close_queue):
        await close_queue()


def disk_bytes_per_item(job: Job, count: int) -> float | None:
    """The queue's files divided by `count`; None for a queue that has no local files."""
    if not job.has_files:
        return None
    files = Path(job.directory).rglob("*")
    return sum(path.stat().st_size for path in files if path.is_file()) / count


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kibibytes, macOS bytes.
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


# --- the measurements -------------------------------------------------------------------------


async def measure_profile(job: Job) -> Measurement:
    """Time one profile; fill the queue beforehand for consumers alone, and empty it
    afterwards for producers alone, so that every row can check exactly-once delivery."""
    profile, count = PROFILES[job.profile], job.items
    queue = await open_queue(job)
    delivery = Delivery(count)
    bytes_per_item = None
    if not profile.producers:
        await run_workers(queue, count, Profile(FILL_PRODUCERS, 0), delivery)
        bytes_per_item = disk_bytes_per_item(job, count)
    async with watching_loop_lag() as lag:
        start = time.perf_counter()
        await run_workers(queue, count, profile, delivery)
        seconds = time.perf_counter() - start
    if not profile.consumers:
        bytes_per_item = disk_bytes_per_item(job, count)
        await run_workers(queue, 0, Profile(producers=0, consumers=1), delivery)
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


async def measure_fill(job: Job) -> Measurement:
    """Put every item with the medium profile's producers, then close the queue."""
    queue = await open_queue(job)
    async with watching_loop_lag() as lag:
        start = time.perf_counter()
        await run_workers(queue, job.items, Profile(FILL_PRODUCERS, 0), Delivery(0))
        seconds = time.perf_counter() - start
    await close(queue)
    return Measurement(
        seconds=seconds,
        ops_per_s=job.items / seconds,
        peak_rss_mb=peak_rss_mb(),
        bytes_per_item=disk_bytes_per_item(job, job.items),
        worst_loop_lag_ms=lag.worst_ms,
    )


async def measure_reopen(job: Job) -> Measurement:
    """Reopen the filled queue in this fresh process, then drain it with one consumer."""
    start = time.perf_counter()
    queue = await open_queue(job)
    reopen_seconds = time.perf_counter() - start
    reopen_rss_mb = peak_rss_mb()
    delivery = Delivery(job.items)
    start = time.perf_counter()
    await run_workers(queue, 0, Profile(producers=0, consumers=1), delivery)
    drain_seconds = time.perf_counter() - start
    await close(queue)
    return Measurement(
        reopen_seconds=reopen_seconds,
        reopen_rss_mb=reopen_rss_mb,
        drain_ops_per_s=job.items / drain_seconds,
        exactly_once=delivery.verdict(),
    )


class Worker:
    """A producer or consumer process of the processes profile, as its parent sees it.

    It says "ready" once its queue is open, starts on "go", and ends with one line of JSON:
    its peak RSS and loop lag, and for a consumer the counts of `Delivery.save`.
    """

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.process = process
        self.name = name

    @classmethod
    async def start(cls, job: Job, role: str, number: int) -> Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            WORKER_SCRIPT,
            role,
            str(number),
            json.dumps(asdict(job)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process, f"{role} process {number}")

    async def line(self) -> str:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            status = await self.process.wait()
            raise RuntimeError(f"{self.name} ended with status {status}")
        return line.decode().strip()

    async def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        await self.process.stdin.drain()

    async def report(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(await self.line())
        await self.process.wait()
        return report

    def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


def seen_path(job: Job, number: int) -> Path:
    return Path(job.directory) / f"consumer-{number}.seen"


async def measure_processes(job: Job) -> Measurement:
    """Time producer and consumer processes on one shared queue, from the moment all have
    opened it until every consumer has got its STOP, which this process puts once every
    producer is done. Start-up and opening are not timed."""
    profile, count = PROCESS_PROFILE, job.items
    queue = await open_queue(job)  # so that the queue exists before the workers race to it
    producers: list[Worker] = []
    consumers: list[Worker] = []
    try:
        for number in range(profile.producers):
            producers.append(await Worker.start(job, "produce", number))
        for number in range(profile.consumers):
            consumers.append(await Worker.start(job, "consume", number))
        workers = producers + consumers
        for worker in workers:
            if await worker.line() != "ready":
                raise RuntimeError(f"{worker.name} did not say it was ready")
        start = time.perf_counter()
        for worker in workers:
            await worker.go()
        reports = [await worker.report() for worker in producers]
        for _ in consumers:
            await queue.put(STOP)
        consumed = [await worker.report() for worker in consumers]
        seconds = time.perf_counter() - start
    finally:
        for worker in producers + consumers:
            worker.stop()
        await close(queue)
    delivery = Delivery(count)
    for number, counts in enumerate(consumed):
        delivery.merge(seen_path(job, number), counts)
    reports += consumed
    return Measurement(
        seconds=seconds,
        ops_per_s=2 * count / seconds,
        peak_rss_mb=max(report["peak_rss_mb"] for report in reports),
        worst_loop_lag_ms=max(report["loop_lag_ms"] for report in reports),
        exactly_once=delivery.verdict(),
    )


async def work(job: Job, role: str, number: int) -> dict[str, Any]:
    """One worker process of the processes profile: producer `number` puts every
    PROCESS_PROFILE.producers-th item from `number` on; a consumer gets items until STOP."""
    queue = await open_queue(job)
    print("ready", flush=True)
    sys.stdin.readline()  # "go": nothing else runs on this loop yet
    report: dict[str, Any] = {}
    async with watching_loop_lag() as lag:
        if role == "produce":
            await put_all(queue, range(number, job.items, PROCESS_PROFILE.producers))
        else:
            delivery = Delivery(job.items)
            while (item := await queue.get()) != STOP:
                delivery.record(item)
                await mark_done(queue)
            report = delivery.save(seen_path(job, number))
    await close(queue)
    return {**report, "peak_rss_mb": peak_rss_mb(), "loop_lag_ms": lag.worst_ms}


def framed(number: int) -> bytes:
    """Item `number` as the file-append references write it: pickled, length-prefixed."""
    data = pickle.dumps(make_item(number), protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH_PREFIX.pack(len(data)) + data


def append_record(descriptor: int, record: bytes, fsync: bool) -> None:
    os.write(descriptor, record)
    if fsync:
        os.fsync(descriptor)


async def append_with_hops(descriptor: int, count: int, fsync: bool) -> None:
    """Append each record in a thread of its own, one call (one thread hop) per record."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=1) as thread:
        for number in range(count):
            await loop.run_in_executor(thread, append_record, descriptor, framed(number), fsync)


def read_back(path: Path, delivery: Delivery) -> None:
    """Check the appended records, reading one at a time: the peak RSS stays the loop's."""
    with path.open("rb") as file:
        while prefix := file.read(_LENGTH_PREFIX.size):
            (length,) = _LENGTH_PREFIX.unpack(prefix)
            delivery.record(pickle.loads(file.read(length)))


def measure_file_append(job: Job) -> Measurement:
    """The floor under a queue on this disk: append each item, pickled and length-prefixed,
    to a file with one write (and, for power-loss, one fsync) per item, nothing else. The
    plain loop blocks; the other one awaits a thread for each item. Ops are appends."""
    path = Path(job.directory) / "queue.log"
    fsync = job.durability != DEFAULT_DURABILITY
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    lag: LoopLag | None = None
    try:
        start = time.perf_counter()
        if job.engine == FILE_APPEND:
            for number in range(job.items):
                append_record(descriptor, framed(number), fsync)
        else:
            lag = asyncio.run(with_loop_lag(append_with_hops(descriptor, job.items, fsync)))
        seconds = time.perf_counter() - start
    finally:
        os.close(descriptor)
    delivery = Delivery(job.items)
    read_back(path, delivery)
    return Measurement(
        seconds=seconds,
        ops_per_s=job.items / seconds,
        peak_rss_mb=peak_rss_mb(),
        bytes_per_item=disk_bytes_per_item(job, job.items),
        worst_loop_lag_ms=None if lag is None else lag.worst_ms,
        exactly_once=delivery.verdict(),
    )


async def with_loop_lag(work: Any) -> LoopLag:
    async with watching_loop_lag() as lag:
        await work
    return lag


def measure(job: Job) -> Measurement:
    """Run `job` in this process and return what it measured."""
    if job.engine in (FILE_APPEND, FILE_APPEND_HOP):
        return measure_file_append(job)
    phases: dict[str, Callable[[Job], Any]] = {
        "run": measure_processes if job.profile == PROCESSES else measure_profile,
        "fill": measure_fill,
        "reopen": measure_reopen,
    }
    result: Measurement = asyncio.run(phases[job.phase](job))
    return result


def is_shared(engine: Any) -> bool:
    """Whether `engine` is a shared engine, which several queues use at once (0.1.2 has none)."""
    shared = getattr(engines, "SharedStorageEngine", None)
    return shared is not None and isinstance(engine, type) and issubclass(engine, shared)


def supports(engine: str, durability: str, commit: str, profile: str) -> str | None:
    """Why this aiodiskqueue cannot run a row, or None if it can."""
    if engine in REFERENCES:
        if profile == PROCESSES:
            return "the processes profile is for shared engines"
        if engine != PERSIST_QUEUE:
            return None
        try:
            import persistqueue  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
        except ImportError:
            return "persist-queue is not installed (pip install 'persist-queue[async]')"
        return None
    try:
        engine_type = getattr(engines, engine)
    except AttributeError:
        return f"this aiodiskqueue has no engine {engine}"
    except ImportError as error:  # an engine whose client library is an optional extra
        return str(error)
    parameters = inspect.signature(Queue.create).parameters
    if durability != DEFAULT_DURABILITY and "durability" not in parameters:
        return "this aiodiskqueue has no durability option"
    shared = is_shared(engine_type)
    if profile == PROCESSES and not shared:
        return "the processes profile is for shared engines: this one has a single owner"
    if commit == PER_ITEM_COMMIT and shared:
        return (
            "per-item commit does not apply to a shared engine: each put and get is a "
            "transaction of its own already"
        )
    threaded = getattr(engines, "ThreadedStorageEngine", None)
    if commit == PER_ITEM_COMMIT and not (threaded and issubclass(engine_type, threaded)):
        return "this aiodiskqueue's engines have no blocking_commit to split"
    return None


if __name__ == "__main__":
    # A worker process of the processes profile: ROLE NUMBER JOB (see `Worker`).
    worker_job = Job(**json.loads(sys.argv[3]))
    print(json.dumps(asyncio.run(work(worker_job, sys.argv[1], int(sys.argv[2])))), flush=True)
