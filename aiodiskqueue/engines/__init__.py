"""Storage engines: where a queue's items live.

`DbmEngine` is the default. `PickledList` stores a small queue in one file,
`SqliteEngine` in an SQLite database that one queue owns, `LogEngine` in memory-mapped
log segments, at memory speed. `SharedSqliteEngine` stores it
in an SQLite database that several processes can use at once; `RedisEngine` and
`PostgresEngine` on a server that several machines can use (they need the extras
``aiodiskqueue[redis]`` and ``aiodiskqueue[postgres]``). To store a queue somewhere else,
subclass `ThreadedStorageEngine`, `StorageEngine` or `SharedStorageEngine`: see the guide in
the documentation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import registry
from .contracts.local import (
    DEFAULT_OPTIONS,
    FifoStorageEngine,
    OpenOptions,
    Record,
    StorageEngine,
    Stored,
    ThreadedStorageEngine,
    ThreadOwningEngine,
)
from .contracts.shared import KnownSize, SharedStorageEngine
from .dbm import DbmEngine
from .log import LogEngine
from .pickled_list import PickledList
from .sqlite.engine import ExclusiveSqliteEngine, SqliteEngine
from .sqlite.shared import SharedSqliteEngine

PickleSequence = PickledList
"""The name of aiodiskqueue 0.1's other single-file engine, whose files PickledList upgrades."""

if TYPE_CHECKING:
    from .postgres import PostgresEngine
    from .redis import RedisEngine

__all__ = [
    "DEFAULT_OPTIONS",
    "DbmEngine",
    "ExclusiveSqliteEngine",
    "FifoStorageEngine",
    "KnownSize",
    "LogEngine",
    "OpenOptions",
    "PickleSequence",
    "PickledList",
    "PostgresEngine",
    "Record",
    "RedisEngine",
    "SharedSqliteEngine",
    "SharedStorageEngine",
    "SqliteEngine",
    "StorageEngine",
    "Stored",
    "ThreadOwningEngine",
    "ThreadedStorageEngine",
]


# Engines whose client library is an optional extra are imported when first asked for.
def __getattr__(name: str) -> Any:
    entry = registry.ENGINES.get(name)
    if entry is None or entry.extra is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return entry.load()
