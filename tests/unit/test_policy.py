"""Enrich and preferences decisions: catalogue, reach, opt-outs, quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import policy
from pipeline.policy import (
    DEFAULT_CATALOGUE_PATH,
    TypeCatalogue,
    TypeInfo,
    Verdict,
    decide,
    parse_wall_time,
    quiet_hours_zone,
    quiet_window_end,
    resolve_channels,
    unreachable_reason,
)
from schemas.records import (
    CHANNELS,
    PRIORITIES,
    DeviceToken,
    NotificationRequest,
    Preferences,
    QuietHours,
    Recipient,
    UserProfile,
)

CATALOGUE = TypeCatalogue.load()
NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
ZONES = (
    "America/Los_Angeles",
    "America/St_Johns",
    "Asia/Kolkata",
    "Pacific/Auckland",
    "Europe/London",
    "UTC",
)
# Every 2026 UTC-offset change of ZONES, checked by test_transitions_are_real.
ZONE_TRANSITIONS = (
    ("America/Los_Angeles", datetime(2026, 3, 8, 10, 0, tzinfo=UTC)),  # forward
    ("America/Los_Angeles", datetime(2026, 11, 1, 9, 0, tzinfo=UTC)),  # back
    ("America/St_Johns", datetime(2026, 3, 8, 5, 30, tzinfo=UTC)),  # forward
    ("America/St_Johns", datetime(2026, 11, 1, 4, 30, tzinfo=UTC)),  # back
    ("Europe/London", datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),  # forward
    ("Europe/London", datetime(2026, 10, 25, 1, 0, tzinfo=UTC)),  # back
    ("Pacific/Auckland", datetime(2026, 4, 4, 14, 0, tzinfo=UTC)),  # back
    ("Pacific/Auckland", datetime(2026, 9, 26, 14, 0, tzinfo=UTC)),  # forward
)
TRANSITIONS = tuple(at for _, at in ZONE_TRANSITIONS)


def _request(**fields: Any) -> NotificationRequest:
    values: dict[str, Any] = {
        "idempotency_key": "order-4412-shipped",
        "recipient": Recipient(user_id="u_991"),
        "type": "order_shipped",
        "priority": "transactional",
    }
    return NotificationRequest(**(values | fields))


# The unchecked builders skip validation: the stage must also hold for a record
# that never went through the door (an older producer, a replayed topic), with
# values the models refuse today.


def _unchecked_request(**fields: Any) -> NotificationRequest:
    request = _request()
    return NotificationRequest.model_construct(**(dict(request) | fields))


def _prefs(**fields: Any) -> Preferences:
    return Preferences(**({"user_id": "u_991"} | fields))


def _unchecked_prefs(**fields: Any) -> Preferences:
    return Preferences.model_construct(**({"user_id": "u_991"} | fields))


def _profile(**fields: Any) -> UserProfile:
    return UserProfile(**({"user_id": "u_991"} | fields))


def _unchecked_profile(**fields: Any) -> UserProfile:
    return UserProfile.model_construct(**({"user_id": "u_991"} | fields))


FCM_REGISTRATION = "fcm-registration-1"


def _device(active: bool = True) -> DeviceToken:
    return DeviceToken(
        user_id="u_991", token=FCM_REGISTRATION, platform="fcm", active=active
    )


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "types.toml"
    path.write_text(text)
    return path


# --- the catalogue ---------------------------------------------------------


def test_packaged_catalogue_carries_the_seed_types() -> None:
    """The file beside the module lists the seed examples as the product brief has."""
    # Beside the module, wherever the package is installed: package-data ships it.
    assert DEFAULT_CATALOGUE_PATH.parent == Path(policy.__file__).parent
    assert DEFAULT_CATALOGUE_PATH.is_file()
    assert CATALOGUE.lookup("order_shipped") == TypeInfo(("push", "email"), "orders")
    assert CATALOGUE.lookup("password_reset") == TypeInfo(("email", "sms"), "security")
    assert CATALOGUE.lookup("password_changed").category == "security"
    assert CATALOGUE.lookup("comment_reply") == TypeInfo(("push", "in_app"), "social")
    assert CATALOGUE.lookup("campaign") == TypeInfo(
        ("push", "email"), "marketing", marketing=True
    )
    assert CATALOGUE.lookup("default").channels == ("push", "email", "in_app")


def test_unknown_type_falls_back_to_default() -> None:
    """A type the catalogue does not list gets the default entry."""
    assert "invoice_overdue" not in CATALOGUE
    assert CATALOGUE.lookup("invoice_overdue") == CATALOGUE.lookup("default")


def test_unknown_channel_in_file_is_refused_naming_the_type(tmp_path: Path) -> None:
    """A typo in a channel name fails the load and says which type has it."""
    path = _write(
        tmp_path,
        '[types.default]\nchannels = ["push"]\ncategory = "general"\n'
        '[types.promo]\nchannels = ["push", "fax"]\ncategory = "marketing"\n',
    )
    with pytest.raises(ValueError, match=r"'promo'.*'fax'"):
        TypeCatalogue.load(path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[types.x]\nchannels = ["push"]\ncategory = "c"\n', "'default'"),
        ('[types.default]\nchanels = ["push"]\ncategory = "c"\n', "unknown keys"),
        ('[types.default]\nchannels = "push"\ncategory = "c"\n', "list of strings"),
        ('[types.default]\nchannels = []\ncategory = "c"\n', "at least one"),
        ('[types.default]\nchannels = ["sms", "sms"]\ncategory = "c"\n', "twice"),
        ('[types.default]\nchannels = ["sms"]\n', "category"),
        (
            '[types.default]\nchannels = ["sms"]\ncategory = "c"\nmarketing = "yes"\n',
            "marketing",
        ),
        ('version = 2\n[types.default]\nchannels = ["sms"]\ncategory = "c"\n', "top"),
        ("types = 3\n", r"\[types\]"),
        ("[types\n", "line 1"),
    ],
)
def test_malformed_catalogue_is_refused(
    tmp_path: Path, body: str, message: str
) -> None:
    """Every malformed catalogue fails at load, not on the first notification."""
    with pytest.raises(ValueError, match=message):
        TypeCatalogue.load(_write(tmp_path, body))


def test_catalogue_built_in_code_is_validated_too() -> None:
    """The constructor applies the same checks as the file loader."""
    with pytest.raises(ValueError, match=r"'promo'.*'pigeon'"):
        TypeCatalogue(
            {
                "default": TypeInfo(("push",), "general"),
                "promo": TypeInfo(("pigeon",), "marketing"),
            }
        )


# --- channels ----------------------------------------------------------------


def test_type_defaults_apply_without_override() -> None:
    """No override: the type's default channels, in the catalogue's order."""
    assert resolve_channels(_request(), CATALOGUE) == ["push", "email"]
    assert resolve_channels(_request(type="password_reset"), CATALOGUE) == [
        "email",
        "sms",
    ]


def test_override_replaces_type_defaults_in_its_order() -> None:
    """The request's channels win, in the order the caller gave them."""
    request = _request(channels=["sms", "in_app"])
    assert resolve_channels(request, CATALOGUE) == ["sms", "in_app"]


