"""What the push senders put on the wire: APNs payloads and headers, FCM messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.providers import apns, fcm
from pipeline.providers.base import (
    Content,
    FailureKind,
    Outgoing,
    ProviderFailure,
    message_id_for,
)

NOW = datetime(2031, 5, 4, 12, 0, tzinfo=UTC)


def outgoing(**overrides: Any) -> Outgoing:
    """One push with sensible defaults."""
    attempt_key = "n-1:push:device-1"
    fields: dict[str, Any] = {
        "attempt_key": attempt_key,
        "message_id": message_id_for(attempt_key),
        "notification_id": "n-1",
        "tenant": "acme",
        "user_id": "u-1",
        "type": "order_shipped",
        "priority": "transactional",
        "channel": "push",
        "to": "ab" * 32,
        "content": Content(body="Order 4412 has shipped", title="On its way"),
        "platform": "apns",
    }
    fields.update(overrides)
    return Outgoing(**fields)


def with_body(body: str, **overrides: Any) -> Outgoing:
    """A push whose alert body is ``body``."""
    return outgoing(content=Content(body=body, title="T"), **overrides)


def alert_overhead() -> int:
    """Bytes of the default alert payload around an empty body."""
    return len(apns.build_payload(with_body("")).body)


# --- APNs payload ---------------------------------------------------------------


def test_alert_payload_carries_title_body_sound_data_and_notification_id() -> None:
    message = outgoing(
        content=Content(body="Shipped", title="Order", data={"order": 4412})
    )
    payload = apns.build_payload(message)
    assert orjson.loads(payload.body) == {
        "aps": {"alert": {"title": "Order", "body": "Shipped"}, "sound": "default"},
        "order": 4412,
        "notification_id": "n-1",
    }
    assert payload.push_type == "alert"


def test_alert_without_title_has_only_a_body() -> None:
    payload = apns.build_payload(outgoing(content=Content(body="Hi")))
    assert orjson.loads(payload.body)["aps"]["alert"] == {"body": "Hi"}


def test_custom_data_cannot_replace_aps_or_the_notification_id() -> None:
    data = {"aps": {"badge": 99}, "notification_id": "forged", "deep_link": "/o/1"}
    payload = apns.build_payload(outgoing(content=Content(body="b", data=data)))
    document = orjson.loads(payload.body)
    assert document["aps"] == {"alert": {"body": "b"}, "sound": "default"}
    assert document["notification_id"] == "n-1"
    assert document["deep_link"] == "/o/1"


@pytest.mark.parametrize(
    ("priority", "expected"),
    [("critical", 10), ("transactional", 10), ("promotional", 5)],
)
def test_alert_priority_follows_the_notification_priority(
    priority: str, expected: int
) -> None:
    assert apns.build_payload(outgoing(priority=priority)).priority == expected


def test_payload_of_exactly_4096_bytes_is_still_an_alert() -> None:
    body = "x" * (apns.MAX_PAYLOAD_BYTES - alert_overhead())
    payload = apns.build_payload(with_body(body, priority="critical"))
    assert len(payload.body) == 4096
    assert (payload.push_type, payload.priority) == ("alert", 10)


def test_one_byte_over_4096_becomes_a_fetch_notification() -> None:
    body = "x" * (apns.MAX_PAYLOAD_BYTES - alert_overhead() + 1)
    payload = apns.build_payload(with_body(body, priority="critical"))
    assert orjson.loads(payload.body) == {
        "aps": {"content-available": 1},
        "notification_id": "n-1",
        "fetch": True,
    }
    assert (payload.push_type, payload.priority) == ("background", 5)


def test_the_limit_counts_utf8_bytes_not_characters() -> None:
    # 1,400 euro signs: 1,400 characters but 4,200 bytes.
    body = "€" * 1400
    assert len(body) < apns.MAX_PAYLOAD_BYTES < len(body.encode())
    assert apns.build_payload(with_body(body)).push_type == "background"
    fits = "€" * ((apns.MAX_PAYLOAD_BYTES - alert_overhead()) // 3)
    payload = apns.build_payload(with_body(fits))
    assert payload.push_type == "alert"
    assert orjson.loads(payload.body)["aps"]["alert"]["body"] == fits


def test_a_fetch_notification_that_cannot_fit_is_payload_too_large() -> None:
    message = with_body("x" * 5000, notification_id="n" * 5000)
    with pytest.raises(ProviderFailure) as failure:
        apns.build_payload(message)
    assert failure.value.kind is FailureKind.PAYLOAD_TOO_LARGE
    assert failure.value.provider == "apns"


def test_content_that_is_not_json_is_rejected() -> None:
    message = outgoing(content=Content(body="b", data={"blob": object()}))
    with pytest.raises(ProviderFailure) as failure:
        apns.build_payload(message)
    assert failure.value.kind is FailureKind.REJECTED


@given(st.text(max_size=3000), st.sampled_from(["critical", "promotional"]))
def test_every_payload_fits_and_an_alert_keeps_its_text(
    body: str, priority: str
) -> None:
    payload = apns.build_payload(with_body(body, priority=priority))
    assert len(payload.body) <= apns.MAX_PAYLOAD_BYTES
    document = orjson.loads(payload.body)
    if payload.push_type == "alert":
        assert document["aps"]["alert"]["body"] == body
    else:
        assert document["fetch"] is True
        assert payload.priority == apns.LOW_PRIORITY
    full = orjson.dumps(
        {
            "aps": {"alert": {"title": "T", "body": body}, "sound": "default"},
            "notification_id": "n-1",
        }
    )
    assert (payload.push_type == "alert") == (len(full) <= apns.MAX_PAYLOAD_BYTES)


# --- APNs collapse id and headers ----------------------------------------------


@pytest.mark.parametrize(
    ("collapse_id", "expected"),
    [
        ("order-4412", "order-4412"),
        ("a" * 100, "a" * 64),
        ("é" * 40, "é" * 32),  # 2-byte characters: exactly 64 bytes
        ("€" * 30, "€" * 21),  # 3-byte characters: 63 bytes, never half of one
        ("🙂" * 20, "🙂" * 16),  # 4-byte characters
    ],
)
def test_collapse_id_is_cut_to_64_bytes_on_a_character_boundary(
    collapse_id: str, expected: str
) -> None:
    assert apns.cut_collapse_id(collapse_id) == expected


@given(st.text(max_size=100))
def test_a_cut_collapse_id_is_the_longest_prefix_within_64_bytes(text: str) -> None:
    cut = apns.cut_collapse_id(text)
    assert text.startswith(cut)
    assert len(cut.encode()) <= 64
    if cut != text:
        assert len(text[: len(cut) + 1].encode()) > 64


def test_headers_carry_id_topic_type_priority_expiry_and_collapse_id() -> None:
    expires = datetime(2031, 5, 4, 13, 0, 30, tzinfo=UTC)
    message = outgoing(collapse_id="digest:" + "€" * 30, expires_at=expires)
    headers = apns.build_headers(message, apns.build_payload(message), "com.acme.app")
    assert headers == {
        "apns-id": message.message_id,
        "apns-topic": "com.acme.app",
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-expiration": str(int(expires.timestamp())),
        "apns-collapse-id": "digest:" + "€" * 19,
    }


def test_headers_without_expiry_or_collapse_id() -> None:
    message = outgoing(priority="promotional")
    headers = apns.build_headers(message, apns.build_payload(message), "com.acme.app")
    assert headers["apns-expiration"] == "0"
    assert headers["apns-priority"] == "5"
    assert "apns-collapse-id" not in headers


def test_fetch_notification_headers_are_background_priority_5() -> None:
    message = with_body("x" * 5000, priority="critical")
    headers = apns.build_headers(message, apns.build_payload(message), "com.acme.app")
    assert (headers["apns-push-type"], headers["apns-priority"]) == ("background", "5")


@pytest.mark.parametrize(
    ("status", "reason", "kind"),
    [
        (400, "BadDeviceToken", FailureKind.INVALID_TOKEN),
        (400, "DeviceTokenNotForTopic", FailureKind.INVALID_TOKEN),
        (410, "Unregistered", FailureKind.UNREGISTERED),
        (410, "ExpiredToken", FailureKind.UNREGISTERED),
        (413, "PayloadTooLarge", FailureKind.PAYLOAD_TOO_LARGE),
        (429, "TooManyRequests", FailureKind.RATE_LIMITED),
        (500, "InternalServerError", FailureKind.UNAVAILABLE),
        (503, "ServiceUnavailable", FailureKind.UNAVAILABLE),
        (403, "ExpiredProviderToken", FailureKind.AUTH),
        (403, "InvalidProviderToken", FailureKind.AUTH),
        (400, "BadPriority", FailureKind.REJECTED),
        (400, "BadCollapseId", FailureKind.REJECTED),
        (404, "BadPath", FailureKind.REJECTED),
    ],
)
def test_apns_answers_are_classified(
    status: int, reason: str, kind: FailureKind
) -> None:
    assert apns.classify(status, reason) is kind


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("120", 120.0),
        ("Sun, 04 May 2031 12:01:30 GMT", 90.0),
        ("Sun, 04 May 2031 11:00:00 GMT", 0.0),
        ("soon", None),
    ],
)
def test_retry_after_is_read_as_seconds_or_a_date(
    value: str | None, expected: float | None
) -> None:
    assert apns.retry_after_seconds(value, NOW) == expected


# --- FCM message --------------------------------------------------------------


def test_fcm_message_has_token_notification_string_data_and_android_options() -> None:
    message = outgoing(
        platform="fcm",
        priority="critical",
        to="fcm-token",
        collapse_id="order_shipped",
        expires_at=NOW + timedelta(minutes=5, seconds=0.2),
        content=Content(
            body="Shipped",
            title="Order",
            data={"order": 4412, "paid": True, "items": ["a"], "note": "x"},
        ),
    )
    assert fcm.build_message(message, NOW) == {
        "message": {
            "token": "fcm-token",
            "notification": {"title": "Order", "body": "Shipped"},
            "data": {
                "order": "4412",
                "paid": "true",
                "items": '["a"]',
                "note": "x",
                "notification_id": "n-1",
                "message_id": message.message_id,
            },
            "android": {
                "priority": "HIGH",
                "ttl": "301s",
                "collapse_key": "order_shipped",
            },
        }
    }


@pytest.mark.parametrize(
    ("priority", "expected"),
    [("critical", "HIGH"), ("transactional", "HIGH"), ("promotional", "NORMAL")],
)
def test_fcm_android_priority(priority: str, expected: str) -> None:
    body = fcm.build_message(outgoing(priority=priority), NOW)
    assert body["message"]["android"]["priority"] == expected


def test_fcm_message_without_title_expiry_or_collapse_key() -> None:
    body = fcm.build_message(outgoing(content=Content(body="Hi")), NOW)
    assert body["message"]["notification"] == {"body": "Hi"}
    assert body["message"]["android"] == {"priority": "HIGH"}


def test_fcm_ttl_of_an_already_expired_message_is_zero() -> None:
    body = fcm.build_message(outgoing(expires_at=NOW - timedelta(hours=1)), NOW)
    assert body["message"]["android"]["ttl"] == "0s"


def test_fcm_ids_in_data_cannot_be_forged_by_custom_data() -> None:
    content = Content(body="b", data={"message_id": "forged", "notification_id": "x"})
    message = outgoing(content=content)
    data = fcm.build_message(message, NOW)["message"]["data"]
    assert data["message_id"] == message.message_id
    assert data["notification_id"] == "n-1"


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=10),
        st.one_of(
            st.text(), st.integers(), st.booleans(), st.none(), st.lists(st.integers())
        ),
    )
)
def test_every_fcm_data_value_is_a_string(data: dict[str, Any]) -> None:
    body = fcm.build_message(outgoing(content=Content(body="b", data=data)), NOW)
    values = body["message"]["data"].values()
    assert all(isinstance(value, str) for value in values)


def test_fcm_payload_size_counts_data_and_text_in_utf8_bytes() -> None:
    content = Content(body="€€", title="T", data={"k": "vv"})
    body = fcm.build_message(outgoing(content=content), NOW)
    message_id = body["message"]["data"]["message_id"]
    expected = (
        len("k") + len("vv") + len("notification_id") + len("n-1")
        + len("message_id") + len(message_id) + len("T") + len("€€".encode())
    )  # fmt: skip
    assert fcm.payload_bytes(body) == expected


def fcm_error(
    status: str, error_code: str | None = None, fields: tuple[str, ...] = ()
) -> dict[str, Any]:
    """An FCM v1 error object."""
    details: list[dict[str, Any]] = []
    if error_code:
        details.append({"@type": fcm.FCM_ERROR_TYPE, "errorCode": error_code})
    if fields:
        violations = [{"field": field, "description": "bad"} for field in fields]
        details.append({"@type": fcm.BAD_REQUEST_TYPE, "fieldViolations": violations})
    return {"code": 0, "message": "m", "status": status, "details": details}


@pytest.mark.parametrize(
    ("status", "error", "kind", "code"),
    [
        (404, fcm_error("NOT_FOUND", "UNREGISTERED"), "unregistered", "UNREGISTERED"),
        (
            400,
            fcm_error("INVALID_ARGUMENT", "INVALID_ARGUMENT"),
            "invalid_token",
            "INVALID_ARGUMENT",
        ),
        (
            403,
            fcm_error("PERMISSION_DENIED", "SENDER_ID_MISMATCH"),
            "invalid_token",
            "SENDER_ID_MISMATCH",
        ),
        (
            429,
            fcm_error("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
            "rate_limited",
            "QUOTA_EXCEEDED",
        ),
        (429, fcm_error("RESOURCE_EXHAUSTED"), "rate_limited", "RESOURCE_EXHAUSTED"),
        (503, fcm_error("UNAVAILABLE", "UNAVAILABLE"), "unavailable", "UNAVAILABLE"),
        (500, fcm_error("INTERNAL", "INTERNAL"), "unavailable", "INTERNAL"),
        (502, {}, "unavailable", "HTTP 502"),
        (
            401,
            fcm_error("UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"),
            "auth",
            "THIRD_PARTY_AUTH_ERROR",
        ),
        (401, fcm_error("UNAUTHENTICATED"), "auth", "UNAUTHENTICATED"),
        (403, fcm_error("PERMISSION_DENIED"), "auth", "PERMISSION_DENIED"),
        # A malformed request names its field: the token is not to blame.
        (
            400,
            fcm_error("INVALID_ARGUMENT", fields=("message.data[0].value",)),
            "rejected",
            "INVALID_ARGUMENT",
        ),
        (
            400,
            fcm_error(
                "INVALID_ARGUMENT", "INVALID_ARGUMENT", fields=("message.android.ttl",)
            ),
            "rejected",
            "INVALID_ARGUMENT",
        ),
        (
            400,
            fcm_error("INVALID_ARGUMENT", fields=("message.token",)),
            "invalid_token",
            "INVALID_ARGUMENT",
        ),
    ],
)
def test_fcm_errors_are_classified(
    status: int, error: dict[str, Any], kind: str, code: str
) -> None:
    assert fcm.classify(status, error) == (FailureKind(kind), code)


def test_service_account_without_a_key_is_refused() -> None:
    with pytest.raises(ValueError, match="private_key"):
        fcm.load_service_account(
            {"project_id": "p", "client_email": "e", "token_uri": "http://t"}
        )


def test_integers_beyond_64_bits_are_still_json() -> None:
    big = 2**70
    apns_document = orjson.loads(
        apns.build_payload(outgoing(content=Content(body="b", data={"n": big}))).body
    )
    assert apns_document["n"] == big
    body = fcm.build_message(
        outgoing(content=Content(body="b", data={"n": [big]})), NOW
    )
    assert body["message"]["data"]["n"] == f"[{big}]"
