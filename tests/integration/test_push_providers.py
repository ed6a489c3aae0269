"""Push senders against the APNs and FCM emulators on loopback, over real sockets."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import jwt
import pytest

from pipeline.clock import FrozenClock
from pipeline.emulators.apns import ApnsEmulator, ProviderKey
from pipeline.emulators.ca import TestCA
from pipeline.emulators.fcm import FCM_SCOPE, FcmEmulator, ServiceAccountKey
from pipeline.providers.apns import FETCH_DETAIL, ApnsSender, client_ssl_context
from pipeline.providers.base import (
    Content,
    FailureKind,
    Outgoing,
    ProviderFailure,
    Sent,
    message_id_for,
)
from pipeline.providers.fcm import JWT_BEARER_GRANT, FcmSender

pytestmark = pytest.mark.integration

BUNDLE_ID = "com.acme.shop"
START = datetime(2031, 5, 4, 12, 0, tzinfo=UTC)


def apns_token() -> str:
    """A device token shaped like APNs's: 32 bytes in hex."""
    return secrets.token_hex(32)


def fcm_token() -> str:
    """A registration token shaped like FCM's."""
    return f"{secrets.token_urlsafe(16)}:APA91b{secrets.token_urlsafe(100)}"


def push(to: str, notification_id: str = "n-1", **overrides: Any) -> Outgoing:
    """One push to ``to``."""
    attempt_key = f"{notification_id}:push:{to[:12]}"
    fields: dict[str, Any] = {
        "attempt_key": attempt_key,
        "message_id": message_id_for(attempt_key),
        "notification_id": notification_id,
        "tenant": "acme",
        "user_id": "u-1",
        "type": "order_shipped",
        "priority": "transactional",
        "channel": "push",
        "to": to,
        "content": Content(body="Order 4412 has shipped", title="On its way"),
    }
    fields.update(overrides)
    return Outgoing(**fields)


async def failure_of(
    sender: ApnsSender | FcmSender, message: Outgoing
) -> ProviderFailure:
    """The ProviderFailure a send raises (the test fails if it delivers)."""
    with pytest.raises(ProviderFailure) as raised:
        await sender.send(message)
    return raised.value


# --- APNs fixtures -----------------------------------------------------------------


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    """A certificate authority for this test only."""
    return TestCA.create(tmp_path / "ca")


@pytest.fixture
def apns_key() -> ProviderKey:
    """A fresh APNs signing key."""
    return ProviderKey.generate()


@pytest.fixture
def apns_clock() -> FrozenClock:
    """The emulator's idea of now."""
    return FrozenClock(START)


@pytest.fixture
def sender_clock() -> FrozenClock:
    """The sender's idea of now (apart from the emulator's, to test expiry)."""
    return FrozenClock(START)


@pytest.fixture
async def apns(
    ca: TestCA, apns_key: ProviderKey, apns_clock: FrozenClock
) -> AsyncIterator[ApnsEmulator]:
    """An APNs emulator with a certificate from the test CA."""
    cert, key = ca.issue_server_cert()
    emulator = ApnsEmulator.for_key(
        apns_key, BUNDLE_ID, cert, key, clock=apns_clock.now
    )
    await emulator.start()
    yield emulator
    await emulator.stop()


def apns_sender_for(
    emulator: ApnsEmulator,
    key: ProviderKey,
    *,
    ca_file: Path | None,
    clock: FrozenClock,
    timeout: float = 10.0,
) -> ApnsSender:
    """A sender aimed at ``emulator``."""
    return ApnsSender(
        team_id=key.team_id,
        key_id=key.key_id,
        signing_key=key.private_key_pem,
        bundle_id=BUNDLE_ID,
        base_url=emulator.url,
        timeout=timeout,
        ca_file=ca_file,
        clock=clock.now,
    )


@pytest.fixture
async def apns_sender(
    apns: ApnsEmulator, apns_key: ProviderKey, ca: TestCA, sender_clock: FrozenClock
) -> AsyncIterator[ApnsSender]:
    """A started sender that trusts the test CA."""
    sender = apns_sender_for(apns, apns_key, ca_file=ca.ca_path, clock=sender_clock)
    await sender.start()
    yield sender
    await sender.stop()


