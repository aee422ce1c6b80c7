"""The subcommands: each takes the parsed arguments, does its work and returns the exit status.

Each is a plain function that prepares the files it reads or writes, then runs its queue
work in one `asyncio.run`. Failures raise `CliError` (or a library error), which `main`
reports in one line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from ..engines.detect import QueueFiles
from ..exceptions import AioDiskQueueError
from .lines import DEFAULT_SERIALIZER, BadLine, ItemCodec
from .progress import Progress
from .stores import (
    PAGE,
    CliError,
    Locked,
    Readable,
    Reading,
    Target,
    find,
    opened,
    pages,
    reading,
    same_queue,
    target,
)

__all__ = ["export", "import_", "info", "migrate", "peek", "purge"]


# info


@dataclass
class _Facts:
    found: QueueFiles
    serializer: str | None  # None: unknown
    items: int | None  # None: unknown
    owner: int | None  # the process that holds the queue
    shared: bool  # SqliteEngine queues in other processes hold it


def info(args: argparse.Namespace) -> int:
    """Print what the queue at `args.path` is: engine, items, bytes, who has it open."""
    facts = asyncio.run(_facts(find(args.path)))
    print(json.dumps(_facts_json(facts)) if args.json else _facts_text(facts))
    return 0


async def _facts(found: QueueFiles) -> _Facts:
    try:
        async with reading(found) as queue:
            serializer = queue.stored.meta.get("serializer", DEFAULT_SERIALIZER)
            return _Facts(found, serializer, queue.stored.size, None, False)
    except Locked as exc:
        if found.format != "sqlite":  # its files cannot be read while another owner writes
            return _Facts(found, None, None, exc.owner, exc.shared)
        sqlite_serializer, items = _look_into_sqlite(found.path)
        return _Facts(found, sqlite_serializer, items, exc.owner, exc.shared)


def _look_into_sqlite(path: Path) -> tuple[str | None, int | None]:
    """Read the serializer and the item count of an SQLite queue that another process has
    open: a read-only connection sees its last commit, whatever that process does."""
    uri = f"{path.absolute().as_uri()}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            (count,) = db.execute("SELECT count(*) FROM queue").fetchone()
            row = db.execute("SELECT value FROM meta WHERE name = 'serializer'").fetchone()
    except sqlite3.Error:
        return None, None
    return (row[0] if row else DEFAULT_SERIALIZER), int(count)


def _facts_text(facts: _Facts) -> str:
    found = facts.found
    engine = " or ".join(found.engine_names)
    if len(found.engine_names) > 1:
        engine += " (one file format)"
    lines = [("path", str(found.path)), ("engine", engine)]
    if found.from_0_1:
        lines.append(("format", "of aiodiskqueue 0.1: its engine upgrades it when it opens it"))
    if found.backend is not None:
        lines.append(("dbm backend", found.backend))
    if facts.owner is not None:
        elsewhere = f"yes, by process {facts.owner}"
    elif facts.shared:
        elsewhere = "yes, by SqliteEngine queues in other processes (shared)"
    else:
        elsewhere = "no"
    unknown = "unknown while another process has it open"
    names = ", ".join(file.name for file in found.files)
    lines += [
        ("serializer", facts.serializer or unknown),
        ("items", unknown if facts.items is None else str(facts.items)),
        ("bytes on disk", f"{found.size} ({names})"),
        ("open by another process", elsewhere),
    ]
    return "\n".join(f"{label + ':':<25}{value}" for label, value in lines)


def _facts_json(facts: _Facts) -> dict[str, Any]:
    found = facts.found
    return {
        "path": str(found.path),
        "engines": list(found.engine_names),
        "from_0_1": found.from_0_1,
        "dbm_backend": found.backend,
        "serializer": facts.serializer,
        "items": facts.items,
        "bytes": found.size,
        "files": [str(file) for file in found.files],
        "open_elsewhere": facts.owner is not None or facts.shared,
        "owner_process": facts.owner,
    }


# peek


def peek(args: argparse.Namespace) -> int:
    """Print the first `args.n` items of the queue, leaving them in it."""
    found = find(args.path)
    asyncio.run(_peek(found, args.n, args.json, args.raw, sys.stdout))
    return 0


async def _peek(found: QueueFiles, count: int, as_json: bool, raw: bool, out: TextIO) -> None:
    async with reading(found, unpickle=not raw) as queue:
        codec = ItemCodec.of(queue.stored.meta, raw=raw)
        left = count
        async for records in pages(queue.records, min(PAGE, count)):
            for record in records[:left]:
                out.write((codec.line if as_json else codec.text)(record.data) + "\n")
            left -= len(records)
            if left <= 0:
                break


# export


def export(args: argparse.Namespace) -> int:
    """Write every item of the queue as a JSON line to `args.output` (or stdout)."""
    found = find(args.path)
    with _output(args.output) as (out, on_terminal):
        asyncio.run(_export(found, out, args.raw, shown=not on_terminal))
    return 0


async def _export(found: QueueFiles, out: TextIO, raw: bool, *, shown: bool) -> None:
    async with reading(found, unpickle=not raw) as queue:
        codec = ItemCodec.of(queue.stored.meta, raw=raw)
        with Progress("export", queue.stored.size, sys.stderr, shown=shown) as progress:
            async for records in pages(queue.records):
                out.write("".join(codec.line(record.data) + "\n" for record in records))
                progress.advance(len(records))


@contextlib.contextmanager
def _output(name: str | None) -> Iterator[tuple[TextIO, bool]]:
    """Yield where to write and whether that is a terminal: stdout for None or "-", else a
    temporary file beside `name` that replaces it only if the block succeeds."""
    if name is None or name == "-":
        yield sys.stdout, sys.stdout.isatty()
        return
    path = Path(name)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with open(descriptor, "w", encoding="ascii", newline="\n") as file:
            yield file, False
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# import


def import_(args: argparse.Namespace) -> int:
    """Append the items of the export file `args.file` to the queue at `args.path`."""
    destination = target(args.path, args.engine, args.dbm_backend)
    with _input(args.file) as source:
        count = asyncio.run(_import(destination, source, args.file, args.serializer))
    print(f"imported {count} item(s) into {args.path}")
    return 0


async def _import(destination: Target, source: BinaryIO, name: str, serializer: str | None) -> int:
    """Check every line of `source`, then append its items to `destination` in order.

    A bad line changes nothing: the queue is created, or appended to, only once the whole
    file has been checked.
    """
    opened_now = False
    try:
        if destination.exists:
            await destination.open({})
            opened_now = True
            serializer = _serializer_of(destination, serializer)
            count = _check(source, name, ItemCodec(serializer))
        else:
            serializer = serializer or DEFAULT_SERIALIZER
            count = _check(source, name, ItemCodec(serializer))
            await destination.open({"serializer": serializer})
            opened_now = True
            stored_as = destination.meta.get("serializer", serializer)
            if stored_as != serializer:  # a server queue that existed after all
                serializer = _serializer_of(destination, None)
                count = _check(source, name, ItemCodec(serializer))
        codec = ItemCodec(serializer)
        source.seek(0)
        with Progress("import", count, sys.stderr) as progress:
            await _append(destination, _batches(_items(source, codec)), count, progress)
    finally:
        if opened_now:
            await destination.close()
    return count


def _serializer_of(destination: Target, wanted: str | None) -> str:
    """The serializer of the open `destination`; `CliError` if it is not `wanted`."""
    stored_as = destination.meta.get("serializer", wanted or DEFAULT_SERIALIZER)
    if wanted is not None and wanted != stored_as:
        raise CliError(
            f"{destination.name} holds items of the {stored_as!r} serializer, not {wanted!r}"
        )
    return stored_as


def _check(source: BinaryIO, name: str, codec: ItemCodec) -> int:
    """Parse every line of `source` with `codec`; return how many items it holds."""
    source.seek(0)
    count = 0
    for number, line in enumerate(source, 1):
        try:
            text = line.decode("utf-8")
            if text.strip():
                codec.parse(text)
                count += 1
        except (BadLine, UnicodeDecodeError) as exc:
            raise CliError(f"{name} line {number}: {exc}; nothing was imported") from None
    return count


def _items(source: BinaryIO, codec: ItemCodec) -> Iterator[bytes]:
    for line in source:
        text = line.decode("utf-8")
        if text.strip():
            yield codec.parse(text)


@contextlib.contextmanager
def _input(name: str) -> Iterator[BinaryIO]:
    """Yield the file `name` to read twice; standard input ("-") is copied to a temporary file."""
    if name != "-":
        try:
            with open(name, "rb") as file:
                yield file
        except FileNotFoundError:
            raise CliError(f"no file {name}") from None
        return
    with tempfile.TemporaryFile() as copy:
        shutil.copyfileobj(sys.stdin.buffer, copy)
        yield copy


async def _append(
    destination: Target, batches: AsyncIterator[Sequence[bytes]], total: int, progress: Progress
) -> int:
    """Append each of `batches` to the open `destination` as one durable commit; return how
    many items were appended. A failure on the way says how many had been."""
    done = 0
    try:
        async for batch in batches:
            await destination.append(batch)
            done += len(batch)
            progress.advance(len(batch))
    except (AioDiskQueueError, OSError, sqlite3.Error) as exc:
        raise CliError(
            f"{exc} ({destination.name} received {done} of the {total} item(s), in order)"
        ) from exc
    return done


async def _batches(items: Iterator[bytes]) -> AsyncIterator[list[bytes]]:
    """Yield `items` in lists of `PAGE`."""
    batch: list[bytes] = []
    for data in items:
        batch.append(data)
        if len(batch) == PAGE:
            yield batch
            batch = []
    if batch:
        yield batch


# migrate


def migrate(args: argparse.Namespace) -> int:
    """Copy, or with `args.move` move, every item of `args.src` to `args.dst`, in order."""
    if same_queue(args.src, args.dst):
        raise CliError(f"{args.src} and {args.dst} are the same queue")
    found = find(args.src)
    destination = target(args.dst, args.engine, args.dbm_backend)
    count = asyncio.run(_migrate(found, destination, move=args.move, append=args.append))
    verb = "moved" if args.move else "copied"
    print(f"{verb} {count} item(s) from {args.src} to {args.dst}")
    return 0


async def _migrate(found: QueueFiles, destination: Target, *, move: bool, append: bool) -> int:
    """Copy the queue `found` to `destination`; with `move`, then empty it in one commit."""
    keys: list[int] = []
    if not move:  # a queue of aiodiskqueue 0.1 is read as it is, not upgraded
        async with reading(found) as source:
            await _copy(Reading(source.records, source.stored), destination, append, keys)
        return len(keys)
    async with opened(found, fsync=True) as queue:
        await _copy(Reading(queue.engine, queue.stored), destination, append, keys)
        if keys:
            await queue.engine.commit((), keys)  # only once the destination holds every item
    return len(keys)


async def _copy(source: Reading, destination: Target, append: bool, keys: list[int]) -> None:
    """Append the items of `source` to `destination`, adding their keys to `keys`."""
    meta = source.stored.meta
    await destination.open({} if destination.exists else meta)
    try:
        _check_destination(destination, meta, append)
        total = source.stored.size
        with Progress("migrate", total, sys.stderr) as progress:
            await _append(destination, _copies(source.records, keys), total, progress)
    finally:
        await destination.close()


def _check_destination(destination: Target, meta: Mapping[str, str], append: bool) -> None:
    """Refuse a destination of another serializer, or one with items unless `append`."""
    _serializer_of(destination, meta.get("serializer", DEFAULT_SERIALIZER))
    if destination.size and not append:
        raise CliError(
            f"{destination.name} already holds {destination.size} item(s): "
            "add --append to put the new ones after them"
        )


async def _copies(engine: Readable, keys: list[int]) -> AsyncIterator[list[bytes]]:
    """Yield the items of the open `engine` a page at a time, adding their keys to `keys`."""
    async for records in pages(engine):
        keys.extend(record.key for record in records)
        yield [record.data for record in records]


# purge


def purge(args: argparse.Namespace) -> int:
    """Remove every item of the queue at `args.path`, in one atomic commit."""
    if not args.yes:
        raise CliError(f"purge removes every item of {args.path}: add --yes to do it")
    count = asyncio.run(_purge(find(args.path)))
    print(f"removed {count} item(s) from {args.path}")
    return 0


async def _purge(found: QueueFiles) -> int:
    async with opened(found, fsync=True) as queue:
        keys = [record.key async for records in pages(queue.engine) for record in records]
        if keys:
            await queue.engine.commit((), keys)
    return len(keys)
