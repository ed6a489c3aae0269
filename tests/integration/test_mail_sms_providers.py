"""Email and SMS senders against their emulators on loopback, webhooks included.

Real servers (aiosmtpd, aiohttp) answer the real clients (aiosmtplib, aiohttp);
status callbacks and event webhooks go to a small receiver in the test, whose
signatures are checked with the functions the pipeline's receipts endpoint uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qsl

import aiohttp
import aiosmtplib
import orjson
import pytest
from aiohttp import web

from pipeline import sms
from pipeline.emulators.ca import TestCA, server_ssl_context
from pipeline.emulators.faults import Faults
from pipeline.emulators.sendgrid import SendGridEmulator
from pipeline.emulators.smtp import SmtpEmulator
from pipeline.emulators.twilio import TwilioEmulator
from pipeline.providers import twilio as twilio_provider
from pipeline.providers.base import (
    Content,
    FailureKind,
    Outgoing,
    ProviderFailure,
    ReceiptKind,
    Sender,
    message_id_for,
)
from pipeline.providers.sendgrid import (
    SendGridSender,
    failure_from_response,
    parse_events,
    verify_event_signature,
)
from pipeline.providers.smtp import SmtpSender
from pipeline.providers.twilio import (
    TwilioSender,
    parse_status_callback,
    validate_signature,
)

pytestmark = pytest.mark.integration

SENDER = "notifications@shop.example.com"
API_KEY = "SG.emulator-key"
ACCOUNT_SID = "AC" + "a1" * 16
AUTH_TOKEN = "f" * 32
FROM_NUMBER = "+15005550006"
WAIT = 5.0  # seconds a webhook may take to arrive on loopback
# Seconds a sender waits for an answer: the "timeout" faults hold theirs for 10,
# and a loaded machine must not turn a normal answer into a timeout.
SEND_TIMEOUT = 2.0
# The providers' webhook headers, spelled out: the wire format is under test.
SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
TWILIO_SIGNATURE = "X-Twilio-Signature"


def outgoing(
    to: str,
    *,
    channel: str = "email",
    user: str = "alice",
    notification: str = "n-4412",
    content: Content | None = None,
) -> Outgoing:
    """One attempt of an order-shipped notification."""
    attempt_key = f"{notification}:{channel}:{user}"
    return Outgoing(
        attempt_key=attempt_key,
        message_id=message_id_for(attempt_key),
        notification_id=notification,
        tenant="shop",
        user_id=user,
        type="order.shipped",
        priority="transactional",
        channel=channel,
        to=to,
        content=content
        or Content(
            body="Order 4412 has shipped.",
            subject="Your order is on its way",
            html="<p>Order <b>4412</b> has shipped.</p>",
        ),
    )


async def failure_of(sender: Sender, message: Outgoing) -> ProviderFailure:
    """The ProviderFailure a send raises (the test fails if it does not)."""
    with pytest.raises(ProviderFailure) as caught:
        await sender.send(message)
    return caught.value


@dataclass(frozen=True)
class Hook:
    """One webhook request, as the receiver got it."""

    url: str  # scheme://host:port + the path and query exactly as sent
    headers: dict[str, str]
    body: bytes
    form: dict[str, str]


class Receiver:
    """The pipeline's side of provider webhooks: queues what arrives, per route."""

    def __init__(self) -> None:
        self.queues: dict[str, asyncio.Queue[Hook]] = {
            "twilio": asyncio.Queue(),
            "sendgrid": asyncio.Queue(),
        }
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen on a loopback port the OS picks."""
        app = web.Application()
        app.router.add_post("/hooks/{provider}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        form = {}
        if request.content_type == "application/x-www-form-urlencoded":
            form = dict(parse_qsl(body.decode(), keep_blank_values=True))
        # raw_path, not request.url: a signature covers the URL byte for byte,
        # and re-encoding the query (%3A -> :) would break it.
        url = f"{request.scheme}://{request.host}{request.raw_path}"
        hook = Hook(url, dict(request.headers), body, form)
        await self.queues[request.match_info["provider"]].put(hook)
        return web.Response(status=200)

    async def next(self, provider: str) -> Hook:
        """The next webhook of ``provider``, waiting for it up to WAIT seconds."""
        return await asyncio.wait_for(self.queues[provider].get(), WAIT)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on loopback, stopped after the test."""
    running = Receiver()
    await running.start()
    yield running
    await running.stop()


