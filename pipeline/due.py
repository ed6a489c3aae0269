"""Timers that put due table entries back on a topic: retries, held requests.

An entry waits in a table (written by an agent, on the user's partition), not
in a sleep: the partition keeps flowing and a restart loses none. Keys start
with the due time in zero-padded epoch milliseconds, so a partition's RocksDB
store lists the due entries first. Every tick, each worker looks at the
partitions it owns, oldest due first, and hands each due entry to ``release``
(which sends it to its topic). The agent that receives it deletes the entry;
until then this worker does not release it twice, and a copy released by
another worker after a rebalance is recognised downstream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pipeline import metrics
from pipeline.stores import active_dbs

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)

#: Digits of the due time at the start of a key (epoch ms, zero-padded).
DUE_KEY_WIDTH = 15
#: At most this many entries are released per tick (the rest wait a tick).
MAX_PER_TICK = 5_000
#: Releases between two yields to the event loop: a burst of due entries
#: (a provider's Retry-After ending for thousands of jobs) must not hold
#: the agents and the critical lane's latency back for the whole burst.
YIELD_EVERY = 50

#: A partition's next scan begins this long (ms) before the due time of the
#: last entry released there. An entry is held until a time not before its
#: holder's clock read, so none lands behind that point on this worker's
#: clock; the margin and a whole scan every FULL_SCAN_EVERY ticks (and at
#: every new group generation) keep even one that did from waiting long.
BACKSCAN_MS = 1_000
FULL_SCAN_EVERY = 40

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)


def due_key(due_ms: int, rest: str) -> str:
    """A key that sorts by due time: ``<due ms>:<rest>``."""
    return f"{due_ms:0{DUE_KEY_WIDTH}d}:{rest}"


def due_ms(key: str) -> int:
    """The due time (epoch ms) a key starts with."""
    return int(key[:DUE_KEY_WIDTH])


def ms_at(when: datetime) -> int:
    """The first whole epoch millisecond not before ``when``."""
    # Up, not down: a key is then never due before the time it was held until.
    return -((EPOCH - when) // MILLISECOND)


def time_at(ms: int) -> datetime:
    """The UTC time of epoch millisecond ``ms``, exactly (no float)."""
    return EPOCH + ms * MILLISECOND


def due_keys(
    table: Any, now_ms: int, start: Mapping[int, int] | None = None
) -> Iterator[tuple[int, str]]:
    """(partition, key) of ``table``'s owned entries due at ``now_ms``, oldest
    first per partition.

    With RocksDB each partition's store lists keys in order, so the scan stops
    at the first entry not yet due, and begins at the due time ``start`` gives
    for that partition (its whole store when absent): a seek, not a walk over
    the entries released earlier and not yet taken by their agent, of which a
    burst leaves tens of thousands (walking 100,000 costs ~100 ms a tick).
    The memory store (tests) is scanned whole.
    """
    dbs = active_dbs(table)
    if dbs is None:
        keys = sorted(k for k in table.keys() if due_ms(k) <= now_ms)
        yield from ((0, key) for key in keys)
        return
    offset_key = table.data.offset_key
    for partition, db in dbs:
        first = (start or {}).get(partition)
        begin = None if first is None else due_key(first, "").encode()
        for raw in db.keys(from_key=begin):
            if raw == offset_key:
                continue
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            if due_ms(key) > now_ms:
                break
            yield partition, key


class DueTimer:
    """Releases a table's due entries; remembers what it released until the
    receiving agent takes the entry (``done``)."""

    def __init__(
        self,
        app: faust.App,
        table: Any,
        release: Callable[[Any], Awaitable[None]],
        what: str,
        name: str = "",
    ) -> None:
        self.app = app
        self.table = table
        self.release = release
        self.what = what
        #: The ``timer`` label of its metrics.
        self.name = name or what
        self.released: set[str] = set()
        #: Per partition, the due time (ms) its next scan begins at: a little
        #: before the last entry released there. Valid in one group generation.
        self.resume: dict[int, int] = {}
        self.generation: int | None = None
        self.ticks = 0

    def done(self, key: str) -> None:
        """The receiving agent took the entry: delete it, and forget it.

        Called in the receiving agent's event context, so the delete lands on
        the entry's partition and its changelog.
        """
        self.table.pop(key, None)
        self.released.discard(key)

    async def tick(self) -> int:
        """Release every due entry not released yet; the number released."""
        if self.app.rebalancing:
            return 0
        generation = getattr(self.app, "consumer_generation_id", None)
        self.ticks += 1
        if generation != self.generation or self.ticks % FULL_SCAN_EVERY == 0:
            self.generation = generation
            self.resume.clear()
        now_ms = int(self.app.clock.now().timestamp() * 1000)  # type: ignore[attr-defined]
        sent = 0
        for partition, key in due_keys(self.table, now_ms, self.resume):
            if key in self.released:
                continue
            entry = self.table.get(key)
            if entry is None:
                continue
            await self.release(entry)
            metrics.released(self.name, (now_ms - due_ms(key)) / 1000)
            self.released.add(key)
            self.resume[partition] = due_ms(key) - BACKSCAN_MS
            sent += 1
            if sent >= MAX_PER_TICK:
                break
            if sent % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        if sent:
            log.info("released %d due %s", sent, self.what)
        return sent