# --- APNs ----------------------------------------------------------------------------


async def test_apns_delivers_with_the_right_id_headers_and_payload(
    apns: ApnsEmulator, apns_sender: ApnsSender
) -> None:
    token = apns_token()
    expires = START + timedelta(hours=2)
    message = push(
        token, priority="critical", collapse_id="order-4412", expires_at=expires
    )
    sent = await apns_sender.send(message)

    assert sent.provider == "apns" and sent.detail == ""
    assert sent.provider_message_id and sent.provider_message_id != message.message_id
    [call] = apns.calls.to(token)
    assert call.message_id == message.message_id
    headers = call.payload["headers"]
    assert headers["apns-id"] == message.message_id
    assert headers["apns-topic"] == BUNDLE_ID
    assert headers["apns-push-type"] == "alert"
    assert headers["apns-priority"] == "10"
    assert headers["apns-expiration"] == str(int(expires.timestamp()))
    assert headers["apns-collapse-id"] == "order-4412"
    assert call.payload["payload"] == {
        "aps": {
            "alert": {"title": "On its way", "body": "Order 4412 has shipped"},
            "sound": "default",
        },
        "notification_id": "n-1",
    }


async def test_apns_collapse_id_in_any_language_is_cut_and_delivered(
    apns: ApnsEmulator, apns_sender: ApnsSender
) -> None:
    token = apns_token()
    await apns_sender.send(push(token, collapse_id="commande-expédiée-" + "€" * 30))
    [call] = apns.calls.to(token)
    collapse_id = call.payload["headers"]["apns-collapse-id"]
    # 20 bytes of prefix, then as many 3-byte euro signs as fit in 64: 14.
    assert collapse_id == "commande-expédiée-" + "€" * 14
    assert len(collapse_id.encode()) == 62


async def test_apns_oversized_payload_goes_out_as_a_fetch_notification(
    apns: ApnsEmulator, apns_sender: ApnsSender
) -> None:
    token = apns_token()
    message = push(token, priority="critical", content=Content(body="é" * 3000))
    sent = await apns_sender.send(message)

    assert sent.detail == FETCH_DETAIL
    [call] = apns.calls.to(token)
    assert call.payload["headers"]["apns-push-type"] == "background"
    assert call.payload["headers"]["apns-priority"] == "5"
    assert call.payload["payload"] == {
        "aps": {"content-available": 1},
        "notification_id": "n-1",
        "fetch": True,
    }


async def test_apns_same_message_twice_is_counted_as_a_duplicate(
    apns: ApnsEmulator, apns_sender: ApnsSender
) -> None:
    token = apns_token()
    await apns_sender.send(push(token))
    await apns_sender.send(push(token))
    await apns_sender.send(push(token, notification_id="n-2"))
    assert apns.calls.summary() == {"attempts": 3, "delivered": 3, "duplicates": 1}


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("BadDeviceToken", FailureKind.INVALID_TOKEN),
        ("DeviceTokenNotForTopic", FailureKind.INVALID_TOKEN),
        ("Unregistered", FailureKind.UNREGISTERED),
        ("TooManyRequests", FailureKind.RATE_LIMITED),
        ("InternalServerError", FailureKind.UNAVAILABLE),
        ("ServiceUnavailable", FailureKind.UNAVAILABLE),
    ],
)
async def test_apns_fault_gives_its_failure_kind(
    apns: ApnsEmulator, apns_sender: ApnsSender, fault: str, kind: FailureKind
) -> None:
    token = apns_token()
    apns.faults.fail_targets[token] = fault
    failure = await failure_of(apns_sender, push(token))
    assert (failure.kind, failure.code, failure.provider) == (kind, fault, "apns")
    assert apns.calls.summary() == {"attempts": 1, "delivered": 0, "duplicates": 0}
    # The fault is per token: another device still gets its push.
    await apns_sender.send(push(apns_token()))
    assert apns.calls.delivered == 1


