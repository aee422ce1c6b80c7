"""The SQLite engines, on one file format (`file`): `SqliteEngine`, which one queue owns,
and `SharedSqliteEngine`, which several processes use at once."""

from .engine import ExclusiveSqliteEngine, SqliteEngine
from .shared import SharedSqliteEngine

__all__ = ["ExclusiveSqliteEngine", "SharedSqliteEngine", "SqliteEngine"]
