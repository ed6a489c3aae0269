"""Delivery end to end: a real worker, the embedded broker, the provider emulators.

Every channel delivers through its provider's real protocol; each error class
does what seed 001's table says; a failing SMTP server trips its breaker and
email fails over to SendGrid; receipts come back through signed webhooks.
"""

from __future__ import annotations

import queue
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from pipeline.api.delivery import sign_generic
from pipeline.delivery.plan import token_id
from pipeline.emulators.stack import EmulatorStack
from pipeline.providers.base import message_id_for
from pipeline.settings import DEV_WEBHOOK_SECRET
from tests.conftest import WorkerFactory
from tests.support import (
    ADMIN_KEY,
    DEV_KEY,
    BrokerUnderTest,
    Reply,
    Topics,
    WorkerProcess,
    call,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack_and_worker(
    broker: BrokerUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[EmulatorStack, WorkerProcess]]:
    """Emulators on loopback and one worker sending through them."""
    # One prefix for the module: its tests share this worker and its topics.
    topics = Topics.fresh()
    topics.create(broker.url)
    directory = tmp_path_factory.mktemp("delivery")
    worker = WorkerProcess(
        app="pipeline.app", env={}, log_path=directory / "worker.log"
    )
    stack = EmulatorStack(
        directory / "emulators", f"http://127.0.0.1:{worker.web_port}"
    ).start()
    worker.env = {
        "NOTIFY_BROKER_URL": broker.url,
        "NOTIFY_APP_ID": unique("delivery"),
        "NOTIFY_DATA_DIR": str(directory / "worker"),
        "NOTIFY_TOPIC_PREFIX": topics.prefix,
        "NOTIFY_PROVIDER_TIMEOUT": "1.5",
        "NOTIFY_BREAKER_MIN_CALLS": "4",
        "NOTIFY_BREAKER_OPEN_FOR": "5",
        **stack.env(),
    }
    worker.start()
    try:
        worker.wait_ready(timeout=90)
        yield stack, worker
    finally:
        worker.stop()
        stack.stop()


@pytest.fixture
def stack(
    stack_and_worker: tuple[EmulatorStack, WorkerProcess],
) -> Iterator[EmulatorStack]:
    """The emulators, well-behaved again after each test."""
    emulators = stack_and_worker[0]
    yield emulators
    emulators.reset_faults()


@pytest.fixture
def worker(stack_and_worker: tuple[EmulatorStack, WorkerProcess]) -> WorkerProcess:
    """The worker."""
    return stack_and_worker[1]


def apns_token() -> str:
    """A device token shaped like APNs' (64 hex digits)."""
    return secrets.token_hex(32)


def fcm_token() -> str:
    """A registration token shaped like FCM's."""
    return "f" + secrets.token_urlsafe(48)


def phone_number() -> str:
    """A number no other test uses: this module's tests share one worker and
    its emulators, so each looks only at its own number."""
    return "+1415" + str(secrets.randbelow(10**7)).zfill(7)


def api(worker: WorkerProcess, method: str, path: str, body: Any = None) -> Reply:
    """Call the worker's API with the dev key."""
    return call(worker.web_port, method, path, body)


def new_user(
    worker: WorkerProcess,
    *,
    email: str | None = None,
    phone: str | None = None,
    devices: tuple[tuple[str, str], ...] = (),
) -> str:
    """A user with these contacts and devices, once the worker has read them."""
    user = unique("u")
    profile = {k: v for k, v in (("email", email), ("phone", phone)) if v}
    assert api(worker, "PUT", f"/v1/users/{user}", profile).status == 202
    for token, platform in devices:
        body = {"token": token, "platform": platform}
        assert api(worker, "POST", f"/v1/users/{user}/devices", body).status == 202
    wait_for(lambda: api(worker, "GET", f"/v1/users/{user}").status == 200, timeout=30)
    return user


def notify(worker: WorkerProcess, user: str, channels: list[str], **extra: Any) -> str:
    """POST a transactional order_shipped notification; its id."""
    body = {
        "idempotency_key": unique("k"),
        "recipient": {"user_id": user},
        "type": "order_shipped",
        "channels": channels,
        "data": {"order_id": 4412, "eta": "Tue"},
        "priority": "transactional",
        **extra,
    }
    reply = api(worker, "POST", "/v1/notifications", body)
    assert reply.status == 202, reply.body
    return str(reply.body["notification_id"])


#: Outcomes that come after "sent" (provider receipts) also mean sent.
AFTER = {"sent": ("sent", "delivered", "opened", "clicked")}


def settled(worker: WorkerProcess, nid: str, **expected: str) -> dict[str, Any]:
    """Poll the status until every named channel shows its expected outcome."""

    def check() -> dict[str, Any] | None:
        reply = api(worker, "GET", f"/v1/notifications/{nid}")
        if reply.status != 200:
            return None
        channels = reply.body["channels"]
        done = all(
            channels.get(c) in AFTER.get(outcome, (outcome,))
            for c, outcome in expected.items()
        )
        return reply.body if done else None

    try:
        return wait_for(check, timeout=45, interval=0.2)  # type: ignore[no-any-return]
    except AssertionError:
        last = api(worker, "GET", f"/v1/notifications/{nid}").body
        raise AssertionError(f"{nid} never reached {expected}: {last}") from None


def trail(status: dict[str, Any], channel: str) -> list[tuple[str, str | None]]:
    """(event type, reason) of one channel's trail entries."""
    return [
        (entry["event_type"], entry.get("reason"))
        for entry in status.get("trail", ())
        if entry.get("channel") == channel
    ]


def test_every_channel_delivers(stack: EmulatorStack, worker: WorkerProcess) -> None:
    """Push (APNs and FCM), email, SMS and in-app, each through its protocol;
    the SMS delivery receipt comes back through Twilio's signed callback."""
    email, phone = f"{unique('a')}@example.com", phone_number()
    apns, fcm = apns_token(), fcm_token()
    user = new_user(
        worker,
        email=email,
        phone=phone,
        devices=((apns, "apns"), (fcm, "fcm")),
    )
    nid = notify(worker, user, ["push", "email", "sms", "in_app"])
    status = settled(
        worker, nid, push="sent", email="sent", sms="delivered", in_app="sent"
    )
    assert ("delivered", None) in trail(status, "sms")
    # Each call carries the provider idempotency id of its attempt key.
    [apns_call] = stack.apns.calls.to(apns)
    assert apns_call.message_id == message_id_for(f"{nid}:push:{token_id(apns)}")
    [fcm_call] = stack.fcm.calls.to(fcm)
    assert fcm_call.message_id == message_id_for(f"{nid}:push:{token_id(fcm)}")
    [mail] = stack.smtp.calls.to(email)
    assert mail.message_id == message_id_for(f"{nid}:email:{email}")
    assert len(stack.twilio.calls.to(phone)) == 1
    inbox = api(worker, "GET", f"/v1/users/{user}/inbox").body
    assert [item["notification_id"] for item in inbox["items"]] == [nid]
    assert inbox["unread"] == 1


def test_a_notification_posted_before_its_users_profile_is_delivered(
    stack: EmulatorStack, worker: WorkerProcess
) -> None:
    """Sign-up flows post the welcome email as they create the user: the
    notification is held (deferred, unknown_user), not suppressed, and sent
    once the profile has been read."""
    user, email = unique("u"), f"{unique('w')}@example.com"
    nid = notify(worker, user, ["email"])
    held = settled(worker, nid, email="deferred")
    assert ("deferred", "unknown_user") in trail(held, "email")
    assert api(worker, "PUT", f"/v1/users/{user}", {"email": email}).status == 202
    status = settled(worker, nid, email="sent")
    assert [event for event, _ in trail(status, "email")][-2:] == ["queued", "sent"]
    assert len(stack.smtp.calls.to(email)) == 1


def test_an_unregistered_token_is_removed(
    stack: EmulatorStack, worker: WorkerProcess
) -> None:
    """APNs 410 Unregistered: no retry, the token is deactivated, so the next
    push finds no active device."""
    token = apns_token()
    user = new_user(worker, devices=((token, "apns"),))
    stack.apns.faults.fail_targets[token] = "Unregistered"
    status = settled(worker, notify(worker, user, ["push"]), push="failed")
    assert ("failed", "unregistered") in trail(status, "push")
    assert stack.apns.calls.to(token) == []

    def next_push_suppressed() -> bool:
        nid = notify(worker, user, ["push"])
        body = settled(worker, nid, push="suppressed")
        return ("suppressed", "no_active_device") in trail(body, "push")

    wait_for(next_push_suppressed, timeout=30, interval=0.5)


def test_a_hard_bounce_suppresses_the_address(
    stack: EmulatorStack, worker: WorkerProcess
) -> None:
    """SMTP 550 on RCPT: failed, no retry; the address is suppressed after."""
    email = f"{unique('bounce')}@example.com"
    stack.smtp.faults.fail_targets[email] = "hard_bounce"
    user = new_user(worker, email=email)
    status = settled(worker, notify(worker, user, ["email"]), email="failed")
    assert ("failed", "hard_bounce") in trail(status, "email")

    def next_email_suppressed() -> bool:
        body = settled(worker, notify(worker, user, ["email"]), email="suppressed")
        return ("suppressed", "suppressed:hard_bounce") in trail(body, "email")

    wait_for(next_email_suppressed, timeout=30, interval=0.5)


def test_an_invalid_number_is_marked_invalid(
    stack: EmulatorStack, worker: WorkerProcess
) -> None:
    """Twilio 21211: failed, no retry; the number is not tried again."""
    phone = phone_number()
    stack.twilio.faults.fail_targets[phone] = "21211"
    user = new_user(worker, phone=phone)
    status = settled(worker, notify(worker, user, ["sms"]), sms="failed")
    assert ("failed", "invalid_number") in trail(status, "sms")

    def next_sms_suppressed() -> bool:
        body = settled(worker, notify(worker, user, ["sms"]), sms="suppressed")
        return ("suppressed", "suppressed:invalid_number") in trail(body, "sms")

    wait_for(next_sms_suppressed, timeout=30, interval=0.5)


def test_rate_limits_and_5xx_are_retried_until_sent(
    stack: EmulatorStack, worker: WorkerProcess
) -> None:
    """FCM 429 with Retry-After and Twilio 503: retried (never slept on in the
    agent), then sent."""
    token, phone = fcm_token(), phone_number()
    user = new_user(worker, phone=phone, devices=((token, "fcm"),))
    stack.fcm.faults.update(error="QUOTA_EXCEEDED", error_rate=1.0, retry_after=1)
    stack.twilio.faults.update(error="503", error_rate=1.0)
    nid = notify(worker, user, ["push", "sms"])
    wait_for(lambda: stack.fcm.calls.attempts >= 1, timeout=30)
    wait_for(
        lambda: (
            ("retried", "rate_limited")
            in trail(api(worker, "GET", f"/v1/notifications/{nid}").body, "push")
        ),
        timeout=30,
    )
    stack.reset_faults()
    status = settled(worker, nid, push="sent", sms="delivered")
    assert ("retried", "rate_limited") in trail(status, "push")
    assert ("retried", "unavailable") in trail(status, "sms")
    assert len(stack.fcm.calls.to(token)) == 1


def test_a_timeout_is_retried(stack: EmulatorStack, worker: WorkerProcess) -> None:
    """A provider that does not answer within NOTIFY_PROVIDER_TIMEOUT: retried."""
    phone = phone_number()
    user = new_user(worker, phone=phone)
    stack.twilio.faults.update(error="timeout", error_rate=1.0, timeout_hold=5.0)
    nid = notify(worker, user, ["sms"])
    wait_for(
        lambda: (
            ("retried", "timeout")
            in trail(api(worker, "GET", f"/v1/notifications/{nid}").body, "sms")
        ),
        timeout=30,
    )
    stack.reset_faults()
    settled(worker, nid, sms="delivered")


def test_webhooks_need_a_valid_signature(
    stack: EmulatorStack, worker: WorkerProcess
) -> None:
    """An unsigned or badly signed webhook is a 401 and changes nothing; a
    signed generic receipt becomes an event on the notification's trail."""
    user = new_user(worker, devices=((apns_token(), "apns"),))
    nid = notify(worker, user, ["push"])
    settled(worker, nid, push="sent")
    attempt_key = f"{nid}:push:dtarget"
    body = orjson.dumps(
        {
            "events": [
                {
                    "kind": "opened",
                    "attempt_key": attempt_key,
                    "occurred_at": "2026-11-21T10:00:00Z",
                    "id": unique("ev"),
                }
            ]
        }
    )
    port = worker.web_port
    unsigned = raw_post(port, "/v1/webhooks/generic", body, {})
    assert unsigned[0] == 401
    forged = sign_generic(b"not-the-secret", body, int(time.time()))
    assert raw_post(port, "/v1/webhooks/generic", body, forged)[0] == 401
    assert (
        raw_post(port, "/v1/webhooks/twilio", b"MessageStatus=delivered", {})[0] == 401
    )
    assert settled(worker, nid, push="sent")["channels"]["push"] == "sent"
    signed = sign_generic(DEV_WEBHOOK_SECRET.encode(), body, int(time.time()))
    assert raw_post(port, "/v1/webhooks/generic", body, signed)[0] == 200
    settled(worker, nid, push="opened")


def raw_post(
    port: int, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    """POST raw bytes without an API key (as a provider does)."""
    request = urllib.request.Request(  # noqa: S310 - loopback
        f"http://127.0.0.1:{port}{path}", data=body, method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read() or b"null")


def test_email_links_are_tracked_and_signed(
    stack: EmulatorStack, worker: WorkerProcess
) -> None:
    """The email's link goes through the signed click redirect to its target,
    the open pixel records an open; a tampered link redirects nowhere."""
    email = f"{unique('trk')}@example.com"
    user = new_user(worker, email=email)
    target = "https://shop.example.com/track/4412"
    nid = notify(
        worker, user, ["email"], data={"order_id": 4412, "tracking_url": target}
    )
    settled(worker, nid, email="sent")
    [call] = stack.smtp.calls.to(email)
    message = stack.smtp.message(call.message_id)
    assert message is not None
    html = next(
        part.get_content()
        for part in message.walk()
        if part.get_content_type() == "text/html"
    )
    base = f"http://127.0.0.1:{worker.web_port}"
    [click] = re.findall(re.escape(base) + r"/t/c/[A-Za-z0-9_.\-]+", html)
    [pixel] = re.findall(re.escape(base) + r"/t/o/[A-Za-z0-9_.\-]+", html)
    assert target not in html  # the target is inside the signed token only
    status, location = fetch_no_redirect(click)
    assert (status, location) == (302, target)
    assert fetch_no_redirect(pixel)[0] == 200
    assert fetch_no_redirect(click[:-3] + "xyz")[0] == 404
    settled(worker, nid, email="clicked")

    def both_recorded() -> bool:
        body = api(worker, "GET", f"/v1/notifications/{nid}").body
        kinds = [event for event, _ in trail(body, "email")]
        return "opened" in kinds and "clicked" in kinds

    wait_for(both_recorded, timeout=30)


def test_in_app_messages_arrive_on_the_live_stream(
    stack: EmulatorStack, worker: WorkerProcess
) -> None:
    """A client connected to the inbox stream gets the new message as an SSE
    event; marking it read shows in the inbox."""
    user = new_user(worker)
    lines: queue.Queue[str] = queue.Queue()
    opened = threading.Event()

    def listen() -> None:
        request = urllib.request.Request(  # noqa: S310 - loopback
            f"http://127.0.0.1:{worker.web_port}/v1/users/{user}/inbox/stream",
            headers={"Authorization": f"Bearer {DEV_KEY}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            opened.set()
            for raw in response:
                lines.put(raw.decode().rstrip("\n"))
                if raw.startswith(b"data:"):
                    return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert opened.wait(15)
    nid = notify(worker, user, ["in_app"])
    data = ""
    deadline = time.monotonic() + 30
    while not data.startswith("data:") and time.monotonic() < deadline:
        data = lines.get(timeout=max(0.1, deadline - time.monotonic()))
    item = orjson.loads(data.removeprefix("data:").strip())
    assert item["notification_id"] == nid and item["body"]
    read = api(worker, "POST", f"/v1/users/{user}/inbox/{nid}/read")
    assert read.status == 202
    wait_for(
        lambda: api(worker, "GET", f"/v1/users/{user}/inbox").body["unread"] == 0,
        timeout=30,
    )


def fetch_no_redirect(url: str) -> tuple[int, str | None]:
    """GET without following redirects: (status, Location)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.headers.get("Location")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Location")


# Last: it leaves SMTP failing and its breaker open.
def test_smtp_down_trips_its_breaker_and_email_fails_over(
    stack: EmulatorStack, worker: WorkerProcess
) -> None:
    """SMTP answering 421 to everything: its breaker opens after the minimum
    calls and SendGrid carries the mail, including the retried ones."""
    stack.smtp.faults.update(error="unavailable", error_rate=1.0)
    addresses = [f"{unique('fo')}@example.com" for _ in range(6)]
    users = [new_user(worker, email=address) for address in addresses]
    nids = [notify(worker, user, ["email"]) for user in users]
    for nid in nids:
        settled(worker, nid, email="sent")
    assert all(len(stack.sendgrid.calls.to(a)) == 1 for a in addresses)
    assert all(stack.smtp.calls.to(a) == [] for a in addresses)
    health = call(worker.web_port, "GET", "/health").body
    assert health["providers"]["smtp"]["state"] in ("open", "half_open")


def test_a_worker_with_an_open_live_stream_stops_cleanly(
    start_worker: WorkerFactory,
) -> None:
    """SIGTERM ends the live streams first, so the web server's stop does not
    wait on them (it waits up to a minute for open requests) and the worker
    exits by itself, not by the SIGKILL that follows a stop timeout."""
    worker = start_worker()
    worker.wait_ready(timeout=90)
    request = urllib.request.Request(  # noqa: S310 - loopback
        f"http://127.0.0.1:{worker.web_port}/v1/users/u-stream/inbox/stream",
        headers={"Authorization": f"Bearer {DEV_KEY}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        assert response.readline() == b": connected\n"
        # Well under the web server's own minute, well above a clean stop.
        assert worker.stop(timeout=25) == 0, worker.log_tail()


def test_an_operator_retries_a_failed_channel(
    stack: EmulatorStack, worker: WorkerProcess
) -> None:
    """An SMS refused for good (Twilio 21610) is failed and dead-lettered;
    once the cause is gone, POST .../retry with an admin key sends it again:
    retry_scheduled, then sent, one more provider call. A tenant key may not;
    a channel that did not fail is not retried."""
    phone = phone_number()
    stack.twilio.faults.fail_targets[phone] = "21610"
    user = new_user(worker, phone=phone)
    nid = notify(worker, user, ["sms"])
    settled(worker, nid, sms="failed")
    path = f"/v1/notifications/{nid}/retry"
    assert api(worker, "POST", path).status == 403  # a tenant's key
    del stack.twilio.faults.fail_targets[phone]
    reply = call(worker.web_port, "POST", path, key=ADMIN_KEY)
    assert reply.status == 202, reply.body
    assert reply.body == {
        "notification_id": nid,
        "status": "retry_scheduled",
        "channels": ["sms"],
    }
    status = settled(worker, nid, sms="sent")
    assert ("retried", "operator_retry") in trail(status, "sms")
    # Accepted once: the refused first call is not in the log, the retry is.
    assert len(stack.twilio.calls.to(phone)) == 1
    again = call(worker.web_port, "POST", path, key=ADMIN_KEY)
    assert again.status == 409, again.body
    assert again.body["error"]["code"] == "not_retryable"
