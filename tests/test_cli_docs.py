"""The console transcripts of ``docs/cli.rst``, run for real: each prints what the page shows.

Every ``.. code-block:: text`` of the page is a transcript: ``$ aiodiskqueue ...`` lines, each
followed by the output it prints. A transcript runs in a fresh directory set up as the page
says (``jobs.queue``, a ``dbm.dumb`` queue of four items, and, for the failures,
``busy.queue``, held open by this test's process, ``damaged.queue`` and ``bad.jsonl``). Its
commands run in order, as ``python -m aiodiskqueue`` in that directory, so each sees what
the ones before it did. Standard output and standard error go to one pipe, as a terminal
shows them, and must equal the transcript's lines exactly, but for:

- the holder's process id, which differs on every run: ``process N`` in the page stands for
  whichever process holds ``busy.queue`` (the test checks that it is this one's id);
- the addresses of the server queues, `SERVER_QUEUES`: a transcript that names one runs on
  a queue of its own on the server the tests are given (REDIS_URL, POSTGRES_URL), set up
  with the four items of ``jobs.queue`` and deleted afterwards. Its address stands for the
  page's, in the commands and in what they print;
- ``--help``, which the page abbreviates and whose wording ``argparse`` may change from one
  Python to the next: each line shown must be a whole line of the real help, in the same
  order, but lines may be left out. The width is set as the page was written, 80 columns
  (``COLUMNS``), since ``argparse`` wraps help to the terminal.

Nothing else is normalised. The byte counts and file names of ``info`` depend on the dbm
backend, so ``jobs.queue`` is made with ``dbm.dumb``, which every Python has and which
writes the very same bytes on 3.10 to 3.13. A command whose output is an
``aiodiskqueue: error:`` line must exit with status 1, any other with 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aiodiskqueue import Queue
from aiodiskqueue.engines import DbmEngine

from .servers import postgres_queue, redis_queue
from .test_cli import COMMANDS, ENVIRONMENT, TIMEOUT, damage, fill, put_on_server

PAGE = Path(__file__).parent.parent / "docs" / "cli.rst"
PROMPT = "$ "
HOLDER = re.compile(r"\bprocess \d+\b")
"""How the page names the process that holds a queue open."""

JOBS: list[Any] = [
    {"job": 1, "user": "ada"},
    {"job": 2, "user": "grace"},
    ("retry", 3),
    datetime.date(2026, 1, 31),
]
"""The items of ``jobs.queue``, as the page lists them."""

SERVER_QUEUES = {
    "redis://127.0.0.1:6379/0/jobs": ("RedisEngine", redis_queue),
    "postgresql://postgres@127.0.0.1:5432/test/jobs": ("PostgresEngine", postgres_queue),
}
"""The page's addresses of queues on servers, the engine of each, and where to make it."""


@dataclass(frozen=True)
class Command:
    """One ``$`` line of a transcript and the output shown under it."""

    line: int  # in the page
    text: str  # after the prompt
    output: str

    @property
    def argv(self) -> list[str]:
        """The command line to run: ``aiodiskqueue`` is this Python's ``-m aiodiskqueue``."""
        program, *args = shlex.split(self.text)
        assert program == "aiodiskqueue", f"cli.rst:{self.line} runs {program!r}"
        return [sys.executable, "-m", "aiodiskqueue", *args]

    @property
    def abbreviated(self) -> bool:
        return "--help" in self.argv or "-h" in self.argv

    def on(self, addresses: dict[str, str]) -> Command:
        """This command on the queues at `addresses` (the real one of each of the page's)."""
        text = self.text
        for page, real in addresses.items():
            text = text.replace(page, shlex.quote(real))
        return Command(self.line, text, self.output)


@dataclass(frozen=True)
class Transcript:
    """A ``.. code-block:: text`` of the page: its commands, in order."""

    line: int  # in the page
    commands: list[Command]


