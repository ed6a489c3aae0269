"""status: notification_id → NotificationStatus, folded from notify.events.

Co-partitioned with notify.events (keyed by notification id). Kept as long as
its changelog keeps it; a retention policy comes with the analytics sink.
"""

from __future__ import annotations

from pipeline.app import app
from schemas.records import NotificationStatus

status = app.Table(
    "status",
    key_type=str,
    value_type=NotificationStatus,
    partitions=app.settings.topic_partitions,
    help="Per-notification status and decision trail, by notification id.",
)