def test_override_duplicates_are_dropped_keeping_first_position() -> None:
    """A channel listed twice is tried once, where it first appeared."""
    request = _unchecked_request(channels=["email", "push", "email", "sms", "push"])
    assert resolve_channels(request, CATALOGUE) == ["email", "push", "sms"]


def test_empty_override_falls_back_to_defaults() -> None:
    """An empty override would send nothing; the type's defaults go instead."""
    request = _unchecked_request(channels=[])
    assert resolve_channels(request, CATALOGUE) == ["push", "email"]


def test_unknown_type_gets_default_channels() -> None:
    """An unlisted type goes out on the default entry's channels."""
    request = _request(type="invoice_overdue")
    assert resolve_channels(request, CATALOGUE) == ["push", "email", "in_app"]


# --- reachability --------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "profile", "devices", "reason"),
    [
        ("push", None, [_device()], None),
        ("push", None, [_device(False), _device()], None),
        ("push", None, [], "no_active_device"),
        ("push", None, [_device(False)], "no_active_device"),
        ("email", _profile(email="a@example.com"), [], None),
        ("email", _profile(), [], "no_email"),
        ("email", _unchecked_profile(email="  "), [], "no_email"),
        ("email", None, [], "no_email:no_profile"),
        ("sms", _profile(phone="+15555550100"), [], None),
        ("sms", _profile(email="a@example.com"), [], "no_phone"),
        ("sms", None, [], "no_phone:no_profile"),
        ("in_app", None, [], None),
        ("fax", _profile(), [], "unknown_channel:fax"),
    ],
)
def test_unreachable_reasons(
    channel: str,
    profile: UserProfile | None,
    devices: list[DeviceToken],
    reason: str | None,
) -> None:
    """Each channel names what it lacks, with a stable code before any detail."""
    assert unreachable_reason(channel, profile, devices) == reason


# --- expiry and schedule -------------------------------------------------------


@pytest.mark.parametrize("priority", PRIORITIES)
def test_expired_request_expires_whatever_its_priority(priority: str) -> None:
    """At or past expiry_at nothing is sent, critical included."""
    for expiry in (NOW, NOW - timedelta(seconds=1)):
        request = _request(priority=priority, expiry_at=expiry)
        verdict = decide(request, "push", None, None, CATALOGUE, NOW)
        assert verdict == Verdict("expire", "expired")


def test_expiry_is_checked_before_opt_outs() -> None:
    """An expired request reports expiry, not the opt-out it would also hit."""
    request = _request(expiry_at=NOW)
    verdict = decide(request, "push", _prefs(enabled=False), None, CATALOGUE, NOW)
    assert verdict.outcome == "expire"


