"""fan_out: idempotency, reachability and preferences composed, without Kafka."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agents.fanout import SCHEDULED, UserState, fan_out, may_count
from agents.ingest import accept
from pipeline.due import due_ms, time_at
from pipeline.policy import TypeCatalogue
from pipeline.status import fold
from pipeline.throttle import KEEP_ENDED, Cap
from schemas.records import (
    AcceptedRequest,
    DeviceSet,
    DeviceToken,
    NotificationRequest,
    Preferences,
    QuietHours,
    Recipient,
    TenantLimits,
    UserProfile,
)
from tables.idempotency import live_entry

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
DAY = timedelta(hours=24)
CATALOGUE = TypeCatalogue.load()
PROFILE = UserProfile(
    user_id="u1", email="u1@example.com", phone="+14155550123", timezone="UTC"
)
DEVICES = DeviceSet(
    devices={
        "t1": DeviceToken(user_id="u1", token="t1", platform="fcm"),
        "t2": DeviceToken(user_id="u1", token="t2", platform="apns", active=False),
    }
)
REACHABLE = UserState(profile=PROFILE, devices=DEVICES)


def accepted(
    source: str = "notify.requests.critical[0]@1",
    at: datetime = NOW,
    **fields: object,
) -> AcceptedRequest:
    """An accepted request for user u1, with ``fields`` overriding the defaults."""
    values: dict[str, object] = {
        "idempotency_key": "k1",
        "recipient": Recipient(user_id="u1"),
        "type": "order_shipped",
        "priority": "transactional",
        "channels": ["push", "email", "sms"],
        "data": {"order_id": 4412},
    }
    values.update(fields)
    return accept(NotificationRequest(**values), source, at)


def outcomes(result: object) -> dict[str | None, tuple[str, str | None]]:
    """Channel → (event type, reason) of a fanout's events."""
    return {
        e.channel: (e.event_type, e.reason)
        for e in result.events  # type: ignore[attr-defined]
        if e.channel is not None
    }


def test_every_reachable_channel_gets_one_job_with_its_contacts() -> None:
    """One job per channel; push carries only the active devices."""
    result = fan_out(accepted(), REACHABLE, CATALOGUE, NOW)
    jobs = {job.channel: job for job in result.jobs}
    assert set(jobs) == {"push", "email", "sms"}
    assert [d.token for d in jobs["push"].devices] == ["t1"]
    assert jobs["email"].email == "u1@example.com"
    assert jobs["sms"].phone == "+14155550123"
    assert [e.event_type for e in result.events][0] == "accepted"
    assert outcomes(result) == {c: ("queued", None) for c in jobs}
    assert result.scheduled is None


def test_unreachable_channels_are_suppressed_with_a_reason() -> None:
    """No profile, no devices: every channel but in-app is dropped, saying why."""
    result = fan_out(
        accepted(channels=["push", "email", "sms", "in_app"]),
        UserState(),
        CATALOGUE,
        NOW,
    )
    assert [job.channel for job in result.jobs] == ["in_app"]
    assert outcomes(result) == {
        "push": ("suppressed", "no_active_device"),
        "email": ("suppressed", "no_email:no_profile"),
        "sms": ("suppressed", "no_phone:no_profile"),
        "in_app": ("queued", None),
    }


def test_type_defaults_apply_when_no_channels_are_named() -> None:
    """Without an override the catalogue's channels for the type are used."""
    result = fan_out(accepted(channels=None), REACHABLE, CATALOGUE, NOW)
    expected = CATALOGUE.lookup("order_shipped").channels
    assert tuple(job.channel for job in result.jobs) == tuple(expected)


def test_opted_out_channel_is_suppressed_but_critical_goes_through() -> None:
    """A channel opt-out holds transactional traffic, not critical."""
    prefs = Preferences(user_id="u1", channels={"sms": False})
    state = UserState(profile=PROFILE, devices=DEVICES, preferences=prefs)
    result = fan_out(accepted(), state, CATALOGUE, NOW)
    assert outcomes(result)["sms"] == ("suppressed", "channel_opt_out:sms")
    critical = fan_out(accepted(priority="critical"), state, CATALOGUE, NOW)
    assert outcomes(critical)["sms"] == ("queued", None)