async def test_apns_rate_limit_has_no_retry_after_because_apns_sends_none(
    apns: ApnsEmulator, apns_sender: ApnsSender
) -> None:
    apns.faults.update(error="TooManyRequests", error_rate=1.0)
    failure = await failure_of(apns_sender, push(apns_token()))
    assert failure.kind is FailureKind.RATE_LIMITED
    assert failure.retry_after is None


async def test_apns_token_is_reused_for_50_minutes_then_minted_again(
    apns: ApnsEmulator,
    apns_sender: ApnsSender,
    apns_clock: FrozenClock,
    sender_clock: FrozenClock,
) -> None:
    token = apns_token()
    await apns_sender.send(push(token))
    for clock in (apns_clock, sender_clock):
        clock.advance(timedelta(minutes=49))
    await apns_sender.send(push(token, notification_id="n-2"))
    for clock in (apns_clock, sender_clock):
        clock.advance(timedelta(minutes=2))
    await apns_sender.send(push(token, notification_id="n-3"))

    issued = [call.payload["token_iat"] for call in apns.calls.to(token)]
    start = int(START.timestamp())
    assert issued == [start, start, start + 51 * 60]
    assert apns.calls.attempts == 3


async def test_apns_expired_provider_token_is_refreshed_and_the_call_retried(
    apns: ApnsEmulator,
    apns_sender: ApnsSender,
    apns_clock: FrozenClock,
    sender_clock: FrozenClock,
) -> None:
    token = apns_token()
    await apns_sender.send(push(token))
    # The sender's cached token is 10 minutes old by its clock, but APNs sees
    # it 65 minutes old: it answers ExpiredProviderToken.
    sender_clock.advance(timedelta(minutes=10))
    apns_clock.advance(timedelta(minutes=65))
    await apns_sender.send(push(token, notification_id="n-2"))

    issued = [call.payload["token_iat"] for call in apns.calls.to(token)]
    assert issued == [int(START.timestamp()), int(START.timestamp()) + 600]
    assert apns.calls.summary() == {"attempts": 3, "delivered": 2, "duplicates": 0}


async def test_apns_token_still_expired_after_refresh_is_an_auth_failure(
    apns: ApnsEmulator, apns_sender: ApnsSender, apns_clock: FrozenClock
) -> None:
    apns_clock.advance(timedelta(hours=2))  # the sender's clock is far behind
    failure = await failure_of(apns_sender, push(apns_token()))
    assert (failure.kind, failure.code) == (FailureKind.AUTH, "ExpiredProviderToken")
    assert apns.calls.attempts == 2  # one refresh, one retry, no more


async def test_apns_token_signed_by_another_key_is_an_auth_failure(
    apns: ApnsEmulator, apns_key: ProviderKey, ca: TestCA, sender_clock: FrozenClock
) -> None:
    other = ProviderKey.generate(team_id=apns_key.team_id)
    impostor = ProviderKey(
        apns_key.team_id, apns_key.key_id, other.private_key_pem, other.public_key_pem
    )
    sender = apns_sender_for(apns, impostor, ca_file=ca.ca_path, clock=sender_clock)
    await sender.start()
    try:
        failure = await failure_of(sender, push(apns_token()))
    finally:
        await sender.stop()
    assert (failure.kind, failure.code) == (FailureKind.AUTH, "InvalidProviderToken")


async def test_apns_timeout_with_a_short_sender_timeout(
    apns: ApnsEmulator, apns_key: ProviderKey, ca: TestCA, sender_clock: FrozenClock
) -> None:
    token = apns_token()
    apns.faults.update(timeout_hold=30.0)
    apns.faults.fail_targets[token] = "timeout"
    sender = apns_sender_for(
        apns, apns_key, ca_file=ca.ca_path, clock=sender_clock, timeout=0.5
    )
    await sender.start()
    started = time.monotonic()
    try:
        failure = await failure_of(sender, push(token))
    finally:
        await sender.stop()
    assert failure.kind is FailureKind.TIMEOUT
    assert time.monotonic() - started < 10  # the sender's limit, not the hold
    assert apns.calls.delivered == 0


