"""ingest: validate raw requests; decide them here or re-key them by user.

Requests may arrive partitioned by any producer's partitioner. One that is
already on its lane's topic at its user's partition (the API produces them
so: key tenant/user_id, Kafka's default partitioner) is decided right here
by fanout's stages, co-partitioned with the user's state. Any other is
re-keyed by tenant/user onto ``notify.accepted.<lane>``, where fanout decides
it: that hop is where lanes part and where other partitioners are undone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timedelta

import orjson
from faust.types import EventT, StreamT

from agents import fanout
from pipeline.app import app
from pipeline.deadletter import Rejection, dead_letter, source_of
from pipeline.errors import InvalidMessage
from pipeline.ids import notification_id
from pipeline.partitioning import partition_for
from pipeline.status import batch as status_batch
from pipeline.streams import BATCH_WINDOW, acting_for, batches, emit, state_first
from pipeline.template_data import check_template_data
from pipeline.topology import user_key
from schemas.decode import decode
from schemas.records import AcceptedRequest, NotificationRequest

log = logging.getLogger(__name__)

STAGE = "ingest"


def lane_for(priority: str) -> str:
    """Critical and transactional ride the critical lane; promotional the bulk one."""
    return "bulk" if priority == "promotional" else "critical"


def body_hash(request: NotificationRequest) -> str:
    """A digest of what the request asks for, blind to JSON formatting."""
    body = request.model_dump(mode="json")
    try:
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer in data beyond 64 bits: the slower encoder
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
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
        request = decode(NotificationRequest, raw)
        check_template_data(request)
    except InvalidMessage as exc:
        return Rejection(exc.reason, exc.code, source, STAGE)
    return accept(request, source, now)


def at_home(request: NotificationRequest, lane: str, partition: int) -> bool:
    """True if the request sits where its user's state lives: its own lane's
    topic, on the partition Kafka's default partitioner gives tenant/user_id."""
    key = user_key(request.tenant, request.recipient.user_id).encode()
    return lane_for(request.priority) == lane and partition == partition_for(
        key, app.settings.topic_partitions
    )


async def handle(event: EventT, lane: str, window: timedelta) -> None:
    """Decide one message: in place, re-keyed onto its lane, or dead-lettered."""
    topology = app.topology
    decision = admit(event.value, source_of(event), app.clock.now())
    if isinstance(decision, Rejection):
        await dead_letter(app, event, decision)
        return
    request = decision.notification()
    if at_home(request, lane, event.message.partition):
        # The API (and any producer keying by tenant/user_id with Kafka's
        # default partitioner) puts requests here: a hop through
        # notify.accepted would only land them on this same partition.
        await fanout.handle(decision, lane, window, request)
        return
    # The batch produce path: the commit waits for it, a failure trips the
    # commit guard.
    emit(
        topology.accepted[decision.lane],
        user_key(request.tenant, request.recipient.user_id),
        decision,
    )


#: Requests taken at once.
BATCH = 500


def _make_agent(lane: str) -> None:
    async def ingest(stream: StreamT[bytes]) -> None:
        window = timedelta(hours=app.settings.idempotency_window)
        async for events in batches(stream, BATCH, BATCH_WINDOW[lane]):
            # Anything but an invalid message (a decision) is a bug: Faust would
            # ack the batch as the agent dies; the guard keeps it uncommitted.
            # Decided in place (fanout's stages): acted on once durable.
            with app.commit_guard.watching(source_of(events[-1])):
                async with state_first(app, events):
                    with status_batch():
                        for event in events:
                            with acting_for(event):
                                await handle(event, lane, window)

    ingest.__doc__ = (
        f"Validate {lane}-lane requests; decide those on their user's partition, "
        "re-key the others by user, or dead-letter."
    )
    app.agent(app.topology.requests[lane], name=f"ingest.{lane}")(ingest)


for _lane in app.settings.worker_lanes:
    _make_agent(_lane)
