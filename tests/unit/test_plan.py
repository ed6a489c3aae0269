"""The send ledger's gate and the job planning functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipeline.delivery import plan
from pipeline.due import due_ms
from schemas.records import DeliveryJob, DeviceToken

NOW = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)


def job(**fields: Any) -> DeliveryJob:
    """A push job with two devices, one inactive."""
    values: dict[str, Any] = {
        "notification_id": "n_1",
        "tenant": "t",
        "user_id": "u",
        "type": "order_shipped",
        "priority": "transactional",
        "lane": "critical",
        "channel": "push",
        "data": {},
        "created_at": NOW,
        "devices": [
            DeviceToken(user_id="u", token="a" * 64, platform="apns"),
            DeviceToken(user_id="u", token="f" * 40, platform="fcm", active=False),
        ],
    }
    return DeliveryJob(**{**values, **fields})


def test_only_active_devices_are_targets() -> None:
    """An inactive token is never called."""
    [target] = plan.targets(job())
    assert target.to == "a" * 64 and target.platform == "apns"
    assert plan.attempt_key(job(), target) == f"n_1:push:{plan.token_id('a' * 64)}"


def test_the_gate() -> None:
    """Sent never again; failed only when re-driven; stale retries stopped;
    a call left 'sending' by a crash is made again."""
    first = job()
    assert plan.gate(None, first) is None
    assert plan.gate(plan.entry("sent", first, NOW), first) == "already_sent"
    assert plan.gate(plan.entry("sent", first, NOW), job(redrive=1)) == "already_sent"
    failed = plan.entry("failed", first, NOW)
    assert plan.gate(failed, first) == "already_failed"
    assert plan.gate(failed, job(redrive=1)) is None
    retrying = plan.entry("retrying", first, NOW, attempt=2)
    assert plan.gate(retrying, job(attempt=1)) == "stale"
    assert plan.gate(retrying, job(attempt=2)) is None
    assert plan.gate(plan.entry("sending", first, NOW), first) is None


@given(st.lists(st.integers(min_value=0, max_value=10**7), min_size=2, max_size=20))
def test_schedule_keys_sort_by_due_time(delays: list[int]) -> None:
    """The retry table lists entries in due order: its scan can stop early."""
    jobs = [
        plan.retry_job(
            job(notification_id=f"n_{i}"), [], NOW + timedelta(milliseconds=ms)
        )
        for i, ms in enumerate(delays)
    ]
    keys = sorted(plan.schedule_key(j) for j in jobs)
    dues = [due_ms(k) for k in keys]
    assert dues == sorted(dues)
    assert all(
        due_ms(plan.schedule_key(j)) == int(j.not_before.timestamp() * 1000)
        for j in jobs
        if j.not_before
    )


def test_a_retry_keeps_only_the_targets_tried_again() -> None:
    """A push retry carries the devices that failed retryably, attempt + 1."""
    original = job(
        devices=[
            DeviceToken(user_id="u", token="a" * 64, platform="apns"),
            DeviceToken(user_id="u", token="b" * 64, platform="apns"),
        ]
    )
    kept = [t for t in plan.targets(original) if t.to.startswith("b")]
    retry = plan.retry_job(original, kept, NOW)
    assert [d.token for d in retry.devices] == ["b" * 64]
    assert (retry.attempt, retry.not_before) == (1, NOW)
