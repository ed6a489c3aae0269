"""retries: schedule key → ScheduledJob, delivery jobs waiting for their retry.

The key starts with the due time in zero-padded epoch milliseconds
(``<due ms>:<notification_id>:<channel>:<attempt>``) so a partition's store
lists the due jobs first. An entry is written by the send agent that decided
the retry and deleted by the send agent that receives the retried job, both
on the user's partition; the retry timer only reads it.
"""

from __future__ import annotations

from pipeline.app import app
from schemas.records import ScheduledJob

retries = app.Table(
    "retry_schedule",
    key_type=str,
    value_type=ScheduledJob,
    partitions=app.settings.topic_partitions,
    help="Delivery jobs waiting for their retry time, by due time.",
)