# --- SMTP -----------------------------------------------------------------


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpEmulator]:
    """The SMTP emulator, stopped after the test."""
    emulator = SmtpEmulator(Faults(timeout_hold=10.0))
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def smtp_sender(smtp: SmtpEmulator) -> AsyncIterator[SmtpSender]:
    """An SMTP sender pointed at the emulator."""
    sender = SmtpSender(
        smtp.url,
        SENDER,
        sender_name="Shop",
        timeout=SEND_TIMEOUT,
        list_unsubscribe=lambda m: f"https://shop.example.com/u/{m.user_id}",
    )
    await sender.start()
    yield sender
    await sender.stop()


async def test_email_is_delivered_over_smtp_with_both_parts(
    smtp: SmtpEmulator, smtp_sender: SmtpSender
) -> None:
    message = outgoing("alice@example.org")
    sent = await smtp_sender.send(message)

    assert sent.provider == "smtp"
    assert sent.provider_message_id == f"<{message.message_id}@shop.example.com>"
    [call] = smtp.calls.to("alice@example.org")
    assert call.message_id == message.message_id
    assert call.payload["subject"] == "Your order is on its way"
    assert call.payload["from"] == f"Shop <{SENDER}>"
    assert call.payload["content_type"] == "multipart/alternative"
    assert call.payload["text"].strip() == "Order 4412 has shipped."
    assert call.payload["html"].strip() == "<p>Order <b>4412</b> has shipped.</p>"
    assert call.payload["attempt_key"] == "n-4412:email:alice"
    assert call.payload["list_unsubscribe"] == "<https://shop.example.com/u/alice>"
    email = smtp.message(message.message_id)
    assert email is not None
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_email_without_html_is_plain_text_and_unicode_survives(
    smtp: SmtpEmulator, smtp_sender: SmtpSender
) -> None:
    content = Content(body="Grüße — ваш заказ отправлен ✓", subject="Заказ 4412")
    await smtp_sender.send(outgoing("boris@example.org", content=content))

    [call] = smtp.calls.to("boris@example.org")
    assert call.payload["content_type"] == "text/plain"
    assert call.payload["subject"] == "Заказ 4412"
    assert call.payload["text"].strip() == "Grüße — ваш заказ отправлен ✓"
    assert call.payload["html"] is None


async def test_one_smtp_connection_is_reused_and_reopened_when_dropped(
    smtp: SmtpEmulator, smtp_sender: SmtpSender
) -> None:
    for user in ("a", "b", "c"):
        await smtp_sender.send(outgoing(f"{user}@example.org", user=user))
    assert smtp.connections_opened == 1

    smtp.drop_connections()  # the server times the idle connection out
    await smtp_sender.send(outgoing("d@example.org", user="d"))

    assert smtp.connections_opened == 2
    assert smtp.calls.delivered == 4


@pytest.mark.parametrize(
    ("fault", "kind", "code"),
    [
        ("hard_bounce", FailureKind.HARD_BOUNCE, "550"),
        ("soft_bounce", FailureKind.SOFT_BOUNCE, "452"),
        ("unavailable", FailureKind.UNAVAILABLE, "421"),
        ("timeout", FailureKind.TIMEOUT, "timeout"),
    ],
)
async def test_smtp_faults_are_classified(
    smtp: SmtpEmulator,
    smtp_sender: SmtpSender,
    fault: str,
    kind: FailureKind,
    code: str,
) -> None:
    smtp.faults.fail_targets["bob@example.org"] = fault

    failure = await failure_of(smtp_sender, outgoing("bob@example.org", user="bob"))

    assert (failure.kind, failure.code, failure.provider) == (kind, code, "smtp")
    assert smtp.calls.to("bob@example.org") == []
    # The next message goes through, on the same connection or a new one.
    await smtp_sender.send(outgoing("alice@example.org"))
    assert len(smtp.calls.to("alice@example.org")) == 1


