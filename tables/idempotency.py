"""idempotency: tenant/user_id → the user's recent idempotency keys.

Keyed by user (not by idempotency key) so it is co-partitioned with the
accepted-requests topic. Entries older than NOTIFY_IDEMPOTENCY_WINDOW are
ignored on read and pruned whenever the user's entry is written; a user's
entry with no live key left is deleted by a sweep (``agents/retention``).

The value is compact JSON (``{key: [notification_id, body_hash,
first_seen_ms, source]}``), not a Faust record: it is read and rewritten for
every request of the user, and decoding a record with a datetime per key was
a fifth of the fanout's CPU in the chain benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from pipeline.app import app


@dataclass(frozen=True, slots=True)
class SeenRequest:
    """What one idempotency key was first used for."""

    notification_id: str
    body_hash: str
    first_seen: datetime
    source: str


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


class SeenRequests:
    """The idempotency keys one user's notifications used recently."""

    __slots__ = ("_keys",)

    def __init__(self, keys: dict[str, list[Any]] | None = None) -> None:
        self._keys: dict[str, list[Any]] = keys if keys is not None else {}

    @classmethod
    def loads(cls, raw: bytes | None) -> SeenRequests:
        """The stored form back; an absent entry is an empty one."""
        return cls(orjson.loads(raw) if raw else {})

    def dumps(self) -> bytes:
        """The stored form."""
        return orjson.dumps(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, key: str) -> SeenRequest | None:
        """What ``key`` was first used for, if it is remembered."""
        found = self._keys.get(key)
        if found is None:
            return None
        nid, digest, first_ms, source = found
        return SeenRequest(
            notification_id=str(nid),
            body_hash=str(digest),
            first_seen=datetime.fromtimestamp(int(first_ms) / 1000, UTC),
            source=str(source),
        )

    def live(self, now: datetime, window: timedelta) -> SeenRequests:
        """A copy without the keys first used ``window`` or longer before ``now``."""
        oldest = _ms(now - window)
        return SeenRequests({k: v for k, v in self._keys.items() if v[2] > oldest})

    def remember(self, key: str, entry: SeenRequest) -> None:
        """Record what ``key`` was first used for."""
        self._keys[key] = [
            entry.notification_id,
            entry.body_hash,
            _ms(entry.first_seen),
            entry.source,
        ]


idempotency = app.Table(
    "idempotency",
    key_type=str,
    value_type=bytes,
    partitions=app.settings.topic_partitions,
    help="Idempotency keys seen per user, with their notification id and body hash.",
)
