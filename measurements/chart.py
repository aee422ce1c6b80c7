"""The chart of `run.py`'s CSV file: throughput by engine and item count, like the original
aiodiskqueue's README chart, and, when measured, durability and commit modes, memory, and
the profiles against the processes profile.

The line panels show the medium profile (5 producers, 1 consumer), or the fill profile for
memory; the bar panel, drawn when a processes row was measured, each engine's throughput
with the minimal, medium, heavy and processes profiles at the largest item count that has
a processes row. A point measured more than once shows the last measurement. Reference rows
are drawn in grey.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workload import DEFAULT_DURABILITY, FILL, GROUP_COMMIT, PROCESSES

Record = dict[str, str]
Series = dict[tuple[str, ...], dict[int, float]]

CHART_PROFILE = "medium"
BAR_PROFILES = ("minimal", "medium", "heavy", PROCESSES)
LINE_STYLES = ("-", "--", ":", "-.")
VARIANT_MARKERS: dict[tuple[str, ...], str] = {
    (DEFAULT_DURABILITY, GROUP_COMMIT): "o",
    (DEFAULT_DURABILITY, "per-item"): "s",
    ("power-loss", GROUP_COMMIT): "^",
    ("power-loss", "per-item"): "v",
}


def is_reference(engine: str) -> bool:
    return engine.startswith("ref:")


def collect(
    records: list[Record],
    keep: Callable[[Record], bool],
    key: Callable[[Record], tuple[str, ...]],
    value: str,
) -> Series:
    series: Series = defaultdict(dict)
    for record in records:
        if record[value] and keep(record):
            series[key(record)][int(record["items"])] = float(record[value])
    return series


def on_profile(record: Record) -> bool:
    return record["profile"] == CHART_PROFILE or (
        is_reference(record["engine"]) and record["profile"] == "loop"
    )


def is_default_mode(record: Record) -> bool:
    reference = is_reference(record["engine"])
    return (
        record["durability"] == DEFAULT_DURABILITY or (reference and record["durability"] == "-")
    ) and (record["commit"] == GROUP_COMMIT or reference)


def throughput_by_engine(records: list[Record]) -> Series:
    """(label, engine) -> ops/s by item count; references once, whatever the label."""
    return collect(
        records,
        lambda record: on_profile(record) and is_default_mode(record),
        lambda record: (
            (("",) if is_reference(record["engine"]) else (record["label"],)) + (record["engine"],)
        ),
        "ops/s",
    )


def throughput_by_mode(records: list[Record]) -> Series:
    """(label, engine, durability, commit) -> ops/s by item count, for rows measured in more
    than the default mode: every mode of an engine that has a power-loss or per-item row."""
    other = {
        (record["label"], record["engine"])
        for record in records
        if not is_default_mode(record) and not is_reference(record["engine"])
    }
    return collect(
        records,
        lambda record: (
            on_profile(record)
            and (
                (record["label"], record["engine"]) in other
                or (is_reference(record["engine"]) and record["durability"] == "power-loss")
            )
        ),
        lambda record: (
            "" if is_reference(record["engine"]) else record["label"],
            record["engine"],
            record["durability"],
            record["commit"],
        ),
        "ops/s",
    )


def memory_by_engine(records: list[Record]) -> Series:
    """(label, engine, durability) -> peak RSS of the fill by item count."""
    return collect(
        records,
        lambda record: record["profile"] == FILL and record["commit"] == GROUP_COMMIT,
        lambda record: (record["label"], record["engine"], record["durability"]),
        "peak RSS MB",
    )


def throughput_by_profile(records: list[Record]) -> tuple[int, Series]:
    """The largest item count with a processes row, and (label, engine, profile) -> ops/s at
    that count, in the default mode, for every engine measured under a label that has a
    processes row there. The Series' inner key is always that count."""
    processes = [
        record
        for record in records
        if record["profile"] == PROCESSES and record["ops/s"] and is_default_mode(record)
    ]
    if not processes:
        return 0, {}
    count = max(int(record["items"]) for record in processes)
    labels = {record["label"] for record in processes if int(record["items"]) == count}
    series = collect(
        records,
        lambda record: (
            record["profile"] in BAR_PROFILES
            and int(record["items"]) == count
            and record["label"] in labels
            and not is_reference(record["engine"])
            and is_default_mode(record)
        ),
        lambda record: (record["label"], record["engine"], record["profile"]),
        "ops/s",
    )
    return count, series