async def test_smtp_bounce_detail_carries_the_enhanced_code(
    smtp: SmtpEmulator, smtp_sender: SmtpSender
) -> None:
    smtp.faults.update(error="hard_bounce", error_rate=1.0)
    failure = await failure_of(smtp_sender, outgoing("gone@example.org"))
    assert failure.detail.startswith("5.1.1")


async def test_smtp_message_over_the_size_limit(smtp_sender: SmtpSender) -> None:
    small = SmtpEmulator(max_message_size=2_000)
    await small.start()
    sender = SmtpSender(small.url, SENDER, timeout=2.0)
    await sender.start()
    try:
        content = Content(body="x" * 5_000, subject="big", html="<p>big</p>")
        failure = await failure_of(
            sender, outgoing("alice@example.org", content=content)
        )
        assert (failure.kind, failure.code) == (FailureKind.PAYLOAD_TOO_LARGE, "552")
        assert small.calls.delivered == 0
    finally:
        await sender.stop()
        await small.stop()


async def test_smtp_refused_connection_is_unavailable() -> None:
    gone = SmtpEmulator()
    await gone.start()
    url = gone.url
    await gone.stop()
    sender = SmtpSender(url, SENDER, timeout=2.0)
    await sender.start()
    try:
        failure = await failure_of(sender, outgoing("alice@example.org"))
        assert failure.kind is FailureKind.UNAVAILABLE
    finally:
        await sender.stop()


async def test_smtp_unknown_fault_name_fails_loudly(
    smtp: SmtpEmulator, smtp_sender: SmtpSender
) -> None:
    smtp.faults.fail_targets["bob@example.org"] = "mailbox_on_fire"
    failure = await failure_of(smtp_sender, outgoing("bob@example.org"))
    assert "unknown SMTP fault 'mailbox_on_fire'" in failure.detail


async def test_smtp_same_message_twice_is_a_duplicate(
    smtp: SmtpEmulator, smtp_sender: SmtpSender
) -> None:
    message = outgoing("alice@example.org")
    await smtp_sender.send(message)
    await smtp_sender.send(message)
    await smtp_sender.send(outgoing("alice@example.org", notification="n-4413"))
    assert smtp.calls.summary() == {"attempts": 3, "delivered": 3, "duplicates": 1}


async def test_smtp_emulator_refuses_what_a_real_server_would(
    smtp: SmtpEmulator, smtp_sender: SmtpSender
) -> None:
    no_domain = await failure_of(smtp_sender, outgoing("alice"))
    assert (no_domain.kind, no_domain.code) == (FailureKind.HARD_BOUNCE, "553")

    bare = EmailMessage()  # no Message-ID, no Date: a client bug
    bare["From"], bare["To"], bare["Subject"] = SENDER, "alice@example.org", "hi"
    bare.set_content("hi")
    host, port = smtp.url.removeprefix("smtp://").split(":")
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await aiosmtplib.send(bare, hostname=host, port=int(port), start_tls=False)
    assert refused.value.code == 550
    assert "Message-ID" in refused.value.message
    assert smtp.calls.delivered == 0


async def test_smtp_starttls_and_auth(tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path)
    tls = server_ssl_context(*ca.issue_server_cert(["127.0.0.1"]), alpn=())
    relay = SmtpEmulator(credentials={"mailer": "s3cret"}, tls_context=tls)
    await relay.start()

    def sender(password: str, *, starttls: bool = True) -> SmtpSender:
        return SmtpSender(
            relay.url,
            SENDER,
            username="mailer",
            password=password,
            starttls=starttls,
            ca_file=str(ca.ca_path),
            timeout=2.0,
        )

    good, wrong = sender("s3cret"), sender("guess")
    plain = sender("s3cret", starttls=False)
    for each in (good, wrong, plain):
        await each.start()
    try:
        await good.send(outgoing("alice@example.org"))
        assert relay.calls.delivered == 1

        refused = await failure_of(wrong, outgoing("alice@example.org"))
        assert (refused.kind, refused.code) == (FailureKind.AUTH, "535")
        # Without STARTTLS the relay will not take credentials or mail.
        cleartext = await failure_of(plain, outgoing("alice@example.org"))
        assert cleartext.kind is FailureKind.AUTH
        assert relay.calls.delivered == 1
    finally:
        for each in (good, wrong, plain):
            await each.stop()
        await relay.stop()