def test_quiet_hours_defer_the_notification_once_for_its_channels() -> None:
    """In quiet hours, one deferral record holds the deferred channels."""
    prefs = Preferences(
        user_id="u1",
        channels={"sms": False},
        quiet_hours=QuietHours(start="11:00", end="13:30"),
    )
    state = UserState(profile=PROFILE, devices=DEVICES, preferences=prefs)
    result = fan_out(accepted(), state, CATALOGUE, NOW)
    assert result.jobs == []
    scheduled = result.scheduled
    assert scheduled is not None and scheduled.held_key is not None
    assert time_at(due_ms(scheduled.held_key)) == NOW.replace(hour=13, minute=30)
    assert scheduled.held_key.endswith(scheduled.notification_id + SCHEDULED)
    assert scheduled.notification().channels == ["email", "push"]
    assert scheduled.held_since is None  # not an unknown user's wait
    assert outcomes(result)["sms"] == ("suppressed", "channel_opt_out:sms")
    assert outcomes(result)["push"] == ("deferred", "quiet_hours")


def test_expired_notification_stops_on_every_channel() -> None:
    """Past its expiry nothing is sent, and each channel says so."""
    result = fan_out(
        accepted(expiry_at=NOW - timedelta(minutes=1)), REACHABLE, CATALOGUE, NOW
    )
    assert result.jobs == []
    assert set(outcomes(result).values()) == {("expired", "expired")}


def test_a_caller_retry_is_deduplicated_and_a_different_body_is_a_conflict() -> None:
    """Same key from another request: deduplicated; with another body: conflict."""
    first = fan_out(accepted(), REACHABLE, CATALOGUE, NOW)
    state = UserState(profile=PROFILE, devices=DEVICES, seen=first.seen)
    retry = fan_out(
        accepted(source="notify.requests.critical[0]@2"), state, CATALOGUE, NOW
    )
    assert retry.jobs == []
    assert [(e.event_type, e.reason) for e in retry.events] == [
        ("deduplicated", "idempotency_key")
    ]
    conflict = fan_out(
        accepted(source="notify.requests.critical[0]@3", data={"other": 1}),
        state,
        CATALOGUE,
        NOW,
    )
    assert [(e.event_type, e.reason) for e in conflict.events] == [
        ("deduplicated", "idempotency_conflict")
    ]


def test_a_redelivery_of_the_same_request_is_processed_again_identically() -> None:
    """After a crash the same message is redone in full, with the same event ids."""
    first = fan_out(accepted(), REACHABLE, CATALOGUE, NOW)
    state = UserState(profile=PROFILE, devices=DEVICES, seen=first.seen)
    again = fan_out(accepted(), state, CATALOGUE, NOW + timedelta(seconds=5))
    assert [j.channel for j in again.jobs] == [j.channel for j in first.jobs]
    assert [e.event_id for e in again.events] == [e.event_id for e in first.events]


def test_idempotency_keys_expire_after_the_window() -> None:
    """A key reused after the window is a new notification, stored afresh."""
    first = fan_out(accepted(), REACHABLE, CATALOGUE, NOW)
    assert first.seen is not None
    stored = first.seen.dumps()
    assert live_entry(stored, NOW + DAY - timedelta(seconds=1), DAY) == first.seen
    later = NOW + DAY + timedelta(seconds=1)
    assert live_entry(stored, later, DAY) is None
    state = UserState(profile=PROFILE, devices=DEVICES, seen=None)
    reuse = fan_out(
        accepted(source="notify.requests.critical[0]@9"), state, CATALOGUE, later
    )
    assert len(reuse.jobs) == 3
    assert reuse.seen is not None and reuse.seen.first_seen == later


def test_a_duplicate_or_a_redelivery_stores_nothing_new() -> None:
    """Only a first use writes the key's entry (one small value per key)."""
    first = fan_out(accepted(), REACHABLE, CATALOGUE, NOW)
    state = UserState(profile=PROFILE, devices=DEVICES, seen=first.seen)
    again = fan_out(accepted(), state, CATALOGUE, NOW)
    retry = fan_out(
        accepted(source="notify.requests.critical[0]@2"), state, CATALOGUE, NOW
    )
    assert again.seen is None and retry.seen is None


