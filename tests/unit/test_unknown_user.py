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


@given(
    start=st.integers(0, 999_999),
    late=st.lists(st.integers(0, 300), min_size=12, max_size=12),
)
def test_looks_double_and_end_within_the_wait(start: int, late: list[int]) -> None:
    """Looks wait as long as the request has waited (0.5 s, 1 s, 2 s, ...), the
    last one at the wait's end; released late by the timer, the schedule
    holds (it runs from each look's due time, not from when it ran). Each
    look is due at a later whole millisecond than the one before, so no look
    holds the request under the key it was released from, whatever fraction
    of a millisecond it arrived at. A still-unknown user is then suppressed,
    with the same reason code."""
    since = NOW + timedelta(microseconds=start)
    result = fan_out(accepted(channels=["email"]), UNKNOWN, CATALOGUE, since, wait=WAIT)
    looks = 0
    now = previous = since
    while result.held is not None:
        held = result.held
        assert held.held_since == since
        assert held.held_key is not None
        due = datetime.fromtimestamp(due_ms(held.held_key) / 1000, UTC)
        assert due > previous
        assert due <= since + WAIT + timedelta(milliseconds=1)
        step = max(timedelta(milliseconds=500), previous - since)
        wanted = min(previous + step, since + WAIT)
        assert timedelta(0) <= due - wanted < timedelta(milliseconds=1)
        previous = due
        now = due + timedelta(milliseconds=late[looks % len(late)])
        result = look_again(held, now)
        looks += 1
        assert looks <= 8
    assert outcomes(result)["email"] == ("suppressed", "no_email:no_profile")
    assert now >= since + WAIT


def test_the_last_look_ends_the_hold_whatever_the_sub_millisecond() -> None:
    """A request first seen at .123456 s is due last at the wait's end, rounded
    up to the key's millisecond; that look suppresses it instead of holding it
    again under the same key, due at once (released every tick, forever)."""
    since = NOW + timedelta(microseconds=123_456)
    result = fan_out(accepted(channels=["email"]), UNKNOWN, CATALOGUE, since, wait=WAIT)
    keys: list[str] = []
    while result.held is not None and len(keys) < 20:
        assert result.held.held_key is not None
        keys.append(result.held.held_key)
        result = look_again(result.held, since + WAIT + timedelta(seconds=10))
    assert len(keys) == len(set(keys)) == 7
    assert due_ms(keys[-1]) == int((since + WAIT).timestamp() * 1000) + 1
    assert outcomes(result)["email"] == ("suppressed", "no_email:no_profile")


def test_a_redelivered_look_holds_under_the_same_key_and_events() -> None:
    """A crash or rebalance redelivers a look a moment later: the request is
    held again under the same key, due at the same time, with the same
    ``deferred`` events, not beside a second held entry."""
    request = accepted(channels=["email"])
    first = fan_out(request, UNKNOWN, CATALOGUE, NOW, wait=WAIT)
    assert first.held is not None and first.seen is not None
    # The idempotency entry the first look wrote is there on the redelivery.
    again = fan_out(
        request,
        UserState(seen=first.seen),
        CATALOGUE,
        NOW + timedelta(seconds=3),
        wait=WAIT,
    )
    assert again.held is not None
    assert again.held.held_key == first.held.held_key
    assert again.held.held_since == first.held.held_since
    assert [e.event_id for e in again.events] == [e.event_id for e in first.events]

    released = first.held
    second = look_again(released, NOW + timedelta(milliseconds=700))
    redelivered = look_again(released, NOW + timedelta(seconds=5))
    assert second.held is not None and redelivered.held is not None
    assert redelivered.held.held_key == second.held.held_key
    deferred = [e.event_id for e in second.events if e.event_type == "deferred"]
    assert deferred == [
        e.event_id for e in redelivered.events if e.event_type == "deferred"
    ]