# --- SendGrid -------------------------------------------------------------


@pytest.fixture
async def sendgrid(receiver: Receiver) -> AsyncIterator[SendGridEmulator]:
    """The SendGrid emulator, posting its events to the receiver."""
    emulator = SendGridEmulator(
        API_KEY,
        webhook_url=f"{receiver.url}/hooks/sendgrid",
        faults=Faults(timeout_hold=10.0, retry_after=7),
    )
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def sendgrid_sender(sendgrid: SendGridEmulator) -> AsyncIterator[SendGridSender]:
    """A SendGrid sender pointed at the emulator."""
    sender = SendGridSender(
        API_KEY, SENDER, from_name="Shop", base_url=sendgrid.url, timeout=SEND_TIMEOUT
    )
    await sender.start()
    yield sender
    await sender.stop()


async def test_sendgrid_delivers_and_its_signed_event_becomes_a_receipt(
    sendgrid: SendGridEmulator, sendgrid_sender: SendGridSender, receiver: Receiver
) -> None:
    message = outgoing("alice@example.org")
    sent = await sendgrid_sender.send(message)

    [call] = sendgrid.calls.to("alice@example.org")
    assert sent.provider_message_id == call.payload["x_message_id"]
    assert call.message_id == message.message_id
    body = call.payload["body"]
    assert body["tracking_settings"]["click_tracking"]["enable"] is False
    assert body["tracking_settings"]["open_tracking"]["enable"] is False
    assert [part["type"] for part in body["content"]] == ["text/plain", "text/html"]
    assert body["headers"]["X-Notify-Attempt"] == message.attempt_key

    hook = await receiver.next("sendgrid")
    assert verify_event_signature(
        sendgrid.public_key,
        hook.body,
        hook.headers[SENDGRID_SIGNATURE],
        hook.headers[SENDGRID_TIMESTAMP],
    )
    assert not verify_event_signature(
        sendgrid.public_key,
        hook.body.replace(b"delivered", b"bounce"),
        hook.headers[SENDGRID_SIGNATURE],
        hook.headers[SENDGRID_TIMESTAMP],
    )
    [receipt] = parse_events(hook.body)
    assert receipt.kind is ReceiptKind.DELIVERED
    assert receipt.attempt_key == message.attempt_key
    assert receipt.target == "alice@example.org"
    assert receipt.provider_event_id


async def test_sendgrid_bounce_is_accepted_then_reported(
    sendgrid: SendGridEmulator, sendgrid_sender: SendGridSender, receiver: Receiver
) -> None:
    sendgrid.faults.fail_targets["gone@example.org"] = "bounce"
    message = outgoing("gone@example.org", user="gone")

    await sendgrid_sender.send(message)  # 202: the bounce comes later

    hook = await receiver.next("sendgrid")
    [receipt] = parse_events(hook.body)
    assert (receipt.kind, receipt.code) == (ReceiptKind.BOUNCED, "bounce")
    assert receipt.attempt_key == message.attempt_key
    assert "5.1.1" in receipt.detail
    assert sendgrid.calls.delivered == 0


@pytest.mark.parametrize(
    ("fault", "kind", "code"),
    [
        ("400", FailureKind.REJECTED, "HTTP 400"),
        ("401", FailureKind.AUTH, "HTTP 401"),
        ("413", FailureKind.PAYLOAD_TOO_LARGE, "HTTP 413"),
        ("429", FailureKind.RATE_LIMITED, "HTTP 429"),
        ("500", FailureKind.UNAVAILABLE, "HTTP 500"),
        ("503", FailureKind.UNAVAILABLE, "HTTP 503"),
        ("timeout", FailureKind.TIMEOUT, "timeout"),
    ],
)
async def test_sendgrid_faults_are_classified(
    sendgrid: SendGridEmulator,
    sendgrid_sender: SendGridSender,
    fault: str,
    kind: FailureKind,
    code: str,
) -> None:
    sendgrid.faults.update(error=fault, error_rate=1.0)
    failure = await failure_of(sendgrid_sender, outgoing("alice@example.org"))
    assert (failure.kind, failure.code, failure.provider) == (kind, code, "sendgrid")
    assert sendgrid.calls.delivered == 0


