"""held: a timer that puts held requests back before fanout, when they are due.

Fanout holds a request whose user it knows nothing about yet (``tables.held``)
and looks at it again when its entry is due: this timer sends the entry to
its lane's ``notify.accepted`` topic on its user's partition, and fanout,
deciding it again, deletes the entry.
"""

from __future__ import annotations

from pipeline.app import app
from pipeline.due import DueTimer
from pipeline.partitioning import partition_for
from pipeline.topology import user_key
from schemas.records import AcceptedRequest
from tables.held import held

#: Seconds between looks at the held table.
TICK = 0.25


async def release(accepted: AcceptedRequest) -> None:
    """Send a due held request to fanout, on its user's partition."""
    request = accepted.notification()
    key = user_key(request.tenant, request.recipient.user_id)
    partition = partition_for(key.encode(), app.settings.topic_partitions)
    topic = app.topology.accepted[accepted.lane]
    app.producer.emit(topic, key, accepted, partition=partition)  # type: ignore[attr-defined]


held_timer = DueTimer(app, held, release, "held requests", "held")


@app.timer(TICK, name="held.release")
async def release_held_requests() -> None:
    """Put due held requests back before fanout."""
    await held_timer.tick()
