"""The throttle's pure rules: cap periods on the user's clock, buckets, counting once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.policy import TypeCatalogue, TypeInfo, throttle_settings
from pipeline.throttle import (
    DEFAULT_BUCKET,
    DEFAULT_CAPS,
    PERIODS,
    Bucket,
    Cap,
    Limits,
    Send,
    admit,
    counted,
    local_to_utc,
    period_end,
    period_start,
    scopes_of,
)
from schemas.records import TenantLimits, ThrottleState

PARIS = ZoneInfo("Europe/Paris")
LA = ZoneInfo("America/Los_Angeles")
TOKYO = ZoneInfo("Asia/Tokyo")
SANTIAGO = ZoneInfo("America/Santiago")  # daylight saving starts at midnight
ZONES = [
    ZoneInfo(name)
    for name in (
        "UTC",
        "Europe/Paris",
        "America/Los_Angeles",
        "Asia/Tokyo",
        "Asia/Kolkata",
        "Pacific/Chatham",
        "Australia/Lord_Howe",
        "America/Santiago",
        "Pacific/Kiritimati",
        "Pacific/Pago_Pago",
    )
]


def at(zone: ZoneInfo, *fields: int) -> datetime:
    """A local wall-clock time in ``zone``, as UTC."""
    return datetime(*fields, tzinfo=zone).astimezone(UTC)


def test_a_day_ends_at_the_users_local_midnight_on_both_sides_of_utc() -> None:
    """23:30 in Los Angeles is the next UTC day; its day still ends at LA midnight."""
    evening = at(LA, 2026, 12, 4, 23, 30)
    assert period_start(evening, "day", LA) == at(LA, 2026, 12, 4, 0, 0)
    assert period_end(evening, "day", LA) == at(LA, 2026, 12, 5, 0, 0)
    morning = at(TOKYO, 2026, 12, 5, 0, 30)  # still December 4th in UTC
    assert period_start(morning, "day", TOKYO) == at(TOKYO, 2026, 12, 5, 0, 0)
    assert period_end(morning, "day", TOKYO) == at(TOKYO, 2026, 12, 6, 0, 0)


@pytest.mark.parametrize("zone", [LA, TOKYO, PARIS], ids=str)
def test_a_month_ends_at_the_end_of_the_users_local_month(zone: ZoneInfo) -> None:
    """The last evening of February is still February, on the user's clock."""
    last = at(zone, 2027, 2, 28, 23, 59)
    assert period_start(last, "month", zone) == at(zone, 2027, 2, 1, 0, 0)
    assert period_end(last, "month", zone) == at(zone, 2027, 3, 1, 0, 0)
    december = at(zone, 2026, 12, 31, 23, 0)
    assert period_end(december, "month", zone) == at(zone, 2027, 1, 1, 0, 0)


def test_a_day_across_a_dst_change_is_23_or_25_hours_long() -> None:
    """Paris: the spring day has 23 hours, the autumn day 25."""
    spring = at(PARIS, 2027, 3, 28, 12, 0)
    assert period_end(spring, "day", PARIS) - period_start(spring, "day", PARIS) == (
        timedelta(hours=23)
    )
    autumn = at(PARIS, 2026, 10, 25, 12, 0)
    assert period_end(autumn, "day", PARIS) - period_start(autumn, "day", PARIS) == (
        timedelta(hours=25)
    )


def test_a_skipped_midnight_begins_the_day_when_the_clock_jumps() -> None:
    """Santiago's clocks jump from 24:00 to 01:00: that day begins at the jump."""
    noon = datetime(2026, 9, 6, 16, 0, tzinfo=UTC)  # 13:00 local, after the jump
    start = period_start(noon, "day", SANTIAGO)
    assert start.astimezone(SANTIAGO).replace(tzinfo=None) == datetime(2026, 9, 6, 1, 0)
    assert start == datetime(2026, 9, 6, 4, 0, tzinfo=UTC)
    assert local_to_utc(datetime(2026, 9, 6, 0, 30), SANTIAGO) == start


@settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31)
    ).map(lambda naive: naive.replace(tzinfo=UTC)),
    zone=st.sampled_from(ZONES),
    period=st.sampled_from(PERIODS),
)
def test_periods_tile_time_on_the_users_clock(
    moment: datetime, zone: ZoneInfo, period: str
) -> None:
    """Every instant lies in exactly one period: start <= t < end, and the next
    period starts where this one ends; a day starts at a local midnight (or
    the end of a gap that swallowed it)."""
    start = period_start(moment, period, zone)  # type: ignore[arg-type]
    end = period_end(moment, period, zone)  # type: ignore[arg-type]
    assert start <= moment < end
    assert period_start(end, period, zone) == end  # type: ignore[arg-type]
    if period in ("day", "week", "month"):
        local = start.astimezone(zone)
        just_before = (start - timedelta(microseconds=1)).astimezone(zone)
        assert local.time().replace(microsecond=0) == datetime.min.time() or (
            just_before.date() < local.date()
        )


