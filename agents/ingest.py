"""ingest: validate raw requests; accepted ones get an id, bad ones the dead-letter topic."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from faust.types import EventT, StreamT

from pipeline.app import app
from pipeline.errors import InvalidMessage
from pipeline.ids import event_id, notification_id
from pipeline.topology import DLQ_CODE, DLQ_REASON, DLQ_SOURCE, DLQ_STAGE
from schemas.records import NotificationEvent, NotificationRequest
from schemas.requests import parse_request

log = logging.getLogger(__name__)

STAGE = "ingest"


def lane_for(priority: str) -> str:
    """Critical and transactional ride the critical lane; promotional the bulk one."""
    return "bulk" if priority == "promotional" else "critical"


def accepted_event(request: NotificationRequest, now: datetime) -> NotificationEvent:
    """The ``accepted`` event for a valid request."""
    nid = notification_id(request.tenant, request.idempotency_key)
    return NotificationEvent(
        event_id=event_id(nid, "accepted", STAGE),
        event_type="accepted",
        ts=now,
        stage=STAGE,
        notification_id=nid,
        tenant=request.tenant,
        user_id=request.recipient.user_id,
        campaign_id=request.campaign_id,
        type=request.type,
        priority=request.priority,
        lane=lane_for(request.priority),
        locale=request.locale,
    )


@dataclass(frozen=True)
class Rejection:
    """Why a message was refused, and where it came from."""

    reason: str
    code: str
    source: str

    def headers(self) -> list[tuple[str, bytes]]:
        """The dead-letter headers describing this rejection."""
        return [
            (DLQ_REASON, self.reason.encode()),
            (DLQ_CODE, self.code.encode()),
            (DLQ_STAGE, STAGE.encode()),
            (DLQ_SOURCE, self.source.encode()),
        ]

    def event(self, now: datetime) -> NotificationEvent:
        """The ``dead_lettered`` analytics event for this rejection."""
        return NotificationEvent(
            event_id=event_id(self.source, "dead_lettered", STAGE),
            event_type="dead_lettered",
            ts=now,
            stage=STAGE,
            reason=self.code,
            error=self.reason,
        )


def admit(
    raw: bytes | None, source: str, now: datetime
) -> NotificationEvent | Rejection:
    """Decide one raw message: its ``accepted`` event, or why it is rejected."""
    if raw is None:
        return Rejection("empty message (no value)", "empty", source)
    try:
        request = parse_request(raw)
    except InvalidMessage as exc:
        return Rejection(exc.reason, exc.code, source)
    return accepted_event(request, now)


def source_of(event: EventT) -> str:
    """``topic[partition]@offset`` of the message behind ``event``."""
    message = event.message
    return f"{message.topic}[{message.partition}]@{message.offset}"


async def handle(event: EventT) -> None:
    """Decide one message and write the outcome: accepted, or dead-lettered."""
    topology = app.topology
    decision = admit(event.value, source_of(event), app.clock.now())
    if isinstance(decision, Rejection):
        log.warning("dead-lettering %s: %s", decision.source, decision.reason)
        await topology.deadletter.send(
            key=event.key, value=event.value, headers=decision.headers()
        )
        outcome = decision.event(app.clock.now())
        await topology.events.send(key=decision.source, value=outcome)
    else:
        await topology.events.send(key=decision.notification_id, value=decision)


def _make_agent(lane: str) -> None:
    async def ingest(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            # Anything but an invalid message (a decision) is a bug: Faust would
            # ack the event as the agent dies; the guard keeps it uncommitted.
            with app.commit_guard.watching(source_of(event)):
                await handle(event)

    ingest.__doc__ = f"Validate {lane}-lane requests: accepted event or dead-letter."
    app.agent(app.topology.requests[lane], name=f"ingest.{lane}")(ingest)


for _lane in app.settings.worker_lanes:
    _make_agent(_lane)
