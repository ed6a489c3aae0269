"""status: fold every event into its notification's status and decision trail."""

from __future__ import annotations

from collections.abc import Sequence

from faust.types import EventT, StreamT

from pipeline.app import app
from pipeline.deadletter import source_of
from pipeline.streams import acting_for
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


#: Events taken at once, and how long to wait for more (seconds).
BATCH, WITHIN = 500, 0.02


def fold_batch(events: Sequence[EventT]) -> None:
    """Fold a batch into the table: one read and one write per notification.

    A notification's events arrive together (accepted, then one per channel
    from the same fanout), so a batch holds several of them; writing its
    status once instead of once per event saves most changelog records.
    Events of one notification share its key, hence its partition: the table
    is read and written on behalf of that notification's events.
    """
    pending: dict[str, tuple[EventT, NotificationStatus | None]] = {}
    for stream_event in events:
        event: NotificationEvent = stream_event.value  # type: ignore[assignment]
        nid = event.notification_id
        if nid is None:
            continue  # a dead letter that never became a notification
        if nid in pending:
            current = pending[nid][1]
        else:
            with acting_for(stream_event):
                current = status.get(nid)
        pending[nid] = (stream_event, fold(current, event))
    for nid, (stream_event, folded) in pending.items():
        with acting_for(stream_event):
            status[nid] = folded


@app.agent(app.topology.events, name="status")
async def track_status(stream: StreamT[NotificationEvent]) -> None:
    """Fold events into the status table behind GET /v1/notifications/{id}."""
    async for events in stream.take_events(  # type: ignore[attr-defined]
        BATCH, within=WITHIN
    ):
        with app.commit_guard.watching(source_of(events[-1])):
            fold_batch(events)
