"""Damaged queue files: an engine never silently drops data it cannot read."""

from __future__ import annotations

import itertools
import logging
import shutil
from pathlib import Path

from ..exceptions import QueueCorruptedError
from .base import BACKUP_SUFFIX, OpenOptions

logger = logging.getLogger(__name__)


def damaged(options: OpenOptions, *paths: Path, recovered: int, problem: str) -> None:
    """Deal with a store that cannot be read in full, as `options.on_corruption` asks.

    Call it before changing anything. With "raise", raise `QueueCorruptedError` naming the
    file and the problem. With "recover", keep a backup of every file in `paths` and log a
    warning that says what was recovered; the engine then goes on with what it could read.
    """
    if options.on_corruption == "raise":
        raise QueueCorruptedError(f"{paths[0]} is damaged: {problem}")
    keep_backup(*paths, recovered=recovered, problem=problem)


def keep_backup(*paths: Path, recovered: int, problem: str) -> list[Path]:
    """Copy each damaged file in `paths` to a free `<name>.bak` and log what was recovered.

    Call it before changing anything, so the damaged originals are never lost. An older
    backup is never overwritten: `<name>.1.bak`, `<name>.2.bak` follow `<name>.bak`.
    Files in `paths` that do not exist are passed over.
    """
    backups = []
    for path in paths:
        if path.exists():
            backup = next(
                candidate
                for candidate in (_backup_path(path, n) for n in itertools.count())
                if not candidate.exists()
            )
            shutil.copy2(path, backup)
            backups.append(backup)
    logger.warning(
        "%s could not be read in full (%s): kept a copy as %s; %d item(s) recovered",
        paths[0],
        problem,
        ", ".join(map(str, backups)),
        recovered,
    )
    return backups


def _backup_path(path: Path, number: int) -> Path:
    suffix = f".{number}{BACKUP_SUFFIX}" if number else BACKUP_SUFFIX
    return path.with_name(path.name + suffix)