def test_unexpired_request_is_delivered() -> None:
    """An expiry still ahead does not hold anything back."""
    request = _request(expiry_at=NOW + timedelta(microseconds=1))
    assert decide(request, "push", None, None, CATALOGUE, NOW) == Verdict("deliver")


@pytest.mark.parametrize("priority", PRIORITIES)
def test_future_schedule_defers_until_it(priority: str) -> None:
    """schedule_at ahead defers to that instant (in UTC), for every priority."""
    local = datetime(2026, 6, 11, 9, 0, tzinfo=ZoneInfo("Europe/London"))
    request = _request(priority=priority, schedule_at=local)
    verdict = decide(request, "email", None, None, CATALOGUE, NOW)
    assert verdict == Verdict(
        "defer", "scheduled", datetime(2026, 6, 11, 8, 0, tzinfo=UTC)
    )
    assert verdict.until is not None and verdict.until.tzinfo is UTC


def test_due_schedule_delivers() -> None:
    """At or after schedule_at the request goes."""
    for at in (NOW, NOW - timedelta(hours=1)):
        verdict = decide(_request(schedule_at=at), "push", None, None, CATALOGUE, NOW)
        assert verdict == Verdict("deliver")


def test_schedule_beats_quiet_hours_and_loses_to_opt_outs() -> None:
    """Order: opt-outs, then the schedule, then quiet hours."""
    quiet = _prefs(quiet_hours=QuietHours(start="11:00", end="13:00"))
    later = NOW + timedelta(hours=3)
    verdict = decide(_request(schedule_at=later), "push", quiet, None, CATALOGUE, NOW)
    assert verdict == Verdict("defer", "scheduled", later)
    opted_out = _prefs(
        enabled=False, quiet_hours=QuietHours(start="11:00", end="13:00")
    )
    verdict = decide(
        _request(schedule_at=later), "push", opted_out, None, CATALOGUE, NOW
    )
    assert verdict == Verdict("suppress", "global_opt_out")


def test_request_times_without_offset_are_read_as_utc() -> None:
    """A naive schedule_at from a lax producer is taken as UTC, not refused."""
    naive = datetime(2026, 6, 10, 13, 0)
    request = _unchecked_request(schedule_at=naive)
    verdict = decide(request, "push", None, None, CATALOGUE, NOW)
    assert verdict.until == naive.replace(tzinfo=UTC)


def test_naive_now_is_refused() -> None:
    """The clock must say which instant it means."""
    with pytest.raises(ValueError, match="now"):
        decide(_request(), "push", None, None, CATALOGUE, NOW.replace(tzinfo=None))


# --- opt-outs ------------------------------------------------------------------

OPT_OUTS: dict[str, tuple[dict[str, Any], str]] = {
    "global": ({"enabled": False}, "global_opt_out"),
    "type": ({"types": {"order_shipped": False}}, "type_opt_out:order_shipped"),
    "category": ({"types": {"orders": False}}, "type_opt_out:orders"),
    "channel": ({"channels": {"push": False}}, "channel_opt_out:push"),
    "marketing": ({"marketing": False}, "marketing_opt_out"),
}
# Which opt-outs each priority honours for a non-marketing type.
HONOURED = {
    "critical": set(),
    "transactional": {"global", "type", "category", "channel"},
    "promotional": {"global", "type", "category", "channel", "marketing"},
}


@pytest.mark.parametrize("priority", PRIORITIES)
@pytest.mark.parametrize("kind", OPT_OUTS)
def test_each_opt_out_for_each_priority(priority: str, kind: str) -> None:
    """Critical ignores every opt-out; transactional all but marketing; promo all."""
    fields, reason = OPT_OUTS[kind]
    request = _request(priority=priority)
    verdict = decide(request, "push", _prefs(**fields), None, CATALOGUE, NOW)
    if kind in HONOURED[priority]:
        assert verdict == Verdict("suppress", reason)
    else:
        assert verdict == Verdict("deliver")


def test_marketing_type_honours_marketing_opt_out_even_if_transactional() -> None:
    """A campaign sent as transactional is still marketing to the user."""
    request = _request(type="campaign", priority="transactional")
    verdict = decide(request, "email", _prefs(marketing=False), None, CATALOGUE, NOW)
    assert verdict == Verdict("suppress", "marketing_opt_out")


def test_critical_marketing_type_bypasses_marketing_opt_out() -> None:
    """Critical bypasses every opt-out, the marketing flag of its type included."""
    request = _request(type="campaign", priority="critical")
    prefs = _prefs(marketing=False, enabled=False, types={"marketing": False})
    assert decide(request, "push", prefs, None, CATALOGUE, NOW) == Verdict("deliver")


def test_unknown_type_is_opted_out_through_default_category() -> None:
    """An unlisted type belongs to the default entry's category."""
    prefs = _prefs(types={"general": False})
    verdict = decide(_request(type="new_thing"), "push", prefs, None, CATALOGUE, NOW)
    assert verdict == Verdict("suppress", "type_opt_out:general")


