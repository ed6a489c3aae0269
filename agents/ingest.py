"""ingest: validate raw requests, re-key valid ones by user onto their lane.

Requests may arrive partitioned by any producer's partitioner; this hop is
where they are re-keyed by tenant/user so every later stage is co-partitioned
with the user's state, and where lanes part.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime

from faust.types import EventT, StreamT

from pipeline.app import app
from pipeline.deadletter import Rejection, dead_letter, source_of
from pipeline.errors import InvalidMessage
from pipeline.ids import notification_id
from pipeline.streams import batches
from pipeline.topology import user_key
from schemas import codec
from schemas.records import AcceptedRequest, NotificationRequest
from schemas.requests import parse_request

log = logging.getLogger(__name__)

STAGE = "ingest"


def lane_for(priority: str) -> str:
    """Critical and transactional ride the critical lane; promotional the bulk one."""
    return "bulk" if priority == "promotional" else "critical"


def body_hash(request: NotificationRequest) -> str:
    """A digest of what the request asks for, blind to JSON formatting."""
    canonical = codec.dumps(request, sort_keys=True)
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()


def accept(request: NotificationRequest, source: str, now: datetime) -> AcceptedRequest:
    """The accepted form of a valid request: its id, lane and body digest."""
    lane = lane_for(request.priority)
    return AcceptedRequest(
        notification_id=notification_id(
            request.tenant, request.idempotency_key, request.recipient.user_id, lane
        ),
        lane=lane,
        request=request.asdict(),
        body_hash=body_hash(request),
        accepted_at=now,
        source=source,
    )


def admit(raw: bytes | None, source: str, now: datetime) -> AcceptedRequest | Rejection:
    """Decide one raw message: accepted, or why it is rejected."""
    if raw is None:
        return Rejection("empty message (no value)", "empty", source, STAGE)
    try:
        request = parse_request(raw)
    except InvalidMessage as exc:
        return Rejection(exc.reason, exc.code, source, STAGE)
    return accept(request, source, now)


async def handle(event: EventT) -> None:
    """Decide one message and write the outcome: re-keyed, or dead-lettered."""
    topology = app.topology
    decision = admit(event.value, source_of(event), app.clock.now())
    if isinstance(decision, Rejection):
        await dead_letter(app, event, decision)
        return
    request = decision.notification()
    # Buffered like table updates: the commit waits for it, a failure trips
    # the commit guard.
    topology.accepted[decision.lane].send_soon(
        key=user_key(request.tenant, request.recipient.user_id), value=decision
    )


#: Requests taken at once, and how long to wait for more (seconds).
BATCH, WITHIN = 500, 0.005


def _make_agent(lane: str) -> None:
    async def ingest(stream: StreamT[bytes]) -> None:
        async for events in batches(stream, BATCH, WITHIN):
            # Anything but an invalid message (a decision) is a bug: Faust would
            # ack the batch as the agent dies; the guard keeps it uncommitted.
            with app.commit_guard.watching(source_of(events[-1])):
                for event in events:
                    await handle(event)

    ingest.__doc__ = f"Validate {lane}-lane requests; re-key by user, or dead-letter."
    app.agent(app.topology.requests[lane], name=f"ingest.{lane}")(ingest)


for _lane in app.settings.worker_lanes:
    _make_agent(_lane)
