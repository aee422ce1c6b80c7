"""Throughput, memory and latency benchmark of aiodiskqueue's storage engines.

Runs the load profiles of the original aiodiskqueue against each engine, durability level,
commit mode and item count, and reports puts plus gets per second, the peak RSS, the bytes
on disk per item, the worst event loop lag and whether every item came out exactly once.
The ``fill`` profile puts every item, closes the queue, and reopens and drains it in a
fresh process; the ``processes`` profile, for shared engines, puts and gets from producer
and consumer processes of their own. Reference rows (an in-memory asyncio.Queue, a plain
file append) show what the figures can be held against.

The shared engines on a server (RedisEngine, PostgresEngine) run when named in ``--engines``,
or in ``--full`` when their server answers, on the servers that ``--redis-url`` and
``--postgres-url`` name: each row uses a queue of its own there, removed afterwards.

Run it with the Python whose aiodiskqueue you want to measure (3.10 or newer), from a directory
where a source checkout does not shadow the installed package::

    python measurements/run.py --quick
    python measurements/run.py --full
    python measurements/run.py --items 100000 --durability power-loss --commit group,per-item
    python measurements/run.py --engines SharedSqliteEngine --label "aiodiskqueue 0.1.2"
    python measurements/run.py --engines SharedSqliteEngine,RedisEngine --profiles medium,processes

Each row runs in a fresh child process (two for ``fill``), this script in its hidden
``--one`` mode, with a fresh temporary directory: so the peak RSS belongs to that row alone,
and a row that exceeds ``--timeout`` is killed and reported as TIMEOUT while the others go
on; the larger counts of the same series are then skipped (the processes profile's
workers are killed with it). Rows are appended to a CSV file, so runs of different versions
can be combined; the chart is redrawn from the whole file. The exit status is 1 if any row
did not come out "ok".

Only the API that aiodiskqueue 0.1.2 also has is used, and options it lacks are passed only
when asked for, so one script compares releases; rows a release cannot run are skipped
with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import TypeVar

import chart
import servers
import tables
from workload import (
    DEFAULT_DURABILITY,
    FILE_APPEND,
    FILE_APPEND_HOP,
    FILL,
    GROUP_COMMIT,
    MEMORY_QUEUE,
    PER_ITEM_COMMIT,
    PERSIST_QUEUE,
    PROCESSES,
    PROFILES,
    QUEUE_REFERENCES,
    Job,
    Measurement,
    measure,
    supports,
)

ENGINE_NAMES = ("DbmEngine", "SqliteEngine", "PickledList", "SharedSqliteEngine")
"""The engines that keep their queue in local files (0.1.2 lacks SharedSqliteEngine). Not
read from `aiodiskqueue.engines.registry`: this script also runs under 0.1.2, to compare."""
DEFAULT_ENGINE = "DbmEngine"
ALL_PROFILES = (*PROFILES, FILL, PROCESSES)
DURABILITIES = (DEFAULT_DURABILITY, "power-loss")
COMMITS = (GROUP_COMMIT, PER_ITEM_COMMIT)
REFERENCE_NAMES = {
    "asyncio.Queue": MEMORY_QUEUE,
    "file-append": FILE_APPEND,
    "file-append-hop": FILE_APPEND_HOP,
    "persist-queue": PERSIST_QUEUE,
}
FILE_REFERENCE_PROFILE = "loop"  # the file references are a plain loop, not a profile
NOT_APPLICABLE = "-"
QUICK_ITEMS = 2000
FULL_ITEMS = (1000, 10_000, 100_000, 1_000_000)
RESULTS_DIR = Path(__file__).resolve().parent / "results"
HEADERS = (
    "label",
    "engine",
    "durability",
    "commit",
    "profile",
    "items",
    "seconds",
    "ops/s",
    "peak RSS MB",
    "bytes/item",
    "loop lag ms",
    "reopen s",
    "reopen RSS MB",
    "drain ops/s",
    "exactly-once",
)
NUMERIC_HEADERS = frozenset(HEADERS[5:14])

T = TypeVar("T")


@dataclass(frozen=True)
class Spec:
    """What a row measures."""

    engine: str
    durability: str
    commit: str
    profile: str
    items: int

    @property
    def series(self) -> Spec:
        """The row with its item count left out: rows that differ in count only."""
        return replace(self, items=0)


@dataclass
class Row:
    """One line of the results table."""

    label: str
    spec: Spec
    measurement: Measurement

    @property
    def passed(self) -> bool:
        return self.measurement.exactly_once == "ok"


# --- which rows to run ----------------------------------------------------------------------


def plan(args: argparse.Namespace) -> list[Spec]:
    """The rows the options ask for, each series in increasing item count."""
    if args.quick:
        return quick_plan()
    counts = sorted(args.items)
    specs = [
        Spec(engine, durability, commit, profile, count)
        for engine in args.engines
        for durability in args.durability
        for commit in args.commit
        for profile in args.profiles
        for count in counts
    ]
    return specs + reference_plan(args.references, args.durability, args.profiles, counts)


def reference_plan(
    references: Sequence[str],
    durabilities: Sequence[str],
    profiles: Sequence[str],
    counts: list[int],
) -> list[Spec]:
    """The in-memory queue and persist-queue run the same profiles (with no choice of
    durability or commit); the file appends are one loop whatever the profile, at each
    durability level."""
    specs = []
    load_profiles = [profile for profile in profiles if profile in PROFILES]
    for reference in references:
        if reference in QUEUE_REFERENCES:
            specs += [
                Spec(reference, NOT_APPLICABLE, NOT_APPLICABLE, profile, count)
                for profile in load_profiles
                for count in counts
            ]
        elif load_profiles:
            specs += [
                Spec(reference, durability, PER_ITEM_COMMIT, FILE_REFERENCE_PROFILE, count)
                for durability in durabilities
                for count in counts
            ]
    return specs


def quick_plan() -> list[Spec]:
    """Every engine with local files at the medium profile, power-loss with and without group
    commit on the default engine, and the references: well under a minute."""
    medium = [
        Spec(engine, DEFAULT_DURABILITY, GROUP_COMMIT, "medium", QUICK_ITEMS)
        for engine in ENGINE_NAMES
    ]
    power_loss = [
        Spec(DEFAULT_ENGINE, "power-loss", commit, "medium", QUICK_ITEMS) for commit in COMMITS
    ]
    references = reference_plan(
        [MEMORY_QUEUE, FILE_APPEND, FILE_APPEND_HOP], DURABILITIES, ["medium"], [QUICK_ITEMS]
    )
    return medium + power_loss + references


# --- running rows, each in a child process -------------------------------------------------------


def run_one(job_json: str) -> int:
    """The child's side: measure one row (or one phase of it) and print it as JSON."""
    print(json.dumps(asdict(measure(Job(**json.loads(job_json))))))
    return 0


