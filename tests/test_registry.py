"""One table of engines, which the command line, detection and the tests read."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiodiskqueue import engines
from aiodiskqueue.cli import stores
from aiodiskqueue.engines import registry


@pytest.mark.parametrize("name", list(registry.ENGINES))
def test_every_registered_engine_is_a_public_name_of_the_engines(name: str) -> None:
    assert registry.engine_class(name) is getattr(engines, name)
    assert name in engines.__all__


def test_the_command_line_names_exactly_the_registered_engines() -> None:
    assert tuple(registry.ENGINES) == stores.ENGINE_NAMES


@pytest.mark.parametrize(
    ("scheme", "engine"),
    [("redis", "RedisEngine"), ("unix", "RedisEngine"), ("postgresql", "PostgresEngine")],
)
def test_a_server_address_names_its_engine_by_its_scheme(scheme: str, engine: str) -> None:
    entry = registry.by_scheme(scheme)
    assert entry is not None
    assert entry.name == engine


def test_each_local_format_has_one_single_owner_engine() -> None:
    formats = {entry.format for entry in registry.ENGINES.values() if entry.format}
    assert {registry.single_owner(each).name for each in formats} == {
        "DbmEngine",
        "LogEngine",
        "PickledList",
        "SqliteEngine",
    }


def test_the_api_reference_names_every_public_name() -> None:
    import aiodiskqueue

    api = (Path(__file__).parents[1] / "docs" / "api.rst").read_text()
    names = [*aiodiskqueue.__all__, *engines.__all__]
    assert [name for name in names if name not in api] == []
