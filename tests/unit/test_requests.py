"""Request parsing and validation: every fault names its field, nothing else escapes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import InvalidMessage
from schemas.records import CHANNELS, PRIORITIES
from schemas.requests import parse_request

SEED_000_BODY = {
    "idempotency_key": "order-4412-shipped",
    "recipient": {"user_id": "u_991"},
    "type": "order_shipped",
    "channels": ["push", "email"],
    "data": {"order_id": 4412, "eta": "Tue"},
    "priority": "transactional",
}


def parse(body: Any) -> Any:
    """Parse a Python body through the byte-level entry point."""
    return parse_request(orjson.dumps(body))


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


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"idempotency_key": ""}, "idempotency_key", "required"),
        ({"idempotency_key": "k" * 256}, "idempotency_key", "too_long"),
        ({"recipient": "u_991"}, "recipient", "required"),
        ({"recipient": {"user_id": 7}}, "recipient.user_id", "required"),
        ({"type": "Order Shipped"}, "type", "invalid_value"),
        ({"priority": "urgent"}, "priority", "invalid_value"),
        ({"channels": []}, "channels", "invalid_type"),
        ({"channels": ["fax"]}, "channels", "invalid_value"),
        ({"channels": ["sms", "sms"]}, "channels", "invalid_value"),
        ({"data": [1, 2]}, "data", "invalid_type"),
        ({"schedule_at": "tomorrow"}, "schedule_at", "invalid_value"),
        ({"schedule_at": "2026-11-21T10:00:00"}, "schedule_at", "invalid_value"),
        (
            {"schedule_at": "2026-11-21T10:00:00Z", "expiry_at": "2026-11-21T09:00Z"},
            "expiry_at",
            "invalid_value",
        ),
        ({"campaign_id": True}, "campaign_id", "invalid_type"),
        ({"locale": ""}, "locale", "invalid_type"),
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


@pytest.mark.parametrize("raw", [b"", b"{", b"[1]", b'"text"', b"null", b"\xff\xfe"])
def test_non_objects_are_rejected(raw: bytes) -> None:
    """Anything but a JSON object is an invalid message, not a crash."""
    with pytest.raises(InvalidMessage):
        parse_request(raw)


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
    assert (request.expiry_at - request.schedule_at).total_seconds() == 3600


@given(st.binary(max_size=300))
def test_arbitrary_bytes_either_parse_or_raise_invalid(raw: bytes) -> None:
    """No input makes the parser raise anything but InvalidMessage."""
    try:
        parse_request(raw)
    except InvalidMessage as exc:
        assert exc.code and exc.reason


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.dictionaries(
        st.sampled_from(sorted(SEED_000_BODY) + ["tenant", "locale", "campaign_id"]),
        json_values,
        max_size=8,
    )
)
def test_arbitrary_bodies_either_parse_or_raise_invalid(body: dict[str, Any]) -> None:
    """Any JSON object parses or is refused with a field-naming reason."""
    try:
        parse({**SEED_000_BODY, **body})
    except InvalidMessage as exc:
        assert exc.field is not None


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


def test_data_that_cannot_be_encoded_is_refused() -> None:
    """A body decoded elsewhere (the API) with an unencodable value is refused."""
    from schemas.requests import validate_request

    with pytest.raises(InvalidMessage) as raised:
        validate_request({**SEED_000_BODY, "data": {"n": 10**30}})
    assert raised.value.field == "data"
