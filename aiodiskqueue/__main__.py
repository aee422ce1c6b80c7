"""``python -m aiodiskqueue``: the ``aiodiskqueue`` command (see `aiodiskqueue.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