def test_type_or_category_false_suppresses_even_if_the_other_is_true() -> None:
    """Opt-outs win a conflict: an opted-out category is not undone by its type."""
    prefs = _prefs(types={"order_shipped": True, "orders": False})
    verdict = decide(_request(), "push", prefs, None, CATALOGUE, NOW)
    assert verdict == Verdict("suppress", "type_opt_out:orders")
    prefs = _prefs(types={"order_shipped": False, "orders": True})
    verdict = decide(_request(), "push", prefs, None, CATALOGUE, NOW)
    assert verdict == Verdict("suppress", "type_opt_out:order_shipped")


def test_opt_outs_apply_per_channel() -> None:
    """Opting out of SMS holds back only SMS."""
    prefs = _prefs(channels={"sms": False, "email": True})
    request = _request(type="password_reset")
    assert decide(request, "sms", prefs, None, CATALOGUE, NOW) == Verdict(
        "suppress", "channel_opt_out:sms"
    )
    assert decide(request, "email", prefs, None, CATALOGUE, NOW) == Verdict("deliver")


def test_opt_in_values_and_other_keys_suppress_nothing() -> None:
    """True entries and entries for other types or channels leave delivery alone."""
    prefs = _prefs(
        types={"order_shipped": True, "social": False},
        channels={"push": True, "sms": False},
    )
    verdict = decide(
        _request(priority="promotional"), "push", prefs, None, CATALOGUE, NOW
    )
    assert verdict == Verdict("deliver")


def test_first_reason_in_rule_order_is_reported() -> None:
    """Global, then type, then channel, then marketing: the trail names the first."""
    everything: dict[str, Any] = {
        "enabled": False,
        "types": {"orders": False},
        "channels": {"push": False},
        "marketing": False,
    }
    request = _request(priority="promotional")
    reasons = []
    for lifted in ("enabled", "types", "channels", "marketing"):
        verdict = decide(request, "push", _prefs(**everything), None, CATALOGUE, NOW)
        reasons.append(verdict.reason)
        del everything[lifted]
    assert reasons == [
        "global_opt_out",
        "type_opt_out:orders",
        "channel_opt_out:push",
        "marketing_opt_out",
    ]
    assert decide(request, "push", _prefs(), None, CATALOGUE, NOW) == Verdict("deliver")


def test_unknown_priority_is_held_to_marketing_rules() -> None:
    """A priority nobody knows gets the strictest rules, never a bypass."""
    request = _unchecked_request(priority="urgent!!")
    verdict = decide(request, "push", _prefs(marketing=False), None, CATALOGUE, NOW)
    assert verdict == Verdict("suppress", "marketing_opt_out")


def test_no_preferences_means_deliver() -> None:
    """A user with no preferences record gets everything, promotional included."""
    request = _request(priority="promotional", type="campaign")
    assert decide(request, "email", None, None, CATALOGUE, NOW) == Verdict("deliver")


# --- quiet hours in decide -----------------------------------------------------

NIGHT = QuietHours(start="22:00", end="08:00")
# 2026-06-10 05:00 UTC is 22:00 in Los Angeles (PDT) and 06:00 in London (BST).
LA_NIGHT_START = datetime(2026, 6, 10, 5, 0, tzinfo=UTC)


@pytest.mark.parametrize("priority", ["transactional", "promotional"])
def test_non_critical_is_deferred_to_the_end_of_quiet_hours(priority: str) -> None:
    """Quiet hours defer, never drop: until is the local end, in UTC."""
    prefs = _prefs(quiet_hours=NIGHT, timezone="America/Los_Angeles")
    request = _request(priority=priority)
    verdict = decide(request, "push", prefs, None, CATALOGUE, LA_NIGHT_START)
    # 08:00 PDT on 10 June is 15:00 UTC.
    assert verdict == Verdict(
        "defer", "quiet_hours", datetime(2026, 6, 10, 15, 0, tzinfo=UTC)
    )


def test_critical_goes_through_quiet_hours() -> None:
    """Critical traffic is never deferred by quiet hours."""
    prefs = _prefs(quiet_hours=NIGHT, timezone="America/Los_Angeles")
    request = _request(priority="critical")
    verdict = decide(request, "sms", prefs, None, CATALOGUE, LA_NIGHT_START)
    assert verdict == Verdict("deliver")


def test_outside_quiet_hours_delivers() -> None:
    """Before the window starts the request goes at once."""
    prefs = _prefs(quiet_hours=NIGHT, timezone="America/Los_Angeles")
    early = LA_NIGHT_START - timedelta(seconds=1)
    assert decide(_request(), "push", prefs, None, CATALOGUE, early) == Verdict(
        "deliver"
    )


def test_quiet_hours_zone_prefers_preferences_then_profile_then_utc() -> None:
    """Preferences' zone, else the profile's, else UTC."""
    london = _profile(timezone="Europe/London")
    assert quiet_hours_zone(_prefs(timezone="Asia/Kolkata"), london) == "Asia/Kolkata"
    assert quiet_hours_zone(_prefs(), london) == "Europe/London"
    assert quiet_hours_zone(_prefs(), None) == "UTC"
    assert quiet_hours_zone(None, None) == "UTC"


