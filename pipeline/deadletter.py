"""Dead letters: the original bytes, the reason in headers, an event saying so."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from faust.types import EventT

from pipeline import metrics
from pipeline.ids import event_id
from pipeline.topology import DLQ_CODE, DLQ_REASON, DLQ_SOURCE, DLQ_STAGE
from schemas.records import NotificationEvent

if TYPE_CHECKING:
    from pipeline.app import NotifyApp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejection:
    """Why a message was refused, by which stage, and where it came from."""

    reason: str
    code: str
    source: str
    stage: str

    def headers(self) -> list[tuple[str, bytes]]:
        """The dead-letter headers describing this rejection."""
        return [
            (DLQ_REASON, self.reason.encode()),
            (DLQ_CODE, self.code.encode()),
            (DLQ_STAGE, self.stage.encode()),
            (DLQ_SOURCE, self.source.encode()),
        ]

    def event(self, now: datetime) -> NotificationEvent:
        """The ``dead_lettered`` analytics event for this rejection."""
        return NotificationEvent(
            event_id=event_id(self.source, "dead_lettered", self.stage),
            event_type="dead_lettered",
            ts=now,
            stage=self.stage,
            reason=self.code,
            error=self.reason,
        )


def source_of(event: EventT) -> str:
    """``topic[partition]@offset`` of the message behind ``event``."""
    message = event.message
    return f"{message.topic}[{message.partition}]@{message.offset}"


async def dead_letter(app: NotifyApp, event: EventT, rejection: Rejection) -> None:
    """Write the original message to the dead-letter topic, and say so."""
    log.warning("dead-lettering %s: %s", rejection.source, rejection.reason)
    await app.topology.deadletter.send(
        key=event.message.key, value=event.message.value, headers=rejection.headers()
    )
    outcome = rejection.event(app.clock.now())
    await app.topology.events.send(key=rejection.source, value=outcome)
    metrics.dead_lettered(rejection.stage, rejection.code)
    metrics.count(outcome)
