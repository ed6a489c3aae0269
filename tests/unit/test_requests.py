"""The strict door for requests: every fault names its field, nothing else escapes."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.ingest import body_hash
from pipeline.errors import InvalidMessage
from schemas.decode import decode
from schemas.records import CHANNELS, PRIORITIES, NotificationRequest

SEED_000_BODY = {
    "idempotency_key": "order-4412-shipped",
    "recipient": {"user_id": "u_991"},
    "type": "order_shipped",
    "channels": ["push", "email"],
    "data": {"order_id": 4412, "eta": "Tue"},
    "priority": "transactional",
}
CODES = {
    "invalid_json",
    "not_an_object",
    "required",
    "unknown_field",
    "invalid_type",
    "too_long",
    "invalid_value",
}


def parse(body: Any) -> NotificationRequest:
    """Parse a Python body through the byte-level entry point."""
    return decode(NotificationRequest, orjson.dumps(body))


def test_seed_body_parses_as_written() -> None:
    """The API body of the product brief is a valid request, defaults filled in."""
    request = parse(SEED_000_BODY)
    assert request.recipient.user_id == "u_991"
    assert request.channels == ["push", "email"]
    assert request.data == {"order_id": 4412, "eta": "Tue"}
    assert (request.tenant, request.schedule_at, request.campaign_id) == (
        "default",
        None,
        None,
    )
    assert (request.expiry_at, request.digest_key, request.locale) == (None,) * 3


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"idempotency_key": ""}, "idempotency_key", "invalid_value"),
        ({"idempotency_key": " \t"}, "idempotency_key", "invalid_value"),
        ({"idempotency_key": "k" * 256}, "idempotency_key", "too_long"),
        ({"idempotency_key": None}, "idempotency_key", "invalid_type"),
        ({"recipient": "u_991"}, "recipient", "invalid_type"),
        ({"recipient": {}}, "recipient.user_id", "required"),
        ({"recipient": {"user_id": 7}}, "recipient.user_id", "invalid_type"),
        ({"type": "Order Shipped"}, "type", "invalid_value"),
        ({"type": "order_shipped\n"}, "type", "invalid_value"),
        ({"priority": "urgent"}, "priority", "invalid_value"),
        ({"channels": []}, "channels", "invalid_value"),
        ({"channels": "push"}, "channels", "invalid_type"),
        ({"channels": ["fax"]}, "channels.0", "invalid_value"),
        ({"channels": ["sms", "sms"]}, "channels", "invalid_value"),
        ({"data": [1, 2]}, "data", "invalid_type"),
        ({"schedule_at": "tomorrow"}, "schedule_at", "invalid_value"),
        ({"schedule_at": 1_795_000_000}, "schedule_at", "invalid_type"),
        ({"schedule_at": "2026-11-21T10:00:00"}, "schedule_at", "invalid_value"),
        (
            {"schedule_at": "2026-11-21T10:00:00Z", "expiry_at": "2026-11-21T09:00Z"},
            "expiry_at",
            "invalid_value",
        ),
        ({"campaign_id": True}, "campaign_id", "invalid_type"),
        ({"campaign_id": ""}, "campaign_id", "invalid_value"),
        ({"locale": ""}, "locale", "invalid_value"),
        ({"tenant": None}, "tenant", "invalid_type"),
        ({"recipent": {"user_id": "u"}}, "recipent", "unknown_field"),
    ],
)
def test_each_fault_names_its_field(
    change: dict[str, Any], field: str, code: str
) -> None:
    """One wrong field: the error says which, with a stable code."""
    with pytest.raises(InvalidMessage) as raised:
        parse({**SEED_000_BODY, **change})
    assert (raised.value.field, raised.value.code) == (field, code)
    assert raised.value.reason.startswith(field)


@pytest.mark.parametrize("key", ["", " ", "\t\n"])
def test_a_blank_key_says_so(key: str) -> None:
    """An empty or blank idempotency key is refused in words a caller can act on."""
    with pytest.raises(InvalidMessage) as raised:
        parse({**SEED_000_BODY, "idempotency_key": key})
    assert raised.value.reason == "idempotency_key: must not be empty or blank"


def test_integer_campaign_ids_are_kept_as_text() -> None:
    """Seed 001's funnel filters on campaign_id = 1042: an integer is taken."""
    assert parse({**SEED_000_BODY, "campaign_id": 1042}).campaign_id == "1042"