async def test_apns_sender_without_the_test_ca_refuses_the_server(
    apns: ApnsEmulator, apns_key: ProviderKey, sender_clock: FrozenClock
) -> None:
    sender = apns_sender_for(apns, apns_key, ca_file=None, clock=sender_clock)
    await sender.start()
    try:
        failure = await failure_of(sender, push(apns_token()))
    finally:
        await sender.stop()
    assert (failure.kind, failure.code) == (FailureKind.UNAVAILABLE, "TLS")
    assert apns.calls.attempts == 0  # the request never reached the server


async def test_apns_certificate_for_another_host_is_refused(
    ca: TestCA, apns_key: ProviderKey, sender_clock: FrozenClock
) -> None:
    cert, key = ca.issue_server_cert(hosts=("push.example.invalid",))
    emulator = ApnsEmulator.for_key(apns_key, BUNDLE_ID, cert, key)
    await emulator.start()
    sender = apns_sender_for(emulator, apns_key, ca_file=ca.ca_path, clock=sender_clock)
    await sender.start()
    try:
        failure = await failure_of(sender, push(apns_token()))
    finally:
        await sender.stop()
        await emulator.stop()
    assert (failure.kind, failure.code) == (FailureKind.UNAVAILABLE, "TLS")
    assert "mismatch" in failure.detail
    assert emulator.calls.attempts == 0


async def test_apns_connection_refused_is_unavailable(
    apns: ApnsEmulator, apns_sender: ApnsSender
) -> None:
    await apns.stop()
    failure = await failure_of(apns_sender, push(apns_token()))
    assert failure.kind is FailureKind.UNAVAILABLE


async def test_apns_unknown_fault_name_fails_loudly(apns: ApnsEmulator) -> None:
    token = apns_token()
    apns.faults.fail_targets[token] = "Gone"
    with pytest.raises(ValueError, match="unknown APNs fault 'Gone'"):
        apns.pick_fault(token)


# --- the APNs emulator checks requests the way APNs does ------------------------------


@pytest.fixture
async def raw_apns(ca: TestCA) -> AsyncIterator[httpx.AsyncClient]:
    """A bare HTTP/2 client trusting the test CA, to send what a bad client would."""
    verify = client_ssl_context(ca.ca_path)
    async with httpx.AsyncClient(http2=True, verify=verify) as client:
        yield client


def provider_jwt(key: ProviderKey, issued: datetime, **header: str) -> str:
    """A provider token signed with ``key``."""
    return jwt.encode(
        {"iss": key.team_id, "iat": int(issued.timestamp())},
        key.private_key_pem,
        algorithm="ES256",
        headers={"kid": key.key_id, **header},
    )


GOOD_BODY = b'{"aps":{"alert":"hi"}}'


@pytest.mark.parametrize(
    ("change", "status", "reason"),
    [
        ({"apns-topic": "com.other.app"}, 400, "DeviceTokenNotForTopic"),
        ({"apns-topic": None}, 400, "MissingTopic"),
        ({"apns-push-type": "banner"}, 400, "InvalidPushType"),
        ({"apns-push-type": "background", "apns-priority": "10"}, 400, "BadPriority"),
        ({"apns-priority": "7"}, 400, "BadPriority"),
        ({"apns-id": "not-a-uuid"}, 400, "BadMessageId"),
        ({"apns-expiration": "tomorrow"}, 400, "BadExpirationDate"),
        ({"apns-collapse-id": "é" * 33}, 400, "BadCollapseId"),
        ({"authorization": None}, 403, "MissingProviderToken"),
        ({"kid": "WRONGKEYID"}, 403, "InvalidProviderToken"),
        ({"token_age": timedelta(minutes=61)}, 403, "ExpiredProviderToken"),
        ({"device": "zz" * 32}, 400, "BadDeviceToken"),
        ({"device": ""}, 400, "MissingDeviceToken"),
        ({"body": b""}, 400, "PayloadEmpty"),
        ({"body": b'{"alert":"no aps"}'}, 400, "PayloadEmpty"),
        ({"body": b'{"aps":{},"x":"' + b"a" * 4090 + b'"}'}, 413, "PayloadTooLarge"),
        ({"method": "GET"}, 405, "MethodNotAllowed"),
        ({"path": "/3/devices/abc"}, 404, "BadPath"),
    ],
)
async def test_apns_emulator_refuses_what_apns_refuses(
    apns: ApnsEmulator,
    apns_key: ProviderKey,
    raw_apns: httpx.AsyncClient,
    change: dict[str, Any],
    status: int,
    reason: str,
) -> None:
    issued = START - change.pop("token_age", timedelta(0))
    header = {"kid": change.pop("kid")} if "kid" in change else {}
    headers: dict[str, str | None] = {
        "authorization": f"bearer {provider_jwt(apns_key, issued, **header)}",
        "apns-topic": BUNDLE_ID,
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-id": "0c92347d-a2e1-5aac-bc2f-c1fd30cf1b4c",
    }
    device = change.pop("device", apns_token())
    path = change.pop("path", f"/3/device/{device}")
    method = change.pop("method", "POST")
    body = change.pop("body", GOOD_BODY)
    headers.update(change)
    response = await raw_apns.request(
        method,
        apns.url + path,
        content=body,
        headers={k.encode(): v.encode() for k, v in headers.items() if v},
    )
    assert response.http_version == "HTTP/2"
    assert (response.status_code, response.json()) == (status, {"reason": reason})
    assert apns.calls.delivered == 0


