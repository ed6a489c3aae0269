"""FCM sender: HTTP v1 ``messages:send`` with a cached service-account access token.

The request body comes from ``build_message`` and the verdict on an error from
``classify``, both pure. Data values go out as strings (FCM refuses anything
else), and the message id travels in ``data`` so a duplicate delivery can be
recognised on the device and in the emulator.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import orjson

from pipeline.providers.base import FailureKind, Outgoing, ProviderFailure, Sent
from pipeline.providers.http import (
    close_session,
    open_session,
    post,
    retry_after_seconds,
    to_json,
)
from pipeline.providers.wire import HttpClient

PRODUCTION_URL = "https://fcm.googleapis.com"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
MAX_PAYLOAD_BYTES = 4096
#: Google accepts assertions that live at most an hour.
ASSERTION_LIFETIME = timedelta(hours=1)
#: Refresh this long before the token expires, so no call carries a dying one.
TOKEN_MARGIN = timedelta(seconds=60)

_URGENT = frozenset({"critical", "transactional"})
_SERVICE_ACCOUNT_FIELDS = ("project_id", "client_email", "private_key", "token_uri")


def build_message(message: Outgoing, now: datetime) -> dict[str, Any]:
    """The ``messages:send`` request body for ``message`` at time ``now``.

    ``notification_id`` and ``message_id`` are ours and win over custom data
    keys of the same name; non-string custom values are sent as JSON text.
    """
    content = message.content
    data = {key: _as_string(value) for key, value in content.data.items()}
    data["notification_id"] = message.notification_id
    data["message_id"] = message.message_id
    notification = {"body": content.body}
    if content.title:
        notification = {"title": content.title, **notification}
    android: dict[str, str] = {
        "priority": "HIGH" if message.priority in _URGENT else "NORMAL"
    }
    if message.expires_at is not None:
        remaining = (message.expires_at - now).total_seconds()
        android["ttl"] = f"{max(0, math.ceil(remaining))}s"
    if message.collapse_id:
        android["collapse_key"] = message.collapse_id
    return {
        "message": {
            "token": message.to,
            "notification": notification,
            "data": data,
            "android": android,
        }
    }


def _as_string(value: Any) -> str:
    """A data value as FCM wants it: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else to_json(value, provider="fcm")


def payload_bytes(body: Mapping[str, Any]) -> int:
    """What FCM counts against 4096 bytes: data keys and values, notification text."""
    message = body["message"]
    data = message.get("data") or {}
    notification = message.get("notification") or {}
    texts = [*data.keys(), *data.values(), *notification.values()]
    return sum(len(str(text).encode("utf-8")) for text in texts)


def classify(status: int, error: Mapping[str, Any]) -> tuple[FailureKind, str]:
    """The failure kind and provider code of an FCM v1 error answer.

    FCM says INVALID_ARGUMENT both for a bad registration token and for a
    malformed request; only the latter names the offending field in a
    ``google.rpc.BadRequest`` detail, and a token must not be dropped for it.
    """
    details = error.get("details") or []
    error_code = _error_code(error)
    violations = [
        violation.get("field", "")
        for detail in details
        if detail.get("@type") == BAD_REQUEST_TYPE
        for violation in detail.get("fieldViolations") or []
    ]
    code = error_code or error.get("status") or f"HTTP {status}"
    if error_code == "UNREGISTERED":
        return FailureKind.UNREGISTERED, code
    if error_code == "SENDER_ID_MISMATCH":
        return FailureKind.INVALID_TOKEN, code
    if error_code == "INVALID_ARGUMENT" and not violations:
        return FailureKind.INVALID_TOKEN, code
    if "message.token" in violations:
        return FailureKind.INVALID_TOKEN, code
    if error_code == "QUOTA_EXCEEDED" or status == 429:
        return FailureKind.RATE_LIMITED, code
    if error_code in ("UNAVAILABLE", "INTERNAL") or status >= 500:
        return FailureKind.UNAVAILABLE, code
    if error_code == "THIRD_PARTY_AUTH_ERROR" or status in (401, 403):
        return FailureKind.AUTH, code
    return FailureKind.REJECTED, code


def load_service_account(source: Path | str | Mapping[str, Any]) -> dict[str, Any]:
    """The service-account JSON from a file path or an already-parsed mapping."""
    info = (
        dict(source)
        if isinstance(source, Mapping)
        else json.loads(Path(source).read_text())
    )
    missing = [name for name in _SERVICE_ACCOUNT_FIELDS if not info.get(name)]
    if missing:
        raise ValueError(f"service account lacks {', '.join(missing)}")
    return info


