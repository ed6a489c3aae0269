"""status: fold every event into its notification's status and decision trail."""

from __future__ import annotations

from faust.types import StreamT

from pipeline.app import app
from schemas.records import NotificationEvent, NotificationStatus, TrailEntry
from tables.status import status

#: How far along a channel is; the notification shows its most advanced channel.
CHANNEL_RANK = {
    "suppressed": 1,
    "expired": 2,
    "failed": 3,
    "cancelled": 4,
    "deferred": 5,
    "throttled": 6,
    "digested": 7,
    "queued": 8,
    "retried": 9,
    "sent": 10,
    "delivered": 11,
    "bounced": 12,
    "opened": 13,
    "clicked": 14,
}
MAX_TRAIL = 200
#: After a send, receipts arrive in any order: a channel never goes back from
#: clicked to opened because the open pixel loaded after the click.
AFTER_SEND = {"sent": 0, "delivered": 1, "opened": 2, "clicked": 3}


def fold(
    current: NotificationStatus | None, event: NotificationEvent
) -> NotificationStatus:
    """The status after ``event``; an event already in the trail changes nothing."""
    assert event.notification_id is not None  # noqa: S101 - caller filters
    status_ = current or NotificationStatus(notification_id=event.notification_id)
    if any(entry.event_id == event.event_id for entry in status_.trail):
        return status_
    entry = TrailEntry(
        event_id=event.event_id,
        event_type=event.event_type,
        stage=event.stage,
        ts=event.ts,
        channel=event.channel,
        reason=event.reason,
        error=event.error,
        until=event.until,
    )
    channels = dict(status_.channels)
    if event.channel is not None and event.event_type in CHANNEL_RANK:
        channels[event.channel] = progressed(
            channels.get(event.channel), event.event_type
        )
    return NotificationStatus(
        notification_id=status_.notification_id,
        tenant=status_.tenant or event.tenant,
        user_id=status_.user_id or event.user_id,
        type=status_.type or event.type,
        priority=status_.priority or event.priority,
        lane=status_.lane or event.lane,
        campaign_id=status_.campaign_id or event.campaign_id,
        status=overall(channels, status_.status),
        channels=channels,
        trail=[*status_.trail, entry][-MAX_TRAIL:],
    )


def progressed(current: str | None, outcome: str) -> str:
    """A channel's outcome after ``outcome``: the latest, except receipts never
    move it back (clicked stays clicked when the open arrives after)."""
    if current in AFTER_SEND and outcome in AFTER_SEND:
        return max(current, outcome, key=AFTER_SEND.__getitem__)
    return outcome


def overall(channels: dict[str, str], previous: str) -> str:
    """The notification's status: its most advanced channel's, else as it was."""
    if not channels:
        return previous
    return max(channels.values(), key=lambda outcome: CHANNEL_RANK[outcome])


@app.agent(app.topology.events, name="status")
async def track_status(stream: StreamT[NotificationEvent]) -> None:
    """Fold events into the status table behind GET /v1/notifications/{id}."""
    async for event in stream:
        if event.notification_id is None:
            continue  # a dead letter that never became a notification
        status[event.notification_id] = fold(status.get(event.notification_id), event)