async def test_apns_emulator_unregistered_answer_carries_a_timestamp(
    apns: ApnsEmulator, apns_key: ProviderKey, raw_apns: httpx.AsyncClient
) -> None:
    device = apns_token()
    apns.faults.fail_targets[device] = "Unregistered"
    response = await raw_apns.post(
        f"{apns.url}/3/device/{device}",
        content=GOOD_BODY,
        headers={
            "authorization": f"bearer {provider_jwt(apns_key, START)}",
            "apns-topic": BUNDLE_ID,
            "apns-push-type": "alert",
        },
    )
    assert response.status_code == 410
    assert response.json() == {
        "reason": "Unregistered",
        "timestamp": int(START.timestamp() * 1000),
    }


async def test_apns_emulator_refuses_a_new_token_every_request(
    apns: ApnsEmulator,
    apns_key: ProviderKey,
    raw_apns: httpx.AsyncClient,
    apns_clock: FrozenClock,
) -> None:
    def headers(issued: datetime) -> dict[str, str]:
        return {
            "authorization": f"bearer {provider_jwt(apns_key, issued)}",
            "apns-topic": BUNDLE_ID,
            "apns-push-type": "alert",
        }

    url = f"{apns.url}/3/device/{apns_token()}"
    first = await raw_apns.post(url, content=GOOD_BODY, headers=headers(START))
    apns_clock.advance(timedelta(minutes=5))
    again = await raw_apns.post(
        url, content=GOOD_BODY, headers=headers(START + timedelta(minutes=5))
    )
    assert first.status_code == 200
    assert (again.status_code, again.json()) == (
        429,
        {"reason": "TooManyProviderTokenUpdates"},
    )


async def test_apns_emulator_speaks_only_http2(ca: TestCA, apns: ApnsEmulator) -> None:
    verify = client_ssl_context(ca.ca_path)
    async with httpx.AsyncClient(http2=False, verify=verify) as client:
        response = await client.post(f"{apns.url}/3/device/{apns_token()}")
    assert response.status_code == 505


# --- FCM fixtures ----------------------------------------------------------------------


@pytest.fixture
def fcm_key() -> ServiceAccountKey:
    """A fresh service account."""
    return ServiceAccountKey.generate("acme-shop")


@pytest.fixture
def clock() -> FrozenClock:
    """One clock for the FCM emulator and sender: token lifetimes line up."""
    return FrozenClock(START)


@pytest.fixture
async def fcm(
    fcm_key: ServiceAccountKey, clock: FrozenClock
) -> AsyncIterator[FcmEmulator]:
    """An FCM emulator for the service account."""
    emulator = FcmEmulator.for_key(fcm_key, clock=clock.now)
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def fcm_sender(
    fcm: FcmEmulator, fcm_key: ServiceAccountKey, clock: FrozenClock, tmp_path: Path
) -> AsyncIterator[FcmSender]:
    """A started sender reading its service account from a JSON file."""
    account = fcm_key.write(tmp_path / "service-account.json", fcm.token_uri)
    sender = FcmSender(service_account=account, base_url=fcm.url, clock=clock.now)
    await sender.start()
    yield sender
    await sender.stop()


