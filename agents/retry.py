"""retry: a timer that puts due retries back on their delivery topic.

Retries wait in the retry table (written by the send agents), not in a sleep:
the partition keeps flowing and a restart loses none. Every tick, each worker
looks at the partitions it owns, oldest due first, and sends each due job to
its topic on its user's partition. The send agent that receives the job
deletes the entry; until then this worker does not send it twice, and a copy
sent by another worker after a rebalance is stopped by the ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from pipeline.app import app
from pipeline.delivery.plan import due_ms
from pipeline.partitioning import partition_for
from tables.retries import retries

log = logging.getLogger(__name__)

#: Seconds between looks at the retry table.
TICK = 0.25
#: At most this many retries are released per tick (the rest wait a tick).
MAX_PER_TICK = 5_000


def due_keys(now_ms: int) -> Iterator[str]:
    """Keys of the owned retry entries due at ``now_ms``, oldest first per partition.

    With RocksDB each partition's store lists keys in order, and keys start
    with the due time, so the scan stops at the first entry not yet due; the
    memory store (tests) is scanned whole.
    """
    store = getattr(retries, "data", None)
    partition_dbs = getattr(store, "_dbs_for_actives", None)
    if partition_dbs is None:
        yield from sorted(k for k in retries.keys() if due_ms(k) <= now_ms)
        return
    for db in partition_dbs():
        for raw in store._visible_keys(db):  # type: ignore[union-attr]
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            if due_ms(key) > now_ms:
                break
            yield key


class RetryTimer:
    """Releases due retries; remembers what it released until the agent deletes it."""

    def __init__(self) -> None:
        self.released: set[str] = set()

    def forget(self, key: str) -> None:
        """The send agent took the retry: its entry is gone."""
        self.released.discard(key)

    async def tick(self) -> int:
        """Send every due retry not sent yet; the number sent."""
        if app.rebalancing:
            return 0
        now_ms = int(app.clock.now().timestamp() * 1000)
        sent = 0
        for key in due_keys(now_ms):
            if key in self.released:
                continue
            scheduled = retries.get(key)
            if scheduled is None:
                continue
            job = scheduled.delivery_job()
            topic = app.topology.deliveries[(job.channel, job.lane)]
            partition = partition_for(
                scheduled.key.encode(), app.settings.topic_partitions
            )
            await topic.send(key=scheduled.key, value=job, partition=partition)
            self.released.add(key)
            sent += 1
            if sent >= MAX_PER_TICK:
                break
        if sent:
            log.info("released %d due retries", sent)
        return sent


retry_timer = RetryTimer()


@app.timer(TICK, name="retry.release")
async def release_due_retries() -> None:
    """Put due retries back on their delivery topics."""
    await retry_timer.tick()
