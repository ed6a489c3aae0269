"""The digest's rules: windows on the wall clock, look-back, daily, and fanout's use."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from agents.fanout import DIGEST_RELEASE, UserState, fan_out, released_digest
from agents.ingest import accept
from pipeline.digest import (
    DigestPolicy,
    closes_at,
    collect,
    digest_data,
    parse_duration,
)
from pipeline.due import due_ms, time_at
from pipeline.policy import TypeCatalogue
from schemas.records import (
    AcceptedRequest,
    DigestState,
    NotificationRequest,
    Recipient,
    UserProfile,
)

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")
CATALOGUE = TypeCatalogue.load()
OPENER = {
    "tenant": "t",
    "user_id": "u1",
    "key": "post-1",
    "type": "post_liked",
    "priority": "transactional",
    "lane": "critical",
}


def test_durations_read_as_written() -> None:
    """30s, 5m, 2h; anything else is refused."""
    assert parse_duration("30s") == timedelta(seconds=30)
    assert parse_duration("2h") == timedelta(hours=2)
    for bad in ("30", "0s", "1d", "-5m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_a_window_collects_every_notification_until_it_closes() -> None:
    """The first opens it (closing 30 s later), the others join; a member
    again (a redelivery) changes nothing."""
    policy = DigestPolicy("window", timedelta(seconds=30))
    first = collect(None, "n1", {"liker": "Ann"}, policy, NOW, PARIS, OPENER)
    assert (first.opened, first.alone) == (True, False)
    assert first.state is not None and first.state.closes_at == NOW + timedelta(
        seconds=30
    )
    second = collect(first.state, "n2", {"liker": "Bo"}, policy, NOW, PARIS, OPENER)
    assert second.state is not None and not second.opened and not second.alone
    assert [m.notification_id for m in second.state.members] == ["n1", "n2"]
    again = collect(second.state, "n2", {"liker": "Bo"}, policy, NOW, PARIS, OPENER)
    assert again.state is None and not again.alone
    assert digest_data(second.state, 1) == {
        "count": 2,
        "items": [{"liker": "Ann"}],
        "first": {"liker": "Ann"},
    }


def test_look_back_sends_the_first_at_once_and_batches_the_rest() -> None:
    """The first goes alone and opens the window; later ones join it."""
    policy = DigestPolicy("lookback", timedelta(minutes=5))
    lead = collect(None, "n1", {}, policy, NOW, PARIS, OPENER)
    assert (lead.alone, lead.opened) == (True, True)
    assert lead.state is not None and lead.state.members == []
    assert lead.state.lead == "n1"
    follower = collect(lead.state, "n2", {}, policy, NOW, PARIS, OPENER)
    assert follower.state is not None and not follower.alone
    assert collect(lead.state, "n1", {}, policy, NOW, PARIS, OPENER).alone  # redelivery


def test_a_daily_digest_closes_at_the_users_local_time() -> None:
    """09:00 in Paris: today's if it is still ahead, else tomorrow's."""
    policy = DigestPolicy("daily", at=time(9, 0))
    early = datetime(2026, 12, 4, 7, 0, tzinfo=UTC)  # 08:00 in Paris
    assert closes_at(policy, early, PARIS) == datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
    late = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)  # 10:00 in Paris
    assert closes_at(policy, late, PARIS) == datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
    with pytest.raises(ValueError):
        DigestPolicy("daily")


def test_a_released_window_gives_way_to_a_new_one() -> None:
    """Once its digest went out, the next notification opens another window."""
    policy = DigestPolicy("window", timedelta(seconds=30))
    opened = collect(None, "n1", {}, policy, NOW, PARIS, OPENER).state
    assert opened is not None
    released = opened.model_copy(update={"released": True})
    later = NOW + timedelta(minutes=1)
    fresh = collect(released, "n9", {}, policy, later, PARIS, OPENER)
    assert fresh.opened and fresh.state is not None
    assert [m.notification_id for m in fresh.state.members] == ["n9"]


def like(n: int, user: str = "u1", post: str = "post-1") -> AcceptedRequest:
    """The n-th like of a post, for ``user``."""
    request = NotificationRequest(
        idempotency_key=f"like-{n}",
        recipient=Recipient(user_id=user),
        type="post_liked",
        data={"liker": f"friend{n}"},
        digest_key=post,
    )
    return accept(request, f"notify.requests.critical[0]@{n}", NOW)


PROFILE = UserProfile(user_id="u1", email="u1@example.com")


def test_fanout_collects_likes_into_one_digest_and_releases_it_when_due() -> None:
    """Each like says which digest carries it; the window's close is one
    schedule entry; at its time the digest is one request with the count."""
    state = UserState(profile=PROFILE)
    first = fan_out(like(0), state, CATALOGUE, NOW)
    assert first.jobs == [] and first.digest is not None
    release = first.digest_release
    assert release is not None and release.held_key is not None
    assert release.held_key.endswith(DIGEST_RELEASE)
    assert time_at(due_ms(release.held_key)) == NOW + timedelta(seconds=30)
    carriers = {e.reason for e in first.events if e.event_type == "digested"}
    assert carriers == {f"digest {release.notification_id}"}
    window: DigestState = first.digest
    for n in range(1, 5):
        result = fan_out(
            like(n), UserState(profile=PROFILE, digest=window), CATALOGUE, NOW
        )
        assert result.jobs == [] and result.digest_release is None
        assert result.digest is not None
        window = result.digest
    digest = released_digest(release, window, items=3)
    assert digest is not None
    request = digest.notification()
    assert (request.type, request.data["count"]) == ("post_liked.digest", 5)
    assert [item["liker"] for item in request.data["items"]] == [
        "friend0",
        "friend1",
        "friend2",
    ]
    sent = fan_out(
        digest, UserState(profile=PROFILE), CATALOGUE, NOW + timedelta(seconds=30)
    )
    assert sent.digest is None and sent.digest_release is None  # never digested again
    assert sorted(job.channel for job in sent.jobs) == ["in_app"]  # no device: no push


def test_critical_notifications_are_never_digested() -> None:
    """A critical like goes out at once."""
    request = like(0).notification().model_copy(update={"priority": "critical"})
    result = fan_out(
        accept(request, "notify.requests.critical[0]@9", NOW),
        UserState(profile=PROFILE),
        CATALOGUE,
        NOW,
    )
    assert result.digest is None and [job.channel for job in result.jobs] == ["in_app"]


def test_a_stale_release_sends_nothing() -> None:
    """A window whose digest already went out and was replaced: the old
    release finds another window and sends nothing."""
    first = fan_out(like(0), UserState(profile=PROFILE), CATALOGUE, NOW)
    assert first.digest is not None and first.digest_release is not None
    replaced = first.digest.model_copy(
        update={"opened_at": NOW + timedelta(minutes=5), "released": False}
    )
    assert released_digest(first.digest_release, replaced, items=3) is None
