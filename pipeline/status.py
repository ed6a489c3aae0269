"""Status at the source: every agent that decides folds its decisions itself.

A notification's status and decision trail (behind
``GET /v1/notifications/{id}``) is kept in the ``status`` table on its user's
partition, by the agents that make the decisions (fanout, send, receipts), in
the same batch that emits the events. No agent reads ``notify.events`` back:
re-reading every event cost a Faust consume per decision, and every lane's
group would have read every other lane's events, so a bulk flood landed on the
critical workers. ``notify.events`` stays the analytics stream.

Within a batch, a notification's events are folded in memory and written once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from faust.streams import current_event
from faust.types import EventT

from pipeline import metrics
from pipeline.app import app
from pipeline.campaigns import channel_deltas
from pipeline.ids import event_id
from pipeline.streams import acting_for, send_effect
from schemas.campaigns import CampaignCounts
from schemas.records import NotificationEvent, NotificationStatus, TrailEntry
from tables.campaigns import campaign_counts
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
    cancelled_at = status_.cancelled_at
    if cancelled_at is None and is_cancel(event):
        cancelled_at = event.ts
    return NotificationStatus(
        notification_id=status_.notification_id,
        **context(status_, event),
        status="cancelled"
        if cancelled_at and not channels
        else overall(channels, status_.status),
        channels=channels,
        cancelled_at=cancelled_at,
        trail=[*status_.trail, entry][-MAX_TRAIL:],
    )


def is_cancel(event: NotificationEvent) -> bool:
    """True for the event that cancels a whole notification (not one channel)."""
    return event.event_type == "cancelled" and event.channel is None


#: What a notification's status and its events both say about it.
CONTEXT = ("tenant", "user_id", "type", "priority", "lane", "campaign_id")


def context(first: Any, then: Any) -> dict[str, Any]:
    """The ``CONTEXT`` fields of ``first``, each one it lacks taken from ``then``."""
    return {name: getattr(first, name) or getattr(then, name) for name in CONTEXT}


def progressed(current: str | None, outcome: str) -> str:
    """A channel's outcome after ``outcome``: the latest, except receipts never
    move it back (clicked stays clicked when the open arrives after)."""
    if current in AFTER_SEND and outcome in AFTER_SEND:
        return max(current, outcome, key=AFTER_SEND.__getitem__)
    return outcome


def overall(channels: Mapping[Any, str], previous: str) -> str:
    """The notification's status: its most advanced channel's, else as it was."""
    if not channels:
        return previous
    return max(channels.values(), key=lambda outcome: CHANNEL_RANK[outcome])


#: Status writes so far, and the count at each notification's latest write
#: (the most recent ``MAX_STAMPS`` of them). A book that read a status
#: before another book wrote it (the send agent awaits its provider calls
#: between reading and writing) folds its events again over the newer
#: status, so no write undoes another's: a cancel written meanwhile stays.
_writes = 0
_stamps: dict[str, int] = {}
#: Stamps up to this count may have been forgotten: such a read is re-read.
_forgotten = 0
MAX_STAMPS = 100_000


def _stamp(nid: str) -> None:
    """Count a write of ``nid``'s status."""
    global _writes, _forgotten  # noqa: PLW0603 - one count for the process
    _writes += 1
    _stamps.pop(nid, None)
    _stamps[nid] = _writes
    if len(_stamps) > MAX_STAMPS:
        _forgotten = _stamps.pop(next(iter(_stamps)))


def _written_since(nid: str, seen: int) -> bool:
    """True if ``nid``'s status may have been written after count ``seen``."""
    return seen < _forgotten or _stamps.get(nid, 0) > seen


@dataclass
class _Entry:
    """One notification in a book: what was read, and this batch's events."""

    source: EventT
    seen: int  # the write count when it was read
    read: NotificationStatus | None
    events: list[NotificationEvent] = field(default_factory=list)
    folded: NotificationStatus | None = None

    def current(self) -> NotificationStatus | None:
        """The status with this batch's events."""
        return self.folded if self.events else self.read


