"""The subcommands: each takes the parsed arguments, does its work and returns the exit status.

Each is a plain function that prepares the files it reads or writes, then runs its queue
work in one `asyncio.run`. Failures raise `CliError` (or a library error), which `main`
reports in one line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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

from ..dead_letters import dead_letters_path
from ..dead_letters import read as read_dead_letters
from ..engines.contracts.shared import redacted
from ..engines.storage.detect import QueueFiles
from ..engines.storage.sqlite_look import connect_read_only
from ..exceptions import AioDiskQueueError
from .lines import DEFAULT_SERIALIZER, BadLine, ItemCodec
from .progress import Progress
from .stores import (
    PAGE,
    CliError,
    Locked,
    Source,
    Target,
    delete_files,
    drop_server_queue,
    find,
    is_address,
    reading,
    same_queue,
    target,
)

__all__ = ["dead_letters", "drop", "export", "import_", "info", "migrate", "peek", "purge"]


# info


@dataclass
class _Facts:
    found: QueueFiles
    serializer: str | None  # None: unknown
    items: int | None  # None: unknown
    owner: int | None  # the process that holds the queue
    shared: bool  # SharedSqliteEngine queues in other processes hold it


def info(args: argparse.Namespace) -> int:
    """Print what the queue at `args.path` is: engine, items, bytes, who has it open."""
    if is_address(args.path):
        server_facts = asyncio.run(_server_facts(args.path))
        print(json.dumps(server_facts) if args.json else _server_facts_text(server_facts))
        return 0
    facts = asyncio.run(_facts(find(args.path)))
    print(json.dumps(_facts_json(facts)) if args.json else _facts_text(facts))
    return 0


async def _server_facts(address: str) -> dict[str, Any]:
    """The facts of the queue at a server `address`, with the keys of `_facts_json` (those
    about files and processes are None: a server queue has none that can be known)."""
    async with reading(address) as source:
        return {
            "path": source.name,
            "engines": list(source.engine_names),
            "dbm_backend": None,
            "serializer": source.meta.get("serializer", DEFAULT_SERIALIZER),
            "items": source.size,
            "bytes": None,
            "files": [],
            "open_elsewhere": None,
            "owner_process": None,
        }


def _server_facts_text(facts: Mapping[str, Any]) -> str:
    lines = [
        ("address", facts["path"]),
        ("engine", facts["engines"][0]),
        ("serializer", facts["serializer"]),
        ("items", str(facts["items"])),
    ]
    return _labelled(lines)


def _labelled(lines: Sequence[tuple[str, str]]) -> str:
    return "\n".join(f"{label + ':':<25}{value}" for label, value in lines)


async def _facts(found: QueueFiles) -> _Facts:
    try:
        async with reading(str(found.path)) as source:
            serializer = source.meta.get("serializer", DEFAULT_SERIALIZER)
            return _Facts(found, serializer, source.size, None, False)
    except Locked as exc:
        if found.format != "sqlite":  # its files cannot be read while another owner writes
            return _Facts(found, None, None, exc.owner, exc.shared)
        sqlite_serializer, items = _look_into_sqlite(found.path)
        return _Facts(found, sqlite_serializer, items, exc.owner, exc.shared)


def _look_into_sqlite(path: Path) -> tuple[str | None, int | None]:
    """Read the serializer and the item count of an SQLite queue that another process has
    open: a read-only connection sees its last commit, whatever that process does."""
    try:
        with contextlib.closing(connect_read_only(path)) as db:
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
        elsewhere = "yes, by SharedSqliteEngine queues in other processes (shared)"
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
    return _labelled(lines)


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
    asyncio.run(_peek(args.path, args.n, args.json, args.raw, sys.stdout))
    return 0


async def _peek(place: str, count: int, as_json: bool, raw: bool, out: TextIO) -> None:
    async with reading(place, unpickle=not raw) as source:
        codec = ItemCodec.of(source.meta, raw=raw)
        show = codec.line if as_json else codec.text
        async with contextlib.aclosing(source.batches(count)) as batches:
            async for batch in batches:
                out.write("".join(show(data) + "\n" for data in batch))


# export


def export(args: argparse.Namespace) -> int:
    """Write every item of the queue as a JSON line to `args.output` (or stdout)."""
    if not is_address(args.path):
        find(args.path)  # before an output file is made
    with _output(args.output) as (out, on_terminal):
        asyncio.run(_export(args.path, out, args.raw, shown=not on_terminal))
    return 0


async def _export(place: str, out: TextIO, raw: bool, *, shown: bool) -> None:
    async with reading(place, unpickle=not raw) as source:
        codec = ItemCodec.of(source.meta, raw=raw)
        with Progress("export", source.size, sys.stderr, shown=shown) as progress:
            async with contextlib.aclosing(source.batches()) as batches:
                async for batch in batches:
                    out.write("".join(codec.line(data) + "\n" for data in batch))
                    progress.advance(len(batch))


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
    print(f"imported {count} item(s) into {redacted(args.path)}")
    return 0


async def _import(destination: Target, source: BinaryIO, name: str, serializer: str | None) -> int:
    """Check every line of `source`, then append its items to `destination` in order.

    A bad line changes nothing: the queue is created, or appended to, only once the whole
    file has been checked.
    """
    wanted = serializer
    opened_now = False
    await destination.resolve()
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
            if stored_as != serializer:  # a server queue made meanwhile, by another user
                serializer = _serializer_of(destination, wanted)
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
        except IsADirectoryError:
            raise CliError(f"{name} is a directory, not a file of JSON lines") from None
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
        raise CliError(f"{redacted(args.src)} and {redacted(args.dst)} are the same queue")
    if not is_address(args.src):
        find(args.src)  # before the destination is looked at
    destination = target(args.dst, args.engine, args.dbm_backend)
    count = asyncio.run(_migrate(args.src, destination, move=args.move, append=args.append))
    verb = "moved" if args.move else "copied"
    print(f"{verb} {count} item(s) from {redacted(args.src)} to {redacted(args.dst)}")
    return 0


async def _migrate(place: str, destination: Target, *, move: bool, append: bool) -> int:
    """Copy the queue at `place` to `destination`; with `move`, then remove the items copied."""
    async with reading(place, fsync=move) as source:
        total = source.size
        await destination.resolve()
        await destination.open({} if destination.exists else source.meta)
        try:
            _check_destination(destination, source.meta, append)
            with Progress("migrate", total, sys.stderr) as progress:
                copies = _copies(source, remember=move)
                copied = await _append(destination, copies, total, progress)
        finally:
            await destination.close()
        if move and copied:
            await source.remove_read()  # only once the destination holds every item
    return copied


def _check_destination(destination: Target, meta: Mapping[str, str], append: bool) -> None:
    """Refuse a destination of another serializer, or one with items unless `append`."""
    _serializer_of(destination, meta.get("serializer", DEFAULT_SERIALIZER))
    if destination.size and not append:
        raise CliError(
            f"{destination.name} already holds {destination.size} item(s): "
            "add --append to put the new ones after them"
        )


async def _copies(source: Source, *, remember: bool) -> AsyncIterator[list[bytes]]:
    """Yield every item of `source` a page at a time (remembering them, to remove them)."""
    async with contextlib.aclosing(source.batches(remember=remember)) as batches:
        async for batch in batches:
            yield batch


# purge


def purge(args: argparse.Namespace) -> int:
    """Remove every item of the queue at `args.path`, in one atomic commit."""
    shown = redacted(args.path)
    if not args.yes:
        raise CliError(f"purge removes every item of {shown}: add --yes to do it")
    count = asyncio.run(_purge(args.path))
    print(f"removed {count} item(s) from {shown}")
    return 0


async def _purge(place: str) -> int:
    async with reading(place, fsync=True) as source:
        return await source.purge()


# drop


def drop(args: argparse.Namespace) -> int:
    """Delete the queue at `args.path`: its files, or all that its server keeps of it."""
    shown = redacted(args.path)
    if not args.yes:
        raise CliError(f"drop deletes the queue {shown} and its items: add --yes to do it")
    if is_address(args.path):
        count = asyncio.run(drop_server_queue(args.path))
        print(f"dropped {shown}, which held {count} item(s)")
    else:
        deleted = delete_files(find(args.path))
        print(f"dropped {shown}: deleted {', '.join(file.name for file in deleted)}")
    return 0


# dead-letters


def dead_letters(args: argparse.Namespace) -> int:
    """Print the dead letters of the queue at `args.path` as JSON lines, changing nothing."""
    for letter in read_dead_letters(dead_letters_path(Path(args.path))):
        data = base64.b64encode(letter["data"]).decode("ascii")
        print(json.dumps({**letter, "data": data}))
    return 0
