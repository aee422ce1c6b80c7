"""A redis-server of a test's own, which the test may kill and start again."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import redis.asyncio

from .helpers import free_port

STARTUP_TIMEOUT = 10.0
"""How long the server may take to start (and load its append-only file) before the test fails."""

DURABLE = ("--appendonly", "yes", "--appendfsync", "always")
"""Options of a server that has flushed every write to the disk before it replies."""


def available() -> bool:
    """Whether the redis-server program is on PATH."""
    return shutil.which("redis-server") is not None


class RedisServer:
    """A redis-server on a loopback port, keeping its files in `directory`.

    It keeps the same port and directory when it is started again, so a restarted server
    reads back the append-only file that the killed one wrote. With a `password`, clients
    must give it (`url` does).
    """

    def __init__(self, directory: Path, *options: str, password: str | None = None) -> None:
        self.directory = directory
        self.options = (*options, "--requirepass", password) if password else options
        self.port = free_port()
        credentials = f":{password}@" if password else ""
        self.url = f"redis://{credentials}127.0.0.1:{self.port}/0"
        self._process: asyncio.subprocess.Process | None = None
        self._output: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the server and return once it answers PING."""
        self._process = await asyncio.create_subprocess_exec(
            "redis-server",
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)),
            *("--save", "", *self.options),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        ready = asyncio.Event()
        self._reader = asyncio.create_task(self._read(self._process, ready))
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait(
            (waiting, self._reader), timeout=STARTUP_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        waiting.cancel()
        if not ready.is_set():
            await self.kill()
            output = "".join(self._output)
            raise RuntimeError(f"redis-server did not start:\n{output}")
        client = redis.asyncio.Redis.from_url(self.url)
        try:
            assert await asyncio.wait_for(client.ping(), STARTUP_TIMEOUT)
        finally:
            await client.aclose()

    async def _read(self, process: asyncio.subprocess.Process, ready: asyncio.Event) -> None:
        """Keep the server's log, and say when it is ready; read to the end so no pipe fills."""
        assert process.stdout is not None
        async for line in process.stdout:
            self._output.append(line.decode(errors="replace"))
            if b"Ready to accept connections" in line:
                ready.set()

    async def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would, and wait until it has exited."""
        if self._process is None:
            return
        process, reader = self._process, self._reader
        self._process = self._reader = None
        if process.returncode is None:
            process.kill()
        await process.wait()
        if reader is not None:
            await reader
