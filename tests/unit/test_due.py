"""pipeline.due: due keys in order, each released once, a burst not in one go."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import rocksdict
from faust.types import TP

from pipeline.clock import FrozenClock
from pipeline.due import FULL_SCAN_EVERY, YIELD_EVERY, DueTimer, due_key, ms_at, time_at

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


class App:
    rebalancing = False
    clock = FrozenClock(NOW)


async def test_due_entries_are_released_once_oldest_first_and_the_rest_wait() -> None:
    table = {
        due_key(NOW_MS - 5, "b"): "b",
        due_key(NOW_MS - 10, "a"): "a",
        due_key(NOW_MS + 1_000, "later"): "later",
    }
    released: list[Any] = []

    async def release(entry: Any) -> None:
        released.append(entry)

    timer = DueTimer(App(), table, release, "things")  # type: ignore[arg-type]
    assert await timer.tick() == 2
    assert await timer.tick() == 0  # released, not yet taken by their agent
    assert released == ["a", "b"]
    taken = due_key(NOW_MS - 10, "a")
    timer.done(taken)  # its agent took it
    assert taken not in table
    assert await timer.tick() == 0


async def test_a_burst_of_due_entries_gives_the_loop_back() -> None:
    """Thousands of entries due at once: other tasks run during the release."""
    burst = YIELD_EVERY * 10
    table = {due_key(NOW_MS - n, f"k{n}"): n for n in range(burst)}
    progress: list[int] = []
    released = 0

    async def release(entry: Any) -> None:
        nonlocal released
        released += 1

    async def other_task() -> None:
        while released < burst:
            progress.append(released)
            await asyncio.sleep(0)

    timer = DueTimer(App(), table, release, "things")  # type: ignore[arg-type]
    watcher = asyncio.ensure_future(other_task())
    await asyncio.sleep(0)
    assert await timer.tick() == burst
    await watcher
    assert len({p for p in progress if 0 < p < burst}) >= 5


def test_a_time_is_due_at_the_next_whole_millisecond_never_before() -> None:
    """Keys hold whole milliseconds: a time between two is due at the later
    one, and a whole millisecond comes back exactly (no float on the way)."""
    whole = NOW + timedelta(milliseconds=123)
    assert ms_at(whole) == NOW_MS + 123
    assert time_at(ms_at(whole)) == whole
    assert ms_at(whole - timedelta(microseconds=999)) == NOW_MS + 123
    assert ms_at(whole + timedelta(microseconds=1)) == NOW_MS + 124


class Walked:
    """A partition's RocksDB store that counts the keys a scan walks over."""

    def __init__(self, db: rocksdict.Rdict) -> None:
        self.db = db
        self.walked = 0

    def keys(self, from_key: bytes | None = None) -> Iterator[bytes]:
        for key in self.db.keys(from_key=from_key):
            self.walked += 1
            yield key


class RocksTable(dict[str, Any]):
    """A table on real per-partition RocksDB stores, as Faust's store keeps
    them (``data._dbs``, the offset key among the entries)."""

    changelog_topic_name = "held-changelog"

    def __init__(self, path: Path, partitions: int, app: Any) -> None:
        super().__init__()
        self.app = app
        self.dbs = {
            p: Walked(
                rocksdict.Rdict(str(path / str(p)), rocksdict.Options(raw_mode=True))
            )
            for p in range(partitions)
        }
        self.data = SimpleNamespace(_dbs=self.dbs, offset_key=b"__faust\0offset__")
        for walked in self.dbs.values():
            walked.db[self.data.offset_key] = b"7"

    def put(self, partition: int, key: str, value: Any) -> None:
        self[key] = value
        self.dbs[partition].db[key.encode()] = b"x"

    def walked(self) -> int:
        return sum(w.walked for w in self.dbs.values())


def rocks_app(partitions: int) -> Any:
    actives = {TP("held-changelog", p) for p in range(partitions)}
    return SimpleNamespace(
        rebalancing=False,
        clock=FrozenClock(NOW),
        consumer_generation_id=1,
        assignor=SimpleNamespace(assigned_actives=lambda: actives),
    )


async def test_a_scan_seeks_past_what_it_released_and_a_whole_scan_catches_up(
    tmp_path: Path,
) -> None:
    """Thousands released and not yet taken: the next tick walks only the
    last second of them before the new due entry, not all. An entry held
    behind that point (never on one clock, but possible) is released by the
    next whole scan, and so is everything at a new group generation."""
    app = rocks_app(2)
    table = RocksTable(tmp_path, 2, app)
    for n in range(3_000):
        table.put(n % 2, due_key(NOW_MS - 60_000 + n * 10, f"old{n}"), n)
    released: list[Any] = []

    async def release(entry: Any) -> None:
        released.append(entry)

    timer = DueTimer(app, table, release, "things")
    assert await timer.tick() == 3_000
    assert table.walked() >= 3_000
    table.put(0, due_key(NOW_MS + 100, "new"), "new")
    app.clock.advance(timedelta(milliseconds=100))
    before = table.walked()
    assert await timer.tick() == 1 and released[-1] == "new"
    assert table.walked() - before < 300  # ~1 s of entries behind the seek point
    table.put(1, due_key(NOW_MS - 50_000, "behind"), "behind")
    ticks = 1
    while await timer.tick() == 0:
        ticks += 1
    assert released[-1] == "behind" and ticks < FULL_SCAN_EVERY
    table.put(1, due_key(NOW_MS - 40_000, "moved"), "moved")
    app.consumer_generation_id = 2
    assert await timer.tick() == 1 and released[-1] == "moved"
