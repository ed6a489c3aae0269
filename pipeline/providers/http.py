"""What the HTTP providers share: TLS, the client, a POST that maps no-answer
to a failure kind, Retry-After, and JSON that never refuses a big integer."""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson

from pipeline.providers.base import FailureKind, ProviderFailure
from pipeline.providers.wire import HttpClient


def client_ssl_context(ca_file: Path | str | None) -> ssl.SSLContext:
    """Verifying TLS context: the given CA bundle, else the system's trust store."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def open_session(
    timeout: float,
    ca_file: Path | str | None = None,
    headers: Mapping[str, str] | None = None,
) -> HttpClient:
    """The one HTTP client of a provider: verified TLS, a total timeout,
    keep-alive connections (`pipeline.providers.wire`)."""
    return HttpClient(timeout, client_ssl_context(ca_file), headers)


async def post(
    session: HttpClient,
    url: str,
    *,
    provider: str,
    timeout: float,
    json: Any = None,
    data: bytes | Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Mapping[str, str], bytes]:
    """POST and read the answer: (status, headers, body).

    ``json`` is sent as JSON, ``data`` as bytes or, a mapping, as a form.
    A call that gets no answer is a ``ProviderFailure``: TIMEOUT past the
    client's timeout, UNAVAILABLE with code ``TLS`` for an untrusted server
    certificate, UNAVAILABLE with code ``connection`` for anything else.
    """
    sent = dict(headers or {})
    if json is not None:
        body = to_json(json, provider=provider).encode()
        sent.setdefault("Content-Type", "application/json")
    elif isinstance(data, Mapping):
        body = urlencode(data).encode()
        sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
    else:
        body = data or b""
    try:
        return await session.post(url, body, sent)
    except TimeoutError as error:
        raise ProviderFailure(
            FailureKind.TIMEOUT,
            "timeout",
            f"no answer within {timeout:g} s",
            provider=provider,
        ) from error
    except ssl.SSLCertVerificationError as error:
        raise ProviderFailure(
            FailureKind.UNAVAILABLE,
            "TLS",
            f"server certificate not trusted: {error.verify_message}",
            provider=provider,
        ) from error
    except OSError as error:  # ConnectionError, TLS failures, refused
        raise ProviderFailure(
            FailureKind.UNAVAILABLE,
            "connection",
            f"{type(error).__name__}: {error}",
            provider=provider,
        ) from error


async def close_session(session: HttpClient | None) -> None:
    """Close a provider's client, if it was opened."""
    if session is not None:
        await session.close()


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A Retry-After header (delta-seconds or HTTP-date) in seconds from ``now``."""
    if value is None:
        return None
    value = value.strip()
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def to_json(value: Any, *, provider: str) -> str:
    """Compact JSON text of ``value``, or ``ProviderFailure(REJECTED)``.

    orjson first; the standard library takes what orjson refuses but JSON
    allows (integers beyond 64 bits).
    """
    try:
        return orjson.dumps(value).decode("utf-8")
    except orjson.JSONEncodeError:
        pass
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise ProviderFailure(
            FailureKind.REJECTED, "PayloadNotJSON", str(error), provider=provider
        ) from error
