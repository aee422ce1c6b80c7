"""Every engine of aiodiskqueue, by name: the one table that the command line, format
detection, the measurements and the tests read.

An entry says where the engine's class is (imported when first asked for, so that an engine
whose client library is an optional extra costs nothing until used), the file format of a
local engine and the signature its files begin with, and the address schemes of an engine
on a server.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "ENGINES",
    "LOG_SIGNATURE",
    "PICKLED_LIST_SIGNATURE",
    "SQLITE_SIGNATURE",
    "Entry",
    "Format",
    "by_scheme",
    "engine_class",
    "names",
    "single_owner",
]

Format = Literal["dbm", "log", "pickled-list", "sqlite"]
"""A file format of the local engines."""

SQLITE_SIGNATURE = b"SQLite format 3\0"
"""How every SQLite database begins (the SQLite engines', and ``dbm.sqlite3``'s)."""
PICKLED_LIST_SIGNATURE = b"AQPL"
"""How a `PickledList` file begins."""
LOG_SIGNATURE = b"AQLG"
"""How the header file of a `LogEngine` queue begins."""


@dataclass(frozen=True)
class Entry:
    """One engine."""

    name: str
    module: str
    """The module of `aiodiskqueue.engines` that defines it."""
    format: Format | None = None
    """The file format of a local engine; None for an engine on a server."""
    signature: bytes | None = None
    """How its files begin, where one file begins the same way whatever it holds."""
    shared: bool = False
    """Several queues use a queue of it at once (a `SharedStorageEngine`)."""
    schemes: tuple[str, ...] = ()
    """The schemes of the addresses of its queues, for an engine on a server."""
    extra: str | None = None
    """The pip extra (``aiodiskqueue[extra]``) that installs its client library."""
    library: str | None = None
    """The client library that `extra` installs."""

    def load(self) -> Any:
        """The engine's class (`ImportError` naming the extra if its library is missing)."""
        try:
            module = importlib.import_module(f".{self.module}", __package__)
        except ModuleNotFoundError as exc:
            if self.library is None or exc.name != self.library:
                raise
            raise ImportError(
                f"{self.name} needs the {self.library!r} package: "
                f"pip install 'aiodiskqueue[{self.extra}]'"
            ) from exc
        return getattr(module, self.name)


ENGINES: dict[str, Entry] = {
    entry.name: entry
    for entry in (
        Entry("DbmEngine", "dbm", format="dbm"),
        Entry("SqliteEngine", "sqlite", format="sqlite", signature=SQLITE_SIGNATURE),
        Entry(
            "PickledList", "pickled_list", format="pickled-list", signature=PICKLED_LIST_SIGNATURE
        ),
        Entry("LogEngine", "log", format="log", signature=LOG_SIGNATURE),
        Entry(
            "SharedSqliteEngine", "sqlite", format="sqlite", signature=SQLITE_SIGNATURE, shared=True
        ),
        Entry(
            "RedisEngine",
            "redis",
            shared=True,
            schemes=("redis", "rediss", "unix"),
            extra="redis",
            library="redis",
        ),
        Entry(
            "PostgresEngine",
            "postgres",
            shared=True,
            schemes=("postgresql", "postgres"),
            extra="postgres",
            library="asyncpg",
        ),
    )
}
"""Every engine, by name, in the order the documentation lists them."""


def engine_class(name: str) -> Any:
    """The class of the engine called `name`; `KeyError` if there is none."""
    return ENGINES[name].load()


def names(*, local: bool | None = None, shared: bool | None = None) -> tuple[str, ...]:
    """The names of the engines: those with local files or on a server (`local`), those that
    several queues use at once or that one queue owns (`shared`); all, by default."""
    return tuple(
        entry.name
        for entry in ENGINES.values()
        if (local is None or (entry.format is not None) == local)
        and (shared is None or entry.shared == shared)
    )


def single_owner(format: Format) -> Entry:
    """The engine that one queue owns, of the local file `format`."""
    return next(entry for entry in ENGINES.values() if entry.format == format and not entry.shared)


def by_scheme(scheme: str) -> Entry | None:
    """The engine on a server whose addresses have `scheme`; None if none has."""
    return next((entry for entry in ENGINES.values() if scheme in entry.schemes), None)