def test_profile_zone_is_used_when_preferences_have_none() -> None:
    """In London 05:00 UTC is 06:00 BST: quiet until 08:00 BST, 07:00 UTC."""
    prefs = _prefs(quiet_hours=NIGHT)
    profile = _profile(timezone="Europe/London")
    verdict = decide(_request(), "push", prefs, profile, CATALOGUE, LA_NIGHT_START)
    assert verdict.until == datetime(2026, 6, 10, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["Mars/Olympus", "", "../etc/passwd", "America", "utc"])
def test_invalid_zone_falls_back_without_crashing(bad: str) -> None:
    """A bad preferences zone falls to the profile's; with none valid, to UTC."""
    prefs = _unchecked_prefs(quiet_hours=NIGHT, timezone=bad)
    assert quiet_hours_zone(prefs, _profile(timezone="Europe/London")) == (
        "Europe/London"
    )
    unknown_zone = _unchecked_profile(timezone=bad)
    assert quiet_hours_zone(prefs, unknown_zone) == "UTC"
    # 23:00 UTC is inside 22:00-08:00 read in UTC.
    at = datetime(2026, 6, 10, 23, 0, tzinfo=UTC)
    verdict = decide(_request(), "push", prefs, unknown_zone, CATALOGUE, at)
    assert verdict == Verdict(
        "defer", "quiet_hours", datetime(2026, 6, 11, 8, 0, tzinfo=UTC)
    )
    assert quiet_window_end(at, NIGHT, bad) == datetime(2026, 6, 11, 8, 0, tzinfo=UTC)


def test_malformed_quiet_hours_deliver_and_say_so() -> None:
    """Broken preferences neither crash the stage nor hold a message forever."""
    malformed = QuietHours.model_construct(start="10pm", end="08:00")
    prefs = _unchecked_prefs(quiet_hours=malformed)
    verdict = decide(_request(), "push", prefs, None, CATALOGUE, NOW)
    assert verdict == Verdict("deliver", "invalid_quiet_hours")


def test_verdict_refuses_inconsistent_fields() -> None:
    """A deferral needs an aware until; nothing else may carry one."""
    with pytest.raises(ValueError):
        Verdict("defer", "quiet_hours")
    with pytest.raises(ValueError):
        Verdict("deliver", None, NOW)
    with pytest.raises(ValueError):
        Verdict("defer", "scheduled", NOW.replace(tzinfo=None))
    with pytest.raises(ValueError):
        Verdict("drop")  # type: ignore[arg-type]


# --- quiet_window_end: examples ------------------------------------------------


def _window(start: str, end: str) -> QuietHours:
    return QuietHours(start=start, end=end)


def test_window_spanning_midnight() -> None:
    """22:00-08:00: evening and early morning are quiet, the day is not."""
    evening = datetime(2026, 6, 10, 23, 30, tzinfo=UTC)
    morning = datetime(2026, 6, 11, 7, 59, 59, tzinfo=UTC)
    end = datetime(2026, 6, 11, 8, 0, tzinfo=UTC)
    assert quiet_window_end(evening, NIGHT, "UTC") == end
    assert quiet_window_end(morning, NIGHT, "UTC") == end
    assert quiet_window_end(end, NIGHT, "UTC") is None
    assert quiet_window_end(datetime(2026, 6, 10, 22, tzinfo=UTC), NIGHT, "UTC") == end
    assert (
        quiet_window_end(datetime(2026, 6, 10, 21, 59, tzinfo=UTC), NIGHT, "UTC")
        is None
    )


def test_same_day_window() -> None:
    """13:00-14:00 London time in summer is 12:00-13:00 UTC."""
    lunch = _window("13:00", "14:00")
    inside = datetime(2026, 7, 1, 12, 30, tzinfo=UTC)
    assert quiet_window_end(inside, lunch, "Europe/London") == datetime(
        2026, 7, 1, 13, 0, tzinfo=UTC
    )
    assert quiet_window_end(inside - timedelta(hours=1), lunch, "Europe/London") is None
    assert quiet_window_end(inside + timedelta(hours=1), lunch, "Europe/London") is None


def test_equal_start_and_end_mean_no_quiet_hours() -> None:
    """start == end is an empty window, never a whole day."""
    for hour in range(24):
        at = datetime(2026, 6, 10, hour, 0, tzinfo=UTC)
        assert quiet_window_end(at, _window("08:00", "08:00"), "UTC") is None


def test_half_hour_zone_without_dst() -> None:
    """Kolkata is +05:30 all year: 23:30 IST is inside, ending 06:00 IST."""
    at = datetime(2026, 6, 1, 18, 0, tzinfo=UTC)
    assert quiet_window_end(at, _window("22:00", "06:00"), "Asia/Kolkata") == datetime(
        2026, 6, 2, 0, 30, tzinfo=UTC
    )


