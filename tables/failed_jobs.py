"""failed_jobs: ``<notification_id>:<channel>`` → the DeliveryJob that failed for good.

Written by the send agent when a channel's job fails for good (beside its
dead letter), on the user's partition, so ``POST
/v1/notifications/{id}/retry`` can re-drive it from the worker that holds the
notification's status, without reading the dead-letter topic. Only failures
land here, never the hot path. An entry goes when its notification's status
does (``agents/retention``).
"""

from __future__ import annotations

from pipeline.app import app
from schemas.records import DeliveryJob

failed_jobs = app.Table(
    "failed_jobs",
    key_type=str,
    value_type=DeliveryJob,
    partitions=app.settings.topic_partitions,
    help="Delivery jobs that failed for good, by notification and channel, "
    "for an operator's retry.",
)


def failed_key(notification_id: str, channel: str) -> str:
    """The table key of one notification's failed channel."""
    return f"{notification_id}:{channel}"
