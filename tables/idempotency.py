"""idempotency: one entry per (tenant, user, idempotency key) → its first use.

Entries live on the user's partition (fanout writes them while handling the
user's request), so they are co-partitioned with the accepted-requests topic;
the API finds the owner by the user's key. One entry per key, not one per
user: a user notified ten thousand times a day would otherwise have a value
of a megabyte rewritten on every request, past Kafka's largest message.

An entry older than NOTIFY_IDEMPOTENCY_WINDOW is ignored on read (a reused
key is a new notification, and overwrites it) and deleted by a sweep
(``agents/retention``). The value is compact JSON
(``[notification_id, body_hash, first_seen_ms, source]``), not a Faust
record: it is read for every request, and decoding a record with a datetime
was a fifth of the fanout's CPU in the chain benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from pipeline.app import app
from pipeline.topology import user_key


@dataclass(frozen=True, slots=True)
class SeenRequest:
    """What one idempotency key was first used for."""

    notification_id: str
    body_hash: str
    first_seen: datetime
    source: str

    @classmethod
    def loads(cls, raw: bytes | None) -> SeenRequest | None:
        """The stored form back; None for no entry."""
        if not raw:
            return None
        nid, digest, first_ms, source = orjson.loads(raw)
        return cls(
            notification_id=str(nid),
            body_hash=str(digest),
            first_seen=datetime.fromtimestamp(int(first_ms) / 1000, UTC),
            source=str(source),
        )

    def dumps(self) -> bytes:
        """The stored form."""
        first_ms = int(self.first_seen.timestamp() * 1000)
        return orjson.dumps(
            [self.notification_id, self.body_hash, first_ms, self.source]
        )

    def live(self, now: datetime, window: timedelta) -> bool:
        """True while the key is remembered: first used less than ``window`` ago."""
        return now - self.first_seen < window


def seen_key(tenant: str, user_id: str, key: str) -> str:
    """The table key of one idempotency key (unambiguous whatever they contain)."""
    return orjson.dumps([tenant, user_id, key]).decode()


def owner_key(table_key: str) -> str:
    """The ``tenant/user_id`` key whose partition holds a table key."""
    tenant, user_id, _ = orjson.loads(table_key)
    return user_key(tenant, user_id)


def live_entry(
    raw: bytes | None, now: datetime, window: timedelta
) -> SeenRequest | None:
    """The stored entry if it is still within the window."""
    entry = SeenRequest.loads(raw)
    return entry if entry is not None and entry.live(now, window) else None


idempotency = app.Table(
    "idempotency",
    key_type=str,
    value_type=bytes,
    partitions=app.settings.topic_partitions,
    help="First use of each idempotency key, per tenant and user: notification "
    "id and body hash.",
)
