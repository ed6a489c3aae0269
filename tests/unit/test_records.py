"""Records and ids: plain JSON on the wire, deterministic identifiers."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import orjson
import pytest

from pipeline.ids import (
    NOTIFICATION_ID_PATTERN,
    event_id,
    notification_id,
    parse_notification_id,
)
from pipeline.partitioning import partition_for
from pipeline.settings import LANES
from schemas.records import NotificationEvent

NOW = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)


def test_events_leave_the_app_without_faust_metadata() -> None:
    """An event is plain JSON: its fields only, RFC 3339 times, no __faust key."""
    event = NotificationEvent(
        event_id="e_1", event_type="accepted", ts=NOW, stage="ingest", user_id="u"
    )
    body = orjson.loads(event.dumps())
    assert "__faust" not in body
    assert set(body) == set(NotificationEvent.model_fields)
    assert body["ts"] == "2026-11-21T09:30:00Z"
    assert body["user_id"] == "u"
    assert NotificationEvent.loads(event.dumps()) == event


def test_events_round_trip_through_the_codec() -> None:
    """What a consumer reads back is the event that was written."""
    event = NotificationEvent(
        event_id="e_1", event_type="sent", ts=NOW, stage="send", attempt=2
    )
    back = NotificationEvent.loads(event.dumps())
    assert back == event
    assert back.ts == NOW


def test_notification_ids_are_deterministic_and_tenant_scoped() -> None:
    """The same (tenant, key, user) maps to the same id; tenants never collide."""
    nid = notification_id("t1", "k", "u1", "critical")
    assert nid == notification_id("t1", "k", "u1", "critical")
    assert nid != notification_id("t2", "k", "u1", "critical")
    assert nid != notification_id("t1", "k", "u2", "critical")
    # Parts are separated, so moving a character between them changes the id.
    assert notification_id("ab", "c", "u", "bulk") != notification_id(
        "a", "bc", "u", "bulk"
    )


@pytest.mark.parametrize("lane", LANES)
@pytest.mark.parametrize("user", ["u_991", "alice", "ユーザー", "x" * 300])
def test_a_notification_id_names_its_lane_and_its_users_partition(
    lane: str, user: str
) -> None:
    """Status lives on the user's partition of the lane's group: the id says both."""
    nid = notification_id("acme", "order-1", user, lane)
    assert re.match(NOTIFICATION_ID_PATTERN, nid)  # as the OpenAPI document says
    ref = parse_notification_id(nid)
    assert ref is not None and ref.lane == lane
    for partitions in (1, 4, 12, 48):
        assert ref.partition(partitions) == partition_for(
            f"acme/{user}".encode(), partitions
        )


@pytest.mark.parametrize(
    "value",
    [
        "",
        "n_",
        "n1",
        "n_0123456789ab",
        "n_x0000000000000000000000000000000",
        "e_" + "0" * 33,
    ],
)
def test_anything_else_is_not_a_notification_id(value: str) -> None:
    assert parse_notification_id(value) is None
    assert event_id("n", "sent", 1) != event_id("n", "sent", 2)
