"""A PostgreSQL server of the tests' own, which they may crash and start again.

`PostgresServer` makes a cluster with `initdb` in a fresh directory and runs it on a free
loopback port, with its socket in that directory. As root it runs every command as the
``postgres`` user, since PostgreSQL refuses to run as root. The binaries are found on the
PATH, else in the newest ``/usr/lib/postgresql/<version>/bin``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from .helpers import free_port

COMMAND_TIMEOUT = 60.0
"""How long initdb, or starting or stopping the server, may take."""


def find_binaries() -> Path | None:
    """The directory holding initdb and pg_ctl, or None if there is none."""
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(initdb).resolve().parent  # where pg_ctl and postgres are too
    found = [Path(path) for path in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    found.sort(key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0)
    return found[-1].parent if found else None


class PostgresServer:
    """A throwaway cluster: `start()`, `crash()` (an immediate stop), `stop()`, `remove()`."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="aiodiskqueue-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"
        self._user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.directory, account.pw_uid, account.pw_gid)
            self._user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    @property
    def url(self) -> str:
        """The URL of its database ``postgres``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        self._pg_ctl("start", "-w", "-l", str(self.log), "-o", options)

    def crash(self) -> None:
        """Stop the server the way a crash would: no checkpoint, recovery at the next start."""
        self._pg_ctl("stop", "-m", "immediate")

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "fast")

    def running(self) -> bool:
        status = subprocess.run(
            [*self._user, str(self.binaries / "pg_ctl"), "status", "-D", str(self.data)],
            capture_output=True,
            cwd=self.directory,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        return status.returncode == 0

    def remove(self) -> None:
        """Stop the server if it runs, and delete its directory."""
        try:
            if self.running():
                self.crash()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _pg_ctl(self, *arguments: str) -> None:
        self._run("pg_ctl", *arguments[:1], "-D", str(self.data), "-t", "60", *arguments[1:])

    def _run(self, program: str, *arguments: str) -> None:
        result = subprocess.run(
            [*self._user, str(self.binaries / program), *arguments],
            capture_output=True,
            text=True,
            cwd=self.directory,  # initdb, as postgres, cannot stay in a directory of root's
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(
                f"{program} {' '.join(arguments)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}{log[-2000:]}"
            )
