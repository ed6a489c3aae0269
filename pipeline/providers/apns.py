"""APNs sender: the provider API over HTTP/2 with a cached ES256 provider token.

What goes on the wire is decided by pure functions the tests call directly:
``build_payload`` (including the 4 KB rule: a payload APNs would refuse as too
large goes out as a data-only "fetch" notification, so the app pulls the
content itself), ``build_headers`` and ``classify``.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import httpx
import jwt
import orjson

from pipeline.providers.base import FailureKind, Outgoing, ProviderFailure, Sent
from pipeline.providers.http import client_ssl_context, retry_after_seconds, to_json

PRODUCTION_URL = "https://api.push.apple.com"
DEVELOPMENT_URL = "https://api.sandbox.push.apple.com"
MAX_PAYLOAD_BYTES = 4096
MAX_COLLAPSE_ID_BYTES = 64
#: APNs refuses tokens older than an hour and more than one new token per 20
#: minutes; 50 minutes sits safely inside that window.
TOKEN_REFRESH_AFTER = timedelta(minutes=50)
FETCH_DETAIL = f"fetch notification: payload over {MAX_PAYLOAD_BYTES} bytes"

HIGH_PRIORITY = 10  # deliver now, wake the device
LOW_PRIORITY = 5  # may be delayed and batched to save power; background pushes
_URGENT = frozenset({"critical", "transactional"})
_INVALID_TOKEN_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic"})

#: The HTTP/2 client's loggers: httpx logs every request at INFO, httpcore and
#: hpack every frame and header at DEBUG.
CLIENT_LOGGERS = ("httpx", "httpcore", "hpack")
# Set where the client is, so every process that sends through APNs (the
# worker, `make run`, tests, benchmarks) is quiet whatever configures its
# logging: a line per push drowned a worker's log at INFO. The sender's own
# events say what each call came to; warnings and errors still show.
for _name in CLIENT_LOGGERS:
    logging.getLogger(_name).setLevel(logging.WARNING)


class ApnsPayload(NamedTuple):
    """What to POST for one message: body bytes, apns-push-type, apns-priority."""

    body: bytes
    push_type: str
    priority: int


def build_payload(message: Outgoing) -> ApnsPayload:
    """The APNs payload of ``message``, or a fetch notification when it is too big.

    Custom data sits beside ``aps``; ``aps`` and ``notification_id`` are ours and
    win over custom keys of the same name. Size is counted in UTF-8 bytes, the
    way APNs counts it.
    """
    content = message.content
    alert: dict[str, str] = {"body": content.body}
    if content.title:
        alert = {"title": content.title, **alert}
    document: dict[str, Any] = {
        **content.data,
        "aps": {"alert": alert, "sound": "default"},
        "notification_id": message.notification_id,
    }
    body = _encode(document)
    if len(body) <= MAX_PAYLOAD_BYTES:
        priority = HIGH_PRIORITY if message.priority in _URGENT else LOW_PRIORITY
        return ApnsPayload(body, "alert", priority)
    fetch = _encode(
        {
            "aps": {"content-available": 1},
            "notification_id": message.notification_id,
            "fetch": True,
        }
    )
    if len(fetch) > MAX_PAYLOAD_BYTES:
        raise ProviderFailure(
            FailureKind.PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            f"even the fetch notification is {len(fetch)} bytes",
            provider="apns",
        )
    return ApnsPayload(fetch, "background", LOW_PRIORITY)


def _encode(document: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; content that is not JSON is a message no retry will fix."""
    return to_json(document, provider="apns").encode("utf-8")


def cut_collapse_id(collapse_id: str) -> str:
    """``collapse_id`` cut to APNs's 64 bytes without splitting a character."""
    raw = collapse_id.encode("utf-8")[:MAX_COLLAPSE_ID_BYTES]
    return raw.decode("utf-8", errors="ignore")


def build_headers(
    message: Outgoing, payload: ApnsPayload, bundle_id: str
) -> dict[str, str]:
    """The apns-* request headers of one message (authorization is added apart)."""
    expiration = (
        max(0, int(message.expires_at.timestamp())) if message.expires_at else 0
    )
    headers = {
        "apns-id": message.message_id,
        "apns-topic": bundle_id,
        "apns-push-type": payload.push_type,
        "apns-priority": str(payload.priority),
        "apns-expiration": str(expiration),
    }
    if message.collapse_id:
        collapse_id = cut_collapse_id(message.collapse_id)
        if collapse_id:
            headers["apns-collapse-id"] = collapse_id
    return headers


def classify(status: int, reason: str) -> FailureKind:
    """The failure kind of an APNs answer other than 200."""
    if reason in _INVALID_TOKEN_REASONS:
        return FailureKind.INVALID_TOKEN
    if status == 410:
        return FailureKind.UNREGISTERED
    if status == 413:
        return FailureKind.PAYLOAD_TOO_LARGE
    if status == 429:
        return FailureKind.RATE_LIMITED
    if status >= 500:
        return FailureKind.UNAVAILABLE
    if status in (401, 403):
        return FailureKind.AUTH
    return FailureKind.REJECTED