# --- FCM -------------------------------------------------------------------------------


async def test_fcm_delivers_string_data_and_android_options(
    fcm: FcmEmulator, fcm_sender: FcmSender
) -> None:
    token = fcm_token()
    message = push(
        token,
        priority="critical",
        collapse_id="order_shipped",
        expires_at=START + timedelta(minutes=10),
        content=Content(body="Shipped", title="Order", data={"order": 4412}),
    )
    sent = await fcm_sender.send(message)

    assert sent.provider_message_id is not None
    assert sent.provider_message_id.startswith("projects/acme-shop/messages/")
    [call] = fcm.calls.to(token)
    assert call.message_id == message.message_id
    assert call.payload == {
        "token": token,
        "notification": {"title": "Order", "body": "Shipped"},
        "data": {
            "order": "4412",
            "notification_id": "n-1",
            "message_id": message.message_id,
        },
        "android": {"priority": "HIGH", "ttl": "600s", "collapse_key": "order_shipped"},
    }


async def test_fcm_same_message_twice_is_counted_as_a_duplicate(
    fcm: FcmEmulator, fcm_sender: FcmSender
) -> None:
    token = fcm_token()
    first: Sent = await fcm_sender.send(push(token))
    second: Sent = await fcm_sender.send(push(token))
    assert first.provider_message_id != second.provider_message_id
    assert fcm.calls.summary() == {"attempts": 2, "delivered": 2, "duplicates": 1}


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("UNREGISTERED", FailureKind.UNREGISTERED),
        ("INVALID_ARGUMENT", FailureKind.INVALID_TOKEN),
        ("SENDER_ID_MISMATCH", FailureKind.INVALID_TOKEN),
        ("QUOTA_EXCEEDED", FailureKind.RATE_LIMITED),
        ("UNAVAILABLE", FailureKind.UNAVAILABLE),
        ("INTERNAL", FailureKind.UNAVAILABLE),
        ("THIRD_PARTY_AUTH_ERROR", FailureKind.AUTH),
    ],
)
async def test_fcm_fault_gives_its_failure_kind(
    fcm: FcmEmulator, fcm_sender: FcmSender, fault: str, kind: FailureKind
) -> None:
    token = fcm_token()
    fcm.faults.fail_targets[token] = fault
    failure = await failure_of(fcm_sender, push(token))
    assert (failure.kind, failure.code, failure.provider) == (kind, fault, "fcm")
    assert fcm.calls.summary() == {"attempts": 1, "delivered": 0, "duplicates": 0}
    assert fcm.tokens_issued == 1  # THIRD_PARTY_AUTH_ERROR is no reason to refresh


async def test_fcm_quota_exceeded_carries_retry_after(
    fcm: FcmEmulator, fcm_sender: FcmSender
) -> None:
    fcm.faults.update(error="QUOTA_EXCEEDED", error_rate=1.0, retry_after=7)
    failure = await failure_of(fcm_sender, push(fcm_token()))
    assert (failure.kind, failure.retry_after) == (FailureKind.RATE_LIMITED, 7.0)


async def test_fcm_access_token_is_cached_until_a_minute_before_expiry(
    fcm: FcmEmulator, fcm_sender: FcmSender, clock: FrozenClock
) -> None:
    token = fcm_token()
    await fcm_sender.send(push(token))
    await fcm_sender.send(push(token, notification_id="n-2"))
    assert fcm.tokens_issued == 1
    # Google says expires_in 3599: refresh from 3539 s on.
    clock.advance(timedelta(seconds=3538))
    await fcm_sender.send(push(token, notification_id="n-3"))
    assert fcm.tokens_issued == 1
    clock.advance(timedelta(seconds=1))
    await fcm_sender.send(push(token, notification_id="n-4"))
    assert fcm.tokens_issued == 2
    assert fcm.calls.summary() == {"attempts": 4, "delivered": 4, "duplicates": 0}


