"""The commit guard: after a failed send or an agent crash, no offset is committed."""

from __future__ import annotations

from pathlib import Path
from unittest.mock import AsyncMock

import pytest
from faust.types import TP

from pipeline.app import NotifyApp, create_app
from pipeline.settings import Settings


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> NotifyApp:
    """An app that is never started; its crash is recorded, not performed."""
    built = create_app(Settings(data_dir=tmp_path, store_url="memory://"), discover=[])
    monkeypatch.setattr(built, "crash", AsyncMock())
    return built


async def test_a_failed_send_refuses_commits_and_crashes(app: NotifyApp) -> None:
    """on_send_error (Faust's hook for a failed produce) trips the guard."""
    error = TimeoutError("produce timed out")
    app.commit_guard.on_send_error(app.producer, error, state=None)
    assert await app.consumer._commit({TP("notify.events", 0): 10}) is False
    await_crash = app.crash
    assert isinstance(await_crash, AsyncMock)
    await_crash.assert_called_once_with(error)


async def test_an_agent_crash_refuses_commits(app: NotifyApp) -> None:
    """An exception inside ``watching`` trips the guard and still propagates."""
    with pytest.raises(ZeroDivisionError):
        with app.commit_guard.watching("notify.requests.bulk[2]@41"):
            _ = 1 / 0
    assert "notify.requests.bulk[2]@41" in repr(app.commit_guard.failure)
    assert await app.consumer._commit({TP("notify.events", 0): 10}) is False


async def test_the_guard_trips_once(app: NotifyApp) -> None:
    """The first failure is the one reported; later ones do not crash again."""
    first, second = RuntimeError("first"), RuntimeError("second")
    app.commit_guard.trip(first)
    app.commit_guard.trip(second)
    assert app.commit_guard.failure is first
    crash = app.crash
    assert isinstance(crash, AsyncMock)
    assert crash.call_count == 1


class StuckBuffer:
    """A producer buffer whose records never leave."""

    size = 3


async def test_no_commit_while_table_updates_are_still_buffered(
    app: NotifyApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offsets are not committed past table updates that never reached Kafka."""
    producer = app.producer
    monkeypatch.setattr(producer, "buffer", StuckBuffer())
    monkeypatch.setattr(producer, "flush", AsyncMock())
    monkeypatch.setattr("pipeline.transport.BUFFER_DRAIN_TIMEOUT", 0.05)
    consumer = app.consumer
    assert await consumer._drain_buffer(timeout=0.05) is False  # type: ignore[attr-defined]
    assert await consumer._commit({TP("notify.events", 0): 10}) is False


async def test_a_buffer_that_drains_lets_the_commit_go_on(
    app: NotifyApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flushing until the buffer is empty, then the commit may proceed."""

    class Draining:
        size = 2

    buffer = Draining()

    async def flush() -> None:
        buffer.size -= 1

    monkeypatch.setattr(app.producer, "buffer", buffer)
    monkeypatch.setattr(app.producer, "flush", flush)
    assert await app.consumer._drain_buffer(timeout=5) is True  # type: ignore[attr-defined]
    assert buffer.size == 0
