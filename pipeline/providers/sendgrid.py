"""Email through SendGrid's v3 Mail Send API, and its signed Event Webhook.

``POST {base}/v3/mail/send`` with a Bearer API key; one personalization per
message whose ``custom_args`` (notification_id, attempt_key, message_id) come
back on every webhook event, so a receipt finds its attempt. SendGrid's own
click and open tracking is off: links are ours, and signed by us.

Answers: 202 -> Sent (``X-Message-Id``); 429 -> RATE_LIMITED (Retry-After,
else X-RateLimit-Reset - now); 5xx -> UNAVAILABLE; 401/403 -> AUTH; 413 ->
PAYLOAD_TOO_LARGE; any other 4xx -> REJECTED with the ``errors`` messages.

Events arrive as a JSON array, signed with ECDSA P-256 over SHA-256 of
timestamp + body (``X-Twilio-Email-Event-Webhook-Signature`` and
``-Timestamp`` headers); ``verify_event_signature`` checks that and
``parse_events`` turns the events into receipts.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    load_der_public_key,
    load_pem_public_key,
)

from pipeline.providers.base import (
    FailureKind,
    Outgoing,
    ProviderFailure,
    Receipt,
    ReceiptKind,
    Sent,
)
from pipeline.providers.http import (
    close_session,
    open_session,
    post,
    retry_after_seconds,
)
from pipeline.providers.wire import HttpClient

NAME = "sendgrid"
SENDGRID_API = "https://api.sendgrid.com"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

#: Drop reasons that say the address itself is bad: keep it suppressed.
_BAD_ADDRESS_DROPS = frozenset({"Bounced Address", "Invalid"})


def _utcnow() -> datetime:
    return datetime.now(UTC)


def build_request(
    message: Outgoing,
    from_address: str,
    *,
    from_name: str | None = None,
    list_unsubscribe: str | None = None,
) -> dict[str, Any]:
    """The v3 Mail Send body of one attempt."""
    content = message.content
    parts = [{"type": "text/plain", "value": content.text or content.body}]
    if content.html:
        parts.append({"type": "text/html", "value": content.html})
    sender: dict[str, str] = {"email": from_address}
    if from_name:
        sender["name"] = from_name
    headers = {"X-Notify-Attempt": message.attempt_key}
    if list_unsubscribe:
        link = list_unsubscribe.strip().removeprefix("<").removesuffix(">")
        headers["List-Unsubscribe"] = f"<{link}>"
        if link.startswith("https://"):
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    body: dict[str, Any] = {
        "personalizations": [
            {
                "to": [{"email": message.to}],
                "custom_args": {
                    "notification_id": message.notification_id,
                    "attempt_key": message.attempt_key,
                    "message_id": message.message_id,
                },
            }
        ],
        "from": sender,
        "content": parts,
        "headers": headers,
        "tracking_settings": {
            "click_tracking": {"enable": False, "enable_text": False},
            "open_tracking": {"enable": False},
        },
    }
    subject = content.subject or content.title
    if subject:
        body["subject"] = subject
    return body


def retry_after_from(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds to wait: Retry-After (seconds or a date), else X-RateLimit-Reset."""
    retry_after = retry_after_seconds(headers.get("Retry-After"), now)
    if retry_after is not None:
        return retry_after
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            return max(0.0, float(reset) - now.timestamp())
        except ValueError:
            return None
    return None


