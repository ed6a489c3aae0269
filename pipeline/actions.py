"""Cancel and retry, acted on the tables of the worker that holds the status.

Both run where the notification's status lives (its user's partition, in its
lane's group), called by the API once the request reached that worker. Each
reads and writes its tables in one step with no await in between, so the
agents of the partition, on the same event loop, see either nothing of it or
all of it; the caller then waits until the broker acknowledged the writes
(``flush_durably``) before it answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pipeline import cancel
from pipeline.app import app
from pipeline.delivery import plan
from pipeline.ids import parse_notification_id
from pipeline.scan import prefixed
from pipeline.status import batch, event_about, record
from pipeline.streams import acting_for
from pipeline.sweep import PartitionEvent
from pipeline.topology import user_key
from schemas.records import NotificationEvent, NotificationStatus, ScheduledJob
from tables.failed_jobs import failed_jobs, failed_key
from tables.ledger import ledger
from tables.retries import retries
from tables.status import status


def _source(nid: str) -> PartitionEvent:
    """Stands in for an event of the notification's own status partition."""
    ref = parse_notification_id(nid)
    if ref is None:
        raise ValueError(f"{nid!r} is not a notification id")
    partition = ref.partition(app.settings.topic_partitions)
    topic: str = status.changelog_topic.get_topic_name()
    return PartitionEvent(topic, partition)


def stored_status(nid: str) -> NotificationStatus | None:
    """The status table's entry of ``nid`` on this worker."""
    with acting_for(_source(nid)):  # type: ignore[arg-type]
        found: NotificationStatus | None = status.get(nid)
    return found


def started_channels(nid: str) -> set[str]:
    """The channels of ``nid`` whose send began: any ledger entry."""
    partition = _source(nid).message.partition
    return {key.split(":")[1] for key, _ in prefixed(ledger, partition, nid + ":")}


def cancel_here(current: NotificationStatus, now: datetime) -> cancel.Cancellation:
    """Cancel what of ``current`` still waits (``pipeline.cancel``): the mark
    and a ``cancelled`` event per channel stopped. ``current`` is the
    freshest status this worker has (the table's, or one it just accepted)."""
    nid = current.notification_id
    source = _source(nid)
    with batch(), acting_for(source):  # type: ignore[arg-type]
        decided = cancel.plan(current, started_channels(nid))
        for event in cancel.cancel_events(current, decided, now):
            record(event)
    return decided


@dataclass(frozen=True)
class Redrive:
    """What an operator's retry re-drove, and what it could not."""

    channels: tuple[str, ...]
    #: Channels that are not failed, or failed before any send (no job kept).
    refused: dict[str, str]


def retry_here(current: NotificationStatus, now: datetime) -> Redrive:
    """Put every failed channel of ``current`` whose job was kept back in the
    retry schedule, due now, as a new run of attempts (its ``redrive`` raised,
    so the ledger lets it call the provider again)."""
    nid = current.notification_id
    source = _source(nid)
    channels: list[str] = []
    refused: dict[str, str] = {}
    with batch(), acting_for(source):  # type: ignore[arg-type]
        for channel, outcome in sorted(current.channels.items()):
            job = failed_jobs.get(failed_key(nid, channel))
            if outcome != "failed" or job is None:
                refused[channel] = (
                    outcome if outcome != "failed" else "failed before any send"
                )
                continue
            again = job.model_copy(
                update={"redrive": job.redrive + 1, "attempt": 1, "not_before": now}
            )
            topic = app.topology.deliveries[(job.channel, job.lane)]
            retries[plan.schedule_key(again)] = ScheduledJob(
                due_at=now,
                topic=topic.get_topic_name(),
                key=user_key(job.tenant, job.user_id),
                job=again,
            )
            record(redrive_event(current, channel, again.redrive, now))
            channels.append(channel)
    return Redrive(tuple(channels), refused)


def redrive_event(
    current: NotificationStatus, channel: str, redrive: int, now: datetime
) -> NotificationEvent:
    """The ``retried`` event of an operator's retry of one channel."""
    return event_about(
        current,
        "retried",
        "redrive",
        now,
        channel=channel,
        reason="operator_retry",
        until=now,
        discriminator=redrive,
    )


def forget_failed(nid: str, partition: int) -> None:
    """Delete the kept failed jobs of ``nid`` (its status is going), on its
    ``partition``; called in an event context of that partition."""
    for key, _ in list(prefixed(failed_jobs, partition, nid + ":")):
        failed_jobs.pop(key, None)
