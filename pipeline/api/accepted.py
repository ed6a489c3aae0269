"""Idempotency keys this worker accepted that its idempotency table lacks yet.

The table entry is written by fanout when it handles the request, moments
(or, behind a backlog, minutes) after the API answered 202. Until then a
retry with the same key would pass the table check: the API remembers each
key it accepted, on the worker that owns the user's partition (the one every
API call for that user is answered by), until the table has it. Bounded: past
``limit`` keys the oldest are forgotten, and a retry of one of those is
still caught later, by fanout, as a duplicate or a conflict.
"""

from __future__ import annotations

from collections import OrderedDict

#: Keys remembered at most: ~200 B each, so ~20 MB at the limit.
DEFAULT_LIMIT = 100_000


class AcceptedKeys:
    """Body digests of accepted idempotency keys, by table key, oldest first."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._digests: OrderedDict[str, str] = OrderedDict()

    def remember(self, key: str, digest: str) -> None:
        """Note that ``key`` was accepted for a body with ``digest``."""
        self._digests[key] = digest
        self._digests.move_to_end(key)
        while len(self._digests) > self.limit:
            self._digests.popitem(last=False)

    def digest(self, key: str) -> str | None:
        """The digest ``key`` was accepted with, if it is remembered."""
        return self._digests.get(key)

    def forget(self, key: str) -> None:
        """Stop remembering ``key``: the table has it, or its produce failed."""
        self._digests.pop(key, None)

    def __len__(self) -> int:
        return len(self._digests)


accepted_keys = AcceptedKeys()