def run_child(job: Job, timeout: float) -> Measurement:
    script = str(Path(__file__).resolve())
    command = [sys.executable, script, "--one", json.dumps(asdict(job))]
    # A session of its own, so that a timeout kills the processes profile's workers too.
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as child:
        try:
            stdout, stderr = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            return Measurement(exactly_once="TIMEOUT")
    sys.stderr.write(stderr)
    if child.returncode != 0:
        last_line = stderr.strip().splitlines()[-1:] or [f"exit {child.returncode}"]
        return Measurement(exactly_once=f"ERROR: {last_line[0]}")
    return Measurement(**json.loads(stdout.splitlines()[-1]))


def run_spec(spec: Spec, timeout: float, urls: dict[str, str]) -> Measurement:
    # The parent owns the directory and the server's queue, so they are removed even when a
    # child is killed. Both phases of fill use the same queue.
    address = ""
    if spec.engine in servers.SERVER_ENGINES:
        address = servers.queue_address(urls[spec.engine], servers.unique_name())
    try:
        with tempfile.TemporaryDirectory(prefix="aiodiskqueue-measure-") as directory:
            job = Job(
                spec.engine,
                spec.durability,
                spec.commit,
                spec.profile,
                spec.items,
                directory,
                address=address,
            )
            if spec.profile != FILL:
                return run_child(job, timeout)
            filled = run_child(replace(job, phase="fill"), timeout)
            if filled.ops_per_s is None:
                return filled
            reopened = run_child(replace(job, phase="reopen"), timeout)
    finally:
        if address:
            try:
                servers.drop_queue(spec.engine, address)
            except Exception as error:  # the row's figures stand; say what is left behind
                print(f"note: could not remove the queue {address}: {error}", file=sys.stderr)
    return replace(
        filled,
        reopen_seconds=reopened.reopen_seconds,
        reopen_rss_mb=reopened.reopen_rss_mb,
        drain_ops_per_s=reopened.drain_ops_per_s,
        exactly_once=reopened.exactly_once,
    )