class FcmSender:
    """Push to Android (and any FCM client) through the FCM HTTP v1 API."""

    name = "fcm"
    channel = "push"

    def __init__(
        self,
        *,
        service_account: Path | str | Mapping[str, Any],
        base_url: str = PRODUCTION_URL,
        timeout: float = 10.0,
        ca_file: Path | str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        info = load_service_account(service_account)
        self.project_id: str = info["project_id"]
        self.client_email: str = info["client_email"]
        self.token_uri: str = info["token_uri"]
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._private_key: str = info["private_key"]
        self._private_key_id: str | None = info.get("private_key_id")
        self._ca_file = ca_file
        self._clock = clock or (lambda: datetime.now(UTC))
        self._session: HttpClient | None = None
        self._token: str | None = None
        self._token_expires = datetime.min.replace(tzinfo=UTC)
        # One refresh at a time: a batch of calls starting together must not
        # each sign an assertion and ask the token endpoint.
        self._token_lock = asyncio.Lock()

    @property
    def send_url(self) -> str:
        """The ``messages:send`` URL of this project."""
        return f"{self.base_url}/v1/projects/{self.project_id}/messages:send"

    async def start(self) -> None:
        """Open the one HTTP session this sender uses."""
        if self._session is None:
            self._session = open_session(self.timeout, self._ca_file)

    async def stop(self) -> None:
        """Close the session and its connections."""
        session, self._session = self._session, None
        await close_session(session)

    async def access_token(self) -> str:
        """The cached OAuth2 access token, fetched again 60 s before it expires."""
        if self._token_stale():
            async with self._token_lock:
                if self._token_stale():  # not refreshed while we waited
                    await self._fetch_token()
        if self._token is None:
            raise RuntimeError("token endpoint answered without a token")
        return self._token

    def _token_stale(self) -> bool:
        return (
            self._token is None or self._clock() >= self._token_expires - TOKEN_MARGIN
        )

    def assertion(self, now: datetime) -> str:
        """The RS256 JWT that trades for an access token (service-account grant)."""
        issued = int(now.timestamp())
        headers = {"kid": self._private_key_id} if self._private_key_id else None
        return jwt.encode(
            {
                "iss": self.client_email,
                "scope": FCM_SCOPE,
                "aud": self.token_uri,
                "iat": issued,
                "exp": issued + int(ASSERTION_LIFETIME.total_seconds()),
            },
            self._private_key,
            algorithm="RS256",
            headers=headers,
        )

    async def _fetch_token(self) -> None:
        """Trade a fresh assertion for an access token and cache it."""
        now = self._clock()
        status, answer, headers = await self._call(
            self.token_uri,
            data={"grant_type": JWT_BEARER_GRANT, "assertion": self.assertion(now)},
        )
        token = answer.get("access_token")
        if status != 200 or not isinstance(token, str):
            code = str(answer.get("error") or f"HTTP {status}")
            kind = FailureKind.UNAVAILABLE if status >= 500 else FailureKind.AUTH
            raise ProviderFailure(
                kind,
                code,
                f"token endpoint: {answer.get('error_description', '')}".rstrip(": "),
                provider=self.name,
                retry_after=retry_after_seconds(headers.get("Retry-After"), now),
            )
        self._token = token
        self._token_expires = now + timedelta(seconds=int(answer.get("expires_in", 0)))

    async def send(self, message: Outgoing) -> Sent:
        """Deliver one push, or raise ``ProviderFailure``."""
        body = build_message(message, self._clock())
        size = payload_bytes(body)
        if size > MAX_PAYLOAD_BYTES:
            raise ProviderFailure(
                FailureKind.PAYLOAD_TOO_LARGE,
                "INVALID_ARGUMENT",
                f"{size} bytes of data and text, FCM takes {MAX_PAYLOAD_BYTES}",
                provider=self.name,
            )
        token = await self.access_token()
        status, answer, headers = await self._call(
            self.send_url, json_body=body, token=token
        )
        error = _error_of(answer)
        if status == 401 and _error_code(error) != "THIRD_PARTY_AUTH_ERROR":
            # Revoked or expired early: one fresh token, one more try. Only the
            # first concurrent caller to see this token refused fetches anew.
            if self._token == token:
                self._token = None
            token = await self.access_token()
            status, answer, headers = await self._call(
                self.send_url, json_body=body, token=token
            )
            error = _error_of(answer)
        if status == 200:
            return Sent(provider=self.name, provider_message_id=answer.get("name"))
        kind, code = classify(status, error)
        raise ProviderFailure(
            kind,
            code,
            str(error.get("message") or f"HTTP {status}"),
            provider=self.name,
            retry_after=retry_after_seconds(headers.get("Retry-After"), self._clock()),
        )

    async def _call(
        self,
        url: str,
        *,
        json_body: Any = None,
        data: Mapping[str, str] | None = None,
        token: str | None = None,
    ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        """POST and read a JSON answer; a call that gets no answer is a failure."""
        if self._session is None:
            raise RuntimeError("FcmSender.start() was not called")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        status, response_headers, raw = await post(
            self._session,
            url,
            provider=self.name,
            timeout=self.timeout,
            json=json_body,
            data=data,
            headers=headers,
        )
        try:
            answer = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            answer = {}
        return status, answer if isinstance(answer, dict) else {}, response_headers


def _error_of(answer: Mapping[str, Any]) -> dict[str, Any]:
    """The ``error`` object of a Google API answer, or {} when there is none."""
    error = answer.get("error")
    return error if isinstance(error, dict) else {}


def _error_code(error: Mapping[str, Any]) -> str | None:
    """The FcmError errorCode of an error answer, if it carries one."""
    for detail in error.get("details") or []:
        if detail.get("@type") == FCM_ERROR_TYPE:
            code = detail.get("errorCode")
            return code if isinstance(code, str) else None
    return None
