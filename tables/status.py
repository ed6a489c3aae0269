"""status: notification_id → NotificationStatus, the status and decision trail.

Written by the agents that decide (fanout, send, receipts; pipeline.status),
on the notification's user's partition of its lane's group: the notification
id carries both. An entry is deleted NOTIFY_STATUS_RETENTION hours after
its last change, or after what it waits for is due (``agents/retention``).
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