async def test_sendgrid_429_gives_retry_after(
    sendgrid: SendGridEmulator, sendgrid_sender: SendGridSender
) -> None:
    sendgrid.faults.fail_targets["alice@example.org"] = "429"
    failure = await failure_of(sendgrid_sender, outgoing("alice@example.org"))
    assert failure.kind is FailureKind.RATE_LIMITED
    assert failure.retry_after == 7
    assert failure.detail == "too many requests"


def test_sendgrid_rate_limit_reset_when_there_is_no_retry_after() -> None:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    reset = str(int(now.timestamp()) + 42)
    failure = failure_from_response(
        429, {"X-RateLimit-Reset": reset}, b'{"errors": []}', now
    )
    assert (failure.kind, failure.retry_after) == (FailureKind.RATE_LIMITED, 42)


async def test_sendgrid_refuses_a_wrong_key_and_an_invalid_body(
    sendgrid: SendGridEmulator,
) -> None:
    wrong = SendGridSender("SG.wrong", SENDER, base_url=sendgrid.url, timeout=2.0)
    await wrong.start()
    no_subject = SendGridSender(API_KEY, SENDER, base_url=sendgrid.url, timeout=2.0)
    await no_subject.start()
    try:
        refused = await failure_of(wrong, outgoing("alice@example.org"))
        assert (refused.kind, refused.code) == (FailureKind.AUTH, "HTTP 401")
        invalid = await failure_of(
            no_subject,
            outgoing("not-an-address", content=Content(body="hi")),
        )
        assert (invalid.kind, invalid.code) == (FailureKind.REJECTED, "HTTP 400")
        assert "personalizations.0.to.0.email: Does not contain a valid address" in (
            invalid.detail
        )
        assert "subject: The subject is required" in invalid.detail
        assert sendgrid.calls.delivered == 0
    finally:
        await wrong.stop()
        await no_subject.stop()


async def test_sendgrid_duplicates_are_counted(
    sendgrid: SendGridEmulator, sendgrid_sender: SendGridSender
) -> None:
    message = outgoing("alice@example.org")
    await sendgrid_sender.send(message)
    await sendgrid_sender.send(message)
    assert sendgrid.calls.summary() == {"attempts": 2, "delivered": 2, "duplicates": 1}


# --- Twilio ---------------------------------------------------------------


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioEmulator]:
    """The Twilio emulator, stopped after the test."""
    emulator = TwilioEmulator(
        ACCOUNT_SID, AUTH_TOKEN, faults=Faults(timeout_hold=10.0, retry_after=3)
    )
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def twilio_sender(
    twilio: TwilioEmulator, receiver: Receiver
) -> AsyncIterator[TwilioSender]:
    """A Twilio sender pointed at the emulator, callbacks to the receiver."""
    sender = TwilioSender(
        ACCOUNT_SID,
        AUTH_TOKEN,
        from_number=FROM_NUMBER,
        status_callback=f"{receiver.url}/hooks/twilio",
        base_url=twilio.url,
        timeout=SEND_TIMEOUT,
    )
    await sender.start()
    yield sender
    await sender.stop()


def sms_to(
    number: str, body: str = "Your code is 123456", user: str = "alice"
) -> Outgoing:
    """One SMS attempt."""
    return outgoing(number, channel="sms", user=user, content=Content(body=body))