def error_messages(body: bytes) -> str:
    """SendGrid's ``errors`` array as one line ("field: message; ...")."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace")
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list):
        return body[:200].decode("utf-8", "replace")
    lines = []
    for error in errors:
        if not isinstance(error, dict):
            continue
        text = str(error.get("message") or "")
        field = error.get("field")
        lines.append(f"{field}: {text}" if field else text)
    return "; ".join(lines)


def failure_from_response(
    status: int, headers: Mapping[str, str], body: bytes, now: datetime
) -> ProviderFailure:
    """The ProviderFailure of a non-2xx answer to Mail Send."""
    code = f"HTTP {status}"
    detail = error_messages(body)
    if status == 429:
        return ProviderFailure(
            FailureKind.RATE_LIMITED,
            code,
            detail,
            provider=NAME,
            retry_after=retry_after_from(headers, now),
        )
    if status >= 500:
        return ProviderFailure(FailureKind.UNAVAILABLE, code, detail, provider=NAME)
    if status in (401, 403):
        kind = FailureKind.AUTH
    elif status == 413:
        kind = FailureKind.PAYLOAD_TOO_LARGE
    else:
        kind = FailureKind.REJECTED
    return ProviderFailure(kind, code, detail, provider=NAME)


class SendGridSender:
    """Sends email through SendGrid's v3 Mail Send API on one HTTP session."""

    name = NAME
    channel = "email"

    def __init__(
        self,
        api_key: str,
        from_address: str,
        *,
        from_name: str | None = None,
        base_url: str = SENDGRID_API,
        timeout: float = 10.0,
        ca_file: str | None = None,
        clock: Callable[[], datetime] = _utcnow,
        list_unsubscribe: Callable[[Outgoing], str | None] | None = None,
    ) -> None:
        self.api_key = api_key
        self.from_address = from_address
        self.from_name = from_name
        self.endpoint = base_url.rstrip("/") + "/v3/mail/send"
        self.timeout = timeout
        self.ca_file = ca_file
        self.clock = clock
        self.list_unsubscribe = list_unsubscribe
        self._session: HttpClient | None = None

    async def start(self) -> None:
        """Open the HTTP session."""
        self._session = open_session(
            self.timeout,
            self.ca_file,
            {"Authorization": f"Bearer {self.api_key}"},
        )

    async def stop(self) -> None:
        """Close it."""
        session, self._session = self._session, None
        await close_session(session)

    async def send(self, message: Outgoing) -> Sent:
        """Deliver one email, or raise ProviderFailure."""
        session = self._session
        if session is None:
            raise RuntimeError("SendGridSender.send before start()")
        unsubscribe = (
            self.list_unsubscribe(message)
            if self.list_unsubscribe
            else message.list_unsubscribe
        )
        body = build_request(
            message,
            self.from_address,
            from_name=self.from_name,
            list_unsubscribe=unsubscribe,
        )
        status, headers, payload = await post(
            session,
            self.endpoint,
            provider=NAME,
            timeout=self.timeout,
            data=orjson.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        if 200 <= status < 300:
            return Sent(
                provider=NAME,
                provider_message_id=headers.get("X-Message-Id"),
                detail=f"HTTP {status}",
            )
        raise failure_from_response(status, headers, payload, self.clock())


def _load_public_key(public_key: str) -> ec.EllipticCurvePublicKey:
    """SendGrid's verification key: base64 DER as the console shows it, or PEM."""
    text = public_key.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = load_pem_public_key(text.encode("ascii"))
        else:
            key = load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error) as error:
        raise ValueError(f"not a SendGrid verification key: {error}") from error
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
        key.curve, ec.SECP256R1
    ):
        raise ValueError("a SendGrid verification key is an ECDSA P-256 key")
    return key


def verify_event_signature(
    public_key: str, payload: bytes, signature: str, timestamp: str
) -> bool:
    """Whether ``signature`` signs ``timestamp + payload`` with SendGrid's key.

    ``payload`` is the raw request body, byte for byte; ``signature`` and
    ``timestamp`` are the two X-Twilio-Email-Event-Webhook headers. A key that
    is not a P-256 public key raises ValueError (a configuration error); a bad
    signature is just False.
    """
    key = _load_public_key(public_key)
    try:
        der_signature = base64.b64decode(signature, validate=True)
        key.verify(
            der_signature,
            timestamp.encode("utf-8") + payload,
            ec.ECDSA(hashes.SHA256()),
        )
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def parse_events(payload: bytes) -> list[Receipt]:
    """Receipts of a webhook body: delivered, open, click, bounce, dropped.

    Our custom args come back as top-level keys of each event; an event
    without ``attempt_key`` (not sent by us, or by an older release) is
    skipped, as are event types that are not receipts (processed, deferred,
    ...). A bounce of type ``blocked`` is FAILED (the receiving server refused
    this message, not the address); a drop because the address bounced before
    or is invalid stays BOUNCED, any other drop is FAILED. A body that is not
    a JSON array raises ValueError.
    """
    try:
        events = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"event webhook body is not JSON: {error}") from error
    if not isinstance(events, list):
        raise ValueError("event webhook body is not a JSON array")
    receipts = []
    for event in events:
        if isinstance(event, dict):
            receipt = _receipt(event)
            if receipt is not None:
                receipts.append(receipt)
    return receipts


def _receipt(event: Mapping[str, Any]) -> Receipt | None:
    """One event's receipt, or None when it is not one of ours or not a receipt."""
    attempt_key = event.get("attempt_key")
    name = event.get("event")
    if not isinstance(attempt_key, str) or not attempt_key:
        return None
    try:
        occurred_at = datetime.fromtimestamp(float(event["timestamp"]), UTC)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return None
    code, detail = "", ""
    if name == "delivered":
        kind = ReceiptKind.DELIVERED
        detail = str(event.get("response") or "")
    elif name == "open":
        kind = ReceiptKind.OPENED
    elif name == "click":
        kind = ReceiptKind.CLICKED
        detail = str(event.get("url") or "")
    elif name == "bounce":
        code = str(event.get("type") or "bounce")
        kind = ReceiptKind.FAILED if code == "blocked" else ReceiptKind.BOUNCED
        status = str(event.get("status") or "")
        detail = " ".join(filter(None, [status, str(event.get("reason") or "")]))
    elif name == "dropped":
        code = "dropped"
        detail = str(event.get("reason") or "")
        bad_address = detail in _BAD_ADDRESS_DROPS
        kind = ReceiptKind.BOUNCED if bad_address else ReceiptKind.FAILED
    else:
        return None
    return Receipt(
        provider=NAME,
        kind=kind,
        attempt_key=attempt_key,
        target=str(event.get("email") or ""),
        occurred_at=occurred_at,
        code=code,
        detail=detail,
        provider_event_id=str(event.get("sg_event_id") or ""),
    )
