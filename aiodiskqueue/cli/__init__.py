"""The ``aiodiskqueue`` command: look into, export, import, migrate, empty and delete queues.

``aiodiskqueue <command> --help`` describes each command; ``docs/cli.rst`` has examples.
Exit status: 0 on success, 1 on a failure (reported in one line on standard error, and the
queue left as it was), 2 for a command line that does not parse.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence

from .. import __version__
from ..exceptions import AioDiskQueueError
from . import commands
from .stores import ENGINE_NAMES, CliError

__all__ = ["main"]

_PROG = "aiodiskqueue"
_EXPECTED = (CliError, AioDiskQueueError, OSError, ValueError, ImportError, sqlite3.Error)
"""Failures reported in one line; anything else is a bug, and shows its traceback."""

_PICKLE_NOTE = (
    "Items of a queue with the pickle serializer are unpickled to be shown, which runs\n"
    "code chosen by whoever wrote the queue: use --raw with a queue you do not trust."
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command given by `argv` (default: the process's arguments); return its status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(format=f"{_PROG}: %(levelname)s: %(message)s", level=logging.WARNING)
    if isinstance(sys.stdout, io.TextIOWrapper):  # a repr in any terminal's encoding
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        status: int = args.run(args)
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()  # the reader left: nothing to report
        return 1
    except _EXPECTED as exc:
        print(f"{_PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    return status


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (sqlite3.Error, ImportError)) and not isinstance(exc, CliError):
        text = f"{type(exc).__name__}: {text}"
    return text


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises nothing."""
    descriptor = os.open(os.devnull, os.O_WRONLY)
    os.dup2(descriptor, sys.stdout.fileno())
    os.close(descriptor)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Look into, export, import, migrate, empty and delete aiodiskqueue queues, "
        "in files or on a Redis or PostgreSQL server.",
        epilog="Run 'aiodiskqueue COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_info(subcommands)
    _add_peek(subcommands)
    _add_export(subcommands)
    _add_import(subcommands)
    _add_migrate(subcommands)
    _add_purge(subcommands)
    _add_drop(subcommands)
    _add_dead_letters(subcommands)
    return parser