async def test_twilio_sends_and_its_signed_callback_becomes_a_receipt(
    twilio: TwilioEmulator, twilio_sender: TwilioSender, receiver: Receiver
) -> None:
    message = sms_to("+14155550100")
    sent = await twilio_sender.send(message)

    assert sent.provider_message_id is not None
    assert sent.provider_message_id.startswith("SM")
    assert len(sent.provider_message_id) == 34
    [call] = twilio.calls.to("+14155550100")
    assert call.message_id == message.attempt_key
    assert call.payload["form"]["Body"] == "Your code is 123456"
    assert call.payload["resource"]["status"] == "queued"

    hook = await receiver.next("twilio")
    assert validate_signature(
        AUTH_TOKEN, hook.url, hook.form, hook.headers[TWILIO_SIGNATURE]
    )
    assert not validate_signature(
        AUTH_TOKEN,
        hook.url,
        {**hook.form, "MessageStatus": "failed"},
        hook.headers[TWILIO_SIGNATURE],
    )
    receipt = parse_status_callback(hook.form, hook.url)
    assert receipt is not None
    assert receipt.kind is ReceiptKind.DELIVERED
    assert receipt.attempt_key == message.attempt_key
    assert receipt.target == "+14155550100"
    assert receipt.provider_event_id == f"{sent.provider_message_id}:delivered"


async def test_twilio_carrier_filtering_arrives_as_a_failed_receipt(
    twilio: TwilioEmulator, twilio_sender: TwilioSender, receiver: Receiver
) -> None:
    twilio.faults.fail_targets["+14155550111"] = "30007"
    message = sms_to("+14155550111", user="bob")

    await twilio_sender.send(message)  # 201: the carrier filters it later

    hook = await receiver.next("twilio")
    assert validate_signature(
        AUTH_TOKEN, hook.url, hook.form, hook.headers[TWILIO_SIGNATURE]
    )
    receipt = parse_status_callback(hook.form, hook.url)
    assert receipt is not None
    assert (receipt.kind, receipt.code) == (ReceiptKind.FAILED, "30007")
    assert receipt.attempt_key == message.attempt_key
    assert twilio.calls.delivered == 0


async def test_twilio_invalid_number(twilio_sender: TwilioSender) -> None:
    failure = await failure_of(twilio_sender, sms_to("555-0100"))
    assert (failure.kind, failure.code) == (FailureKind.INVALID_NUMBER, "21211")
    assert "555-0100" in failure.detail


@pytest.mark.parametrize(
    ("fault", "kind", "code"),
    [
        ("21211", FailureKind.INVALID_NUMBER, "21211"),
        ("21614", FailureKind.INVALID_NUMBER, "21614"),
        ("21610", FailureKind.REJECTED, "21610"),
        ("20429", FailureKind.RATE_LIMITED, "20429"),
        ("500", FailureKind.UNAVAILABLE, "20500"),
        ("503", FailureKind.UNAVAILABLE, "20503"),
        ("timeout", FailureKind.TIMEOUT, "timeout"),
    ],
)
async def test_twilio_faults_are_classified(
    twilio: TwilioEmulator,
    twilio_sender: TwilioSender,
    fault: str,
    kind: FailureKind,
    code: str,
) -> None:
    twilio.faults.fail_targets["+14155550100"] = fault
    failure = await failure_of(twilio_sender, sms_to("+14155550100"))
    assert (failure.kind, failure.code, failure.provider) == (kind, code, "twilio")
    assert twilio.calls.delivered == 0


async def test_twilio_rate_limit_gives_retry_after(
    twilio: TwilioEmulator, twilio_sender: TwilioSender
) -> None:
    twilio.faults.update(error="20429", error_rate=1.0)
    failure = await failure_of(twilio_sender, sms_to("+14155550100"))
    assert (failure.kind, failure.retry_after) == (FailureKind.RATE_LIMITED, 3)


async def test_twilio_wrong_credentials_are_auth(twilio: TwilioEmulator) -> None:
    sender = TwilioSender(
        ACCOUNT_SID, "0" * 32, from_number=FROM_NUMBER, base_url=twilio.url
    )
    await sender.start()
    try:
        failure = await failure_of(sender, sms_to("+14155550100"))
        assert (failure.kind, failure.code) == (FailureKind.AUTH, "20003")
    finally:
        await sender.stop()


async def test_twilio_long_body_is_truncated_to_fit_not_split(
    twilio: TwilioEmulator, twilio_sender: TwilioSender
) -> None:
    body = "Your parcel is on its way. " * 40  # ~1080 GSM characters, 8 segments
    sent = await twilio_sender.send(sms_to("+14155550100", body=body))

    [call] = twilio.calls.to("+14155550100")
    delivered = call.payload["form"]["Body"]
    # A GSM-7 text ends with "..." so it stays GSM-7 (153 a segment, not 67).
    assert delivered.endswith("...") and sms.is_gsm7(delivered)
    assert body.startswith(delivered[:-3]) and len(delivered) > 400
    assert sms.segments(delivered) == 3
    assert call.payload["resource"]["num_segments"] == "3"
    assert sent.detail == "3 segment(s), truncated to 3"
    assert twilio.calls.attempts == 1  # one SMS, not several


