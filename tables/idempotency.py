"""idempotency: tenant/user_id → SeenRequests, the user's recent idempotency keys.

Keyed by user (not by idempotency key) so it is co-partitioned with the
accepted-requests topic. Entries older than NOTIFY_IDEMPOTENCY_WINDOW are
ignored on read and pruned whenever the user's entry is written.
"""

from __future__ import annotations

from pipeline.app import app
from schemas.records import SeenRequests

idempotency = app.Table(
    "idempotency",
    key_type=str,
    value_type=SeenRequests,
    partitions=app.settings.topic_partitions,
    help="Idempotency keys seen per user, with their notification id and body hash.",
)
