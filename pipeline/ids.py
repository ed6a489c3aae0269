"""Deterministic identifiers, so a redelivered or replayed input maps to the same ids."""

from __future__ import annotations

import hashlib


def _digest(*parts: str, size: int = 12) -> str:
    joined = "\x1f".join(parts).encode()
    return hashlib.blake2b(joined, digest_size=size).hexdigest()


def notification_id(tenant: str, idempotency_key: str) -> str:
    """The id of the notification a (tenant, idempotency key) pair asks for."""
    return "n_" + _digest(tenant, idempotency_key)


def event_id(*parts: object) -> str:
    """The id of an analytics event; equal parts give equal ids (idempotent sinks)."""
    return "e_" + _digest(*(str(part) for part in parts), size=16)
