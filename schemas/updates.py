"""Validate user-state updates (preferences, profile, devices) from the API."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.fields import (
    invalid,
    optional_bool,
    optional_string,
    require_object,
    required_string,
)
from schemas.records import (
    CHANNELS,
    PLATFORMS,
    DeviceToken,
    Preferences,
    QuietHours,
    UserProfile,
)

# Public: the JSON Schemas reuse these patterns. Checked with fullmatch, since
# `$` alone would let a trailing newline through; [0-9], not \d (any digit).
CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
LOCALE = re.compile(r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
MAX_TOKEN_LENGTH = 4096

PREFERENCE_FIELDS = frozenset(
    {"enabled", "channels", "types", "marketing", "quiet_hours", "timezone", "locale"}
)
PROFILE_FIELDS = frozenset({"email", "phone", "locale", "timezone", "tags"})
DEVICE_FIELDS = frozenset({"token", "platform", "active"})


def validate_preferences(
    body: Any, *, tenant: str, user_id: str, now: datetime
) -> Preferences:
    """A PUT body as the user's complete preferences (absent fields: defaults)."""
    body = require_object(body, PREFERENCE_FIELDS)
    channels = _flags(body, "channels", allowed=frozenset(CHANNELS))
    types = _flags(body, "types", allowed=None)
    quiet = body.get("quiet_hours")
    quiet_hours = None
    if quiet is not None:
        quiet = require_object_field(quiet, "quiet_hours", frozenset({"start", "end"}))
        start = _clock(quiet, "start")
        end = _clock(quiet, "end")
        quiet_hours = QuietHours(start=start, end=end)
    return Preferences(
        user_id=user_id,
        tenant=tenant,
        enabled=optional_bool(body, "enabled", True),
        channels=channels,
        types=types,
        marketing=optional_bool(body, "marketing", True),
        quiet_hours=quiet_hours,
        timezone=_zone(body),
        locale=_locale(body),
        updated_at=now,
    )


def validate_profile(
    body: Any, *, tenant: str, user_id: str, now: datetime
) -> UserProfile:
    """A PUT body as the user's complete profile."""
    body = require_object(body, PROFILE_FIELDS)
    email = optional_string(body, "email")
    if email is not None and not EMAIL.fullmatch(email):
        raise invalid("email", f"not an email address: {email!r}", "invalid_value")
    phone = optional_string(body, "phone")
    if phone is not None and not E164.fullmatch(phone):
        raise invalid("phone", "must be E.164, e.g. +14155550123", "invalid_value")
    tags = body.get("tags", [])
    if not isinstance(tags, list) or not all(
        isinstance(tag, str) and tag for tag in tags
    ):
        raise invalid("tags", "must be a list of non-empty strings", "invalid_type")
    return UserProfile(
        user_id=user_id,
        tenant=tenant,
        email=email,
        phone=phone,
        locale=_locale(body),
        timezone=_zone(body),
        tags=sorted(set(tags)),
        updated_at=now,
    )


def validate_device(
    body: Any, *, tenant: str, user_id: str, now: datetime
) -> DeviceToken:
    """A POST body registering (or refreshing) one push token."""
    body = require_object(body, DEVICE_FIELDS)
    token = required_string(body, "token")
    if len(token) > MAX_TOKEN_LENGTH:
        raise invalid("token", f"longer than {MAX_TOKEN_LENGTH} characters", "too_long")
    platform = required_string(body, "platform")
    if platform not in PLATFORMS:
        raise invalid("platform", f"must be one of {list(PLATFORMS)}", "invalid_value")
    return DeviceToken(
        user_id=user_id,
        token=token,
        platform=platform,
        tenant=tenant,
        active=optional_bool(body, "active", True),
        updated_at=now,
    )


def require_object_field(
    value: Any, name: str, allowed: frozenset[str]
) -> Mapping[str, Any]:
    """A nested object field with no unknown members."""
    if not isinstance(value, Mapping):
        raise invalid(name, "must be a JSON object", "invalid_type")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise invalid(f"{name}.{unknown[0]}", "unknown field", "unknown_field")
    return value


def _flags(
    body: Mapping[str, Any], name: str, *, allowed: frozenset[str] | None
) -> dict[str, bool]:
    value = body.get(name, {})
    if not isinstance(value, Mapping):
        raise invalid(name, "must be an object of name → true/false", "invalid_type")
    for key, flag in value.items():
        if allowed is not None and key not in allowed:
            raise invalid(
                f"{name}.{key}", f"unknown; one of {sorted(allowed)}", "invalid_value"
            )
        if allowed is None and not NAME.fullmatch(key):
            raise invalid(
                f"{name}.{key}", "not a type or category name", "invalid_value"
            )
        if not isinstance(flag, bool):
            raise invalid(f"{name}.{key}", "must be true or false", "invalid_type")
    return dict(value)


def _clock(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not CLOCK.fullmatch(value):
        raise invalid(f"quiet_hours.{name}", "must be HH:MM (24 h)", "invalid_value")
    return value


def _zone(body: Mapping[str, Any]) -> str | None:
    zone = optional_string(body, "timezone")
    if zone is None:
        return None
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: "Europe" is a directory of the zone database, and a long
        # name is too long a path; neither is a zone.
        raise invalid(
            "timezone", f"unknown IANA time zone {zone!r}", "invalid_value"
        ) from None
    return zone


def _locale(body: Mapping[str, Any]) -> str | None:
    locale = optional_string(body, "locale")
    if locale is not None and not LOCALE.fullmatch(locale):
        raise invalid("locale", f"not a locale tag: {locale!r}", "invalid_value")
    return locale
