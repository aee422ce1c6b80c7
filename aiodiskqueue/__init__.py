"""A persistent FIFO queue for asyncio: `asyncio.Queue`'s API, with items that survive the process.

>>> q = await Queue.create("jobs.db")  # doctest: +SKIP
"""

from . import dead_letters  # noqa: F401  (a module of the public API)
from .acknowledgements import Receipt
from .engines import (
    DbmEngine,
    ExclusiveSqliteEngine,
    LogEngine,
    PickledList,
    SharedSqliteEngine,
    SqliteEngine,
)
from .exceptions import (
    AioDiskQueueError,
    QueueClosedError,
    QueueConnectionError,
    QueueCorruptedError,
    QueueEmpty,
    QueueFull,
    QueueLockedError,
    QueueShutDown,
    QueueUsageError,
    SerializationError,
    SerializerMismatchError,
)
from .queues import Delivery, Durability, OnCorruption, Queue, SharedQueue
from .serializers import JsonSerializer, PickleSerializer, Serializer

__version__ = "0.3.0"

__all__ = [
    "AioDiskQueueError",
    "DbmEngine",
    "Delivery",
    "Durability",
    "ExclusiveSqliteEngine",
    "JsonSerializer",
    "LogEngine",
    "OnCorruption",
    "PickleSerializer",
    "PickledList",
    "Queue",
    "QueueClosedError",
    "QueueConnectionError",
    "QueueCorruptedError",
    "QueueEmpty",
    "QueueFull",
    "QueueLockedError",
    "QueueShutDown",
    "QueueUsageError",
    "Receipt",
    "SerializationError",
    "Serializer",
    "SerializerMismatchError",
    "SharedQueue",
    "SharedSqliteEngine",
    "SqliteEngine",
]
