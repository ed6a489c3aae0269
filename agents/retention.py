"""retention: sweeps that keep per-attempt and per-user tables bounded.

- ``send_ledger``: an attempt's entry is deleted ``NOTIFY_LEDGER_RETENTION``
  hours after its last change. Until then a redelivered or replayed job finds
  it and calls no provider again.
- ``status``: a notification's status and trail are deleted
  ``NOTIFY_STATUS_RETENTION`` hours after its last change, or after the time
  it waits for (a deferral's ``until``) if that is later. ``notify.events``
  holds every decision for as long as that topic keeps it.
- ``failed_jobs``: a notification's failed jobs (kept for an operator's
  retry) are deleted with its status.
- ``idempotency``: a key's entry is deleted once it is older than
  ``NOTIFY_IDEMPOTENCY_WINDOW`` (reads already ignore it by then).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson

from pipeline.actions import forget_failed
from pipeline.app import app
from pipeline.ids import parse_notification_id
from pipeline.partitioning import partition_for
from pipeline.sweep import Sweeper
from tables.idempotency import SeenRequest, idempotency, owner_key
from tables.ledger import ledger
from tables.status import status

#: Seconds between sweeps (each looks at a slice of every owned partition).
TICK = 10.0


def ledger_expired(raw: bytes, now: datetime) -> bool:
    """An attempt untouched for the ledger's retention."""
    updated_at = datetime.fromisoformat(orjson.loads(raw)["updated_at"])
    return updated_at < now - timedelta(hours=app.settings.ledger_retention)


def status_expired(raw: bytes, now: datetime) -> bool:
    """A notification with no change, and nothing due, for the status retention."""
    trail = orjson.loads(raw).get("trail") or []
    moments = [entry["ts"] for entry in trail]
    moments += [entry["until"] for entry in trail if entry.get("until")]
    if not moments:
        return False
    latest = max(datetime.fromisoformat(moment) for moment in moments)
    return latest < now - timedelta(hours=app.settings.status_retention)


def idempotency_expired(raw: bytes, now: datetime) -> bool:
    """A key first used longer ago than the idempotency window."""
    window = timedelta(hours=app.settings.idempotency_window)
    entry = SeenRequest.loads(raw)
    return entry is None or not entry.live(now, window)


def notification_partition(key: str) -> int:
    """The partition of a notification id or an attempt key (``<id>:...``): its
    user's; -1 if it names no notification."""
    ref = parse_notification_id(key.split(":", 1)[0])
    return -1 if ref is None else ref.partition(app.settings.topic_partitions)


def user_partition(key: str) -> int:
    """The partition of an idempotency entry: its user's."""
    return partition_for(owner_key(key).encode(), app.settings.topic_partitions)


ledger_sweeper = Sweeper(
    app, ledger, ledger_expired, notification_partition, "send ledger entries"
)
status_sweeper = Sweeper(
    app,
    status,
    status_expired,
    notification_partition,
    "notification statuses",
    # A failed job kept for an operator's retry goes with its status.
    on_delete=forget_failed,
)
idempotency_sweeper = Sweeper(
    app, idempotency, idempotency_expired, user_partition, "idempotency entries"
)


@app.timer(TICK, name="retention.sweep")
async def sweep() -> None:
    """Delete expired ledger, status and idempotency entries on owned partitions."""
    await ledger_sweeper.tick()
    await status_sweeper.tick()
    await idempotency_sweeper.tick()