def transcripts() -> list[Transcript]:
    """Every ``.. code-block:: text`` of the page."""
    text = PAGE.read_text()
    blocks = []
    for found in re.finditer(r"\.\. code-block:: text\n\n((?:   .*\n|\n)+)", text):
        first = text.count("\n", 0, found.start(1)) + 1
        lines = textwrap.dedent(found.group(1)).rstrip("\n").split("\n")
        assert lines[0].startswith(PROMPT), f"cli.rst:{first} is no transcript: {lines[0]!r}"
        commands: list[Command] = []
        for number, line in enumerate(lines, first):
            if line.startswith(PROMPT):
                commands.append(Command(number, line[len(PROMPT) :], ""))
            else:
                last = commands[-1]
                commands[-1] = Command(last.line, last.text, f"{last.output}{line}\n")
        blocks.append(Transcript(first, commands))
    return blocks


TRANSCRIPTS = transcripts()


def set_up(directory: Path) -> None:
    """Make the queues and files the page says its examples begin with (but ``busy.queue``,
    which the test holds open)."""
    dumb = functools.partial(DbmEngine, backend="dbm.dumb")
    fill(directory / "jobs.queue", JOBS, dumb)
    fill(directory / "damaged.queue", ["intact", "damaged-item-0123456789", "intact"], dumb)
    damage(directory / "damaged.queue", b"damaged-item-0123456789")
    (directory / "bad.jsonl").write_text('{"item": 1}\nnot json\n{"item": 3}\n')


def run(command: Command, directory: Path) -> subprocess.CompletedProcess[str]:
    """Run `command` in `directory`, its standard output and error in one pipe."""
    return subprocess.run(
        command.argv,
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT,
        env={**ENVIRONMENT, "COLUMNS": "80"},
        check=False,
    )


def first_line_missing(shown: str, real: str) -> str | None:
    """The first line of `shown` that is not a line of `real` after the lines before it."""
    rest = iter(real.splitlines())
    for line in shown.splitlines():
        if line not in rest:  # consumes `rest` up to the line found
            return line
    return None


def test_the_transcripts_show_every_command() -> None:
    shown = {
        command.argv[3]
        for transcript in TRANSCRIPTS
        for command in transcript.commands
        if len(command.argv) > 3
    }
    assert set(COMMANDS) <= shown


@pytest.mark.parametrize(
    "transcript", TRANSCRIPTS, ids=lambda transcript: f"cli.rst:{transcript.line}"
)
def test_a_transcript_prints_what_the_page_shows(tmp_path: Path, transcript: Transcript) -> None:
    set_up(tmp_path)

    named = [page for page in SERVER_QUEUES if any(page in c.text for c in transcript.commands)]
    addresses: dict[str, str] = {}  # the page's address of each server queue: the real one

    async def run_while_busy() -> list[subprocess.CompletedProcess[str]]:
        async with contextlib.AsyncExitStack() as stack:
            for page in named:
                engine, make = SERVER_QUEUES[page]
                addresses[page] = await stack.enter_async_context(make())
                await put_on_server(addresses[page], engine, JOBS)
            busy = await asyncio.wait_for(Queue.create(tmp_path / "busy.queue"), TIMEOUT)
            async with busy:
                return [
                    await asyncio.to_thread(run, command.on(addresses), tmp_path)
                    for command in transcript.commands
                ]

    results = asyncio.run(run_while_busy())
    for command, result in zip(transcript.commands, results, strict=True):
        for page, real in addresses.items():
            result.stdout = result.stdout.replace(real, page)
        where = f"cli.rst:{command.line}: $ {command.text}"
        if command.abbreviated:
            missing = first_line_missing(command.output, result.stdout)
            assert missing is None, f"{where}\nnot printed: {missing!r}\n{result.stdout}"
        else:
            assert result.stdout == HOLDER.sub(f"process {os.getpid()}", command.output), where
        failure = command.output.startswith("aiodiskqueue: error: ")
        assert result.returncode == (1 if failure else 0), where
