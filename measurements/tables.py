"""The printed table and the CSV file that each measurement script writes its rows to."""

from __future__ import annotations

import csv
from collections.abc import Collection, Sequence
from pathlib import Path


def print_table(
    headers: Sequence[str], lines: Sequence[Sequence[str]], numeric: Collection[str]
) -> None:
    """Print `lines` under `headers`, in columns; the `numeric` ones aligned to the right."""
    table = [list(headers), *map(list, lines)]
    widths = [max(len(line[column]) for line in table) for column in range(len(headers))]
    for line in table:
        aligned = [
            text.rjust(width) if header in numeric else text.ljust(width)
            for header, text, width in zip(headers, line, widths, strict=True)
        ]
        print("  ".join(aligned).rstrip())


def append_csv(path: Path, headers: Sequence[str], lines: Sequence[Sequence[str]]) -> None:
    """Append `lines` to the CSV file at `path`, writing `headers` first if it is new.

    A file with other columns is refused, so that runs of one script stay in one shape.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    is_new = not path.exists() or path.stat().st_size == 0
    if not is_new:
        with path.open(newline="") as file:
            if tuple(next(csv.reader(file), ())) != tuple(headers):
                raise SystemExit(f"{path} has other columns: name another file with --csv")
    with path.open("a", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        if is_new:
            writer.writerow(headers)
        writer.writerows(lines)
