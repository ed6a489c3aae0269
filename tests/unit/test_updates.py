"""User-state bodies through the strict door: every bad value names its field."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.errors import InvalidMessage
from schemas.decode import decode
from schemas.records import DeviceRegistration, PreferencesUpdate, ProfileUpdate


def refusal(model: type[Any], body: Any) -> InvalidMessage:
    """The door's refusal of ``body`` as ``model``; fails if it is admitted."""
    with pytest.raises(InvalidMessage) as raised:
        decode(model, orjson.dumps(body))
    return raised.value


def test_seed_preferences_shape_is_accepted() -> None:
    """Seed 002's body, extended fields defaulted."""
    prefs = decode(
        PreferencesUpdate,
        orjson.dumps(
            {
                "channels": {"email": True, "sms": False, "push": True},
                "quiet_hours": {"start": "22:00", "end": "08:00"},
            }
        ),
    )
    assert prefs.channels == {"email": True, "sms": False, "push": True}
    assert prefs.quiet_hours is not None and prefs.quiet_hours.end == "08:00"
    assert (prefs.types, prefs.timezone, prefs.locale) == ({}, None, None)
    assert prefs.enabled and prefs.marketing


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"channels": {"fax": True}}, "channels.fax", "invalid_value"),
        ({"channels": {"sms": "no"}}, "channels.sms", "invalid_type"),
        ({"types": {"Bad Name": False}}, "types.Bad Name", "invalid_value"),
        ({"quiet_hours": {"start": "22:00"}}, "quiet_hours.end", "required"),
        (
            {"quiet_hours": {"start": "08:00\n", "end": "09:00"}},
            "quiet_hours.start",
            "invalid_value",
        ),
        (
            {"quiet_hours": {"start": "٠٨:00", "end": "09:00"}},
            "quiet_hours.start",
            "invalid_value",
        ),
        (
            {"quiet_hours": {"start": "1:00", "end": "2:00"}},
            "quiet_hours.start",
            "invalid_value",
        ),
        (
            {"quiet_hours": {"start": "22:00", "end": "08:00", "x": 1}},
            "quiet_hours.x",
            "unknown_field",
        ),
        ({"timezone": "Mars/Olympus"}, "timezone", "invalid_value"),
        ({"timezone": "Europe"}, "timezone", "invalid_value"),  # a directory
        ({"timezone": "A" * 300}, "timezone", "invalid_value"),
        ({"timezone": 1}, "timezone", "invalid_type"),
        ({"enabled": "yes"}, "enabled", "invalid_type"),
        ({"locale": "English"}, "locale", "invalid_value"),
        ({"nope": 1}, "nope", "unknown_field"),
        ({"user_id": "u1"}, "user_id", "unknown_field"),  # the path names the user
    ],
)
def test_bad_preferences_name_the_field(
    body: dict[str, Any], field: str, code: str
) -> None:
    """Each fault is an InvalidMessage naming its field."""
    fault = refusal(PreferencesUpdate, body)
    assert (fault.field, fault.code) == (field, code)


def test_an_unknown_zone_is_named_in_the_reason() -> None:
    """The caller learns which zone was not found, cut to a readable length."""
    mars = refusal(PreferencesUpdate, {"timezone": "Mars/Olympus"}).reason
    assert mars == "timezone: unknown IANA time zone 'Mars/Olympus'"
    long = refusal(PreferencesUpdate, {"timezone": "A" * 300}).reason
    assert "A" * 64 in long and "A" * 65 not in long


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"email": "not-an-address"}, "email", "invalid_value"),
        ({"email": "a@b.co\n"}, "email", "invalid_value"),
        ({"email": "a" * 310 + "@example.org"}, "email", "too_long"),
        ({"phone": "0612345678"}, "phone", "invalid_value"),
        ({"phone": 33612345678}, "phone", "invalid_type"),
        ({"tags": ["ok", ""]}, "tags.1", "invalid_value"),
        ({"tags": "vip"}, "tags", "invalid_type"),
        ({"timezone": "Mars/Olympus"}, "timezone", "invalid_value"),
    ],
)
def test_bad_profiles_name_the_field(
    body: dict[str, Any], field: str, code: str
) -> None:
    """Contacts must be usable: an email address, an E.164 number."""
    fault = refusal(ProfileUpdate, body)
    assert (fault.field, fault.code) == (field, code)


def test_profile_tags_come_back_sorted_and_once() -> None:
    """Tags are a set: the stored profile lists each once, in order."""
    profile = decode(ProfileUpdate, orjson.dumps({"tags": ["vip", "beta", "vip"]}))
    assert profile.tags == ["beta", "vip"]


def test_devices_need_a_known_platform_and_a_bounded_token() -> None:
    """apns or fcm; a token longer than 4 KiB is refused."""
    device = decode(
        DeviceRegistration, orjson.dumps({"token": "t", "platform": "apns"})
    )
    assert device.active and device.platform == "apns"
    fault = refusal(DeviceRegistration, {"token": "t", "platform": "webpush"})
    assert (fault.field, fault.code) == ("platform", "invalid_value")
    fault = refusal(DeviceRegistration, {"token": "t" * 4097, "platform": "fcm"})
    assert (fault.field, fault.code) == ("token", "too_long")
    fault = refusal(DeviceRegistration, {"token": " ", "platform": "fcm"})
    assert (fault.field, fault.code) == ("token", "invalid_value")
    fault = refusal(DeviceRegistration, {"token": "t"})
    assert (fault.field, fault.code) == ("platform", "required")
