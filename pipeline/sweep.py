"""Retention sweeps: delete a table's expired entries, a slice at a time.

A compacted changelog keeps the last value of every key for ever, and a new
worker recovers every one of them. Tables whose keys never come back (one per
send attempt; one per user who may never be notified again) would grow
without end, and so would the time a worker takes to start. A sweeper walks
the partitions this worker owns, a slice per tick from where the last one
stopped, and deletes the entries its ``expired`` test says are past their
retention: from the local store and, with a tombstone, from the changelog, so
the next recovery does not bring them back.

A sweep must not stall the worker: values are judged in their stored JSON
form (``orjson``, not a Faust record decode), the loop is given back every
``CHUNK`` entries, and a partition walked to its end rests ``REST`` seconds
before the next walk (retentions are hours or days).

Deleting needs the partition of the entry (a table writes its changelog on
the current event's partition): the RocksDB store keeps one database per
partition; the memory store does not, so there ``partition_of`` tells.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipeline.streams import acting_for

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)

#: Entries looked at per partition per tick: with a tick every 10 s, a worker
#: walks at most 100 entries per second per partition.
PER_TICK = 1_000
#: Entries judged between two yields to the event loop.
CHUNK = 50
#: Seconds a partition walked to its end waits before the next walk.
REST = 600.0


@dataclass(frozen=True)
class _Message:
    topic: str
    partition: int


class PartitionEvent:
    """Stands in for a stream event of the table's own changelog partition:
    its writes land there (a table checks the source topic's partition count
    against its changelog's, which is trivially right for the changelog)."""

    def __init__(self, topic: str, partition: int) -> None:
        self.message = _Message(topic, partition)


class Sweeper:
    """Deletes the entries of ``table`` that ``expired(stored JSON, now)`` says
    are done."""

    def __init__(
        self,
        app: faust.App,
        table: Any,
        expired: Callable[[bytes, datetime], bool],
        partition_of: Callable[[str], int],
        what: str,
        per_tick: int = PER_TICK,
        rest: float = REST,
        clock: Callable[[], float] = time.monotonic,
        on_delete: Callable[[Any, int], None] | None = None,
    ) -> None:
        self.app = app
        self.table = table
        self.expired = expired
        self.partition_of = partition_of
        self.what = what
        self.per_tick = per_tick
        self.rest = rest
        self.clock = clock
        #: Called with each deleted key and its partition, in that partition's
        #: context: entries of other tables that go with it go too.
        self.on_delete = on_delete
        #: Per partition, the last key looked at (the next slice starts after it).
        self.cursors: dict[int, Any] = {}
        #: Per partition, when its last walk reached the end.
        self.walked: dict[int, float] = {}

    def owned(self) -> set[int]:
        """The partitions of the table's changelog this worker owns (active)."""
        topic = self.table.changelog_topic_name
        return {
            tp.partition
            for tp in self.app.assignor.assigned_actives()
            if tp.topic == topic
        }

    async def tick(self) -> int:
        """Look at the next slice of every owned partition; the number deleted."""
        if self.app.rebalancing:
            return 0
        now = self.app.clock.now()  # type: ignore[attr-defined]
        topic = self.table.changelog_topic_name
        deleted = 0
        for partition in sorted(self.owned()):
            ended = self.walked.get(partition)
            if ended is not None and self.clock() - ended < self.rest:
                continue
            doomed = []
            for n, (key, raw) in enumerate(self._slice(partition), start=1):
                if self._is_expired(key, raw, now):
                    doomed.append(key)
                if n % CHUNK == 0:
                    await asyncio.sleep(0)
            if self.app.rebalancing:  # the partition may be another's now
                return deleted
            with acting_for(PartitionEvent(topic, partition)):  # type: ignore[arg-type]
                for key in doomed:
                    # Judged again: an agent may have written it while we yielded.
                    current = self.table.get(key)
                    if current is not None and self._is_expired(
                        key, stored_form(current), now
                    ):
                        del self.table[key]
                        if self.on_delete is not None:
                            self.on_delete(key, partition)
                        deleted += 1
        if deleted:
            log.info("deleted %d expired %s", deleted, self.what)
        return deleted

    def _is_expired(self, key: Any, raw: bytes, now: datetime) -> bool:
        """The ``expired`` test; an entry it cannot judge is kept, not a crash."""
        try:
            return self.expired(raw, now)
        except Exception:  # noqa: BLE001 - one odd entry must not stop the worker
            log.warning("kept %s entry %r: cannot tell its age", self.what, key)
            return False

    def _slice(self, partition: int) -> list[tuple[Any, Any]]:
        """Up to ``per_tick`` entries after the cursor; the cursor moves on,
        and back to the start once the partition is walked."""
        taken = list(self._entries_after(partition, self.cursors.get(partition)))
        if len(taken) < self.per_tick:
            self.cursors.pop(partition, None)  # walked: the next slice starts over
            self.walked[partition] = self.clock()
        else:
            self.cursors[partition] = taken[-1][0]
            self.walked.pop(partition, None)
        return taken

    def _entries_after(self, partition: int, cursor: Any) -> Iterator[tuple[Any, Any]]:
        store = self.table.data
        dbs = getattr(store, "_dbs", None)
        if dbs is None:  # the memory store: every key, sorted, this partition's
            keys = sorted(k for k in store if self.partition_of(k) == partition)
            after = [k for k in keys if cursor is None or k > cursor]
            for key in after[: self.per_tick]:
                yield key, stored_form(store[key])
            return
        db = dbs.get(partition)
        if db is None:
            return
        start = None if cursor is None else store._encode_key(cursor)
        count = 0
        for raw_key, raw_value in db.items(from_key=start):
            if raw_key == store.offset_key or raw_key == start:
                continue
            yield store._decode_key(raw_key), raw_value
            count += 1
            if count >= self.per_tick:
                return


def stored_form(value: Any) -> bytes:
    """A memory store's value as RocksDB would hold it (its JSON)."""
    return value if isinstance(value, bytes) else bytes(value.dumps())
