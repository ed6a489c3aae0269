"""API keys: per tenant, stored as SHA-256 of their secret; bearer authentication."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pipeline.api.errors import forbidden, unauthorized
from pipeline.settings import Settings
from schemas.records import ApiKey

KEY_PREFIX = "nk_"
NOTIFY_SCOPE = "notify"
ADMIN_SCOPE = "admin"
SCOPES = frozenset({NOTIFY_SCOPE, ADMIN_SCOPE})


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant's key, or an admin."""

    key_id: str
    tenant: str | None
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        """True for keys with the admin scope."""
        return ADMIN_SCOPE in self.scopes

    def tenant_for(self, requested: str | None) -> str:
        """The tenant this call acts for; 403 for another tenant's data."""
        if self.is_admin:
            if requested:
                return requested
            if self.tenant:
                return self.tenant
            raise forbidden("an admin key must name the tenant (?tenant=...)")
        if requested and requested != self.tenant:
            raise forbidden(f"this key belongs to tenant {self.tenant!r}")
        assert self.tenant is not None  # noqa: S101 - tenant keys always have one
        return self.tenant

    def require(self, scope: str) -> None:
        """403 unless this key has ``scope`` (admin implies every scope)."""
        if scope not in self.scopes and not self.is_admin:
            raise forbidden(f"this key lacks the {scope!r} scope")


def sha256(secret: str) -> str:
    """Hex SHA-256: keys are random and long, so a fast hash is enough."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(tenant: str, scopes: list[str], now: datetime) -> tuple[str, ApiKey]:
    """A fresh key: the plaintext (shown once) and the record that is stored."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    record = ApiKey(
        key_id=key_id,
        tenant=tenant,
        secret_sha256=sha256(secret),
        scopes=sorted(set(scopes)),
        created_at=now,
    )
    return f"{KEY_PREFIX}{key_id}_{secret}", record


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer ...`` header, or 401."""
    if not header:
        raise unauthorized("missing Authorization: Bearer <api key>")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("the Authorization header must be 'Bearer <api key>'")
    return token.strip()


def authenticate(
    token: str, settings: Settings, lookup: Callable[[str], ApiKey | None]
) -> Principal:
    """Resolve a token to its principal, or 401. Compares digests in constant time."""
    digest = sha256(token)
    admin = settings.admin_api_key.get_secret_value()
    if admin and hmac.compare_digest(digest, sha256(admin)):
        return Principal("settings-admin", None, frozenset(SCOPES))
    dev = settings.dev_api_key.get_secret_value()
    if dev and hmac.compare_digest(digest, sha256(dev)):
        return Principal("settings-dev", "default", frozenset({NOTIFY_SCOPE}))
    if token.startswith(KEY_PREFIX):
        key_id, _, secret = token[len(KEY_PREFIX) :].partition("_")
        record = lookup(key_id) if key_id and secret else None
        if (
            record is not None
            and not record.revoked
            and hmac.compare_digest(sha256(secret), record.secret_sha256)
        ):
            return Principal(record.key_id, record.tenant, frozenset(record.scopes))
    raise unauthorized("unknown or revoked API key")