def test_a_scheduled_request_waits_for_its_time_then_goes_out_as_new() -> None:
    """schedule_at ahead: every channel deferred (`scheduled`) into one entry
    due at that time; released at it, the same request is delivered, and its
    first use of the key is no duplicate of itself."""
    due = NOW + timedelta(minutes=5, milliseconds=1)
    first = fan_out(accepted(schedule_at=due), REACHABLE, CATALOGUE, NOW)
    assert first.jobs == []
    assert set(outcomes(first).values()) == {("deferred", "scheduled")}
    entry = first.scheduled
    assert entry is not None and entry.held_key is not None
    assert time_at(due_ms(entry.held_key)) == due
    seen = live_entry(first.seen.dumps() if first.seen else None, due, DAY)
    again = fan_out(
        entry, UserState(profile=PROFILE, devices=DEVICES, seen=seen), CATALOGUE, due
    )
    assert {job.channel for job in again.jobs} == {"push", "email", "sms"}
    assert again.scheduled is None and again.seen is None
    assert all(job.notification_id == entry.notification_id for job in again.jobs)


def test_a_released_request_past_its_expiry_expires() -> None:
    """Released after the expiry (a worker down past it): nothing is sent."""
    due = NOW + timedelta(minutes=5)
    first = fan_out(
        accepted(schedule_at=due, expiry_at=due + timedelta(seconds=1)),
        REACHABLE,
        CATALOGUE,
        NOW,
    )
    entry = first.scheduled
    assert entry is not None
    late = fan_out(entry, REACHABLE, CATALOGUE, due + timedelta(seconds=2))
    assert late.jobs == [] and late.scheduled is None
    assert set(outcomes(late).values()) == {("expired", "expired")}


def test_a_deferral_and_an_unknown_users_hold_never_share_a_key() -> None:
    """Both wait in one table: a deferral's key ends with /scheduled."""
    prefs = Preferences(
        user_id="u1", quiet_hours=QuietHours(start="11:00", end="13:00")
    )
    deferred = fan_out(
        accepted(channels=["email"]),
        UserState(profile=PROFILE, preferences=prefs),
        CATALOGUE,
        NOW,
    )
    assert deferred.scheduled is not None and deferred.scheduled.held_key is not None
    assert deferred.scheduled.held_key.endswith(SCHEDULED)
    held = fan_out(accepted(channels=["email"]), UserState(), CATALOGUE, NOW, wait=DAY)
    assert held.held is not None and held.held.held_key is not None
    assert not held.held.held_key.endswith(SCHEDULED)


def test_released_at_the_end_of_quiet_hours_it_is_delivered() -> None:
    """The entry is due at the quiet hours' end, and at that instant they are
    over: released then, it goes out instead of waiting another day."""
    prefs = Preferences(
        user_id="u1", quiet_hours=QuietHours(start="11:00", end="13:00")
    )
    state = UserState(profile=PROFILE, preferences=prefs)
    first = fan_out(accepted(channels=["email"]), state, CATALOGUE, NOW)
    entry = first.scheduled
    assert entry is not None and entry.held_key is not None
    end = time_at(due_ms(entry.held_key))
    assert end == NOW.replace(hour=13)
    released = fan_out(entry, state, CATALOGUE, end)
    assert [job.channel for job in released.jobs] == ["email"]


def campaign(n: int, at: datetime = NOW, **fields: object) -> AcceptedRequest:
    """The n-th promotional campaign request for u1, by email, accepted ``at``."""
    return accepted(
        f"notify.requests.bulk[0]@{n}",
        at,
        idempotency_key=f"c{n}",
        type="campaign",
        priority="promotional",
        channels=["email"],
        data={"headline": "Sale", "message": "Half off"},
        **fields,
    )


def run_campaigns(
    count: int, spacing: timedelta, catalogue: TypeCatalogue = CATALOGUE
) -> list[object]:
    """Decide ``count`` campaigns for u1, ``spacing`` apart, carrying the
    throttle state from one to the next as the table does."""
    state = REACHABLE
    results = []
    for n in range(count):
        at = NOW + n * spacing
        result = fan_out(campaign(n, at), state, catalogue, at)
        if result.throttle is not None:
            state = UserState(
                profile=PROFILE, devices=DEVICES, throttle=result.throttle
            )
        results.append(result)
    return results