def test_other_recipient_fields_are_ignored() -> None:
    """Producers may say more about the recipient; only user_id is read."""
    request = parse({**SEED_000_BODY, "recipient": {"user_id": "u", "email": "a@b"}})
    assert request.recipient.model_dump() == {"user_id": "u"}


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "invalid_json"),
        (b"{", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[1]", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b"null", "not_an_object"),
        (b"7", "not_an_object"),
    ],
)
def test_non_objects_are_rejected(raw: bytes, code: str) -> None:
    """Anything but a JSON object is an invalid message, not a crash."""
    with pytest.raises(InvalidMessage) as raised:
        decode(NotificationRequest, raw)
    assert (raised.value.code, raised.value.field) == (code, None)


def test_times_are_parsed_with_their_offsets() -> None:
    """schedule_at and expiry_at keep their instants, 'Z' included."""
    request = parse(
        {
            **SEED_000_BODY,
            "schedule_at": "2026-11-21T10:00:00+01:00",
            "expiry_at": "2026-11-21T10:00:00Z",
        }
    )
    assert request.expiry_at is not None and request.schedule_at is not None
    assert request.schedule_at.utcoffset() is not None
    assert (request.expiry_at - request.schedule_at).total_seconds() == 3600


@given(st.binary(max_size=300))
def test_arbitrary_bytes_either_parse_or_raise_invalid(raw: bytes) -> None:
    """No input makes the door raise anything but InvalidMessage."""
    try:
        decode(NotificationRequest, raw)
    except InvalidMessage as exc:
        assert exc.code in CODES and exc.reason


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.dictionaries(
        st.sampled_from(sorted(NotificationRequest.model_fields) + ["recipent"]),
        json_values,
        max_size=8,
    )
)
def test_arbitrary_bodies_either_parse_or_raise_invalid(body: dict[str, Any]) -> None:
    """Any JSON object parses or is refused with a field-naming reason."""
    try:
        parse({**SEED_000_BODY, **body})
    except InvalidMessage as exc:
        assert exc.field and exc.code in CODES
        assert exc.reason.startswith(exc.field)


@given(
    key=st.text(min_size=1, max_size=255).filter(str.strip),
    user=st.text(min_size=1, max_size=40).filter(str.strip),
    priority=st.sampled_from(PRIORITIES),
    channels=st.lists(st.sampled_from(CHANNELS), min_size=1, unique=True),
)
def test_valid_requests_keep_their_values(
    key: str, user: str, priority: str, channels: list[str]
) -> None:
    """Whatever valid values go in come out of the parsed request unchanged."""
    body = {**SEED_000_BODY, "idempotency_key": key, "priority": priority}
    body.update(recipient={"user_id": user}, channels=channels)
    request = parse(body)
    assert (request.idempotency_key, request.recipient.user_id) == (key, user)
    assert (request.priority, request.channels) == (priority, channels)
    assert NotificationRequest.loads(request.dumps()) == request


def test_integers_beyond_64_bits_in_data_round_trip() -> None:
    """A huge integer in data is kept exactly: on the wire, and in the body hash."""
    huge = {"n": 10**30, "nested": [-(2**70)]}
    raw = json.dumps({**SEED_000_BODY, "data": huge}).encode()
    request = decode(NotificationRequest, raw)
    assert request.data == huge
    back = NotificationRequest.loads(request.dumps())
    assert back == request and back.data == huge
    assert json.loads(request.dumps())["data"] == huge
    digest = body_hash(request)
    assert digest == body_hash(back)
    smaller = request.model_copy(update={"data": {**huge, "n": 10**30 - 1}})
    assert body_hash(smaller) != digest


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_numbers_json_cannot_carry_are_refused(number: bytes) -> None:
    """What is not a finite JSON number is refused, not rewritten as null."""
    raw = b'{"idempotency_key":"k","recipient":{"user_id":"u"},"type":"t",'
    refusal = None
    try:
        decode(NotificationRequest, raw + b'"data":{"n":' + number + b"}}")
    except InvalidMessage as exc:
        refusal = exc
    assert refusal is not None
