"""The constrained field types the records are declared with.

Each constraint is written once, here, as a pydantic annotation: it validates,
and the same annotation becomes the JSON Schema keyword (``pattern``,
``enum``, ``maxLength``) in the published schemas and the OpenAPI document.
Patterns are checked by pydantic's Rust regex engine, whose ``$`` matches only
at the very end (no trailing newline slips through) and whose classes are
ASCII where written so ([0-9], not ``\\d``).
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from importlib import resources
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    StringConstraints,
    WithJsonSchema,
)

Priority = Literal["critical", "transactional", "promotional"]
Channel = Literal["push", "email", "sms", "in_app"]
Platform = Literal["apns", "fcm"]
Lane = Literal["critical", "bulk"]
Scope = Literal["notify", "admin"]

PRIORITIES: tuple[str, ...] = get_args(Priority)
CHANNELS: tuple[str, ...] = get_args(Channel)
PLATFORMS: tuple[str, ...] = get_args(Platform)
LANES: tuple[str, ...] = get_args(Lane)
SCOPES: tuple[str, ...] = get_args(Scope)

#: Not empty, and not only white space (``\S`` somewhere).
NOT_BLANK = r"\S"
NonBlank = Annotated[str, StringConstraints(min_length=1, pattern=NOT_BLANK)]

#: One segment of a URL path: not blank, no "/" and no braces (the router
#: matches neither, so such a value can never reach a view).
SEGMENT_PATTERN = r"^[^{}/]*[^{}/\s][^{}/]*$"
PathSegment = Annotated[str, StringConstraints(min_length=1, pattern=SEGMENT_PATTERN)]
#: The whitespace of every regex engine that reads our patterns (Python's,
#: the validator's, JSON Schema tools'), spelt out: their ``\s`` differ.
SPACE = r" \t\n\r\f\v\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
#: A user id in a list (a campaign's audience): a path segment, its
#: whitespace spelt out so every engine agrees on the ids it takes.
LISTED_ID_PATTERN = rf"^[^{{}}/]*[^{{}}/{SPACE}][^{{}}/]*$"
ListedId = Annotated[str, StringConstraints(min_length=1, pattern=LISTED_ID_PATTERN)]

MAX_KEY_LENGTH = 255
IdempotencyKey = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_KEY_LENGTH, pattern=NOT_BLANK)
]

#: A notification type or category name: ``order_shipped``, ``security.login``.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,99}$"
TypeName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]

CLOCK_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
Clock = Annotated[str, StringConstraints(pattern=CLOCK_PATTERN)]

E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
Phone = Annotated[str, StringConstraints(pattern=E164_PATTERN)]

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
Email = Annotated[str, StringConstraints(max_length=320, pattern=EMAIL_PATTERN)]

LOCALE_PATTERN = r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*$"
Locale = Annotated[str, StringConstraints(max_length=35, pattern=LOCALE_PATTERN)]

MAX_TOKEN_LENGTH = 4096
PushToken = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_TOKEN_LENGTH, pattern=NOT_BLANK),
]

#: Every IANA zone of the tzdata package (a pinned dependency), as an enum:
#: the schema says exactly which names the API takes, the same on every host
#: (the system's zone directory may add names such as "localtime").
ZONES = tuple(sorted(resources.files("tzdata").joinpath("zones").read_text().split()))
TimeZone = Annotated[
    str,
    BeforeValidator(lambda value: _known_zone(value)),
    WithJsonSchema({"type": "string", "enum": list(ZONES)}),
]

#: A frequency cap as written: ``<scope>/<period> <limit>`` (pipeline.throttle).
CAP_PATTERN = (
    r"^(marketing|promotional|push|email|sms|in_app)/(minute|hour|day|week|month)"
    r" [0-9]{1,9}$"
)
CapText = Annotated[str, StringConstraints(pattern=CAP_PATTERN)]
#: A token bucket as written: ``<count>/<unit> burst <n>``.
RATE_PATTERN = r"^[1-9][0-9]{0,8}/(second|minute|hour) burst [1-9][0-9]{0,8}$"
RateText = Annotated[str, StringConstraints(pattern=RATE_PATTERN)]

#: What each pattern means, for error messages a person can act on.
PATTERN_HINTS = {
    NOT_BLANK: "must not be empty or blank",
    SEGMENT_PATTERN: "must not be blank nor hold '/', '{' or '}'",
    LISTED_ID_PATTERN: "must not be blank nor hold '/', '{' or '}'",
    NAME_PATTERN: "lower-case letters, digits and _ . - only (at most 100)",
    CLOCK_PATTERN: "must be HH:MM (24 h)",
    E164_PATTERN: "must be E.164, e.g. +14155550123",
    EMAIL_PATTERN: "not an email address",
    LOCALE_PATTERN: "not a locale tag (e.g. en, fr-CA)",
    CAP_PATTERN: "a cap reads <scope>/<period> <limit>, e.g. sms/month 50",
    RATE_PATTERN: "a rate reads <count>/<second|minute|hour> burst <n>",
}


#: RFC 3339 date-time, as JSON Schema's ``format: date-time`` means it:
#: pydantic alone would also read "1795000000" as Unix seconds, a space for
#: the "T", or an instant without seconds.
RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


class NotRfc3339(ValueError):
    """A time that is not RFC 3339 text."""


def _rfc3339(value: Any) -> Any:
    # Parsed here: past a before-validator, strict mode takes no text for a
    # datetime (the JSON-only leniency no longer applies).
    if not isinstance(value, str):
        return value
    if RFC3339.match(value):
        try:
            return datetime.fromisoformat(value.upper())
        except ValueError:  # a 25th hour, a 13th month
            pass
    raise NotRfc3339(
        f"not an RFC 3339 date-time with an offset: {value[:40]!r} "
        "(e.g. 2026-11-21T10:00:00Z)"
    )


#: An instant: RFC 3339 text with an offset (Z or ±HH:MM), never a naive time.
Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


class NotFinite(ValueError):
    """A number JSON cannot carry (NaN, an infinity)."""


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise NotFinite("numbers must be finite (no NaN or Infinity)")
    if isinstance(value, dict):
        for item in value.values():
            _finite(item)
    elif isinstance(value, list):
        for item in value:
            _finite(item)
    return value


#: Free-form JSON data (a request's template data): any object whose numbers
#: are finite, since NaN and infinities would not survive the way out.
Data = Annotated[dict[str, Any], AfterValidator(_finite)]


class UnknownZone(ValueError):
    """A time zone name the IANA database does not have."""


_ZONE_SET = frozenset(ZONES)


def _known_zone(value: Any) -> Any:
    if isinstance(value, str) and value not in _ZONE_SET:
        raise UnknownZone(f"unknown IANA time zone {value[:64]!r}")
    return value


def _campaign_text(value: Any) -> Any:
    # Seed 001's funnel filters on campaign_id = 1042: an integer is taken and
    # kept as its text. A boolean is not an integer here.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


CampaignId = Annotated[
    str,
    BeforeValidator(_campaign_text),
    StringConstraints(min_length=1, max_length=255, pattern=NOT_BLANK),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 255,
                    "pattern": NOT_BLANK,
                },
                {"type": "integer"},
            ]
        }
    ),
]


def unique(values: list[Any]) -> list[Any]:
    """``values`` if no value repeats (the schema's ``uniqueItems``)."""
    if len(set(values)) != len(values):
        raise ValueError("lists a value twice")
    return values


UNIQUE = Field(json_schema_extra={"uniqueItems": True})
