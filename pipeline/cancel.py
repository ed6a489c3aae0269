"""cancel: what ``DELETE /v1/notifications/{id}`` stops, and how it stays stopped.

A cancel is a mark in the notification's status (``cancelled_at``, set by a
notification-wide ``cancelled`` event) and a ``cancelled`` outcome for every
channel still waiting: deferred (``schedule_at``, quiet hours, a cap),
collected into an open digest, waiting for a retry, or queued with no send
begun. Whatever is on its way meets the mark before it can be sent: fanout
drops a released schedule entry, a digest leaves the member out, and the
send agent drops a job (a queued one, a retry) before it writes its ledger
entry. A channel the sender already began (a ledger entry) or finished is
not cancelled: the answer is 409 naming it.

The decision runs on the worker holding the status, the notification's
user's partition, where fanout and the send agents of that partition run on
the same event loop: reading the status and the ledger and writing the mark
is one step with no await between, so no agent acts in the middle. The mark
is written like any status change (``pipeline.status``) and acknowledged
by the broker before the answer.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from pipeline.status import event_about
from schemas.records import NotificationEvent, NotificationStatus
from schemas.types import Channel

#: Channel outcomes of a message that left: too late to cancel.
SENT = frozenset({"sent", "delivered", "opened", "clicked", "bounced"})
#: Channel outcomes still waiting for something: cancellable.
WAITING = frozenset({"deferred", "digested", "retried", "queued"})
#: Stage of the cancel events.
STAGE = "cancel"


@dataclass(frozen=True)
class Cancellation:
    """What one cancel did to each channel."""

    #: Channels cancelled by this request (or by an earlier one).
    cancelled: tuple[Channel, ...]
    #: Channels already sent, or being sent (``sending``): their outcome.
    sent: dict[Channel, str]
    #: Channels that had ended on their own (suppressed, failed...).
    settled: dict[Channel, str]

    @property
    def refused(self) -> bool:
        """True if the answer is 409: a channel went, or nothing was left."""
        return bool(self.sent) or (not self.cancelled and bool(self.settled))

    def message(self) -> str:
        """Why a refused cancel was refused."""
        if self.sent:
            went = ", ".join(f"{c} ({s})" for c, s in sorted(self.sent.items()))
            rest = f"; cancelled: {', '.join(self.cancelled)}" if self.cancelled else ""
            return f"already sent: {went}{rest}"
        ended = ", ".join(f"{c} ({s})" for c, s in sorted(self.settled.items()))
        return f"nothing left to cancel: {ended}"


def plan(current: NotificationStatus, started: Collection[str]) -> Cancellation:
    """What cancelling ``current`` does; ``started`` are the channels whose send
    began (a ledger entry exists)."""
    cancelled: list[Channel] = []
    sent: dict[Channel, str] = {}
    settled: dict[Channel, str] = {}
    for channel, outcome in sorted(current.channels.items()):
        if outcome in SENT:
            sent[channel] = outcome
        elif outcome == "queued" and channel in started:
            sent[channel] = "sending"
        elif outcome in WAITING or outcome == "cancelled":
            cancelled.append(channel)
        else:
            settled[channel] = outcome
    return Cancellation(tuple(cancelled), sent, settled)


def stopped(current: NotificationStatus | None) -> bool:
    """True if the notification was cancelled: nothing more of it is sent."""
    return current is not None and current.cancelled_at is not None


def said_cancelled(current: NotificationStatus, channel: str) -> bool:
    """True if ``channel`` of ``current`` already shows ``cancelled``."""
    return any(c == channel and o == "cancelled" for c, o in current.channels.items())


def cancel_event(
    current: NotificationStatus,
    now: datetime,
    channel: str | None = None,
    *,
    locale: str | None = None,
) -> NotificationEvent:
    """The ``cancelled`` event of the notification (``channel`` None: the mark)
    or of one channel; the same id wherever it is decided (API, fanout, send)."""
    return event_about(
        current,
        "cancelled",
        STAGE,
        now,
        channel=channel,
        reason="cancelled",
        locale=locale,
    )


def cancel_events(
    current: NotificationStatus, cancellation: Cancellation, now: datetime
) -> list[NotificationEvent]:
    """The mark (unless it is there already), then one event per channel this
    cancel stops: a second cancel emits nothing."""
    mark = [] if stopped(current) else [cancel_event(current, now)]
    return [
        *mark,
        *(
            cancel_event(current, now, channel)
            for channel in cancellation.cancelled
            if not said_cancelled(current, channel)
        ),
    ]
