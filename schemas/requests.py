"""Parse and validate raw notification requests (API bodies or topic values)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from pipeline.errors import InvalidMessage
from schemas.fields import invalid, optional_string, require_object, required_string
from schemas.records import CHANNELS, PRIORITIES, NotificationRequest, Recipient

MAX_KEY_LENGTH = 255
#: Public: the JSON Schema reuses it. Checked with fullmatch (see schemas.updates).
TYPE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
_OPTIONAL_STRINGS = ("tenant", "digest_key", "locale")
_FIELDS = frozenset(
    {
        "idempotency_key",
        "recipient",
        "type",
        "priority",
        "tenant",
        "channels",
        "data",
        "schedule_at",
        "expiry_at",
        "campaign_id",
        "digest_key",
        "locale",
    }
)


def parse_request(raw: bytes) -> NotificationRequest:
    """Decode ``raw`` JSON into a request, or raise ``InvalidMessage`` saying why."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"not valid JSON: {exc}", code="invalid_json") from None
    return validate_request(body)


def validate_request(body: Any) -> NotificationRequest:
    """Check a decoded body field by field; the first fault names its field."""
    body = require_object(body, _FIELDS)
    key = required_string(body, "idempotency_key")
    if len(key) > MAX_KEY_LENGTH:
        raise invalid(
            "idempotency_key", f"longer than {MAX_KEY_LENGTH} characters", "too_long"
        )
    recipient = body.get("recipient")
    if not isinstance(recipient, Mapping):
        raise invalid("recipient", "required object with a user_id", "required")
    user_id = recipient.get("user_id")
    if not isinstance(user_id, str) or not user_id.strip():
        raise invalid("recipient.user_id", "required non-empty string", "required")
    notification_type = required_string(body, "type")
    if not TYPE_PATTERN.fullmatch(notification_type):
        raise invalid(
            "type", "lower-case letters, digits and _ . - only", "invalid_value"
        )
    priority = body.get("priority", "transactional")
    if priority not in PRIORITIES:
        raise invalid("priority", f"must be one of {list(PRIORITIES)}", "invalid_value")
    strings = {name: optional_string(body, name) for name in _OPTIONAL_STRINGS}
    data = body.get("data", {})
    if not isinstance(data, Mapping):
        raise invalid("data", "must be a JSON object", "invalid_type")
    try:
        orjson.dumps(data)
    except TypeError as exc:  # e.g. an integer beyond 64 bits from another decoder
        raise invalid("data", f"cannot be encoded: {exc}", "invalid_value") from None
    schedule_at = _optional_time(body, "schedule_at")
    expiry_at = _optional_time(body, "expiry_at")
    if schedule_at and expiry_at and expiry_at <= schedule_at:
        raise invalid("expiry_at", "must be later than schedule_at", "invalid_value")
    return NotificationRequest(
        idempotency_key=key,
        recipient=Recipient(user_id=user_id),
        type=notification_type,
        priority=priority,
        tenant=strings["tenant"] or "default",
        channels=_optional_channels(body),
        data=dict(data),
        schedule_at=schedule_at,
        expiry_at=expiry_at,
        campaign_id=_optional_campaign(body),
        digest_key=strings["digest_key"],
        locale=strings["locale"],
    )


def _optional_campaign(body: Mapping[str, Any]) -> str | None:
    value = body.get("campaign_id")
    if value is None:
        return None
    # Seed 001's funnel filters on campaign_id = 1042: numbers and strings both work.
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise invalid("campaign_id", "must be a string or an integer", "invalid_type")
    return str(value)


def _optional_channels(body: Mapping[str, Any]) -> list[str] | None:
    channels = body.get("channels")
    if channels is None:
        return None
    if not isinstance(channels, list) or not channels:
        raise invalid("channels", "must be a non-empty list", "invalid_type")
    for channel in channels:
        if channel not in CHANNELS:
            raise invalid(
                "channels",
                f"unknown channel {channel!r}; one of {list(CHANNELS)}",
                "invalid_value",
            )
    if len(set(channels)) != len(channels):
        raise invalid("channels", "lists a channel twice", "invalid_value")
    return list(channels)


def _optional_time(body: Mapping[str, Any], name: str) -> datetime | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(name, "must be an ISO 8601 date-time string", "invalid_type")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(
            name, f"not an ISO 8601 date-time: {value!r}", "invalid_value"
        ) from None
    if moment.tzinfo is None:
        raise invalid(name, "needs a time zone offset (e.g. Z)", "invalid_value")
    return moment
