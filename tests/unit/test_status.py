"""Folding events into a notification's status and trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipeline.status import MAX_TRAIL, fold
from schemas.records import NotificationEvent

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def ev(
    kind: str, n: int, channel: str | None = None, **extra: object
) -> NotificationEvent:
    """The n-th event of notification n_1."""
    return NotificationEvent(
        event_id=f"e{n}",
        event_type=kind,
        ts=NOW + timedelta(seconds=n),
        stage="test",
        notification_id="n_1",
        tenant="t",
        user_id="u",
        channel=channel,
        **extra,
    )


def test_status_follows_the_most_advanced_channel() -> None:
    """Per-channel outcomes are kept; the summary is the furthest along."""
    status = None
    for event in (
        ev("accepted", 1),
        ev("queued", 2, "push"),
        ev("suppressed", 3, "sms", reason="channel_opt_out:sms"),
        ev("deferred", 4, "email", reason="quiet_hours", until=NOW),
    ):
        status = fold(status, event)
    assert status is not None
    assert status.channels == {
        "push": "queued",
        "sms": "suppressed",
        "email": "deferred",
    }
    assert status.status == "queued"
    assert [entry.event_type for entry in status.trail] == [
        "accepted",
        "queued",
        "suppressed",
        "deferred",
    ]
    assert status.trail[2].reason == "channel_opt_out:sms"
    assert status.trail[3].until == NOW
    assert (status.tenant, status.user_id) == ("t", "u")


def test_a_redelivered_event_changes_nothing() -> None:
    """At-least-once: the same event twice leaves one trail entry."""
    once = fold(fold(None, ev("accepted", 1)), ev("queued", 2, "push"))
    twice = fold(once, ev("queued", 2, "push"))
    assert twice == once


def test_an_event_without_a_channel_keeps_the_summary() -> None:
    """A deduplicated request is in the trail but does not change the status."""
    status = fold(fold(None, ev("queued", 1, "push")), ev("deduplicated", 2))
    assert status.status == "queued"
    assert status.trail[-1].event_type == "deduplicated"


def test_the_trail_is_bounded() -> None:
    """A notification's trail keeps its latest entries only."""
    status = None
    for n in range(MAX_TRAIL + 10):
        status = fold(status, ev("retried", n, "push"))
    assert status is not None
    assert len(status.trail) == MAX_TRAIL
    assert status.trail[-1].event_id == f"e{MAX_TRAIL + 9}"


def test_receipts_never_move_a_channel_back() -> None:
    """Clicked stays clicked when the open arrives later; a retry still moves on."""
    from pipeline.status import progressed

    assert progressed("clicked", "opened") == "clicked"
    assert progressed("sent", "delivered") == "delivered"
    assert progressed("delivered", "sent") == "delivered"
    assert progressed("retried", "sent") == "sent"
    assert progressed("sent", "bounced") == "bounced"
