"""The batch produce path: records appended straight to the Kafka client's batches.

Faust's ``send_soon`` costs about 70 µs of a core per record: a future
message, a buffer, a task hop, the sensors, then the client's own ``send``
(metadata wait, partitioner, a batch per record when nothing lingers). The
hot agents write several records per notification, so that path was the
largest single part of a notification's cost. Here a record is serialized
and appended to an open batch of its topic and partition (the client's
``BatchBuilder``, a few µs), and the open batches are handed to the client
together on the next turn of the event loop.

At-least-once holds as on Faust's path:

- A commit first hands every open batch to the client, then waits until
  every batch the client holds is acknowledged (`pipeline.transport.Producer
  .acknowledged`): no offset commit covers a record not yet acknowledged.
- A batch the client refuses or cannot deliver trips the commit guard, which
  refuses every later commit and crashes the worker: its uncommitted input
  is redone by the next owner.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.structs import RecordMetadata

from pipeline.partitioning import partition_for

log = logging.getLogger(__name__)

#: Called once a batch is acknowledged: its topic-partition's last offset.
OnAcked = Callable[[Any, int], None]
#: Keys whose partition was computed, kept (users repeat; murmur2 is Python).
PARTITION_CACHE = 100_000


@dataclass
class OpenBatch:
    """Records appended for one topic-partition, not yet handed to the client."""

    topic: str
    partition: int
    builder: Any  # aiokafka's BatchBuilder
    count: int = 0
    on_acked: list[OnAcked] = field(default_factory=list)

    def add(
        self, key: bytes | None, value: bytes | None, headers: list[Any] | None
    ) -> bool:
        """Append one record; False if the batch is full."""
        added = self.builder.append(
            timestamp=None, key=key, value=value, headers=headers or []
        )
        if added is None:
            return False
        self.count += 1
        return True


class Outbox:
    """Open batches per topic-partition, handed to the client in one go.

    ``client`` returns the started ``AIOKafkaProducer``; ``failed`` is told
    of a batch that was not delivered (the commit guard's trip).
    """

    def __init__(
        self, client: Callable[[], Any], failed: Callable[[BaseException], None]
    ) -> None:
        self._client = client
        self._failed = failed
        self._open: dict[tuple[str, int], OpenBatch] = {}
        self._full: list[OpenBatch] = []
        self._shipping: asyncio.Future[None] | None = None
        self._unacked: set[asyncio.Future[Any]] = set()
        #: Per partition count, the partition of each key seen.
        self._partitions: dict[int, dict[bytes, int]] = {}
        #: Records appended, and records whose batch was acknowledged.
        self.appended = 0
        self.acknowledged = 0

    def partitions_of(self, topic: str) -> int | None:
        """The topic's partition count as the client knows it, or None."""
        known = self._client().client.cluster.partitions_for_topic(topic)
        return len(known) if known else None

    def partition_for(self, key: bytes, partitions: int) -> int:
        """Kafka's default partitioner (murmur2), remembered per key."""
        cache = self._partitions.get(partitions)
        if cache is None:
            cache = self._partitions[partitions] = {}
        found = cache.get(key)
        if found is None:
            if len(cache) >= PARTITION_CACHE:
                cache.clear()
            found = cache[key] = partition_for(key, partitions)
        return found

    def append(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        on_acked: OnAcked | None = None,
    ) -> None:
        """Add one record to its topic-partition's open batch.

        ``on_acked`` is called once with the partition's last offset when
        the batch holding this record is acknowledged.
        """
        slot = (topic, partition)
        batch = self._open.get(slot) or self._open_batch(slot)
        if not batch.add(key, value, headers):
            # Full: it goes as it is, and a new one takes the record.
            self._full.append(self._open.pop(slot))
            batch = self._open_batch(slot)
            if not batch.add(key, value, headers):
                raise ValueError(
                    f"a record of {len(value or b'')} bytes does not fit a batch of {topic}"
                )
        if on_acked is not None and on_acked not in batch.on_acked:
            batch.on_acked.append(on_acked)
        self.appended += 1
        self._ship_soon()

    def _open_batch(self, slot: tuple[str, int]) -> OpenBatch:
        batch = self._open[slot] = OpenBatch(*slot, self._client().create_batch())
        return batch

    @property
    def waiting(self) -> int:
        """Records appended and not yet acknowledged (or failed)."""
        return self.appended - self.acknowledged

    def _ship_soon(self) -> None:
        if self._shipping is None or self._shipping.done():
            self._shipping = asyncio.ensure_future(self._ship())

    async def _ship(self) -> None:
        """Hand every open batch to the client, the full ones first, until
        none is left (records appended meanwhile go too)."""
        while self._full or self._open:
            batches, self._full = self._full, []
            batches.extend(self._open.values())
            self._open = {}
            for batch in batches:
                await self._hand(batch)

    async def _hand(self, batch: OpenBatch) -> None:
        batch.builder.close()
        try:
            future = await self._client().send_batch(
                batch.builder, batch.topic, partition=batch.partition
            )
        except Exception as exc:  # noqa: BLE001 - any refusal loses the batch
            self.acknowledged += batch.count
            self._fail(batch, exc)
            return
        self._unacked.add(future)
        future.add_done_callback(lambda done: self._settle(batch, done))

    def _settle(self, batch: OpenBatch, done: asyncio.Future[Any]) -> None:
        self._unacked.discard(done)
        self.acknowledged += batch.count
        if done.cancelled():
            self._fail(batch, asyncio.CancelledError())
            return
        exc = done.exception()
        if exc is not None:
            self._fail(batch, exc)
            return
        meta: RecordMetadata = done.result()
        last = meta.offset + batch.count - 1
        for callback in batch.on_acked:
            callback(meta.topic_partition, last)

    def _fail(self, batch: OpenBatch, exc: BaseException) -> None:
        log.error(
            "produce failed: a batch of %d records for %s[%d]: %r",
            batch.count,
            batch.topic,
            batch.partition,
            exc,
        )
        self._failed(exc)

    async def handed(self) -> None:
        """Return once every record appended before the call is in the client."""
        while (
            self._open
            or self._full
            or (self._shipping is not None and not self._shipping.done())
        ):
            self._ship_soon()
            await asyncio.shield(self._shipping)  # type: ignore[arg-type]

    async def settled(self) -> None:
        """Return once every batch handed to the client so far is
        acknowledged or failed, its callbacks run."""
        if self._unacked:
            await asyncio.wait(set(self._unacked))
