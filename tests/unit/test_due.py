"""pipeline.due: due keys in order, each released once, a burst not in one go."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.clock import FrozenClock
from pipeline.due import YIELD_EVERY, DueTimer, due_key, ms_at, time_at

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
