"""Deterministic identifiers, so a redelivered or replayed input maps to the same ids."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from pipeline.partitioning import key_hash

#: One letter per lane, carried inside every notification id.
LANE_CODES = {"critical": "c", "bulk": "b"}
_LANE_OF = {code: lane for lane, code in LANE_CODES.items()}
#: What every notification id looks like (also in the OpenAPI document).
NOTIFICATION_ID_PATTERN = (
    f"^n_([{''.join(sorted(_LANE_OF))}])([0-9a-f]{{8}})[0-9a-f]{{24}}$"
)
_NOTIFICATION_ID = re.compile(NOTIFICATION_ID_PATTERN)


def _digest(*parts: str, size: int = 12) -> str:
    joined = "\x1f".join(parts).encode()
    return hashlib.blake2b(joined, digest_size=size).hexdigest()


def user_hash(tenant: str, user_id: str) -> int:
    """Kafka's default partitioner hash of the user's key (tenant/user_id)."""
    return key_hash(f"{tenant}/{user_id}".encode())


def notification_id(tenant: str, idempotency_key: str, user_id: str, lane: str) -> str:
    """The id of the notification a (tenant, idempotency key) pair asks for.

    ``n_`` + the lane's letter + the recipient's partitioner hash (8 hex) + a
    digest of (tenant, key, user). Everything about a notification (its status,
    its ledger entries) lives on its user's partition in its lane's consumer
    group; the id says which, so a lookup by id needs no index.
    """
    code = LANE_CODES[lane]
    digest = _digest(tenant, idempotency_key, user_id)
    return f"n_{code}{user_hash(tenant, user_id):08x}{digest}"


@dataclass(frozen=True)
class NotificationRef:
    """Where a notification id says its notification lives."""

    lane: str
    user_hash: int

    def partition(self, partitions: int) -> int:
        """Its user's partition in a topic of ``partitions`` partitions."""
        return self.user_hash % partitions


def parse_notification_id(value: str) -> NotificationRef | None:
    """The lane and user hash inside a notification id; None if it is not one."""
    match = _NOTIFICATION_ID.match(value)
    if match is None:
        return None
    return NotificationRef(_LANE_OF[match.group(1)], int(match.group(2), 16))


def campaign_id(tenant: str, idempotency_key: str) -> str:
    """The id of a tenant's campaign: the same key gives the same campaign."""
    return "c_" + _digest(tenant, idempotency_key, size=16)


def event_id(*parts: object) -> str:
    """The id of an analytics event; equal parts give equal ids (idempotent sinks)."""
    return "e_" + _digest(*(str(part) for part in parts), size=16)