async def test_fcm_calls_starting_together_share_one_token_fetch(
    fcm: FcmEmulator, fcm_sender: FcmSender
) -> None:
    """A batch of calls at start-up asks the token endpoint once, not per call."""
    tokens = [fcm_token() for _ in range(20)]
    await asyncio.gather(
        *(
            fcm_sender.send(push(t, notification_id=f"n-{n}"))
            for n, t in enumerate(tokens)
        )
    )
    assert fcm.tokens_issued == 1
    assert fcm.calls.summary() == {"attempts": 20, "delivered": 20, "duplicates": 0}


async def test_fcm_revoked_access_token_is_refreshed_once_on_401(
    fcm: FcmEmulator, fcm_sender: FcmSender
) -> None:
    token = fcm_token()
    await fcm_sender.send(push(token))
    fcm.revoke_tokens()
    await fcm_sender.send(push(token, notification_id="n-2"))
    assert fcm.tokens_issued == 2
    assert fcm.calls.summary() == {"attempts": 3, "delivered": 2, "duplicates": 0}


async def test_fcm_service_account_with_a_wrong_key_is_an_auth_failure(
    fcm: FcmEmulator, fcm_key: ServiceAccountKey, clock: FrozenClock
) -> None:
    stranger = ServiceAccountKey.generate("acme-shop")
    account = {**fcm_key.info(fcm.token_uri), "private_key": stranger.private_key_pem}
    sender = FcmSender(service_account=account, base_url=fcm.url, clock=clock.now)
    await sender.start()
    try:
        failure = await failure_of(sender, push(fcm_token()))
    finally:
        await sender.stop()
    assert (failure.kind, failure.code) == (FailureKind.AUTH, "invalid_grant")
    assert fcm.calls.attempts == 0


async def test_fcm_timeout_with_a_short_sender_timeout(
    fcm: FcmEmulator, fcm_key: ServiceAccountKey, clock: FrozenClock
) -> None:
    token = fcm_token()
    fcm.faults.update(timeout_hold=30.0)
    fcm.faults.fail_targets[token] = "timeout"
    sender = FcmSender(
        service_account=fcm_key.info(fcm.token_uri),
        base_url=fcm.url,
        timeout=0.5,
        clock=clock.now,
    )
    await sender.start()
    started = time.monotonic()
    try:
        failure = await failure_of(sender, push(token))
    finally:
        await sender.stop()
    assert failure.kind is FailureKind.TIMEOUT
    assert time.monotonic() - started < 10
    assert fcm.calls.delivered == 0


async def test_fcm_oversized_message_is_refused_before_sending(
    fcm: FcmEmulator, fcm_sender: FcmSender
) -> None:
    content = Content(body="b", data={"blob": "€" * 1400})
    failure = await failure_of(fcm_sender, push(fcm_token(), content=content))
    assert failure.kind is FailureKind.PAYLOAD_TOO_LARGE
    assert fcm.calls.attempts == 0


async def test_fcm_connection_refused_is_unavailable(
    fcm: FcmEmulator, fcm_sender: FcmSender
) -> None:
    await fcm_sender.access_token()
    await fcm.stop()
    failure = await failure_of(fcm_sender, push(fcm_token()))
    assert failure.kind is FailureKind.UNAVAILABLE


async def test_fcm_unknown_fault_name_fails_loudly(fcm: FcmEmulator) -> None:
    token = fcm_token()
    fcm.faults.fail_targets[token] = "GONE"
    with pytest.raises(ValueError, match="unknown FCM fault 'GONE'"):
        fcm.pick_fault(token)


# --- the FCM emulator checks requests the way FCM does ---------------------------------


@pytest.fixture
async def raw_fcm() -> AsyncIterator[aiohttp.ClientSession]:
    """A bare HTTP client, to send what a bad client would."""
    async with aiohttp.ClientSession() as session:
        yield session


def assertion(
    key: ServiceAccountKey, token_uri: str, *, lifetime: int = 3600, **claims: Any
) -> str:
    """A service-account assertion, with ``claims`` overriding the defaults."""
    issued = int(START.timestamp())
    return jwt.encode(
        {
            "iss": key.client_email,
            "scope": FCM_SCOPE,
            "aud": token_uri,
            "iat": issued,
            "exp": issued + lifetime,
            **claims,
        },
        key.private_key_pem,
        algorithm="RS256",
    )


