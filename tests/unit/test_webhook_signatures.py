"""Provider webhook signatures (Twilio, SendGrid) and parsing them into receipts."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import orjson
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.api.delivery import receipt_event
from pipeline.ids import notification_id, parse_notification_id
from pipeline.providers.base import Receipt, ReceiptKind
from pipeline.providers.sendgrid import parse_events, verify_event_signature
from pipeline.providers.twilio import (
    compute_signature,
    parse_status_callback,
    validate_signature,
)

# The example of Twilio's webhook security documentation and helper libraries.
TWILIO_TOKEN = "12345"
TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
TWILIO_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="

# The published test vector of SendGrid's Signed Event Webhook helpers.
SENDGRID_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1"
    "flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
)
SENDGRID_SIGNATURE = (
    "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPI"
    "qHh89M15TluLtEZtM="
)
SENDGRID_TIMESTAMP = "1600112502"
SENDGRID_PAYLOAD = (
    json.dumps(
        [
            {
                "email": "hello@world.com",
                "event": "dropped",
                "reason": "Bounced Address",
                "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
                "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-"
                "756b745b58-kmzbl-18-5F5FC76C-9.0",
                "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
                "timestamp": 1600112492,
            }
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    + "\r\n"
).encode()


def test_twilio_signature_of_the_documented_example() -> None:
    assert compute_signature(TWILIO_TOKEN, TWILIO_URL, TWILIO_PARAMS) == (
        TWILIO_SIGNATURE
    )
    assert validate_signature(TWILIO_TOKEN, TWILIO_URL, TWILIO_PARAMS, TWILIO_SIGNATURE)


def test_twilio_signature_accepts_either_spelling_of_the_port() -> None:
    with_port = TWILIO_URL.replace(".com", ".com:1234")
    assert validate_signature(TWILIO_TOKEN, with_port, TWILIO_PARAMS, TWILIO_SIGNATURE)
    # Signed with the default port spelled out (Twilio's library test values).
    assert validate_signature(
        TWILIO_TOKEN, TWILIO_URL, TWILIO_PARAMS, "kvajT1Ptam85bY51eRf/AJRuM3w="
    )
    assert validate_signature(
        TWILIO_TOKEN,
        TWILIO_URL.replace("https", "http"),
        TWILIO_PARAMS,
        "0ZXoZLH/DfblKGATFgpif+LLRf4=",
    )


@pytest.mark.parametrize(
    ("token", "url", "params", "signature"),
    [
        ("54321", TWILIO_URL, TWILIO_PARAMS, TWILIO_SIGNATURE),
        (TWILIO_TOKEN, TWILIO_URL + "&baz=3", TWILIO_PARAMS, TWILIO_SIGNATURE),
        (TWILIO_TOKEN, TWILIO_URL, {**TWILIO_PARAMS, "Digits": "9"}, TWILIO_SIGNATURE),
        (TWILIO_TOKEN, TWILIO_URL, {**TWILIO_PARAMS, "X": "1"}, TWILIO_SIGNATURE),
        (TWILIO_TOKEN, TWILIO_URL, TWILIO_PARAMS, TWILIO_SIGNATURE[:-2] + "x="),
        (TWILIO_TOKEN, TWILIO_URL, TWILIO_PARAMS, ""),
    ],
)
def test_twilio_signature_refuses_tampering(
    token: str, url: str, params: dict[str, str], signature: str
) -> None:
    assert not validate_signature(token, url, params, signature)


def test_sendgrid_signature_of_the_published_vector() -> None:
    assert verify_event_signature(
        SENDGRID_KEY, SENDGRID_PAYLOAD, SENDGRID_SIGNATURE, SENDGRID_TIMESTAMP
    )
    assert not verify_event_signature(
        SENDGRID_KEY, SENDGRID_PAYLOAD.rstrip(), SENDGRID_SIGNATURE, SENDGRID_TIMESTAMP
    )


def _signed(key: ec.EllipticCurvePrivateKey, payload: bytes, timestamp: str) -> str:
    signature = key.sign(timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode()


def _public(key: ec.EllipticCurvePrivateKey, encoding: serialization.Encoding) -> str:
    raw = key.public_key().public_bytes(
        encoding, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if encoding is serialization.Encoding.PEM:
        return raw.decode()
    return base64.b64encode(raw).decode()


def test_sendgrid_signature_round_trip_and_tampering() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    payload = b'[{"event":"delivered","attempt_key":"n1:email:u1"}]\r\n'
    timestamp = "1700000000"
    signature = _signed(key, payload, timestamp)
    for public_key in (
        _public(key, serialization.Encoding.DER),
        _public(key, serialization.Encoding.PEM),
    ):
        assert verify_event_signature(public_key, payload, signature, timestamp)
        assert not verify_event_signature(
            public_key, payload.replace(b"delivered", b"bounce"), signature, timestamp
        )
        assert not verify_event_signature(public_key, payload, signature, "1700000001")
        assert not verify_event_signature(public_key, payload, "not base64!", timestamp)
    other = _public(ec.generate_private_key(ec.SECP256R1()), serialization.Encoding.DER)
    assert not verify_event_signature(other, payload, signature, timestamp)


def test_sendgrid_key_that_is_not_p256_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="verification key"):
        verify_event_signature("bm90IGEga2V5", b"[]", SENDGRID_SIGNATURE, "1")
    p384 = _public(ec.generate_private_key(ec.SECP384R1()), serialization.Encoding.DER)
    with pytest.raises(ValueError, match="P-256"):
        verify_event_signature(p384, b"[]", SENDGRID_SIGNATURE, "1")


def _event(event: str, **fields: object) -> dict[str, object]:
    return {
        "email": "alice@example.org",
        "timestamp": 1700000000,
        "event": event,
        "sg_event_id": f"id-{event}-{fields.get('type', '')}",
        "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filter-1",
        "attempt_key": "n1:email:alice",
        "notification_id": "n1",
        "message_id": "m-1",
        **fields,
    }


def test_sendgrid_events_become_receipts() -> None:
    events = [
        _event("processed"),
        _event("delivered", response="250 OK"),
        _event("open"),
        _event("click", url="https://example.org/orders/4412"),
        _event("bounce", type="bounce", status="5.1.1", reason="550 no such user"),
        _event("bounce", type="blocked", status="5.7.1", reason="550 spam"),
        _event("dropped", reason="Bounced Address"),
        _event("dropped", reason="Spam Content"),
        {"event": "delivered", "email": "x@example.org", "timestamp": 1700000000},
        "not an event",
    ]
    receipts = parse_events(orjson.dumps(events))
    assert [(r.kind, r.code) for r in receipts] == [
        (ReceiptKind.DELIVERED, ""),
        (ReceiptKind.OPENED, ""),
        (ReceiptKind.CLICKED, ""),
        (ReceiptKind.BOUNCED, "bounce"),
        (ReceiptKind.FAILED, "blocked"),
        (ReceiptKind.BOUNCED, "dropped"),
        (ReceiptKind.FAILED, "dropped"),
    ]
    delivered, _, clicked, bounced = receipts[:4]
    assert delivered.attempt_key == "n1:email:alice"
    assert delivered.target == "alice@example.org"
    assert delivered.provider == "sendgrid"
    assert delivered.occurred_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert delivered.provider_event_id == "id-delivered-"
    assert clicked.detail == "https://example.org/orders/4412"
    assert bounced.detail == "5.1.1 550 no such user"


def test_sendgrid_events_that_are_not_an_array_are_refused() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        parse_events(b"delivered")
    with pytest.raises(ValueError, match="array"):
        parse_events(b'{"event": "delivered"}')
    assert parse_events(b"[]") == []


CALLBACK = "https://hooks.example.org/twilio/status?attempt_key=n1%3Asms%3Au1"
RECEIVED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _status(status: str, **extra: str) -> dict[str, str]:
    return {
        "AccountSid": "AC" + "0" * 32,
        "MessageSid": "SM" + "1" * 32,
        "MessageStatus": status,
        "To": "+14155550100",
        "From": "+14155550199",
        **extra,
    }


def test_twilio_delivered_callback() -> None:
    receipt = parse_status_callback(
        _status("delivered"), CALLBACK, received_at=RECEIVED
    )
    assert receipt is not None
    assert receipt.kind is ReceiptKind.DELIVERED
    assert receipt.attempt_key == "n1:sms:u1"
    assert receipt.target == "+14155550100"
    assert receipt.occurred_at == RECEIVED
    assert receipt.provider_event_id == "SM" + "1" * 32 + ":delivered"


@pytest.mark.parametrize(
    ("status", "code", "detail"),
    [
        ("undelivered", "30007", "Message filtered by the carrier"),
        ("failed", "30003", "Unreachable destination handset"),
        ("undelivered", "30005", "Unknown destination handset"),
    ],
)
def test_twilio_failed_callbacks_carry_the_error_code(
    status: str, code: str, detail: str
) -> None:
    params = _status(status, ErrorCode=code)
    receipt = parse_status_callback(params, CALLBACK, received_at=RECEIVED)
    assert receipt is not None
    assert (receipt.kind, receipt.code, receipt.detail) == (
        ReceiptKind.FAILED,
        code,
        detail,
    )


@pytest.mark.parametrize("status", ["queued", "accepted", "sending", "sent"])
def test_twilio_intermediate_callbacks_are_not_receipts(status: str) -> None:
    assert parse_status_callback(_status(status), CALLBACK) is None


def test_twilio_callback_without_attempt_key_is_not_ours() -> None:
    url = "https://hooks.example.org/twilio/status"
    assert parse_status_callback(_status("delivered"), url) is None


@pytest.mark.parametrize(
    ("attempt_key", "known"),
    [
        (f"{notification_id('acme', 'k1', 'u1', 'bulk')}:sms:+14155550123", True),
        (f"{notification_id('acme', 'k1', 'u1', 'critical')}:email:a@b.co", True),
        ("n_0123456789ab:sms:+14155550123", False),  # not an id this build makes
        ("somebody-elses-id:sms:+14155550123", False),
        ("n_c0000000000000000000000000000000:sms", False),  # no target part
    ],
)
def test_a_receipt_finds_its_notification_only_through_a_real_id(
    attempt_key: str, known: bool
) -> None:
    """Its lane and partition come from the id; anything else is not ours."""
    receipt = Receipt(
        provider="twilio",
        kind=ReceiptKind.DELIVERED,
        attempt_key=attempt_key,
        target="+14155550123",
        occurred_at=datetime(2026, 11, 21, 10, tzinfo=UTC),
        provider_event_id="SM1",
    )
    event = receipt_event(receipt, datetime(2026, 11, 21, 10, 1, tzinfo=UTC))
    assert (event is not None) == known
    if event is not None:
        nid, channel, _ = attempt_key.split(":")
        assert (event.notification_id, event.channel) == (nid, channel)
        assert event.event_type == "delivered"
        assert parse_notification_id(nid) is not None
