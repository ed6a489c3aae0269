"""idempotency.peer: the other lane's idempotency keys, when the lanes run apart.

A worker of one lane (NOTIFY_LANES=critical or bulk) has its own consumer
group and so its own idempotency table; alone, it would never see a key the
other lane's workers accepted, and the same key sent again with another
priority (so on the other lane) would be a new notification. This agent reads
the other lane's idempotency changelog (compacted, partitioned like ours by
user) and copies each entry into this lane's table, on the same partition:
from then on the API and fanout of this lane answer such a key as a
duplicate or a conflict, exactly as for their own.

When two lanes each accept the same key before either has read the other's
entry (within the changelog's delivery delay, milliseconds when both run),
both notifications go out; the tables then converge on the first use (the
earlier ``first_seen``, then the smaller notification id). When both lanes
run in one worker, they share one table and this agent is not started.
"""

from __future__ import annotations

from typing import Any, cast

from faust.types import StreamT

from pipeline.app import app
from pipeline.deadletter import source_of
from tables.idempotency import SeenRequest, idempotency

LANE_SPLIT = app.settings.worker_lanes != ("critical", "bulk")


def peer_changelog_name() -> str:
    """The other lane group's idempotency changelog topic."""
    own_group = app.settings.group_id
    (peer_lane,) = {"critical", "bulk"} - set(app.settings.worker_lanes)
    peer_group = f"{app.settings.app_id}-{peer_lane}"
    own = idempotency.changelog_topic.get_topic_name()
    return peer_group + own[len(own_group) :]


def merged(own: bytes | None, peer: bytes | None) -> bytes | None:
    """What this lane's entry becomes given the peer's: None to leave it.

    The first use of a key wins on both sides, so the tables converge.
    """
    theirs = SeenRequest.loads(peer)
    if theirs is None or own == peer:
        return None
    ours = SeenRequest.loads(own)
    if ours is None:
        return peer
    rank = (theirs.first_seen, theirs.notification_id)
    return peer if rank < (ours.first_seen, ours.notification_id) else None


if LANE_SPLIT:
    peer_topic = app.topic(
        peer_changelog_name(),
        key_type=str,
        value_type=bytes,
        # As the table writes its changelog keys (Faust's choice for str keys).
        key_serializer=cast(Any, idempotency).key_serializer,
        value_serializer="raw",
        partitions=app.settings.topic_partitions,
        compacting=True,
        internal=True,
    )

    @app.agent(peer_topic, name="idempotency.peer")
    async def copy_peer_keys(stream: StreamT[bytes]) -> None:
        """Copy the other lane's idempotency keys into this lane's table."""
        async for event in stream.events():
            with app.commit_guard.watching(source_of(event)):
                key = event.key
                value = merged(idempotency.get(key), event.value)
                if value is not None:
                    idempotency[key] = value
