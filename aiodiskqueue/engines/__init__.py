"""Storage engines: where a queue's items live.

`DbmEngine` is the default. `SqliteEngine` stores the queue in an SQLite database,
`PickledList` in one file for small queues. To store a queue somewhere else,
subclass `ThreadedStorageEngine` (or `StorageEngine`): see the guide in the documentation.
"""

from .base import (
    FifoStorageEngine,
    OpenOptions,
    Record,
    StorageEngine,
    Stored,
    ThreadedStorageEngine,
)
from .dbm import DbmEngine
from .pickled_list import PickledList
from .sqlite import SqliteEngine

__all__ = [
    "DbmEngine",
    "FifoStorageEngine",
    "OpenOptions",
    "PickledList",
    "Record",
    "SqliteEngine",
    "StorageEngine",
    "Stored",
    "ThreadedStorageEngine",
]
