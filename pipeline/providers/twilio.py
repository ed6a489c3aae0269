"""SMS through Twilio's Messages API, its status callbacks and their signatures.

``POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded,
HTTP basic auth ``AccountSid:AuthToken``. The body is fitted to
``max_segments`` first (``pipeline.sms.fit``: truncated with an ellipsis,
never split, never dropped). ``StatusCallback`` is the configured base URL
with ``attempt_key`` in its query, so a callback finds its attempt.

Answers: 201 -> Sent (the Message sid). Errors are
``{"code", "message", "more_info", "status"}``: 21211, 21614, 21217 ->
INVALID_NUMBER; 21610 (the recipient replied STOP) -> REJECTED; 30007 ->
CARRIER_FILTERED; 20429 or HTTP 429 -> RATE_LIMITED (Retry-After); 20003 or
401/403 -> AUTH; 5xx -> UNAVAILABLE; any other 4xx -> REJECTED.

Callbacks are signed (``X-Twilio-Signature``): HMAC-SHA1, keyed with the auth
token, over the full callback URL followed by every POST parameter, sorted by
name, as name + value; base64.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

import aiohttp
import orjson

from pipeline import sms
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

NAME = "twilio"
TWILIO_API = "https://api.twilio.com"
SIGNATURE_HEADER = "X-Twilio-Signature"

INVALID_NUMBER_CODES = frozenset({21211, 21217, 21614})
UNSUBSCRIBED_CODE = 21610  # the recipient replied STOP to this sender
CARRIER_FILTERED_CODE = 30007
RATE_LIMITED_CODE = 20429
AUTH_CODE = 20003

#: Delivery ErrorCodes of undelivered/failed callbacks, for the receipt detail.
DELIVERY_ERRORS = {
    "30001": "Queue overflow",
    "30002": "Account suspended",
    "30003": "Unreachable destination handset",
    "30004": "Message blocked",
    "30005": "Unknown destination handset",
    "30006": "Landline or unreachable carrier",
    "30007": "Message filtered by the carrier",
    "30008": "Unknown error",
    "30034": "Message from an unregistered number",
}


def status_callback_url(base: str, attempt_key: str) -> str:
    """``base`` with ``attempt_key`` (URL-encoded) added to its query."""
    separator = "&" if urlsplit(base).query else ("" if base.endswith("?") else "?")
    return f"{base}{separator}attempt_key={quote(attempt_key, safe='')}"


def build_form(
    message: Outgoing,
    *,
    from_number: str | None = None,
    messaging_service_sid: str | None = None,
    status_callback: str | None = None,
    max_segments: int = 3,
) -> dict[str, str]:
    """The form of one Create Message request."""
    body = message.content.body
    # "…" is not GSM-7: ending a GSM text with it would re-encode the whole
    # message as UCS-2 (67 characters a segment instead of 153).
    ellipsis = "..." if sms.is_gsm7(body) else sms.ELLIPSIS
    form = {"To": message.to, "Body": sms.fit(body, max_segments, ellipsis)}
    if messaging_service_sid:
        form["MessagingServiceSid"] = messaging_service_sid
    if from_number:
        form["From"] = from_number
    if status_callback:
        form["StatusCallback"] = status_callback_url(
            status_callback, message.attempt_key
        )
    return form


def failure_from_response(
    status: int, headers: Mapping[str, str], body: bytes
) -> ProviderFailure:
    """The ProviderFailure of a non-2xx answer, by Twilio error code and status."""
    document: Any = None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    if not isinstance(document, dict):
        document = {}
    error_code = document.get("code")
    number = error_code if isinstance(error_code, int) else None
    code = str(number) if number is not None else f"HTTP {status}"
    detail = str(document.get("message") or body[:200].decode("utf-8", "replace"))
    if number == RATE_LIMITED_CODE or status == 429:
        return ProviderFailure(
            FailureKind.RATE_LIMITED,
            code,
            detail,
            provider=NAME,
            retry_after=retry_after_seconds(
                headers.get("Retry-After"), datetime.now(UTC)
            ),
        )
    if status >= 500:
        kind = FailureKind.UNAVAILABLE
    elif number == AUTH_CODE or status in (401, 403):
        kind = FailureKind.AUTH
    elif number in INVALID_NUMBER_CODES:
        kind = FailureKind.INVALID_NUMBER
    elif number == CARRIER_FILTERED_CODE:
        kind = FailureKind.CARRIER_FILTERED
    else:
        # 21610 included: the recipient opted out; nothing to retry.
        kind = FailureKind.REJECTED
    return ProviderFailure(kind, code, detail, provider=NAME)


class TwilioSender:
    """Sends SMS through Twilio's Messages API on one HTTP session."""

    name = NAME
    channel = "sms"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback: str | None = None,
        base_url: str = TWILIO_API,
        timeout: float = 10.0,
        ca_file: str | None = None,
        max_segments: int = 3,
    ) -> None:
        if not from_number and not messaging_service_sid:
            raise ValueError("Twilio needs a From number or a MessagingServiceSid")
        if max_segments < 1:
            raise ValueError("max_segments must be at least 1")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.status_callback = status_callback
        self.endpoint = (
            f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        )
        self.timeout = timeout
        self.ca_file = ca_file
        self.max_segments = max_segments
        self._session: HttpClient | None = None

    async def start(self) -> None:
        """Open the HTTP session."""
        self._session = open_session(
            self.timeout,
            self.ca_file,
            {
                "Authorization": aiohttp.encode_basic_auth(
                    self.account_sid, self.auth_token
                )
            },
        )

    async def stop(self) -> None:
        """Close it."""
        session, self._session = self._session, None
        await close_session(session)

    async def send(self, message: Outgoing) -> Sent:
        """Send one SMS, or raise ProviderFailure."""
        session = self._session
        if session is None:
            raise RuntimeError("TwilioSender.send before start()")
        form = build_form(
            message,
            from_number=self.from_number,
            messaging_service_sid=self.messaging_service_sid,
            status_callback=self.status_callback,
            max_segments=self.max_segments,
        )
        status, headers, body = await post(
            session, self.endpoint, provider=NAME, timeout=self.timeout, data=form
        )
        if not 200 <= status < 300:
            raise failure_from_response(status, headers, body)
        try:
            resource = orjson.loads(body)
        except orjson.JSONDecodeError:
            resource = None
        if not isinstance(resource, dict):
            resource = {}
        truncated = form["Body"] != message.content.body
        detail = f"{resource.get('num_segments', '?')} segment(s)" + (
            f", truncated to {self.max_segments}" if truncated else ""
        )
        return Sent(
            provider=NAME, provider_message_id=resource.get("sid"), detail=detail
        )


