"""Campaign decisions: the audience, each recipient's request, pacing, the
state shown and the counts (``pipeline.campaigns``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pipeline.campaigns import (
    Pacer,
    UploadedIds,
    audience_size,
    by_partition,
    channel_deltas,
    list_cursor,
    list_position,
    local_schedule,
    recipient_request,
    selects,
    shown_state,
    summed,
    walked_share,
)
from pipeline.errors import InvalidMessage
from pipeline.ids import campaign_id
from pipeline.partitioning import partition_for
from pipeline.topology import user_key
from schemas.campaigns import Audience, Campaign, CampaignRequest, Progress
from schemas.decode import decode_object

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def bulk(**fields: Any) -> CampaignRequest:
    """Seed 002's body with these fields changed."""
    body: dict[str, Any] = {
        "idempotency_key": "winter-1",
        "campaign_name": "Winter sale",
        "type": "promotional",
        "target": {"segment_id": "vip"},
        "channels": ["email", "push"],
        "message": {"title": "Winter sale", "body": "Half off."},
        **fields,
    }
    return decode_object(CampaignRequest, body)


def campaign(state: str = "active", **fields: Any) -> Campaign:
    """A stored campaign of ``bulk(**fields)``."""
    return Campaign(
        campaign_id="c_1",
        tenant="acme",
        request=bulk(**fields),
        body_hash="h",
        state=state,  # type: ignore[arg-type]
        created_at=NOW,
        updated_at=NOW,
    )


def test_seed_bodys_message_goes_out_with_the_campaign_type() -> None:
    """``type: promotional`` + message: the campaign type, bulk lane, one
    idempotency key per campaign (keys are per user)."""
    request = recipient_request(campaign(), "u1")
    assert (request.type, request.priority) == ("campaign", "promotional")
    assert request.data == {"headline": "Winter sale", "message": "Half off."}
    assert request.idempotency_key == "campaign:c_1"
    assert request.campaign_id == "c_1" and request.tenant == "acme"
    assert (
        recipient_request(campaign(), "u2").idempotency_key == request.idempotency_key
    )


def test_a_type_with_data_uses_the_types_templates() -> None:
    request = recipient_request(
        campaign(type="order_shipped", message=None, data={"order_id": 7}), "u1"
    )
    assert request.type == "order_shipped" and request.data == {"order_id": 7}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"message": None}, "message"),
        ({"target": {"tags": ["a"], "all": True}}, "target"),
        ({"target": {}}, "target"),
        ({"rate": 0}, "rate"),
        (
            {
                "schedule_at": "2026-12-05T10:00:00Z",
                "expiry_at": "2026-12-05T09:00:00Z",
            },
            "expiry_at",
        ),
    ],
)
def test_a_bad_body_names_its_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        bulk(**fields)
    assert (caught.value.field or "").startswith(field)


def test_an_audience_selects_by_tags_or_all() -> None:
    assert selects(Audience(all=True), [])
    assert selects(Audience(tags=["vip", "eu"]), ["eu", "vip", "x"])
    assert not selects(Audience(tags=["vip", "eu"]), ["vip"])
    assert not selects(Audience(user_ids=["u1"]), ["vip"])  # chosen by id instead


def test_the_same_key_is_the_same_campaign_per_tenant() -> None:
    assert campaign_id("acme", "k") == campaign_id("acme", "k")
    assert campaign_id("acme", "k") != campaign_id("other", "k")


def test_a_partition_gets_its_share_of_the_rate_up_to_a_chunk() -> None:
    """100/s over 4 partitions: 25/s each; tokens never pile past a chunk."""
    pacer = Pacer(partitions=4)
    key = ("c_1", 0)
    assert pacer.grant(key, 100, 1_000, 0.5) == 12
    pacer.spend(key, 12)
    assert pacer.grant(key, 100, 1_000, 0.5) == 13  # the half token carried
    assert pacer.grant(key, 100, 20, 60.0) == 20


def test_the_state_shown_follows_from_the_clock_and_the_progress() -> None:
    done = [Progress(done=True, updated_at=NOW)] * 2
    half = done[:1]
    later = NOW + timedelta(hours=1)
    assert shown_state(campaign(), done, 2, NOW) == "completed"
    assert shown_state(campaign(), half, 2, NOW) == "expanding"
    assert shown_state(campaign(schedule_at=later.isoformat()), [], 2, NOW) == (
        "scheduled"
    )
    assert shown_state(campaign(expiry_at=NOW.isoformat()), half, 2, NOW) == "expired"
    assert shown_state(campaign("paused"), half, 2, NOW) == "paused"
    assert shown_state(campaign("cancelled"), done, 2, NOW) == "cancelled"


