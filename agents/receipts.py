"""receipts: fold delivered / opened / clicked / bounced into the lane's status.

The webhooks and tracking links put each receipt, as its analytics event, on
``notify.receipts.<lane>`` at the user's partition (the notification id says
which lane and partition). This agent owns that partition's status entries:
it folds the receipt in and only then emits the event on ``notify.events``.

A receipt whose notification has no status any more (a click weeks later,
after ``NOTIFY_STATUS_RETENTION``) is emitted as it came and begins no new
status: GET status stays a 404, as it is for the notification's other
events once its status has gone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from faust.types import EventT, StreamT

from pipeline.app import app
from pipeline.deadletter import source_of
from pipeline.status import batch as status_batch
from pipeline.status import context, emit, record
from pipeline.streams import BATCH_WINDOW, acting_for, batches
from schemas.records import NotificationEvent, NotificationStatus

log = logging.getLogger(__name__)

#: Receipts taken at once.
BATCH = 500


def in_context(
    receipt: NotificationEvent, known: NotificationStatus
) -> NotificationEvent:
    """The receipt with what its notification's status knows and it does not.

    A provider's webhook names only the attempt (notification, channel,
    target): the tenant, user, type, campaign and lane come from the status,
    so an open or a click counts in a tenant's or a campaign's funnel.
    """
    return receipt.model_copy(update=context(receipt, known))


def fold_receipts(events: Sequence[EventT]) -> None:
    """Record a batch of receipts: one status write per notification."""
    with status_batch() as book:
        for stream_event in events:
            receipt: NotificationEvent = stream_event.value  # type: ignore[assignment]
            nid = receipt.notification_id
            known = book.current(stream_event, nid) if nid else None
            if known is None:
                log.debug("receipt %s: no status for %s", receipt.event_id, nid)
                emit(receipt)
                continue
            with acting_for(stream_event):
                record(in_context(receipt, known))


def _make_agent(lane: str) -> None:
    async def receipts(stream: StreamT[NotificationEvent]) -> None:
        async for events in batches(stream, BATCH, BATCH_WINDOW[lane]):
            with app.commit_guard.watching(source_of(events[-1])):
                fold_receipts(events)

    receipts.__doc__ = f"Fold {lane}-lane receipts into status; emit their events."
    app.agent(app.topology.receipts[lane], name=f"receipts.{lane}")(receipts)


for _lane in app.settings.worker_lanes:
    _make_agent(_lane)