class StatusBook:
    """The status changes of one batch: folded in memory, written once each.

    Each notification's status is read and written on behalf of the stream
    event that caused its latest change, so the table entry lands on that
    event's partition (the user's) whatever the batch's last event is. A
    status read once in a batch is not read again.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def current(self, source: EventT, nid: str) -> NotificationStatus | None:
        """``nid``'s status with this batch's changes, read for ``source``."""
        return self._entry(source, nid).current()

    def _entry(self, source: EventT, nid: str) -> _Entry:
        entry = self._entries.get(nid)
        if entry is None:
            with acting_for(source):
                found: NotificationStatus | None = status.get(nid)
            entry = self._entries[nid] = _Entry(source, _writes, found)
        return entry

    def add(self, source: EventT, event: NotificationEvent) -> None:
        """Fold ``event``, caused by the stream event ``source``."""
        nid = event.notification_id
        if nid is None:
            return  # a dead letter that never became a notification
        entry = self._entry(source, nid)
        entry.folded = fold(entry.current(), event)
        entry.events.append(event)
        entry.source = source

    def write(self) -> int:
        """Write every changed status; how many. A campaign's counts move with
        its notifications' channel outcomes, once per campaign and partition."""
        written = 0
        moved: dict[tuple[str, int], tuple[EventT, dict[str, int]]] = {}
        for nid, entry in self._entries.items():
            if not entry.events:
                continue
            folded, before = entry.folded, entry.read
            with acting_for(entry.source):
                if _written_since(nid, entry.seen):
                    # Written by someone else since we read it: fold again.
                    folded = before = status.get(nid)
                    for event in entry.events:
                        folded = fold(folded, event)
                status[nid] = folded
            _stamp(nid)
            written += 1
            if folded is not None and folded.campaign_id is not None:
                delta = channel_deltas(
                    before.channels if before else None, folded.channels
                )
                if before is None:
                    delta["notifications"] = 1
                if delta:
                    where = (folded.campaign_id, entry.source.message.partition)
                    _, total = moved.setdefault(where, (entry.source, {}))
                    for outcome, n in delta.items():
                        total[outcome] = total.get(outcome, 0) + n
        for (campaign, _), (source, delta) in moved.items():
            with acting_for(source):
                count_outcomes(campaign, delta)
        self._entries.clear()
        return written


_book: ContextVar[StatusBook | None] = ContextVar("status_book", default=None)


@contextmanager
def batch() -> Iterator[StatusBook]:
    """Collect the status changes of everything recorded inside; write on exit."""
    book = StatusBook()
    token = _book.set(book)
    try:
        yield book
    finally:
        _book.reset(token)
    book.write()


def count_outcomes(key: str, delta: dict[str, int]) -> None:
    """Add ``delta`` to a campaign's outcome counts on the current partition."""
    current = campaign_counts.get(key)
    counts = dict(current.counts) if current is not None else {}
    for outcome, n in delta.items():
        counts[outcome] = counts.get(outcome, 0) + n
    campaign_counts[key] = CampaignCounts(counts=counts)


def event_about(
    current: NotificationStatus,
    event_type: str,
    stage: str,
    now: datetime,
    *,
    channel: str | None = None,
    reason: str | None = None,
    locale: str | None = None,
    until: datetime | None = None,
    discriminator: object = None,
) -> NotificationEvent:
    """An event about the notification ``current`` describes, decided outside
    the chain's agents (an API call); the same parts give the same id."""
    nid = current.notification_id
    parts = (nid, event_type, stage, channel)
    return NotificationEvent(
        event_id=event_id(*parts, *(() if discriminator is None else (discriminator,))),
        event_type=event_type,
        ts=now,
        stage=stage,
        notification_id=nid,
        tenant=current.tenant,
        user_id=current.user_id,
        campaign_id=current.campaign_id,
        type=current.type,
        priority=current.priority,
        lane=current.lane,
        channel=channel,
        locale=locale,
        reason=reason,
        until=until,
    )


def current(nid: str) -> NotificationStatus | None:
    """``nid``'s status as the current stream event's batch sees it (its own
    changes included); read once per batch."""
    cause = current_event()
    book = _book.get()
    if cause is None or book is None:
        found: NotificationStatus | None = status.get(nid)
        return found
    return book.current(cause, nid)


def emit(event: NotificationEvent) -> None:
    """Put ``event`` on ``notify.events`` (buffered, as ``record`` explains;
    inside `pipeline.streams.state_first` once the batch's state is durable)."""
    send_effect(app.topology.events, event.notification_id, event)
    metrics.count(event)


def record(event: NotificationEvent) -> None:
    """Emit ``event`` on ``notify.events`` and fold it into its status.

    Called on behalf of the stream event that caused it (the current one,
    which ``acting_for`` sets in a batch). Sent through Faust's buffer like
    table updates: a commit waits until it is flushed, and a failed send stops
    the worker (the commit guard), so nothing is lost and no future is awaited
    per event.
    """
    emit(event)
    cause = current_event()
    if cause is None:
        raise RuntimeError("a status change outside any stream event")
    book = _book.get()
    if book is None:
        with batch() as single:
            single.add(cause, event)
        return
    book.add(cause, event)
