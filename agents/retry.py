"""retry: a timer that puts due retries back on their delivery topic.

Retries wait in the retry table (written by the send agents), keyed by due
time; ``pipeline.due`` releases them. The send agent that receives a retried
job deletes its entry; a copy sent by another worker after a rebalance is
stopped by the ledger.
"""

from __future__ import annotations

from pipeline.app import app
from pipeline.due import DueTimer
from pipeline.partitioning import partition_for
from schemas.records import ScheduledJob
from tables.retries import retries

#: Seconds between looks at the retry table.
TICK = 0.25


async def release(scheduled: ScheduledJob) -> None:
    """Send a due retry to its delivery topic, on its user's partition."""
    job = scheduled.delivery_job()
    topic = app.topology.deliveries[(job.channel, job.lane)]
    partition = partition_for(scheduled.key.encode(), app.settings.topic_partitions)
    app.producer.emit(topic, scheduled.key, job, partition=partition)  # type: ignore[attr-defined]


retry_timer = DueTimer(app, retries, release, "retries", "retries")


@app.timer(TICK, name="retry.release")
async def release_due_retries() -> None:
    """Put due retries back on their delivery topics."""
    await retry_timer.tick()
