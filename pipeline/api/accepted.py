"""What this worker's API accepted and its tables do not show yet.

A write through the API is applied when a worker reads it back from its
topic: moments (or, behind a backlog, minutes) after the API answered. Until
then a table lookup would miss it. The API remembers, on the worker that owns
the record's partition (the one every later call for it is answered by):

- the idempotency keys it accepted, so a retry with the same key is a
  duplicate or a conflict at once, even right after the first;
- the notifications, API keys, profiles and preferences it accepted, so a
  read right after the write finds what was written (the status of a
  notification just accepted is ``accepted``, a key just created can be
  revoked at once).

Each entry is forgotten once the table has it, or when its produce failed.
Bounded: past ``limit`` entries the oldest are forgotten, and a lookup then
waits for the table as before.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

from schemas.records import (
    ApiKey,
    NotificationStatus,
    Preferences,
    TenantLimits,
    UserProfile,
)

#: Entries remembered at most: ~200 B each for keys, so ~20 MB at the limit.
DEFAULT_LIMIT = 100_000

V = TypeVar("V")


class Recent(Generic[V]):
    """Values by key, oldest first, at most ``limit`` of them."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._values: OrderedDict[str, V] = OrderedDict()

    def remember(self, key: str, value: V) -> None:
        """Note ``value`` under ``key`` (the newest now)."""
        self._values[key] = value
        self._values.move_to_end(key)
        while len(self._values) > self.limit:
            self._values.popitem(last=False)

    def get(self, key: str) -> V | None:
        """The value remembered under ``key``, if any."""
        return self._values.get(key)

    def values(self) -> list[V]:
        """Every value remembered, oldest first."""
        return list(self._values.values())

    def forget(self, key: str) -> None:
        """Stop remembering ``key``: the table has it, or its produce failed."""
        self._values.pop(key, None)

    def __len__(self) -> int:
        return len(self._values)


class AcceptedKeys(Recent[str]):
    """Body digests of accepted idempotency keys, by table key."""

    def digest(self, key: str) -> str | None:
        """The digest ``key`` was accepted with, if it is remembered."""
        return self.get(key)


accepted_keys = AcceptedKeys()
accepted_statuses: Recent[NotificationStatus] = Recent()
created_keys: Recent[ApiKey] = Recent(limit=10_000)
written_profiles: Recent[UserProfile] = Recent(limit=10_000)
written_preferences: Recent[Preferences] = Recent(limit=10_000)
written_limits: Recent[TenantLimits] = Recent(limit=10_000)


def freshest(stored: V | None, recent: Recent[V], key: str) -> V | None:
    """The stored value, unless this worker wrote a newer one it lacks yet.

    Values with ``updated_at`` compare by it; others: stored wins once present.
    """
    written = recent.get(key)
    if written is None:
        return stored
    if stored is not None:
        new = getattr(written, "updated_at", None)
        old = getattr(stored, "updated_at", None)
        if new is None or (old is not None and old >= new):
            recent.forget(key)
            return stored
    return written
