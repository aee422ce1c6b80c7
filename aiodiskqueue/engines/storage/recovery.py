"""Damaged queue files: an engine never silently drops data it cannot read.

Before an engine changes a damaged file, it keeps a copy beside it, named
``<name>.damaged-<UTC time>``, such as ``queue.db.dat.damaged-20260130T141503Z``; a second
backup of the same file within the same second gets ``-1``, ``-2``, ... after that. No
engine's own file ends so (their names end in the queue's path or in a suffix such as
``.dat``, ``.bak`` or ``-wal``), and `base.check_queue_path` refuses a queue path that
does, so a backup is never taken for a queue file, nor overwritten by one. aiodiskqueue 0.2 named
backups ``<name>.bak``, which `dbm.dumb`'s own index backup could take; queue paths that end
so are still refused.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import re
import shutil
from pathlib import Path
from typing import Protocol

from ...exceptions import QueueCorruptedError


class AsksOnCorruption(Protocol):
    """What `damaged` reads of the engine's `OpenOptions` (named so, not imported: the
    contracts import this module)."""

    @property
    def on_corruption(self) -> str: ...


logger = logging.getLogger(__name__)

_BACKUP_NAME = re.compile(r"\.damaged-\d{8}T\d{6}Z(-\d+)?\Z")
_OLD_BACKUP_SUFFIX = ".bak"  # the backups of aiodiskqueue 0.2


def backup_problem(path: Path) -> str | None:
    """Say why `path` may not be a queue's path because backups take such names; None if
    it may be."""
    if _BACKUP_NAME.search(path.name):
        return "is named as backups of damaged queue files are"
    if path.name.endswith(_OLD_BACKUP_SUFFIX):
        return f"ends in {_OLD_BACKUP_SUFFIX!r}, as backups of damaged queue files did"
    return None


def damaged(
    options: AsksOnCorruption,
    *paths: Path,
    recovered: int,
    lost: int | None = None,
    problem: str,
) -> None:
    """Deal with a store that cannot be read in full, as `options.on_corruption` asks.

    Call it once, before changing anything, with every problem found. With "raise", raise
    `QueueCorruptedError` naming the file and the problem. With "recover", keep a backup of
    every file in `paths` and log one warning that says how many records were recovered and
    how many were lost (`lost` is None when that cannot be known); the engine then goes on
    with what it could read.
    """
    if options.on_corruption == "raise":
        raise QueueCorruptedError(f"{paths[0]} is damaged: {problem}")
    keep_backup(*paths, recovered=recovered, lost=lost, problem=problem)


def keep_backup(
    *paths: Path,
    recovered: int,
    lost: int | None = None,
    problem: str,
) -> list[Path]:
    """Copy each damaged file in `paths` to a free backup name and log what was recovered.

    Call it before changing anything, so the damaged originals are never lost. An older
    backup is never overwritten. Files in `paths` that do not exist are passed over, and
    the first is named in the warning.
    """
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    backups = []
    for path in dict.fromkeys(paths):  # each once
        if path.is_file():
            backup = next(
                candidate
                for candidate in (_backup_path(path, now, n) for n in itertools.count())
                if not candidate.exists()
            )
            shutil.copy2(path, backup)
            backups.append(backup)
    logger.warning(
        "%s could not be read in full (%s): kept a copy as %s; %d item(s) recovered, %s lost",
        paths[0],
        problem,
        ", ".join(map(str, backups)) or "nothing (no file left)",
        recovered,
        "an unknown number" if lost is None else lost,
    )
    return backups


def _backup_path(path: Path, now: str, number: int) -> Path:
    return path.with_name(f"{path.name}.damaged-{now}{f'-{number}' if number else ''}")