def test_night_across_st_johns_spring_forward() -> None:
    """22:30 NST (-03:30) to 08:00 NDT (-02:30) the next morning."""
    at = datetime(2026, 3, 8, 2, 0, tzinfo=UTC)
    assert quiet_window_end(at, NIGHT, "America/St_Johns") == datetime(
        2026, 3, 8, 10, 30, tzinfo=UTC
    )


def test_night_across_auckland_fall_back() -> None:
    """01:00 NZDT (+13) to 07:00 NZST (+12): seven hours of clock, seven of time."""
    at = datetime(2026, 4, 4, 12, 0, tzinfo=UTC)
    assert quiet_window_end(at, _window("22:00", "07:00"), "Pacific/Auckland") == (
        datetime(2026, 4, 4, 19, 0, tzinfo=UTC)
    )


def test_end_in_spring_forward_gap_is_the_transition() -> None:
    """02:30 never happens on 8 March in Los Angeles: the window ends at 03:00 PDT."""
    at = datetime(2026, 3, 8, 9, 45, tzinfo=UTC)  # 01:45 PST
    end = quiet_window_end(at, _window("22:00", "02:30"), "America/Los_Angeles")
    assert end == datetime(2026, 3, 8, 10, 0, tzinfo=UTC)
    assert end.astimezone(ZoneInfo("America/Los_Angeles")).time() == time(3, 0)


def test_end_in_london_gap_is_the_transition() -> None:
    """01:30 never happens on 29 March in London: the window ends at 02:00 BST."""
    at = datetime(2026, 3, 29, 0, 45, tzinfo=UTC)
    assert quiet_window_end(at, _window("23:00", "01:30"), "Europe/London") == (
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    )


def test_gap_swallowing_the_waking_minutes_joins_two_nights() -> None:
    """02:30-02:15 in Los Angeles: on 8 March the clock never reads 02:15-02:30."""
    at = datetime(2026, 3, 8, 8, 0, tzinfo=UTC)  # 00:00 PST
    end = quiet_window_end(at, _window("02:30", "02:15"), "America/Los_Angeles")
    assert end == datetime(2026, 3, 9, 9, 15, tzinfo=UTC)  # 02:15 PDT on 9 March


def test_repeated_end_time_ends_at_its_next_occurrence() -> None:
    """01:30 happens twice on 1 November in Los Angeles: the next one after now."""
    window = _window("22:00", "01:30")
    zone = "America/Los_Angeles"
    first_pass = datetime(2026, 11, 1, 7, 30, tzinfo=UTC)  # 00:30 PDT
    assert quiet_window_end(first_pass, window, zone) == datetime(
        2026, 11, 1, 8, 30, tzinfo=UTC
    )  # 01:30 PDT
    second_pass = datetime(2026, 11, 1, 9, 15, tzinfo=UTC)  # 01:15 PST
    assert quiet_window_end(second_pass, window, zone) == datetime(
        2026, 11, 1, 9, 30, tzinfo=UTC
    )  # 01:30 PST
    between = datetime(2026, 11, 1, 8, 45, tzinfo=UTC)  # 01:45 PDT: clock says awake
    assert quiet_window_end(between, window, zone) is None


def test_fall_back_before_window_start_ends_the_window() -> None:
    """01:30-03:00: at 01:45 PDT the clock falls back to 01:00 PST, outside it."""
    window = _window("01:30", "03:00")
    zone = "America/Los_Angeles"
    at = datetime(2026, 11, 1, 8, 45, tzinfo=UTC)
    assert quiet_window_end(at, window, zone) == datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    again = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)  # 01:30 PST: quiet again
    assert quiet_window_end(again, window, zone) == datetime(
        2026, 11, 1, 11, 0, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "text",
    ["7:00", "24:00", "22:60", "22:00:00", " 22:00", "22:00\n", "2200", "٢٢:٠٠", ""],
)
def test_wall_times_are_parsed_strictly(text: str) -> None:
    """Only zero-padded 24-hour HH:MM in ASCII digits is a wall time."""
    with pytest.raises(ValueError, match="HH:MM"):
        parse_wall_time(text)
    with pytest.raises(ValueError):
        quiet_window_end(NOW, _window(text, "08:00"), "UTC")


def test_wall_time_bounds_parse() -> None:
    """00:00 and 23:59 are the first and last minutes of the day."""
    assert parse_wall_time("00:00") == time(0, 0)
    assert parse_wall_time("23:59") == time(23, 59)


def test_transitions_are_real() -> None:
    """The test's transition table matches the zone database, second for second."""
    for zone, at in ZONE_TRANSITIONS:
        tz = ZoneInfo(zone)
        before = (at - timedelta(seconds=1)).astimezone(tz).utcoffset()
        assert before != at.astimezone(tz).utcoffset(), (zone, at)


# --- quiet_window_end: properties ----------------------------------------------

