"""Damaged queue files: an engine never silently drops data it cannot read."""

from __future__ import annotations

import itertools
import logging
import shutil
from collections.abc import Collection
from pathlib import Path

from ..exceptions import QueueCorruptedError
from .base import BACKUP_SUFFIX, OpenOptions

logger = logging.getLogger(__name__)


def damaged(
    options: OpenOptions,
    *paths: Path,
    recovered: int,
    lost: int | None = None,
    problem: str,
    reserved: Collection[Path] = (),
) -> None:
    """Deal with a store that cannot be read in full, as `options.on_corruption` asks.

    Call it once, before changing anything, with every problem found. With "raise", raise
    `QueueCorruptedError` naming the file and the problem. With "recover", keep a backup of
    every file in `paths` and log one warning that says how many records were recovered and
    how many were lost (`lost` is None when that cannot be known); the engine then goes on
    with what it could read. `reserved` names files that backups must not be named as.
    """
    if options.on_corruption == "raise":
        raise QueueCorruptedError(f"{paths[0]} is damaged: {problem}")
    keep_backup(*paths, recovered=recovered, lost=lost, problem=problem, reserved=reserved)


def keep_backup(
    *paths: Path,
    recovered: int,
    lost: int | None = None,
    problem: str,
    reserved: Collection[Path] = (),
) -> list[Path]:
    """Copy each damaged file in `paths` to a free `<name>.bak` and log what was recovered.

    Call it before changing anything, so the damaged originals are never lost. An older
    backup is never overwritten: `<name>.1.bak`, `<name>.2.bak` follow `<name>.bak`, and
    names in `reserved` are passed over. Files in `paths` that do not exist are passed over.
    """
    backups = []
    for path in paths:
        if path.exists():
            backup = next(
                candidate
                for candidate in (_backup_path(path, n) for n in itertools.count())
                if not candidate.exists() and candidate not in reserved
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


def _backup_path(path: Path, number: int) -> Path:
    suffix = f".{number}{BACKUP_SUFFIX}" if number else BACKUP_SUFFIX
    return path.with_name(path.name + suffix)