def run_repeated(spec: Spec, timeout: float, repeat: int, urls: dict[str, str]) -> Measurement:
    """Run `spec` `repeat` times and keep the run of median throughput: on a shared machine
    one run can be slowed by others. A failed run is kept instead, so that none is hidden."""
    runs = []
    for _ in range(repeat):
        measurement = run_spec(spec, timeout, urls)
        if measurement.exactly_once != "ok" or measurement.ops_per_s is None:
            return measurement
        runs.append(measurement)
    if repeat > 1:
        rates = ", ".join(f"{run.ops_per_s:.0f}" for run in runs)
        print(f"  ops/s of {repeat} runs: {rates}", file=sys.stderr, flush=True)
    return sorted(runs, key=lambda run: run.ops_per_s or 0.0)[(repeat - 1) // 2]


def run_rows(
    specs: list[Spec], label: str, timeout: float, repeat: int, urls: dict[str, str]
) -> Iterator[Row]:
    timed_out: dict[Spec, int] = {}
    server_problems: dict[str, str | None] = {}
    for spec in specs:
        if spec.series in timed_out:
            print(f"note: skipping {describe(spec)}: {timed_out[spec.series]} items timed out")
            continue
        reason = supports(spec.engine, spec.durability, spec.commit, spec.profile)
        if reason is None and spec.engine in servers.SERVER_ENGINES:
            if spec.engine not in server_problems:
                server_problems[spec.engine] = servers.problem(spec.engine, urls[spec.engine])
            reason = server_problems[spec.engine]
        if reason is not None:
            print(f"note: skipping {describe(spec)}: {reason}")
            continue
        print(f"running {describe(spec)} ...", file=sys.stderr, flush=True)
        measurement = run_repeated(spec, timeout, repeat, urls)
        if measurement.exactly_once == "TIMEOUT":
            timed_out[spec.series] = spec.items
        yield Row(label, spec, measurement)


def describe(spec: Spec) -> str:
    return f"{spec.engine} {spec.durability} {spec.commit} {spec.profile} {spec.items}"


# --- table and CSV ------------------------------------------------------------------------------


def number(value: float | None, decimals: int) -> str:
    return "" if value is None else f"{value:.{decimals}f}"


def cells(row: Row) -> list[str]:
    spec, measured = row.spec, row.measurement
    return [
        row.label,
        spec.engine,
        spec.durability,
        spec.commit,
        spec.profile,
        str(spec.items),
        number(measured.seconds, 3),
        number(measured.ops_per_s, 0),
        number(measured.peak_rss_mb, 1),
        number(measured.bytes_per_item, 1),
        number(measured.worst_loop_lag_ms, 2),
        number(measured.reopen_seconds, 3),
        number(measured.reopen_rss_mb, 1),
        number(measured.drain_ops_per_s, 0),
        measured.exactly_once,
    ]


def print_table(rows: list[Row]) -> None:
    tables.print_table(HEADERS, [cells(row) for row in rows], NUMERIC_HEADERS)


def append_csv(path: Path, rows: list[Row]) -> None:
    tables.append_csv(path, HEADERS, [cells(row) for row in rows])


# --- options ---------------------------------------------------------------------------------


def comma_separated(convert: Callable[[str], T]) -> Callable[[str], list[T]]:
    def parse(text: str) -> list[T]:
        try:
            return [convert(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"invalid value in {text!r}: {error}") from error

    return parse


def one_of(choices: Sequence[str]) -> Callable[[str], str]:
    def check(name: str) -> str:
        if name not in choices:
            raise ValueError(f"{name} (choose from {', '.join(choices)})")
        return name

    return check


def positive_int(text: str) -> int:
    count = int(text)
    if count < 1:
        raise ValueError(f"{count} is not a positive count")
    return count


def reference(name: str) -> str:
    if name == "none":
        return name
    return REFERENCE_NAMES[one_of(list(REFERENCE_NAMES))(name)]


def default_label() -> str:
    try:
        return f"aiodiskqueue {metadata.version('aiodiskqueue')}"
    except metadata.PackageNotFoundError:
        return "aiodiskqueue"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    profiles = list(ALL_PROFILES)
    parser.add_argument(
        "--profiles",
        type=comma_separated(one_of(profiles)),
        default=["medium"],
        help=f"comma-separated, from {', '.join(profiles)} (default: medium)",
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
        help="comma-separated names in aiodiskqueue.engines, such as "
        f"{', '.join(ENGINE_NAMES + servers.SERVER_ENGINES)}, or none (default: "
        f"{', '.join(ENGINE_NAMES)}, the engines with local files)",
    )
    parser.add_argument(
        "--durability",
        type=comma_separated(one_of(DURABILITIES)),
        default=[DEFAULT_DURABILITY],
        help=f"comma-separated, from {', '.join(DURABILITIES)} (default: {DEFAULT_DURABILITY})",
    )
    parser.add_argument(
        "--commit",
        type=comma_separated(one_of(COMMITS)),
        default=[GROUP_COMMIT],
        help="group: a batch of puts and gets per transaction, as the queue does; per-item: "
        "one transaction (with power-loss, one fsync) per put and per get (default: group)",
    )
    parser.add_argument(
        "--references",
        type=comma_separated(reference),
        default=list(REFERENCE_NAMES.values()),
        help=f"comma-separated, from {', '.join(REFERENCE_NAMES)}, or none (default: all)",
    )
    parser.add_argument(
        "--redis-url",
        default=servers.DEFAULT_URLS[servers.REDIS],
        help="RedisEngine's server, a Redis URL of a database; each row adds a queue name of "
        "its own (default: %(default)s)",
    )
    parser.add_argument(
        "--postgres-url",
        default=servers.DEFAULT_URLS[servers.POSTGRES],
        help="PostgresEngine's server, a PostgreSQL URL of a database; each row adds a queue "
        "name of its own (default: %(default)s)",
    )
    presets = parser.add_mutually_exclusive_group()
    presets.add_argument(
        "--quick",
        action="store_true",
        help=f"every engine with local files at the medium profile and {QUICK_ITEMS} items, "
        "power-loss with group and per-item commit, and the references; replaces the options "
        "above",
    )
    presets.add_argument(
        "--full",
        action="store_true",
        help="every profile, fill and processes, at 1000 to 1000000 items, every engine (those "
        "on a server if it answers) and durability level, and the references; --commit still "
        "applies. Takes hours.",
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
    parser.add_argument(
        "--repeat",
        type=positive_int,
        default=1,
        help="runs of each row; the one of median ops/s is reported (default: 1)",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.engines = [name for name in args.engines if name != "none"]
    args.references = [name for name in args.references if name != "none"]
    args.urls = {servers.REDIS: args.redis_url, servers.POSTGRES: args.postgres_url}
    if args.full:
        args.profiles, args.items = list(ALL_PROFILES), list(FULL_ITEMS)
        args.engines, args.durability = list(ENGINE_NAMES), list(DURABILITIES)
        args.references = list(REFERENCE_NAMES.values())
        for engine in servers.SERVER_ENGINES:
            reason = servers.problem(engine, args.urls[engine])
            if reason is None:
                args.engines.append(engine)
            else:
                print(f"note: leaving out {engine}: {reason}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        return run_one(args.one)
    rows = []
    for row in run_rows(plan(args), args.label, args.timeout, args.repeat, args.urls):
        rows.append(row)
        # Rows go to the CSV as they finish, so an interrupted long run keeps what it measured.
        append_csv(args.csv, [row])
    print_table(rows)
    if rows:
        print(f"results appended to {args.csv}")
        chart.draw(args.csv, args.chart)
    return 0 if all(row.passed for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
