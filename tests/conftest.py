"""Fixtures shared by the tests: every engine, and every dbm backend this Python has."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from pathlib import Path

import pytest

from aiodiskqueue.engines import DbmEngine, PickledList, SqliteEngine, StorageEngine


def _dbm_backends() -> list[str]:
    backends = []
    for name in ("dbm.sqlite3", "dbm.gnu", "dbm.ndbm", "dbm.dumb"):
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        backends.append(name)
    return backends


DBM_BACKENDS = _dbm_backends()

ENGINES: dict[str, Callable[[Path], StorageEngine]] = {
    **{
        f"DbmEngine[{backend}]": functools.partial(DbmEngine, backend=backend)
        for backend in DBM_BACKENDS
    },
    "SqliteEngine": SqliteEngine,
    "PickledList": PickledList,
}


@pytest.fixture(params=list(ENGINES))
def engine(request: pytest.FixtureRequest) -> Callable[[Path], StorageEngine]:
    """Makes an engine for a path; a test that uses it runs once per engine."""
    return ENGINES[request.param]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where the test's queue is stored."""
    return tmp_path / "queue.db"