def test_caps_parse_and_print_as_written() -> None:
    """`scope/period limit`, as types and tenants write them."""
    assert Cap.parse("sms/month 50") == Cap("sms", "month", 50)
    assert str(Cap.parse(" marketing/day 5 ")) == "marketing/day 5"
    for bad in ("sms/fortnight 5", "fax/day 1", "sms/day", "sms/day -1", ""):
        with pytest.raises(ValueError):
            Cap.parse(bad)


NOW = at(PARIS, 2026, 12, 4, 10, 0)
MARKETING = scopes_of("promotional", True, "email")


def test_the_sixth_marketing_notification_of_a_day_is_over_the_cap() -> None:
    """Five go; the sixth is refused naming the cap, until the local midnight."""
    state = ThrottleState()
    caps = (Cap("marketing", "day", 5),)
    for n in range(5):
        moment = NOW + timedelta(hours=n)
        verdict = admit(
            state, Send(f"n{n}", "email", MARKETING, moment, PARIS), Limits(caps, None)
        )
        assert verdict.allowed
        state = counted(
            state, Send(f"n{n}", "email", MARKETING, moment, PARIS), Limits(caps, None)
        )
    refused = admit(
        state, Send("n5", "email", MARKETING, NOW, PARIS), Limits(caps, None)
    )
    assert (refused.allowed, refused.reason) == (False, "cap marketing/day 5")
    assert refused.until == at(PARIS, 2026, 12, 5, 0, 0)
    next_day = at(PARIS, 2026, 12, 5, 0, 0)
    assert admit(
        state, Send("n5", "email", MARKETING, next_day, PARIS), Limits(caps, None)
    ).allowed


def test_a_redelivered_notification_is_admitted_and_counted_once() -> None:
    """The same notification again (a redelivery) passes its own window and
    does not use a second unit of the cap or a second token."""
    caps = (Cap("promotional", "minute", 1),)
    state = counted(
        ThrottleState(),
        Send("n1", "push", MARKETING, NOW, PARIS),
        Limits(caps, DEFAULT_BUCKET),
    )
    again = counted(
        state, Send("n1", "push", MARKETING, NOW, PARIS), Limits(caps, DEFAULT_BUCKET)
    )
    assert again == state
    assert admit(
        state, Send("n1", "push", MARKETING, NOW, PARIS), Limits(caps, DEFAULT_BUCKET)
    ).allowed
    other = admit(state, Send("n2", "email", MARKETING, NOW, PARIS), Limits(caps, None))
    assert (other.allowed, other.reason) == (False, "cap promotional/minute 1")


def test_a_per_notification_cap_counts_a_notification_once_across_channels() -> None:
    """One promotional notification on push and email is one of the minute's one."""
    caps = (Cap("promotional", "minute", 1),)
    state = ThrottleState()
    for channel in ("push", "email"):
        scopes = scopes_of("promotional", False, channel)
        assert admit(
            state, Send("n1", channel, scopes, NOW, PARIS), Limits(caps, None)
        ).allowed
        state = counted(
            state, Send("n1", channel, scopes, NOW, PARIS), Limits(caps, None)
        )
    assert state.caps == {"promotional/minute@2026-12-04T09:00Z": ["n1"]}


def test_an_sms_cap_counts_sends_and_only_sms() -> None:
    """50 SMS a month: email sends do not count toward it."""
    caps = (Cap("sms", "month", 2),)
    sms, email = (
        scopes_of("transactional", False, "sms"),
        scopes_of("transactional", False, "email"),
    )
    state = ThrottleState()
    for n in range(2):
        state = counted(
            state, Send(f"n{n}", "sms", sms, NOW, PARIS), Limits(caps, None)
        )
    state = counted(state, Send("n9", "email", email, NOW, PARIS), Limits(caps, None))
    assert admit(
        state, Send("n9", "email", email, NOW, PARIS), Limits(caps, None)
    ).allowed
    refused = admit(state, Send("n3", "sms", sms, NOW, PARIS), Limits(caps, None))
    assert refused.reason == "cap sms/month 2"
    assert refused.until == at(PARIS, 2027, 1, 1, 0, 0)


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    """Burst 2 at one token a minute: two go at once, the third a minute later."""
    bucket = Bucket(rate=1 / 60, burst=2)
    scopes = scopes_of("transactional", False, "push")
    state = ThrottleState()
    for n in range(2):
        assert admit(
            state, Send(f"n{n}", "push", scopes, NOW, PARIS), Limits((), bucket)
        ).allowed
        state = counted(
            state, Send(f"n{n}", "push", scopes, NOW, PARIS), Limits((), bucket)
        )
    third = admit(state, Send("n2", "push", scopes, NOW, PARIS), Limits((), bucket))
    assert (third.allowed, third.reason) == (False, "rate push")
    assert third.until == NOW + timedelta(minutes=1)
    later = NOW + timedelta(minutes=1)
    assert admit(
        state, Send("n2", "push", scopes, later, PARIS), Limits((), bucket)
    ).allowed
    much_later = NOW + timedelta(days=1)
    state = counted(
        state, Send("n2", "push", scopes, much_later, PARIS), Limits((), bucket)
    )
    assert state.buckets["push"].tokens == 1.0  # refilled to the burst, one taken


