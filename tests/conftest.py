"""Fixtures shared by the tests: every engine, and every dbm backend this Python has."""

from __future__ import annotations

import functools
import importlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from aiodiskqueue import engines
from aiodiskqueue.engines import (
    DbmEngine,
    LogEngine,
    PickledList,
    SharedSqliteEngine,
    SharedStorageEngine,
    SqliteEngine,
    StorageEngine,
    registry,
)


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
    # Small segments, so that every test also moves the log from one segment to the next.
    "LogEngine": functools.partial(LogEngine, segment_size=16384),
}


BATCHING_ENGINES = {
    name: make for name, make in ENGINES.items() if not getattr(make, "func", make).commits_in_place
}
"""The engines that store changes in batches, through `commit()`: not those that commit in
place (`StorageEngine.commits_in_place`), whose puts and gets never wait for storage."""


FILE_ENGINES: dict[str, Callable[[Path], StorageEngine | SharedStorageEngine]] = {
    **ENGINES,
    **{name: registry.engine_class(name) for name in registry.names(local=True, shared=True)},
}
"""Every engine that keeps its queue in local files: the single-owner ones, SharedSqliteEngine."""


@pytest.fixture(params=list(ENGINES))
def engine(request: pytest.FixtureRequest) -> Callable[[Path], StorageEngine]:
    """Makes an engine for a path; a test that uses it runs once per engine."""
    return ENGINES[request.param]


@pytest.fixture(params=list(BATCHING_ENGINES))
def batching_engine(request: pytest.FixtureRequest) -> Callable[[Path], StorageEngine]:
    """Makes an engine that stores changes in batches; a test that uses it runs once per such
    engine (tests of what happens while a batch is being stored)."""
    return BATCHING_ENGINES[request.param]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where the test's queue is stored."""
    return tmp_path / "queue.db"


# Servers for the shared engines. The tests read their addresses from the environment; a
# server that cannot be reached skips the tests that need it, unless
# AIODISKQUEUE_REQUIRE_SERVERS is set (as .ci/run does), where that is a failure.

REDIS_URL = os.environ.get("AIODISKQUEUE_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "AIODISKQUEUE_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Where every server is required (in CI), a skipped test counts as failed."""
    report = yield
    if report.skipped and os.environ.get("AIODISKQUEUE_REQUIRE_SERVERS"):
        report.outcome = "failed"
    return report


def unreachable(server: str, url: str, reason: object) -> None:
    """Skip the test, or fail it where every server is required."""
    message = f"{server} at {url} is unreachable ({reason}); set AIODISKQUEUE_{server.upper()}_URL"
    if os.environ.get("AIODISKQUEUE_REQUIRE_SERVERS"):
        pytest.fail(message)
    pytest.skip(message)


def unique_name(prefix: str = "test") -> str:
    """A queue name no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


class SharedStore(NamedTuple):
    """A shared engine, and the address of a queue on it that no other test uses."""

    engine: type[SharedStorageEngine]
    address: str


@pytest.fixture(params=["SharedSqliteEngine", "RedisEngine", "PostgresEngine"])
async def shared(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SharedStore]:
    """A new queue on a shared engine; a test that uses it runs once per shared engine.

    The server engines' queues are on the servers at REDIS_URL and POSTGRES_URL.
    """
    from . import servers

    if request.param == "SharedSqliteEngine":
        yield SharedStore(SharedSqliteEngine, str(tmp_path / "queue.db"))
        return
    engine = getattr(engines, request.param)
    on_server = servers.redis_queue if request.param == "RedisEngine" else servers.postgres_queue
    async with on_server() as address:
        yield SharedStore(engine, address)