class Styles:
    """One colour per engine, one line style per label, grey for references."""

    def __init__(self, records: list[Record]) -> None:
        engines = sorted({r["engine"] for r in records if not is_reference(r["engine"])})
        self._colours = {engine: f"C{index}" for index, engine in enumerate(engines)}
        # References are grey and dotted whatever their label: only the queues' labels count.
        self._labels = sorted({r["label"] for r in records if not is_reference(r["engine"])})
        references = sorted({r["engine"] for r in records if is_reference(r["engine"])})
        self._greys = {engine: str(0.15 + 0.2 * index) for index, engine in enumerate(references)}

    def colour(self, engine: str) -> str:
        return self._greys.get(engine) or self._colours[engine]

    def line(self, label: str, engine: str) -> str:
        if is_reference(engine):
            return ":"
        # The last label in sort order, normally the newest version, gets the solid line.
        newest_first = self._labels[::-1]
        return LINE_STYLES[newest_first.index(label) % len(LINE_STYLES)]


def legend(key: tuple[str, ...]) -> str:
    text = " ".join(part for part in key if part)
    # The file references count appends only, the queues puts plus gets.
    return f"{text} (appends/s)" if key[1].startswith("ref: file append") else text


def plot(
    axes: Any, series: Series, styles: Styles, markers: Callable[[tuple[str, ...]], str]
) -> None:
    for key, points in sorted(series.items()):
        label, engine = key[0], key[1]
        counts = sorted(points)
        axes.plot(
            counts,
            [points[count] for count in counts],
            color=styles.colour(engine),
            linestyle=styles.line(label, engine),
            marker=markers(key),
            label=legend(key),
        )
    axes.set_xscale("log")
    # Versions and modes differ by orders of magnitude; a linear axis would flatten the slow.
    axes.set_yscale("log")
    axes.set_xlabel("items")
    axes.grid(True, which="both", alpha=0.3)
    # Below the axes: inside, the legend of a busy panel hides its lines.
    axes.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)


def plot_bars(axes: Any, series: Series, count: int, styles: Styles) -> None:
    """One group of bars per profile, one bar per label and engine; older labels hatched."""
    keys = sorted({key[:2] for key in series})
    profiles = [profile for profile in BAR_PROFILES if any(key[2] == profile for key in series)]
    width = 0.8 / len(keys)
    for index, (label, engine) in enumerate(keys):
        hatch = "" if styles.line(label, engine) == LINE_STYLES[0] else "//"
        positions = [p for p, profile in enumerate(profiles) if (label, engine, profile) in series]
        axes.bar(
            [position - 0.4 + width * (index + 0.5) for position in positions],
            [series[(label, engine, profiles[position])][count] for position in positions],
            width,
            color=styles.colour(engine),
            hatch=hatch,
            label=f"{label} {engine}",
        )
    axes.set_xticks(range(len(profiles)), profiles)
    axes.set_yscale("log")
    axes.grid(True, which="both", axis="y", alpha=0.3)
    axes.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2)


def draw(csv_path: Path, chart_path: Path) -> None:
    """Draw the chart of the whole CSV file, if matplotlib is installed."""
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        print("note: matplotlib is not installed, so no chart was drawn")
        return
    matplotlib.use("Agg")
    from matplotlib import pyplot

    with csv_path.open(newline="") as file:
        records = list(csv.DictReader(file))
    panels = [
        (throughput_by_engine(records), "puts + gets per second", "by engine, medium profile"),
        (throughput_by_mode(records), "puts + gets per second", "by mode, medium profile"),
        (memory_by_engine(records), "peak RSS MB while putting", "memory, fill profile"),
    ]
    panels = [panel for panel in panels if panel[0]]
    count, by_profile = throughput_by_profile(records)
    if not panels and not by_profile:
        print("note: no finished rows to chart")
        return
    styles = Styles(records)
    figure, axes_list = pyplot.subplots(
        1,
        len(panels) + bool(by_profile),
        figsize=(7.5 * (len(panels) + bool(by_profile)), 5.5),
        squeeze=False,
    )
    for axes, (series, ylabel, title) in zip(axes_list[0], panels, strict=False):
        plot(axes, series, styles, lambda key: VARIANT_MARKERS.get(tuple(key[2:4]), "o"))
        axes.set_ylabel(ylabel)
        axes.set_title(title)
    if by_profile:
        axes = axes_list[0][-1]
        plot_bars(axes, by_profile, count, styles)
        axes.set_ylabel("puts + gets per second")
        axes.set_title(f"by profile, {count:,} items: tasks in one process, or processes")
    chart_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(chart_path, dpi=110, bbox_inches="tight")
    pyplot.close(figure)
    print(f"chart: {chart_path}")