def test_ended_windows_are_dropped_from_the_state() -> None:
    """The state stays as small as the caps: yesterday's window goes."""
    today = counted(
        ThrottleState(),
        Send("n1", "email", MARKETING, NOW, PARIS),
        Limits(DEFAULT_CAPS, None),
    )
    tomorrow = NOW + timedelta(days=1)
    state = counted(
        today,
        Send("n2", "email", MARKETING, tomorrow, PARIS),
        Limits(DEFAULT_CAPS, None),
    )
    assert "marketing/day@2026-12-03T23:00Z" in today.caps  # Paris midnight, in UTC
    assert set(today.caps).isdisjoint(state.caps)
    assert (
        sum(len(ids) for ids in state.caps.values()) == 2
    )  # marketing/day, promo/minute


def test_the_catalogue_reads_caps_over_cap_and_rate(tmp_path: Path) -> None:
    """Per type: its caps ([] for none), what happens over them, a bucket."""
    path = tmp_path / "types.toml"
    path.write_text(
        """
[types.default]
channels = ["email"]
category = "general"

[types.digest]
channels = ["email", "sms"]
category = "news"
caps = ["sms/day 2"]
over_cap = "defer"
rate = "30/hour burst 3"

[types.otp]
channels = ["sms"]
category = "security"
caps = []
"""
    )
    catalogue = TypeCatalogue.load(path)
    assert catalogue.lookup("default").caps == DEFAULT_CAPS
    digest = catalogue.lookup("digest")
    assert (digest.caps, digest.over_cap) == ((Cap("sms", "day", 2),), "defer")
    assert digest.bucket == Bucket(rate=30 / 3600, burst=3)
    assert catalogue.lookup("otp").caps == ()


@pytest.mark.parametrize(
    "line",
    [
        'caps = ["sms/fortnight 2"]',
        'caps = "sms/day 2"',
        'over_cap = "drop"',
        'rate = "fast"',
    ],
)
def test_a_bad_throttle_setting_names_its_type(tmp_path: Path, line: str) -> None:
    """A typo in a cap is refused at load, naming the type, not ignored."""
    path = tmp_path / "types.toml"
    path.write_text(
        f'[types.default]\nchannels = ["email"]\ncategory = "general"\n{line}\n'
    )
    with pytest.raises(ValueError, match="type 'default'"):
        TypeCatalogue.load(path)


def test_a_tenants_settings_replace_the_types_where_set() -> None:
    """Null keeps the type's own; set, the tenant's wins for all its types."""
    info = TypeInfo(("email",), "news", caps=(Cap("sms", "month", 50),))
    assert throttle_settings(info, None) == (Limits(info.caps, None), "throttle")
    keeps = TenantLimits(tenant="acme")
    assert throttle_settings(info, keeps) == (Limits(info.caps, None), "throttle")
    own = TenantLimits(
        tenant="acme",
        caps=["marketing/day 2"],
        over_cap="defer",
        rate="6/minute burst 2",
    )
    limits, over_cap = throttle_settings(info, own)
    assert limits == Limits((Cap("marketing", "day", 2),), Bucket(rate=0.1, burst=2))
    assert over_cap == "defer"
    none = TenantLimits(tenant="acme", caps=[])
    assert throttle_settings(info, none)[0].caps == ()


def test_an_hour_begins_again_when_lord_howe_turns_its_clock_back_30_minutes() -> None:
    """2024-04-07 02:00 LHDT (+11) became 01:30 LHST (+10:30) at 15:00 UTC:
    the hour that began at 01:00 ends there, and the next runs to 02:00."""
    zone = ZoneInfo("Australia/Lord_Howe")
    change = datetime(2024, 4, 6, 15, 0, tzinfo=UTC)
    before = change - timedelta(minutes=10)
    assert period_start(before, "hour", zone) == change - timedelta(hours=1)
    assert period_end(before, "hour", zone) == change
    assert period_start(change, "hour", zone) == change
    assert period_end(
        change + timedelta(minutes=10), "hour", zone
    ) == change + timedelta(minutes=30)