async def test_twilio_through_a_messaging_service_and_duplicates(
    twilio: TwilioEmulator,
) -> None:
    service = "MG" + "0123456789abcdef" * 2
    sender = TwilioSender(
        ACCOUNT_SID, AUTH_TOKEN, messaging_service_sid=service, base_url=twilio.url
    )
    await sender.start()
    try:
        message = sms_to("+14155550100")
        await sender.send(message)
        await sender.send(message)
        await sender.send(replace(message, content=Content(body="Another text")))
    finally:
        await sender.stop()
    first = twilio.calls.calls[0]
    assert first.payload["form"]["MessagingServiceSid"] == service
    assert first.payload["resource"]["status"] == "accepted"
    # Without a StatusCallback the idempotency id is the body's hash.
    assert twilio.calls.summary() == {"attempts": 3, "delivered": 3, "duplicates": 1}


@pytest.mark.parametrize(
    ("form", "status", "code"),
    [
        ({"To": "+14155550100", "Body": "hi"}, 400, 21603),
        ({"To": "+14155550100", "From": FROM_NUMBER}, 400, 21602),
        ({"To": "+14155550100", "From": FROM_NUMBER, "Body": "x" * 1601}, 400, 21617),
        ({"From": FROM_NUMBER, "Body": "hi"}, 400, 21604),
        ({"To": "+14155550100", "From": "not a sender!", "Body": "hi"}, 400, 21212),
        (
            {"To": "+1415", "MessagingServiceSid": "MG123", "Body": "hi"},
            400,
            21705,
        ),
        (
            {
                "To": "+14155550100",
                "From": FROM_NUMBER,
                "Body": "hi",
                "StatusCallback": "hooks/twilio",
            },
            400,
            21609,
        ),
    ],
)
async def test_twilio_emulator_refuses_what_twilio_would(
    twilio: TwilioEmulator, form: dict[str, str], status: int, code: int
) -> None:
    url = f"{twilio.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    auth = {"Authorization": aiohttp.encode_basic_auth(ACCOUNT_SID, AUTH_TOKEN)}
    async with (
        aiohttp.ClientSession() as client,
        client.post(url, data=form, headers=auth) as response,
    ):
        error = await response.json()
    assert response.status == status
    assert error["code"] == code
    assert error["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert twilio.calls.summary() == {"attempts": 1, "delivered": 0, "duplicates": 0}


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (
            400,
            {"code": 21217, "message": "Phone number invalid"},
            "invalid_number",
            "21217",
        ),
        (
            400,
            {"code": 30007, "message": "Carrier violation"},
            "carrier_filtered",
            "30007",
        ),
        (401, {"message": "no code"}, "auth", "HTTP 401"),
        (400, {"code": 21408, "message": "Region not enabled"}, "rejected", "21408"),
        (502, b"<html>Bad gateway</html>", "unavailable", "HTTP 502"),
    ],
)
def test_twilio_codes_the_emulator_does_not_produce(
    status: int, body: dict[str, object] | bytes, kind: str, code: str
) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps({**body, "status": status})
    failure = twilio_provider.failure_from_response(status, {}, raw)
    assert (failure.kind, failure.code) == (FailureKind(kind), code)


async def test_twilio_unreachable_is_unavailable() -> None:
    gone = TwilioEmulator(ACCOUNT_SID, AUTH_TOKEN)
    await gone.start()
    url = gone.url
    await gone.stop()
    sender = TwilioSender(
        ACCOUNT_SID, AUTH_TOKEN, from_number=FROM_NUMBER, base_url=url
    )
    await sender.start()
    try:
        failure = await failure_of(sender, sms_to("+14155550100"))
        assert failure.kind is FailureKind.UNAVAILABLE
    finally:
        await sender.stop()
