"""The exceptions aiodiskqueue raises.

The queue's own exceptions subclass both `AioDiskQueueError` and the matching `asyncio`
exception, so code written against `asyncio.Queue` keeps catching what it caught before.
"""

from __future__ import annotations

import asyncio
import sys

__all__ = [
    "AioDiskQueueError",
    "QueueClosedError",
    "QueueConnectionError",
    "QueueCorruptedError",
    "QueueEmpty",
    "QueueFull",
    "QueueLockedError",
    "QueueShutDown",
    "QueueUsageError",
    "SerializationError",
    "SerializerMismatchError",
]


class AioDiskQueueError(Exception):
    """Base class of every exception that aiodiskqueue raises on its own."""


class QueueEmpty(AioDiskQueueError, asyncio.QueueEmpty):
    """Raised by `Queue.get_nowait()` when no item is ready."""


class QueueFull(AioDiskQueueError, asyncio.QueueFull):
    """Raised by `Queue.put_nowait()` when the queue holds `maxsize` items."""


if sys.version_info >= (3, 13):
    from asyncio import QueueShutDown as _AsyncioQueueShutDown
else:

    class _AsyncioQueueShutDown(Exception):
        """Stands in for `asyncio.QueueShutDown`, which Python 3.13 added."""


class QueueShutDown(AioDiskQueueError, _AsyncioQueueShutDown):
    """Raised by putting into, or getting from an empty, queue after `Queue.shutdown()`."""


class QueueClosedError(AioDiskQueueError, RuntimeError):
    """Raised by a queue used after `Queue.close()`."""


class QueueConnectionError(AioDiskQueueError, ConnectionError):
    """Raised when a shared engine cannot reach its server; the message says whether the
    operation may have taken effect. The engine reconnects on its next operation."""


class QueueCorruptedError(AioDiskQueueError):
    """Raised on opening a damaged queue with ``on_corruption="raise"``; nothing was changed."""


class QueueLockedError(AioDiskQueueError):
    """Raised when opening a queue that another `Queue` holds open, here or in another process."""


class QueueUsageError(AioDiskQueueError, TypeError):
    """Raised by a call written for aiodiskqueue 0.1 that 0.2 cannot honour, such as
    ``await queue.get_nowait()``; the message says what to write instead. Nothing changed."""


class SerializationError(AioDiskQueueError, TypeError):
    """Raised when an item cannot be turned into bytes, or bytes back into an item.

    `data` holds the bytes that could not be read back (None when putting): such an item
    has left the queue for its dead letters, so that the items behind it flow.
    """

    def __init__(self, message: str, data: bytes | None = None) -> None:
        super().__init__(message)
        self.data = data


class SerializerMismatchError(AioDiskQueueError, ValueError):
    """Raised by `Queue.create()` for a queue stored with another serializer than the one
    given; the message names the serializer to pass. Nothing was changed."""
