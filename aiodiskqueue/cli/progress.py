"""A progress bar on a terminal, for the long commands; nothing at all anywhere else."""

from __future__ import annotations

import shutil
import time
from types import TracebackType
from typing import TextIO

__all__ = ["THRESHOLD", "Progress"]

THRESHOLD = 2000
"""A bar is drawn only for more items than this: fewer take too little time to watch."""
_INTERVAL = 0.1  # seconds between two drawings


class Progress:
    """Counts the items a command has handled and, on a terminal, draws how far it got.

    The bar is drawn on `stream` when it is a terminal, `total` is above `THRESHOLD` and
    `shown` is true (a command whose output goes to the same terminal passes False); it is
    redrawn at most ten times a second and ends with a newline when the block ends, so an
    error message that follows starts on a line of its own.
    """

    def __init__(self, label: str, total: int, stream: TextIO, *, shown: bool = True) -> None:
        self._label = label
        self._total = total
        self._stream = stream
        self._done = 0
        self._drawn_at: float | None = None
        self._enabled = shown and total > THRESHOLD and stream.isatty()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._drawn_at is not None:
            self._draw()
            self._stream.write("\n")
            self._stream.flush()

    def advance(self, count: int) -> None:
        """Count `count` more items done."""
        self._done += count
        now = time.monotonic()
        if self._enabled and (self._drawn_at is None or now - self._drawn_at >= _INTERVAL):
            self._drawn_at = now
            self._draw()

    def _draw(self) -> None:
        fraction = min(1.0, self._done / self._total) if self._total else 1.0
        counts = f" {fraction:4.0%} {self._done:,}/{self._total:,}"
        width = shutil.get_terminal_size((80, 24)).columns - len(self._label) - len(counts) - 4
        width = max(10, min(width, 50))
        filled = round(width * fraction)
        bar = "#" * filled + "-" * (width - filled)
        self._stream.write(f"\r{self._label} [{bar}]{counts}")
        self._stream.flush()