async def token_answer(
    session: aiohttp.ClientSession, fcm: FcmEmulator, jwt_assertion: str
) -> tuple[int, dict[str, Any]]:
    """POST an assertion to the token endpoint."""
    form = {"grant_type": JWT_BEARER_GRANT, "assertion": jwt_assertion}
    async with session.post(fcm.token_uri, data=form) as response:
        return response.status, await response.json()


async def test_fcm_token_endpoint_answers_like_google(
    fcm: FcmEmulator, fcm_key: ServiceAccountKey, raw_fcm: aiohttp.ClientSession
) -> None:
    status, answer = await token_answer(raw_fcm, fcm, assertion(fcm_key, fcm.token_uri))
    assert status == 200
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 3599
    assert answer["access_token"].startswith("ya29.")


@pytest.mark.parametrize(
    ("claims", "description"),
    [
        ({"aud": "https://oauth2.googleapis.com/token"}, "Failed audience check"),
        ({"iss": "someone@else.iam.gserviceaccount.com"}, "Invalid email"),
        ({"lifetime": 7200}, "short-lived"),
    ],
)
async def test_fcm_token_endpoint_refuses_a_bad_assertion(
    fcm: FcmEmulator,
    fcm_key: ServiceAccountKey,
    raw_fcm: aiohttp.ClientSession,
    claims: dict[str, Any],
    description: str,
) -> None:
    status, answer = await token_answer(
        raw_fcm, fcm, assertion(fcm_key, fcm.token_uri, **claims)
    )
    assert (status, answer["error"]) == (400, "invalid_grant")
    assert description in answer["error_description"]


async def test_fcm_token_without_the_messaging_scope_cannot_send(
    fcm: FcmEmulator, fcm_key: ServiceAccountKey, raw_fcm: aiohttp.ClientSession
) -> None:
    scope = "https://www.googleapis.com/auth/cloud-platform.read-only"
    _, answer = await token_answer(
        raw_fcm, fcm, assertion(fcm_key, fcm.token_uri, scope=scope)
    )
    body = {"message": {"token": fcm_token(), "notification": {"body": "b"}}}
    async with raw_fcm.post(
        f"{fcm.url}/v1/projects/acme-shop/messages:send",
        json=body,
        headers={"Authorization": f"Bearer {answer['access_token']}"},
    ) as response:
        assert response.status == 403
        assert (await response.json())["error"]["status"] == "PERMISSION_DENIED"


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"token": "T", "data": {"a": "1", "n": 12}}, "message.data[1].value"),
        ({"token": "T", "topic": "news"}, "message"),
        ({}, "message"),
        ({"token": "T", "priority": "high"}, "message"),
        ({"token": "T", "android": {"priority": "URGENT"}}, "message.android.priority"),
        ({"token": "T", "android": {"ttl": 3600}}, "message.android.ttl"),
    ],
)
async def test_fcm_emulator_refuses_a_malformed_message_naming_the_field(
    fcm: FcmEmulator,
    fcm_sender: FcmSender,
    raw_fcm: aiohttp.ClientSession,
    message: dict[str, Any],
    field: str,
) -> None:
    if message.get("token") == "T":
        message["token"] = fcm_token()
    async with raw_fcm.post(
        fcm_sender.send_url,
        json={"message": message},
        headers={"Authorization": f"Bearer {await fcm_sender.access_token()}"},
    ) as response:
        answer = await response.json()
    assert response.status == 400
    error = answer["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    [detail] = error["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert detail["fieldViolations"][0]["field"] == field
    assert fcm.calls.delivered == 0


async def test_fcm_emulator_refuses_a_call_without_a_live_token(
    fcm: FcmEmulator, fcm_sender: FcmSender, raw_fcm: aiohttp.ClientSession
) -> None:
    body = {"message": {"token": fcm_token()}}
    async with raw_fcm.post(
        fcm_sender.send_url, json=body, headers={"Authorization": "Bearer ya29.forged"}
    ) as response:
        answer = await response.json()
    assert response.status == 401
    assert answer["error"]["status"] == "UNAUTHENTICATED"
    assert fcm.calls.delivered == 0
