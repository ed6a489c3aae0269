"""User-state validators: every bad value is a field-naming refusal, never a crash."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.errors import InvalidMessage
from schemas.updates import validate_device, validate_preferences, validate_profile

NOW = datetime(2026, 11, 21, tzinfo=UTC)
WHO = {"tenant": "t1", "user_id": "u1", "now": NOW}


def test_seed_preferences_shape_is_accepted() -> None:
    """Seed 002's body, extended fields defaulted."""
    prefs = validate_preferences(
        {
            "channels": {"email": True, "sms": False, "push": True},
            "quiet_hours": {"start": "22:00", "end": "08:00"},
        },
        **WHO,
    )
    assert prefs.channels == {"email": True, "sms": False, "push": True}
    assert prefs.quiet_hours is not None and prefs.quiet_hours.end == "08:00"
    assert (prefs.tenant, prefs.user_id, prefs.updated_at) == ("t1", "u1", NOW)
    assert prefs.enabled and prefs.marketing


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channels": {"fax": True}}, "channels.fax"),
        ({"channels": {"sms": "no"}}, "channels.sms"),
        ({"types": {"Bad Name": False}}, "types.Bad Name"),
        ({"quiet_hours": {"start": "22:00"}}, "quiet_hours.end"),
        ({"quiet_hours": {"start": "08:00\n", "end": "09:00"}}, "quiet_hours.start"),
        ({"quiet_hours": {"start": "٠٨:00", "end": "09:00"}}, "quiet_hours.start"),
        ({"quiet_hours": {"start": "1:00", "end": "2:00", "x": 1}}, "quiet_hours.x"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "Europe"}, "timezone"),  # a directory of the zone database
        ({"timezone": "A" * 300}, "timezone"),
        ({"enabled": "yes"}, "enabled"),
        ({"locale": "English"}, "locale"),
        ({"nope": 1}, "nope"),
    ],
)
def test_bad_preferences_name_the_field(body: dict[str, Any], field: str) -> None:
    """Each fault is an InvalidMessage naming its field."""
    with pytest.raises(InvalidMessage) as raised:
        validate_preferences(body, **WHO)
    assert raised.value.field == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-address"}, "email"),
        ({"email": "a@b.co\n"}, "email"),
        ({"phone": "0612345678"}, "phone"),
        ({"tags": ["ok", ""]}, "tags"),
    ],
)
def test_bad_profiles_name_the_field(body: dict[str, Any], field: str) -> None:
    """Contacts must be usable: an email address, an E.164 number."""
    with pytest.raises(InvalidMessage) as raised:
        validate_profile(body, **WHO)
    assert raised.value.field == field


def test_devices_need_a_known_platform_and_a_bounded_token() -> None:
    """apns or fcm; a token longer than 4 KiB is refused."""
    device = validate_device({"token": "t", "platform": "apns"}, **WHO)
    assert device.active and device.platform == "apns"
    with pytest.raises(InvalidMessage) as raised:
        validate_device({"token": "t", "platform": "webpush"}, **WHO)
    assert raised.value.field == "platform"
    with pytest.raises(InvalidMessage) as raised:
        validate_device({"token": "t" * 4097, "platform": "fcm"}, **WHO)
    assert raised.value.code == "too_long"
