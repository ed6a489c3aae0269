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
from typing import Any

from faust.streams import current_event
from faust.types import EventT

from pipeline.app import app
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
        **context(status_, event),
        status=overall(channels, status_.status),
        channels=channels,
        trail=[*status_.trail, entry][-MAX_TRAIL:],
    )


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


class StatusBook:
    """The status changes of one batch: folded in memory, written once each.

    Each notification's status is read and written on behalf of the stream
    event that caused its latest change, so the table entry lands on that
    event's partition (the user's) whatever the batch's last event is.
    """

    def __init__(self) -> None:
        self._pending: dict[str, tuple[EventT, NotificationStatus]] = {}

    def current(self, source: EventT, nid: str) -> NotificationStatus | None:
        """``nid``'s status with this batch's changes, read for ``source``."""
        if nid in self._pending:
            return self._pending[nid][1]
        with acting_for(source):
            found: NotificationStatus | None = status.get(nid)
        return found

    def add(self, source: EventT, event: NotificationEvent) -> None:
        """Fold ``event``, caused by the stream event ``source``."""
        nid = event.notification_id
        if nid is None:
            return  # a dead letter that never became a notification
        self._pending[nid] = (source, fold(self.current(source, nid), event))

    def write(self) -> int:
        """Write every changed status; how many."""
        for nid, (source, folded) in self._pending.items():
            with acting_for(source):
                status[nid] = folded
        written = len(self._pending)
        self._pending.clear()
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


def emit(event: NotificationEvent) -> None:
    """Put ``event`` on ``notify.events`` (buffered, as ``record`` explains)."""
    app.topology.events.send_soon(key=event.notification_id, value=event)


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
