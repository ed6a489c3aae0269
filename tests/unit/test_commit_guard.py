"""The commit guard: after a failed send or an agent crash, no offset is committed."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from unittest.mock import AsyncMock, MagicMock

import pytest
from faust.types import TP

import pipeline.transport
from pipeline.app import NotifyApp, create_app
from pipeline.settings import Settings
from pipeline.streams import flush_durably
from pipeline.transport import ProducerBuffer


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


async def test_a_running_worker_that_tripped_exits_within_its_grace(
    app: NotifyApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a worker a trip only records; armed (a running worker), it
    also starts a timer that ends the process after the grace, whatever
    Faust's stop still waits for."""
    started: list[tuple[float, object, tuple[object, ...]]] = []

    class Timer:
        def __init__(self, delay: float, fn: object, args: tuple[object, ...]) -> None:
            started.append((delay, fn, args))
            self.daemon = False

        def start(self) -> None:
            assert self.daemon  # never holds the interpreter's exit

    monkeypatch.setattr(pipeline.transport.threading, "Timer", Timer)
    app.commit_guard.trip(RuntimeError("unarmed"))
    assert started == []
    app.commit_guard.failure = None
    app.commit_guard.arm(2.5)
    reason = RuntimeError("armed")
    app.commit_guard.trip(reason)
    assert started == [(2.5, pipeline.transport._exit_tripped, (reason,))]


async def test_no_commit_while_table_updates_are_still_buffered(
    app: NotifyApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offsets are not committed past table updates that never reached Kafka."""
    monkeypatch.setattr("pipeline.transport.BUFFER_DRAIN_TIMEOUT", 0.05)
    buffer = app.producer.buffer
    for _ in range(3):  # the producer is not running: these never leave
        buffer.put(handed_record())
    assert await app.consumer._commit({TP("notify.events", 0): 10}) is False


def handed_record() -> MagicMock:
    """A buffered record whose hand-over to the client succeeds at once."""
    record = MagicMock()
    record.message.channel.publish_message = AsyncMock()
    return record


async def test_a_flush_waits_for_earlier_records_only(app: NotifyApp) -> None:
    """Records other agents send while a flush waits do not hold it up."""
    buffer: ProducerBuffer = app.producer.buffer  # type: ignore[assignment]
    earlier = [handed_record() for _ in range(2)]
    for record in earlier:
        buffer.put(record)
    flushed = asyncio.ensure_future(app.producer.acknowledged(timeout=5))
    await asyncio.sleep(0)  # the flush starts: it counts two records to wait for
    for _ in range(50):  # another agent keeps sending
        buffer.put(handed_record())
    await asyncio.sleep(0)
    assert not flushed.done()
    for record in earlier:
        await buffer._send_pending(record)
    assert await flushed is True
    assert buffer.pending.qsize() == 52  # nothing later was needed


async def test_a_flush_gives_up_after_its_timeout(app: NotifyApp) -> None:
    """A buffer that never hands over makes ``acknowledged`` false, not a hang."""
    app.producer.buffer.put(handed_record())
    assert await app.producer.acknowledged(timeout=0.05) is False  # type: ignore[attr-defined]


async def test_durable_says_what_stands_in_the_way(app: NotifyApp) -> None:
    """The check a send batch and a commit share: records not handed over, a
    failed send, or nothing (then flush_durably returns and offsets commit)."""
    producer = app.producer
    assert await producer.durable(timeout=0.05) is None  # type: ignore[attr-defined]
    producer.buffer.put(handed_record())
    waiting = await producer.durable(timeout=0.05)  # type: ignore[attr-defined]
    assert waiting is not None and "not handed to the client" in waiting
    await producer.buffer._send_pending(producer.buffer.pending.get_nowait())
    app.commit_guard.trip(RuntimeError("broker said no"))
    failed = await producer.durable(timeout=0.05)  # type: ignore[attr-defined]
    assert failed is not None and "broker said no" in failed
    with pytest.raises(RuntimeError, match="broker said no"):
        await flush_durably(app, timeout=0.05)


async def test_back_pressure_holds_the_streams_quietly_until_half_left(
    app: NotifyApp, caplog: pytest.LogCaptureFixture
) -> None:
    """Over the limit, the conductor's wait lasts until the buffer is down to
    half of it; no WARNING per hold (Faust logs one each time)."""
    buffer: ProducerBuffer = app.producer.buffer  # type: ignore[assignment]
    records = [handed_record() for _ in range(buffer.max_messages + 10)]
    for record in records:
        buffer.put(record)
    held = asyncio.ensure_future(buffer.wait_until_ebb())
    for sent, record in enumerate(records, start=1):
        await asyncio.sleep(0)
        left = len(records) - sent + 1
        assert held.done() is (left <= buffer.max_messages // 2), left
        await buffer._send_pending(record)
    await held
    assert buffer.holds.count == 1 and buffer.holds.peak == len(records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_under_the_limit_the_streams_are_not_held(app: NotifyApp) -> None:
    buffer: ProducerBuffer = app.producer.buffer  # type: ignore[assignment]
    buffer.put(handed_record())
    await asyncio.wait_for(buffer.wait_until_ebb(), timeout=1)
    assert buffer.holds.count == 0