def test_the_sixth_marketing_notification_of_the_users_day_is_throttled() -> None:
    """Seed 003's default: five marketing notifications a day, the cap named."""
    results = run_campaigns(6, timedelta(minutes=2))
    assert all(len(result.jobs) == 1 for result in results[:5])  # type: ignore[attr-defined]
    last = results[5]
    assert last.jobs == []  # type: ignore[attr-defined]
    assert outcomes(last)["email"] == ("throttled", "cap marketing/day 5")


def test_one_promotional_notification_a_minute() -> None:
    """The second promotional within the minute is throttled, across channels."""
    results = run_campaigns(2, timedelta(seconds=10))
    assert outcomes(results[1])["email"] == ("throttled", "cap promotional/minute 1")


def test_critical_notifications_bypass_every_cap() -> None:
    """Ten critical SMS in a second under a cap of one SMS a month: all go."""
    info = CATALOGUE.lookup("password_reset")
    strict = TypeCatalogue(
        {
            "default": CATALOGUE.lookup("default"),
            "password_reset": info.__class__(
                info.channels, info.category, caps=(Cap("sms", "month", 1),)
            ),
        }
    )
    state = REACHABLE
    for n in range(10):
        result = fan_out(
            accepted(
                f"notify.requests.critical[0]@{n}",
                idempotency_key=f"otp{n}",
                type="password_reset",
                priority="critical",
                channels=["sms"],
                data={"code": "123456"},
            ),
            state,
            strict,
            NOW,
        )
        assert [job.channel for job in result.jobs] == ["sms"]
        assert result.throttle is None


def test_over_a_cap_a_type_may_defer_until_the_cap_frees() -> None:
    """over_cap = "defer": the throttled channel waits in the schedule until
    the user's local day ends, then goes out."""
    info = CATALOGUE.lookup("campaign")
    deferring = TypeCatalogue(
        {
            "default": CATALOGUE.lookup("default"),
            "campaign": info.__class__(
                info.channels,
                info.category,
                marketing=True,
                caps=(Cap("marketing", "day", 1),),
                over_cap="defer",
            ),
        }
    )
    results = run_campaigns(2, timedelta(minutes=5), deferring)
    second = results[1]
    assert outcomes(second)["email"] == ("deferred", "cap marketing/day 1")
    entry = second.scheduled  # type: ignore[attr-defined]
    assert entry is not None and entry.held_key is not None
    assert time_at(due_ms(entry.held_key)) == NOW.replace(hour=0) + DAY  # UTC user


def test_a_redelivered_request_is_not_counted_twice() -> None:
    """The same request decided again (a crash before the commit) still goes,
    and leaves the user's count as it was."""
    first = fan_out(campaign(0), REACHABLE, CATALOGUE, NOW)
    state = UserState(
        profile=PROFILE,
        devices=DEVICES,
        throttle=first.throttle,
        seen=first.seen and live_entry(first.seen.dumps(), NOW, DAY),
    )
    again = fan_out(campaign(0), state, CATALOGUE, NOW)
    assert [job.channel for job in again.jobs] == ["email"]
    assert again.throttle == first.throttle


def test_a_redo_in_a_later_minute_takes_the_first_looks_decision() -> None:
    """The second promotional of a minute is throttled, the third (next
    minute) sent. The worker dies after the batch's events went out and
    before its offsets were committed; its table writes were made durable
    first (``state_first``), so the redo, another minute later and on a
    second copy of the request accepted anew (a redone ingest), finds the
    first look's idempotency entry and the window that throttled it: it is
    throttled again, not sent beside the ``throttled`` already said. The
    first, redone too, is still admitted by the window that counted it."""
    first, second, third = run_campaigns(3, timedelta(seconds=40))
    assert outcomes(second)["email"] == ("throttled", "cap promotional/minute 1")
    assert len(third.jobs) == 1  # type: ignore[attr-defined]
    later = NOW + timedelta(minutes=2, seconds=10)
    for n, look in ((1, second), (0, first)):
        copy = campaign(n, later)  # accepted_at: the redo's own time
        seen = look.seen  # type: ignore[attr-defined]
        state = UserState(
            profile=PROFILE,
            devices=DEVICES,
            seen=live_entry(seen.dumps(), later, DAY),
            throttle=third.throttle,  # type: ignore[attr-defined]
        )
        redo = fan_out(copy, state, CATALOGUE, later)
        assert outcomes(redo) == outcomes(look)
        assert len(redo.jobs) == len(look.jobs)  # type: ignore[attr-defined]
        assert [e.event_id for e in redo.events] == [
            e.event_id
            for e in look.events  # type: ignore[attr-defined]
        ]