# Wall times around which the 2026 transitions of ZONES happen, plus ordinary ones.
_INTERESTING = ["00:00", "00:30", "01:00", "01:30", "02:00", "02:30", "03:00"]
wall_times = st.one_of(
    st.sampled_from([*_INTERESTING, "03:30", "07:00", "08:00", "13:00", "22:00"]),
    st.builds(
        lambda hour, minute: f"{hour:02d}:{minute:02d}",
        st.integers(0, 23),
        st.integers(0, 59),
    ),
)
windows = st.builds(QuietHours, start=wall_times, end=wall_times)
anywhere_in_2026 = st.datetimes(
    min_value=datetime(2026, 1, 1),
    max_value=datetime(2026, 12, 31, 23, 59, 59),
    timezones=st.just(UTC),
)
near_transitions = st.builds(
    lambda at, seconds: at + timedelta(seconds=seconds),
    st.sampled_from(TRANSITIONS),
    st.integers(-26 * 3600, 26 * 3600),
)
instants = st.one_of(anywhere_in_2026, near_transitions)
zones = st.sampled_from(ZONES)
Case = tuple[datetime, QuietHours, str]


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60 % 24:02d}:{minutes % 60:02d}"


@st.composite
def dst_cases(draw: st.DrawFn) -> Case:
    """A zone's own transition, an instant near it, window edges near its jump."""
    zone, at = draw(st.sampled_from(ZONE_TRANSITIONS))
    tz = ZoneInfo(zone)
    # The wall clock just before and at the jump, in minutes of the day: edges
    # around them land in the gap or the repeated hour, or just outside them.
    jump = [
        (moment.hour * 60 + moment.minute + (1 if moment.second else 0))
        for moment in ((at - timedelta(seconds=1)).astimezone(tz), at.astimezone(tz))
    ]
    edge = st.builds(
        lambda base, step: _hhmm(base + 15 * step),
        st.sampled_from(jump),
        st.sampled_from(range(-4, 5)),
    )
    # Mostly edges near the jump, the rarer case a plain random draw misses.
    edges = st.one_of(edge, edge, wall_times)
    quiet = QuietHours(start=draw(edges), end=draw(edges))
    # Mostly within two hours of the jump, where a wrong end shows; sampled in
    # steps, as plain integers would cluster at the jump itself.
    near = st.builds(
        lambda minutes, seconds: minutes * 60 + seconds,
        st.sampled_from(range(-120, 121, 5)),
        st.integers(0, 299),
    )
    seconds = st.one_of(near, near, st.integers(-26 * 3600, 26 * 3600))
    now = at + timedelta(seconds=draw(seconds))
    return now, quiet, zone


cases = st.one_of(st.tuples(instants, windows, zones), dst_cases(), dst_cases())


def _quiet_at(instant: datetime, quiet: QuietHours, zone: str) -> bool:
    """The specification: the user's clock then reads a time in [start, end)."""
    wall = instant.astimezone(ZoneInfo(zone)).time()
    start, end = time.fromisoformat(quiet.start), time.fromisoformat(quiet.end)
    if start == end:
        return False
    if start < end:
        return start <= wall < end
    return wall >= start or wall < end


@given(case=cases)
def test_window_end_exists_exactly_inside_quiet_hours(case: Case) -> None:
    """An end comes back when now is quiet, and None when it is not."""
    now, quiet, zone = case
    end = quiet_window_end(now, quiet, zone)
    assert (end is not None) == _quiet_at(now, quiet, zone)


@given(case=cases)
def test_deferral_is_later_but_within_a_day_and_an_hour(case: Case) -> None:
    """until is after now and at most 25 hours on, unless a DST gap joins windows."""
    now, quiet, zone = case
    end = quiet_window_end(now, quiet, zone)
    if end is None:
        return
    assert end.tzinfo is UTC
    start_at, end_at = time.fromisoformat(quiet.start), time.fromisoformat(quiet.end)
    awake = (
        start_at.hour * 60 + start_at.minute - end_at.hour * 60 - end_at.minute
    ) % (24 * 60)
    # When the clock jumps over the whole non-quiet part of a day (an hour at most
    # in ZONES), two nights join: the user's clock never reads a time outside.
    limit = timedelta(hours=25 if awake > 60 else 49)
    assert now < end <= now + limit


@settings(max_examples=300)  # DST edge cases are a few percent of draws
@given(case=cases)
def test_every_instant_before_the_end_is_quiet_and_the_end_is_not(case: Case) -> None:
    """[now, until) is all quiet hours; until itself is not."""
    now, quiet, zone = case
    end = quiet_window_end(now, quiet, zone)
    if end is None:
        return
    probes = [now, end - timedelta(microseconds=1), end - timedelta(seconds=1)]
    probe = now
    while probe < end:
        probes.append(probe)
        probe += timedelta(minutes=7)
    for instant in probes:
        if now <= instant < end:
            assert _quiet_at(instant, quiet, zone), instant
    assert not _quiet_at(end, quiet, zone)