def transport_failure(
    error: httpx.TransportError, provider: str, timeout: float
) -> ProviderFailure:
    """A failure kind for an HTTP call that got no answer."""
    if isinstance(error, httpx.TimeoutException):
        return ProviderFailure(
            FailureKind.TIMEOUT,
            "timeout",
            f"no answer within {timeout:g} s ({type(error).__name__})",
            provider=provider,
        )
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return ProviderFailure(
                FailureKind.UNAVAILABLE,
                "TLS",
                f"server certificate not trusted: {cause.verify_message}",
                provider=provider,
            )
        cause = cause.__cause__ or cause.__context__
    return ProviderFailure(
        FailureKind.UNAVAILABLE,
        type(error).__name__,
        str(error) or repr(error),
        provider=provider,
    )


class ApnsSender:
    """Push to Apple devices through the APNs provider API (token-based auth).

    ``signing_key`` is the .p8 key's PEM text, or a ``Path`` to the file.
    """

    name = "apns"
    channel = "push"

    def __init__(
        self,
        *,
        team_id: str,
        key_id: str,
        signing_key: str | bytes | Path,
        bundle_id: str,
        base_url: str = PRODUCTION_URL,
        timeout: float = 10.0,
        ca_file: Path | str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.team_id = team_id
        self.key_id = key_id
        self.bundle_id = bundle_id
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._signing_key = (
            signing_key.read_bytes() if isinstance(signing_key, Path) else signing_key
        )
        self._ca_file = ca_file
        self._clock = clock or (lambda: datetime.now(UTC))
        self._client: httpx.AsyncClient | None = None
        self._token: str | None = None
        self._token_issued = datetime.min.replace(tzinfo=UTC)

    async def start(self) -> None:
        """Open the one HTTP/2 client this sender uses."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                http2=True,
                verify=client_ssl_context(self._ca_file),
                timeout=httpx.Timeout(self.timeout),
            )

    async def stop(self) -> None:
        """Close the client and its connections."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def provider_token(self) -> str:
        """The current provider JWT, minted again once it is 50 minutes old."""
        now = self._clock()
        if self._token is None or now - self._token_issued >= TOKEN_REFRESH_AFTER:
            return self._mint(now)
        return self._token

    def _mint(self, now: datetime) -> str:
        """Sign, cache and return a new provider token issued at ``now``."""
        self._token = jwt.encode(
            {"iss": self.team_id, "iat": int(now.timestamp())},
            self._signing_key,
            algorithm="ES256",
            headers={"kid": self.key_id},
        )
        self._token_issued = now
        return self._token

    async def send(self, message: Outgoing) -> Sent:
        """Deliver one push, or raise ``ProviderFailure``."""
        payload = build_payload(message)
        headers = build_headers(message, payload, self.bundle_id)
        url = f"{self.base_url}/3/device/{quote(message.to, safe='')}"
        token = self.provider_token()
        response = await self._post(url, headers, token, payload.body)
        if response.status_code == 403 and _reason(response) == "ExpiredProviderToken":
            # Concurrent sends share the token: only the first to see it
            # rejected mints a new one, so APNs sees one update, not a burst.
            if self._token == token:
                self._mint(self._clock())
            response = await self._post(
                url, headers, self.provider_token(), payload.body
            )
        if response.status_code == 200:
            return Sent(
                provider=self.name,
                provider_message_id=response.headers.get("apns-unique-id")
                or response.headers.get("apns-id"),
                detail=FETCH_DETAIL if payload.push_type == "background" else "",
            )
        reason = _reason(response) or f"HTTP {response.status_code}"
        retry_after = retry_after_seconds(
            response.headers.get("retry-after"), self._clock()
        )
        raise ProviderFailure(
            classify(response.status_code, reason),
            reason,
            f"HTTP {response.status_code}",
            provider=self.name,
            retry_after=retry_after,
        )

    async def _post(
        self, url: str, headers: dict[str, str], token: str, body: bytes
    ) -> httpx.Response:
        """One POST; a call that gets no answer becomes a ProviderFailure."""
        if self._client is None:
            raise RuntimeError("ApnsSender.start() was not called")
        # Bytes, because httpx would encode str values as ASCII and a collapse
        # id may be any UTF-8 (APNs counts its limit in bytes).
        raw_headers = {
            name.encode("ascii"): value.encode("utf-8")
            for name, value in {**headers, "authorization": f"bearer {token}"}.items()
        }
        try:
            return await self._client.post(url, content=body, headers=raw_headers)
        except httpx.TransportError as error:
            raise transport_failure(error, self.name, self.timeout) from error


def _reason(response: httpx.Response) -> str:
    """The ``reason`` of an APNs error body, or "" when there is none."""
    if not response.content:
        return ""
    try:
        answer = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return ""
    reason = answer.get("reason") if isinstance(answer, dict) else None
    return reason if isinstance(reason, str) else ""
