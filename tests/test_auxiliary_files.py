"""A queue's auxiliary files (lock, temporary) have names no queue can take, and are opened
without following symbolic links, private to their owner."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from aiodiskqueue.engines import Record, SharedSqliteEngine
from aiodiskqueue.engines.storage.files import auxiliary_path

from .conftest import ENGINES
from .test_engines import EngineFactory, records


@pytest.mark.parametrize("suffix", [".tmp", ".lock", "-tmp", ".tmp-wal"])
async def test_a_queue_named_like_another_queues_old_auxiliary_file_survives_it(
    engine: EngineFactory, path: Path, suffix: str
) -> None:
    neighbour = engine(path.with_name(path.name + suffix))
    await neighbour.open()
    await neighbour.commit(records(1, 3), [])
    await neighbour.close()
    store = engine(path)
    await store.open()
    await store.commit(records(1, 2), [1])
    await store.close()
    neighbour = engine(path.with_name(path.name + suffix))
    await neighbour.open()
    assert await neighbour.read(0, 10) == records(1, 3)
    await neighbour.close()


@pytest.mark.parametrize("kind", ["lock", "tmp"])
def test_a_queue_path_that_an_auxiliary_file_takes_is_refused(
    engine: EngineFactory, path: Path, kind: str
) -> None:
    with pytest.raises(ValueError, match="aiodiskqueue-"):
        engine(auxiliary_path(path, kind))
    with pytest.raises(ValueError, match="aiodiskqueue-"):
        SharedSqliteEngine(auxiliary_path(path, kind))


async def test_a_stale_lock_file_of_aiodiskqueue_0_2_does_not_keep_a_queue_from_opening(
    engine: EngineFactory, path: Path
) -> None:
    path.with_name(path.name + ".lock").write_text("999999\n")
    store = engine(path)
    await store.open()
    await store.commit(records(1, 1), [])
    await store.close()


async def test_the_lock_file_is_not_followed_when_it_is_a_symbolic_link(
    engine: EngineFactory, path: Path
) -> None:
    victim = path.with_name("victim")
    victim.write_text("precious")
    auxiliary_path(path, "lock").symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link"):
        await engine(path).open()
    assert victim.read_text() == "precious"


async def test_a_temporary_file_that_is_a_symbolic_link_receives_nothing(
    engine: EngineFactory, path: Path
) -> None:
    spy = path.with_name("spy")
    spy.write_bytes(b"")
    os.chmod(spy, 0o644)
    auxiliary_path(path, "tmp").symlink_to(spy)
    store = engine(path)
    await store.open()
    await store.commit([Record(1, b"secret")], [])
    await store.close()
    assert spy.read_bytes() == b""
    again = engine(path)
    await again.open()
    assert await again.read(0, 10) == [Record(1, b"secret")]
    await again.close()


async def test_a_stale_temporary_file_is_replaced_by_a_private_one(path: Path) -> None:
    # PickledList writes every commit through its temporary file.
    stale = auxiliary_path(path, "tmp")
    stale.write_bytes(b"left by a killed process")
    os.chmod(stale, 0o644)
    seen: list[int] = []
    real_replace = os.replace

    def replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        seen.append(stat.S_IMODE(os.stat(source).st_mode))
        real_replace(source, target)

    store = ENGINES["PickledList"](path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", replace)
        await store.open()
        await store.commit(records(1, 1), [])
        await store.close()
    assert seen
    assert all(mode == 0o600 for mode in seen)


async def test_lock_files_are_private_to_their_owner(engine: EngineFactory, path: Path) -> None:
    store = engine(path)
    await store.open()
    assert stat.S_IMODE(auxiliary_path(path, "lock").stat().st_mode) == 0o600
    await store.close()
