"""A request for a user no table knows yet is held and looked at again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from agents.fanout import UserState, fan_out
from pipeline.due import due_ms
from pipeline.policy import TypeCatalogue
from schemas.records import AcceptedRequest, Preferences
from tests.unit.test_fanout import NOW, PROFILE, accepted, outcomes

CATALOGUE = TypeCatalogue.load()
DAY = timedelta(hours=24)
WAIT = timedelta(seconds=30)
UNKNOWN = UserState()


def look_again(held: AcceptedRequest, now: datetime, state: UserState = UNKNOWN):  # type: ignore[no-untyped-def]
    """Fanout's look at a held request released at ``now``."""
    return fan_out(held, state, CATALOGUE, now, wait=WAIT)


def test_a_request_for_an_unknown_user_is_held_not_suppressed() -> None:
    """Its channels are deferred with unknown_user; nothing is queued yet."""
    result = fan_out(
        accepted(channels=["email", "push"]), UNKNOWN, CATALOGUE, NOW, wait=WAIT
    )
    until = NOW + timedelta(milliseconds=500)
    assert outcomes(result) == {
        "email": ("deferred", "unknown_user"),
        "push": ("deferred", "unknown_user"),
    }
    assert {e.until for e in result.events if e.channel} == {until}
    assert result.jobs == []
    held = result.held
    assert held is not None
    assert held.held_since == NOW
    assert held.held_key is not None
    assert due_ms(held.held_key) == int(until.timestamp() * 1000)
    assert held.held_key.endswith(held.notification_id)
    assert held.request["channels"] == ["email", "push"]
    assert result.seen is not None  # the key is claimed at the first look


def test_the_profile_arrives_and_the_next_look_delivers() -> None:
    """Released after the profile was folded: queued like any request."""
    first = fan_out(accepted(channels=["email"]), UNKNOWN, CATALOGUE, NOW, wait=WAIT)
    assert first.held is not None
    later = NOW + timedelta(milliseconds=600)
    result = look_again(first.held, later, UserState(profile=PROFILE))
    assert outcomes(result) == {"email": ("queued", None)}
    assert result.held is None
    assert [job.email for job in result.jobs] == ["u1@example.com"]


def test_the_inbox_needs_no_user_state_and_is_not_held() -> None:
    """In-app is decided at once; only the channels needing an address wait."""
    result = fan_out(
        accepted(channels=["in_app", "email"]), UNKNOWN, CATALOGUE, NOW, wait=WAIT
    )
    assert outcomes(result) == {
        "in_app": ("queued", None),
        "email": ("deferred", "unknown_user"),
    }
    assert result.held is not None
    assert result.held.request["channels"] == ["email"]
    only_inbox = fan_out(
        accepted(channels=["in_app"]), UNKNOWN, CATALOGUE, NOW, wait=WAIT
    )
    assert only_inbox.held is None


def test_a_known_user_without_an_address_is_suppressed_at_once() -> None:
    """Preferences alone make the user known: no_email:no_profile, no hold."""
    known = UserState(preferences=Preferences(user_id="u1"))
    result = fan_out(accepted(channels=["email"]), known, CATALOGUE, NOW, wait=WAIT)
    assert outcomes(result) == {"email": ("suppressed", "no_email:no_profile")}
    assert result.held is None


def test_without_a_wait_the_channels_are_suppressed_at_once() -> None:
    """NOTIFY_UNKNOWN_USER_WAIT=0 keeps the old behaviour."""
    result = fan_out(accepted(channels=["email"]), UNKNOWN, CATALOGUE, NOW)
    assert outcomes(result) == {"email": ("suppressed", "no_email:no_profile")}
    assert result.held is None


def test_a_request_expiring_before_the_next_look_is_not_held() -> None:
    """Holding past the expiry would only end in expired: decide now."""
    soon = NOW + timedelta(milliseconds=200)
    result = fan_out(
        accepted(channels=["email"], expiry_at=soon),
        UNKNOWN,
        CATALOGUE,
        NOW,
        wait=WAIT,
    )
    assert result.held is None
    assert outcomes(result) == {"email": ("suppressed", "no_email:no_profile")}


@given(late=st.lists(st.integers(0, 300), min_size=12, max_size=12))
def test_looks_double_and_end_within_the_wait(late: list[int]) -> None:
    """Looks wait as long as the request has waited (0.5 s, 1 s, 2 s, ...), the
    last one at the wait's end; released late by the timer, the schedule
    holds. A still-unknown user is then suppressed, with the same reason code."""
    result = fan_out(accepted(channels=["email"]), UNKNOWN, CATALOGUE, NOW, wait=WAIT)
    looks = 0
    now = NOW
    while result.held is not None:
        held = result.held
        assert held.held_since == NOW
        assert held.held_key is not None
        due = datetime.fromtimestamp(due_ms(held.held_key) / 1000, UTC)
        assert due <= NOW + WAIT
        assert due - now >= min(timedelta(milliseconds=500), NOW + WAIT - now)
        now = due + timedelta(milliseconds=late[looks % len(late)])
        result = look_again(held, now)
        looks += 1
        assert looks <= 8
    assert outcomes(result)["email"] == ("suppressed", "no_email:no_profile")
    assert now >= NOW + WAIT