@settings(max_examples=300)  # DST edge cases are a few percent of draws
@given(case=cases)
def test_window_ends_at_its_end_time_or_at_a_clock_change(case: Case) -> None:
    """At until the clock reads the end time, unless a DST change skipped past it."""
    now, quiet, zone = case
    end = quiet_window_end(now, quiet, zone)
    if end is None:
        return
    tz = ZoneInfo(zone)
    local = end.astimezone(tz)
    if local.time() == time.fromisoformat(quiet.end):
        return
    before = (end - timedelta(seconds=1)).astimezone(tz)
    # Otherwise until is a transition instant...
    assert before.utcoffset() != local.utcoffset()
    wall_before, wall_at = before.replace(tzinfo=None), local.replace(tzinfo=None)
    end_walls = [
        datetime.combine(day, time.fromisoformat(quiet.end))
        for day in {before.date(), local.date()}  # a gap may straddle midnight
    ]
    # ...where the end time fell in the gap (the first instant after it), or the
    # clock fell back to a time outside the window.
    skipped = any(wall_before < end_wall < wall_at for end_wall in end_walls)
    fell_back = wall_at < wall_before
    assert skipped or fell_back


# --- decide: properties ----------------------------------------------------------

type_names = st.sampled_from(["order_shipped", "campaign", "password_reset", "other"])
UNKNOWN_ZONE = "Not/AZone"


def _stored_prefs(**fields: Any) -> Preferences:
    """Preferences as the stage reads them: an unknown zone can only come from
    a record that skipped validation."""
    if fields.get("timezone") == UNKNOWN_ZONE:
        return _unchecked_prefs(**fields)
    return _prefs(**fields)


preferences = st.builds(
    _stored_prefs,
    user_id=st.just("u_991"),
    enabled=st.booleans(),
    channels=st.dictionaries(st.sampled_from(CHANNELS), st.booleans()),
    types=st.dictionaries(
        st.sampled_from(
            ["order_shipped", "orders", "campaign", "marketing", "security", "general"]
        ),
        st.booleans(),
    ),
    marketing=st.booleans(),
    quiet_hours=st.none() | windows,
    timezone=st.none() | st.sampled_from([*ZONES, UNKNOWN_ZONE]),
)
profiles = st.none() | st.builds(
    UserProfile, user_id=st.just("u_991"), timezone=st.none() | zones
)
offsets: st.SearchStrategy[tzinfo] = st.one_of(
    st.sampled_from([ZoneInfo(zone) for zone in ZONES]),
    st.builds(
        lambda minutes: timezone(timedelta(minutes=minutes)),
        st.integers(-14 * 60, 14 * 60),
    ),
)


@given(
    prefs=preferences,
    profile=profiles,
    type_name=type_names,
    channel=st.sampled_from(CHANNELS),
    now=instants,
)
def test_critical_is_never_held_back_by_preferences(
    prefs: Preferences,
    profile: UserProfile | None,
    type_name: str,
    channel: str,
    now: datetime,
) -> None:
    """No opt-out, marketing flag or quiet hours suppresses or defers critical."""
    request = _request(type=type_name, priority="critical")
    assert decide(request, channel, prefs, profile, CATALOGUE, now) == Verdict(
        "deliver"
    )


@given(
    prefs=preferences,
    profile=profiles,
    type_name=type_names,
    priority=st.sampled_from(PRIORITIES),
    channel=st.sampled_from(CHANNELS),
    now=instants,
    shift=st.integers(-30 * 3600, 30 * 3600),
    offset=offsets,
)
def test_verdict_does_not_depend_on_the_offset_now_is_written_in(
    prefs: Preferences,
    profile: UserProfile | None,
    type_name: str,
    priority: str,
    channel: str,
    now: datetime,
    shift: int,
    offset: tzinfo,
) -> None:
    """The same instant in UTC or any other offset gives the same verdict."""
    moment = now + timedelta(seconds=shift)
    request = _request(
        type=type_name,
        priority=priority,
        schedule_at=moment if shift % 3 == 0 else None,
        expiry_at=moment if shift % 3 == 1 else None,
    )
    in_utc = decide(request, channel, prefs, profile, CATALOGUE, now)
    elsewhere = decide(
        request, channel, prefs, profile, CATALOGUE, now.astimezone(offset)
    )
    assert in_utc == elsewhere
    assert in_utc.until == elsewhere.until
    assert str(in_utc.until) == str(elsewhere.until)


@given(
    prefs=preferences,
    profile=profiles,
    priority=st.sampled_from(["transactional", "promotional"]),
    now=instants,
)
def test_quiet_non_critical_is_deferred_to_the_window_end(
    prefs: Preferences, profile: UserProfile | None, priority: str, now: datetime
) -> None:
    """Whatever passes the opt-outs inside quiet hours waits for the window end."""
    request = _request(priority=priority, type="order_shipped")
    verdict = decide(request, "in_app", prefs, profile, CATALOGUE, now)
    if verdict.outcome == "suppress" or prefs.quiet_hours is None:
        return
    zone = quiet_hours_zone(prefs, profile)
    end = quiet_window_end(now, prefs.quiet_hours, zone)
    if end is None:
        assert verdict == Verdict("deliver")
    else:
        assert verdict == Verdict("defer", "quiet_hours", end)