def compute_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature of a request to ``url`` with POST ``params``."""
    signed = url + "".join(f"{name}{params[name]}" for name in sorted(params))
    digest = hmac.new(
        auth_token.encode("utf-8"), signed.encode("utf-8"), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def _port_variants(url: str) -> set[str]:
    """The URL as given, without its port, and with the scheme's default port.

    Twilio signs the URL it called, which may or may not spell the port; its
    own helper libraries accept either spelling, and so does this.
    """
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return {url}
    userinfo, at, hostport = parts.netloc.rpartition("@")
    host = hostport if port is None else hostport[: -(len(str(port)) + 1)]
    prefix = userinfo + at
    variants = {url, urlunsplit(parts._replace(netloc=prefix + host))}
    default = {"https": 443, "http": 80}.get(parts.scheme)
    if port is None and default is not None:
        variants.add(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}")))
    return variants


def validate_signature(
    auth_token: str, url: str, params: Mapping[str, str], signature: str
) -> bool:
    """Whether ``signature`` is Twilio's X-Twilio-Signature for this request.

    ``url`` is the full URL Twilio called, query included; ``params`` the
    form parameters it posted. Compared in constant time.
    """
    given = signature.encode("utf-8")
    matched = False
    for variant in _port_variants(url):
        expected = compute_signature(auth_token, variant, params).encode("ascii")
        matched |= hmac.compare_digest(expected, given)
    return matched


def parse_status_callback(
    params: Mapping[str, str], url: str, *, received_at: datetime | None = None
) -> Receipt | None:
    """The receipt of one status callback, or None when it is not final or ours.

    delivered -> DELIVERED; undelivered or failed -> FAILED with the
    ErrorCode (30007 carrier filtering, 30003 unreachable, 30005 unknown
    number, ...); queued, sending, sent, accepted -> None (not a receipt).
    ``attempt_key`` comes from the callback URL's query; a callback without
    one is not ours and gives None. Twilio sends no event time, so the
    receipt is dated ``received_at`` (default: now).
    """
    status = params.get("MessageStatus") or params.get("SmsStatus") or ""
    if status == "delivered":
        kind = ReceiptKind.DELIVERED
    elif status in ("undelivered", "failed"):
        kind = ReceiptKind.FAILED
    else:
        return None
    attempt_key = parse_qs(urlsplit(url).query).get("attempt_key", [""])[0]
    if not attempt_key:
        return None
    code = params.get("ErrorCode", "") if kind is ReceiptKind.FAILED else ""
    detail = DELIVERY_ERRORS.get(code, "") or params.get("ErrorMessage", "")
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    return Receipt(
        provider=NAME,
        kind=kind,
        attempt_key=attempt_key,
        target=params.get("To", ""),
        occurred_at=received_at or datetime.now(UTC),
        code=code,
        detail=detail,
        provider_event_id=f"{sid}:{status}" if sid else "",
    )
