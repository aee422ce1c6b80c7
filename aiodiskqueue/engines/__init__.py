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

import importlib
from typing import TYPE_CHECKING, Any

from .base import (
    DEFAULT_OPTIONS,
    FifoStorageEngine,
    OpenOptions,
    Record,
    StorageEngine,
    Stored,
    ThreadedStorageEngine,
    ThreadOwningEngine,
)
from .dbm import DbmEngine
from .exclusive_sqlite import ExclusiveSqliteEngine, SqliteEngine
from .log import LogEngine
from .pickled_list import PickledList
from .shared import KnownSize, SharedStorageEngine
from .sqlite import SharedSqliteEngine

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
_OPTIONAL = {"RedisEngine": ("redis", "redis"), "PostgresEngine": ("postgres", "asyncpg")}


def __getattr__(name: str) -> Any:
    if name not in _OPTIONAL:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    extra, library = _OPTIONAL[name]
    try:
        module = importlib.import_module(f".{extra}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != library:
            raise
        raise ImportError(
            f"{name} needs the {library!r} package: pip install 'aiodiskqueue[{extra}]'"
        ) from exc
    return getattr(module, name)