def test_counts_move_with_each_channel_and_add_up() -> None:
    """Each recipient-channel counts once, under its latest outcome; sent
    counts what went further."""
    assert channel_deltas(None, {"email": "queued"}) == {"queued": 1}
    assert channel_deltas({"email": "queued"}, {"email": "sent"}) == {
        "queued": -1,
        "sent": 1,
    }
    assert channel_deltas({"email": "sent"}, {"email": "sent"}) == {}
    shown = summed([{"sent": 2, "clicked": 1}, {"queued": 3, "delivered": 1}])
    assert shown["sent"] == 4 and shown["delivered"] == 2 and shown["queued"] == 3
    assert shown["clicked"] == 1


def test_local_time_is_each_users_own_wall_clock() -> None:
    """09:00 on each user's clock, the first at or after the campaign's
    start: Paris's is tomorrow (it is 13:00 there), Los Angeles's today."""
    started = campaign(local_time="09:00")  # created at NOW, 12:00 UTC
    paris, los_angeles = ZoneInfo("Europe/Paris"), ZoneInfo("America/Los_Angeles")
    assert local_schedule(started, paris) == datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
    assert local_schedule(started, los_angeles) == datetime(
        2026, 12, 4, 17, 0, tzinfo=UTC
    )
    later = campaign(local_time="09:00", schedule_at="2026-12-10T00:00:00Z")
    assert local_schedule(later, paris) == datetime(2026, 12, 10, 8, 0, tzinfo=UTC)
    assert local_schedule(campaign(), paris) is None
    request = recipient_request(started, "u1", local_schedule(started, paris))
    assert request.schedule_at == datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


def test_local_time_across_a_daylight_saving_gap() -> None:
    """02:30 does not exist in Paris on 2027-03-28: the gap's end, 03:00."""
    spring = campaign(local_time="02:30", schedule_at="2027-03-28T00:30:00Z")
    assert local_schedule(spring, ZoneInfo("Europe/Paris")) == datetime(
        2027, 3, 28, 1, 0, tzinfo=UTC
    )


def test_an_upload_reads_one_id_per_line_and_names_bad_lines() -> None:
    """Blank lines skipped, repeats kept once, the line breaks and spaces
    around an id dropped; a bad line is named by its number."""
    plain = UploadedIds()
    for line in (b"u_1\n", b"  u_2 \r\n", b"\n", b"u_1\n", b"u 3"):
        plain.add(line)
    assert plain.users == {"u_1", "u_2", "u 3"} and plain.problem() is None
    bad = UploadedIds()
    for line in (b"u_1\n", b"a/b\n", b"\xff\n", *[b"{x}\n"] * 12):
        bad.add(line)
    problem = bad.problem()
    assert problem is not None
    assert problem.startswith("line 2: 'a/b' is not a user id")
    assert "line 3: not UTF-8" in problem and problem.endswith("(and 4 more)")
    assert UploadedIds().problem() == "no user ids (one per line)"


def test_an_uploaded_list_is_split_by_partition_sorted_in_chunks() -> None:
    """Every user lands once, on its own partition, in sorted chunks."""
    users = [f"u_{n}" for n in range(2_345)]
    split = by_partition("acme", users, 8, 100)
    seen = []
    for home, chunks in split.items():
        flat = [u for chunk in chunks for u in chunk]
        assert flat == sorted(flat)
        assert all(len(chunk) <= 100 for chunk in chunks)
        for user in flat:
            assert partition_for(user_key("acme", user).encode(), 8) == home
        seen.extend(flat)
    assert sorted(seen) == sorted(users)


def test_a_list_cursor_resumes_its_own_upload_and_restarts_another() -> None:
    """The cursor names the upload: a replaced list is walked from its start."""
    assert list_position(None, "l_1") == (0, 0)
    assert list_position(list_cursor("l_1", 3, 250), "l_1") == (3, 250)
    assert list_position(list_cursor("l_1", 3, 250), "l_2") == (0, 0)
    assert list_position("default/u_9", "l_1") == (0, 0)  # a profile cursor


def test_the_walk_share_counts_done_partitions_whole_and_others_by_size() -> None:
    """Two of four partitions done, one half walked, one not begun: 62.5%."""
    at = datetime(2026, 12, 5, tzinfo=UTC)
    parts = [
        Progress(done=True, updated_at=at),
        Progress(done=True, updated_at=at),
        Progress(looked_at=500, walk_size=1_000, updated_at=at),
    ]
    assert walked_share(parts, 4) == 0.625
    assert walked_share([Progress(looked_at=9, walk_size=0, updated_at=at)], 1) == 0
    assert audience_size(Audience(tags=["a"])) is None
    assert audience_size(Audience(user_ids=["u_1", "u_2"])) == 2