def test_a_cap_window_is_kept_a_while_after_it_ends() -> None:
    """Windows that ended within ``KEEP_ENDED`` stay in the user's state (a
    late redo is judged by them); older ones are dropped."""
    first, _, third = run_campaigns(3, timedelta(seconds=40))
    windows = sorted(third.throttle.caps)  # type: ignore[attr-defined]
    assert [w for w in windows if w.startswith("promotional/minute")] == [
        "promotional/minute@2026-11-21T12:00Z",
        "promotional/minute@2026-11-21T12:01Z",
    ]
    much_later = NOW + KEEP_ENDED + timedelta(minutes=2)
    state = UserState(profile=PROFILE, devices=DEVICES, throttle=third.throttle)  # type: ignore[attr-defined]
    result = fan_out(campaign(9, much_later), state, CATALOGUE, much_later)
    assert [
        w
        for w in result.throttle.caps
        if w.startswith("promotional/minute")  # type: ignore[union-attr]
    ] == ["promotional/minute@2026-11-21T12:17Z"]


def test_a_send_no_cap_counts_leaves_the_throttle_state_alone() -> None:
    """A transactional push and email: no default cap counts them, so the
    user's throttle entry is neither read nor rewritten for them."""
    result = fan_out(accepted(channels=["push", "email"]), REACHABLE, CATALOGUE, NOW)
    assert len(result.jobs) == 2
    assert result.throttle is None


def test_the_throttle_state_is_read_only_for_requests_a_limit_may_count() -> None:
    """Critical and transactional push/email: no read; promotional or SMS: read."""
    base = accepted().notification()
    assert not may_count(
        base.model_copy(update={"channels": ["push", "email"]}), CATALOGUE, None
    )
    assert not may_count(
        base.model_copy(update={"priority": "critical"}), CATALOGUE, None
    )
    assert may_count(base, CATALOGUE, None)  # sms: the monthly cap
    assert may_count(campaign(0).notification(), CATALOGUE, None)
    everything = TenantLimits(tenant="default", rate="10/minute burst 5")
    push = base.model_copy(update={"channels": ["push"]})
    assert may_count(push, CATALOGUE, everything)  # a tenant's bucket counts all


def test_a_look_taken_again_keeps_what_the_first_look_decided() -> None:
    """The first look suppressed push (no device yet) and SMS (no phone) and
    queued email; the worker died before its commit, the user's devices and
    phone arrived meanwhile, and the look is taken again: push and SMS stay
    suppressed (the same events, not ``sent`` beside ``suppressed``), email
    is queued again with its job (the ledger keeps it to one send)."""
    request = accepted(channels=["push", "email", "sms"])
    emailable = UserState(profile=UserProfile(user_id="u1", email="u1@example.com"))
    first = fan_out(request, emailable, CATALOGUE, NOW)
    assert outcomes(first) == {
        "push": ("suppressed", "no_active_device"),
        "email": ("queued", None),
        "sms": ("suppressed", "no_phone"),
    }
    prior = None
    for said in first.events:
        prior = fold(prior, said)
    later = NOW + timedelta(seconds=30)
    redo = fan_out(request, REACHABLE, CATALOGUE, later, prior=prior)
    assert [e.event_id for e in redo.events] == [e.event_id for e in first.events]
    assert [e.model_dump() for e in redo.events[1:]] == [
        e.model_dump() for e in first.events[1:]
    ]
    assert [job.channel for job in redo.jobs] == ["email"]
    # Once the email went out, a look taken again queues nothing.
    sent = fold(
        prior,
        first.events[2].model_copy(update={"event_type": "sent", "event_id": "e_sent"}),
    )
    assert fan_out(request, REACHABLE, CATALOGUE, later, prior=sent).jobs == []
