"""Records and ids: plain JSON on the wire, deterministic identifiers."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from pipeline.ids import event_id, notification_id
from schemas.records import NotificationEvent

NOW = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)


def test_events_leave_the_app_without_faust_metadata() -> None:
    """An event serializes to plain JSON with an ISO timestamp and no __faust key."""
    event = NotificationEvent(
        event_id="e_1", event_type="accepted", ts=NOW, stage="ingest", user_id="u"
    )
    body = orjson.loads(event.dumps())
    assert "__faust" not in body
    assert body["ts"] == "2026-11-21T09:30:00+00:00"
    assert body["user_id"] == "u"


def test_events_round_trip_through_the_codec() -> None:
    """What a consumer reads back is the event that was written."""
    event = NotificationEvent(
        event_id="e_1", event_type="sent", ts=NOW, stage="send", attempt=2
    )
    back = NotificationEvent.loads(event.dumps())
    assert back == event
    assert back.ts == NOW


def test_notification_ids_are_deterministic_and_tenant_scoped() -> None:
    """The same (tenant, key) maps to the same id; tenants never collide."""
    assert notification_id("t1", "k") == notification_id("t1", "k")
    assert notification_id("t1", "k") != notification_id("t2", "k")
    # Parts are separated, so moving a character between them changes the id.
    assert notification_id("ab", "c") != notification_id("a", "bc")
    assert event_id("n", "sent", 1) != event_id("n", "sent", 2)