def _command(
    subcommands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str,
    example: str,
) -> argparse.ArgumentParser:
    command = subcommands.add_parser(
        name,
        help=summary,
        description=f"{summary}\n\n{description}",
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return command


_ADDRESSES = (
    "PATH may also be the address of a queue on a server, as given to Queue.create():\n"
    "redis://HOST:PORT/DB/NAME (RedisEngine) or postgresql://USER@HOST:PORT/DATABASE/NAME\n"
    "(PostgresEngine). A queue on a server is used as one more user of it: others may go\n"
    "on using it meanwhile."
)


def _add_path(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "path",
        metavar="PATH",
        help="the queue's path or server address, as given to Queue.create()",
    )


def _add_info(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = _command(
        subcommands,
        "info",
        "Say what a queue is: its engine, items, bytes on disk and who has it open.",
        "The engine is told from the files. A queue open in another process is not opened:\n"
        "its holder is named (a process id, or SharedSqliteEngine queues sharing it) and its\n"
        "items are counted only for the SQLite format, which can be read while others use it.\n"
        f"{_ADDRESSES}",
        "aiodiskqueue info jobs.queue",
    )
    _add_path(command)
    command.add_argument("--json", action="store_true", help="print one JSON object")
    command.set_defaults(run=commands.info)


def _add_peek(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = _command(
        subcommands,
        "peek",
        "Print the first items of a queue, leaving them in it.",
        "Each item is printed with repr(), one per line, or with --json as the lines of\n"
        f"'export'.\n{_PICKLE_NOTE}\n{_ADDRESSES}",
        "aiodiskqueue peek jobs.queue -n 3",
    )
    _add_path(command)
    command.add_argument(
        "-n", type=_count, default=10, metavar="N", help="how many items (default: 10)"
    )
    command.add_argument("--json", action="store_true", help="print the items as JSON lines")
    _add_raw(command)
    command.set_defaults(run=commands.peek)


def _add_export(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = _command(
        subcommands,
        "export",
        "Write every item of a queue as JSON lines, leaving the queue as it is.",
        'Each line is {"item": VALUE} for an item that JSON gives back unchanged (plain\n'
        'dicts, lists, strings, numbers, booleans, None), else {"serialized": BASE64,\n'
        "\"serializer\": NAME} with the bytes stored: 'import' restores either exactly.\n"
        f"{_PICKLE_NOTE}\n{_ADDRESSES} The items of a queue on a server are those it\n"
        "held at one instant.",
        "aiodiskqueue export jobs.queue -o jobs.jsonl",
    )
    _add_path(command)
    command.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write to FILE, replaced once all is written (default: standard output)",
    )
    _add_raw(command)
    command.set_defaults(run=commands.export)


def _add_import(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = _command(
        subcommands,
        "import",
        "Append the items of a JSON-lines export to a queue, in order.",
        "The whole file is checked first: a bad line is reported with its number and nothing\n"
        "is imported. Then the items are appended in commits of up to 1000, each durable\n"
        "(flushed to the disk). A queue that does not exist is created. With --engine\n"
        "SharedSqliteEngine, a queue that SharedSqliteEngine queues in other processes have\n"
        "open gets the items one at a time, as one more of them, and so does a queue on a\n"
        "server.\n"
        f"{_ADDRESSES}",
        "aiodiskqueue import jobs.queue jobs.jsonl",
    )
    _add_path(command)
    command.add_argument("file", metavar="FILE", help="an export file; - for standard input")
    _add_engine(
        command,
        "the engine of a new queue (default: DbmEngine; one that exists keeps its own, and a "
        "server address names its own)",
    )
    command.add_argument(
        "--serializer",
        choices=("pickle", "json"),
        help="for a new queue (default: pickle); an existing one keeps its own",
    )
    command.set_defaults(run=commands.import_)


def _add_migrate(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = _command(
        subcommands,
        "migrate",
        "Copy a queue to another engine, in order; with --move, then empty the source.",
        "DST is created with SRC's serializer. A DST that holds items is refused unless\n"
        "--append is given. With --move, SRC is emptied in one commit once DST holds every\n"
        "item; without it, SRC is left as it is. DST is written as 'import' writes.\n"
        "SRC and DST may be server addresses: redis://HOST:PORT/DB/NAME (RedisEngine) or\n"
        "postgresql://USER@HOST:PORT/DATABASE/NAME (PostgresEngine). A SRC on a server is\n"
        "copied as it stood at one instant; with --move, the items copied are then got from\n"
        "it one by one, stopping if other users changed it meanwhile.",
        "aiodiskqueue migrate jobs.queue jobs.sqlite --engine SharedSqliteEngine --move",
    )
    command.add_argument("src", metavar="SRC", help="the queue to copy: a path or an address")
    command.add_argument("dst", metavar="DST", help="the queue to copy to: a path or an address")
    _add_engine(command, "DST's engine", required=True)
    command.add_argument("--move", action="store_true", help="empty SRC once DST has its items")
    command.add_argument(
        "--append", action="store_true", help="add after the items DST already holds"
    )
    command.set_defaults(run=commands.migrate)


def _add_purge(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = _command(
        subcommands,
        "purge",
        "Remove every item of a queue.",
        "The items are removed in one atomic commit, flushed to the disk. Without --yes\n"
        f"nothing is done.\n{_ADDRESSES}",
        "aiodiskqueue purge jobs.queue --yes",
    )
    _add_path(command)
    command.add_argument("--yes", action="store_true", help="do remove them")
    command.set_defaults(run=commands.purge)


def _add_drop(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = _command(
        subcommands,
        "drop",
        "Delete a queue: its files, or all that its server keeps of it.",
        "A local queue's files are deleted while its lock is held: a queue that another\n"
        "process has open is refused. A queue on a server is deleted with its items and its\n"
        "meta (such as its serializer); its other users see an empty queue (RedisEngine), or\n"
        f"fail until it is opened again (PostgresEngine). Without --yes nothing is done.\n"
        f"{_ADDRESSES}",
        "aiodiskqueue drop jobs.queue --yes",
    )
    _add_path(command)
    command.add_argument("--yes", action="store_true", help="do delete it")
    command.set_defaults(run=commands.drop)


def _add_dead_letters(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = _command(
        subcommands,
        "dead-letters",
        "List the items a queue could not deserialise, which left it for its dead letters.",
        "One JSON line per item, oldest first: when it left the queue, the serializer that\n"
        'could not read it, the error, and the item\'s bytes in base64 ("data"). They are\n'
        "kept in PATH.aiodiskqueue-dead-letters; nothing is changed.",
        "aiodiskqueue dead-letters jobs.queue",
    )
    command.add_argument("path", metavar="PATH", help="the queue's path")
    command.set_defaults(run=commands.dead_letters)


def _add_raw(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--raw",
        action="store_true",
        help="decode no item (so unpickle nothing): show the bytes stored",
    )


def _add_engine(command: argparse.ArgumentParser, what: str, *, required: bool = False) -> None:
    command.add_argument(
        "--engine",
        metavar="NAME",
        required=required,
        help=f"{what}; one of {', '.join(ENGINE_NAMES)}",
    )
    command.add_argument(
        "--dbm-backend",
        metavar="MODULE",
        help="the dbm module of a new DbmEngine queue, such as dbm.dumb "
        "(default: the one dbm prefers)",
    )


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive number of items: {text!r}")
    return value
