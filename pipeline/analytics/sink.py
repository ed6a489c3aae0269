"""The ClickHouse sink: ``notify.events`` into ``notif_events_log`` in batches.

A batch consumer (confluent-kafka), not a Faust agent: a Faust agent pays
~0.1 ms of a core per record, which caps a sink near 10,000 rows/s; this
loop takes up to ``NOTIFY_SINK_BATCH_ROWS`` messages per poll and inserts
them column by column in one request. It runs on its own thread (the
blocking calls never touch an event loop) in the ``notify sink`` process.

At least once, exactly once in the table:

- offsets are committed only after the batch's insert succeeded, so a crash
  reads the batch again;
- each insert carries a deduplication token naming its offset ranges, and
  the table folds any event id seen twice (``ddl/0001``);
- while ClickHouse is unreachable the loop stops reading (the partitions are
  paused, the consumer stays in its group) and retries the insert with
  backoff: the topic backs up, not memory, and it catches up when ClickHouse
  is back;
- a message that is not an event goes to the dead-letter topic with its
  reason and original bytes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from pipeline.analytics.rows import Batch
from pipeline.analytics.store import insert_events
from pipeline.settings import Settings
from pipeline.topology import (
    DEADLETTER,
    DLQ_CODE,
    DLQ_REASON,
    DLQ_SOURCE,
    DLQ_STAGE,
    EVENTS,
    topic_name,
)

log = logging.getLogger(__name__)

STAGE = "sink"
#: Longest wait between two tries of an insert that failed.
MAX_BACKOFF = 30.0
#: Seconds between two looks at the events topic's offsets (the sink's lag).
WATERMARK_EVERY = 1.0


class SinkStopped(RuntimeError):
    """Asked to stop while an insert kept failing: its batch is not committed."""


@dataclass
class SinkStats:
    """What the sink did, for its status endpoint and logs."""

    rows: int = 0
    batches: int = 0
    rejected: int = 0
    failures: int = 0
    last_error: str | None = None
    last_insert: float | None = None
    #: Partition → the next offset to read (what was committed).
    committed: dict[int, int] = field(default_factory=dict)
    #: Partition → (earliest, end) offsets of the events topic, looked up
    #: about once a second for the assigned partitions.
    watermarks: dict[int, tuple[int, int]] = field(default_factory=dict)

    def lag(self) -> dict[int, int]:
        """Partition → events not yet inserted and committed."""
        return {
            partition: max(0, end - self.committed.get(partition, low))
            for partition, (low, end) in sorted(self.watermarks.items())
        }


class Sink:
    """Reads ``notify.events`` and inserts it into ClickHouse, batch by batch."""

    def __init__(
        self,
        settings: Settings,
        client: Client,
        *,
        topic: str | None = None,
        group: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.client = client
        self.topic = topic or topic_name(settings, EVENTS)
        self.group = group or f"{settings.app_id}-sink"
        self.batch_rows = settings.sink_batch_rows
        self.batch_seconds = settings.sink_batch_seconds
        self.sleep = sleep
        self.stats = SinkStats()
        self.stopping = threading.Event()
        self.batch = Batch()
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None

    def config(self) -> dict[str, Any]:
        """The consumer: its own group, offsets committed by hand after inserts."""
        return {
            "bootstrap.servers": self.settings.bootstrap_servers,
            "group.id": self.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
            # A ClickHouse outage may pause reading for long: the loop keeps
            # polling (paused), so the group keeps this member meanwhile.
            "max.poll.interval.ms": 300_000,
            "log_level": 3,
        }

    def run(self) -> None:
        """Read and insert until ``stop()``; the last batch is inserted first."""
        consumer = self.consumer = Consumer(self.config())
        self.producer = Producer(
            {
                "bootstrap.servers": self.settings.bootstrap_servers,
                "acks": "all",
                "enable.idempotence": True,
                "log_level": 3,
            }
        )
        consumer.subscribe([self.topic], on_revoke=self._on_revoke)
        started = looked = time.monotonic()
        try:
            while not self.stopping.is_set():
                if time.monotonic() - looked >= WATERMARK_EVERY:
                    self._look_at_watermarks()
                    looked = time.monotonic()
                wait = max(0.05, self.batch_seconds - (time.monotonic() - started))
                room = max(1, self.batch_rows - len(self.batch))
                for message in consumer.consume(num_messages=room, timeout=wait):
                    self._take(message)
                full = len(self.batch) >= self.batch_rows
                if full or time.monotonic() - started >= self.batch_seconds:
                    self.flush()
                    started = time.monotonic()
            self.flush()
        finally:
            consumer.close()
            self.producer.flush(10)

    def _look_at_watermarks(self) -> None:
        """The events topic's offsets on the assigned partitions (its lag)."""
        if self.consumer is None:
            return
        found = {}
        for tp in self.consumer.assignment():
            try:
                low, end = self.consumer.get_watermark_offsets(
                    tp, timeout=1.0, cached=False
                )
            except Exception as exc:  # noqa: BLE001 - a broker away: next time
                log.debug("sink: watermarks of %s not read: %s", tp, exc)
                continue
            found[tp.partition] = (low, end)
        self.stats.watermarks = found

    def stop(self) -> None:
        """Ask the loop to insert what it holds and end."""
        self.stopping.set()

    def _take(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("sink: %s", error)
            return
        self.batch.add(
            message.partition() or 0,
            message.offset() or 0,
            message.key(),
            message.value(),
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # What is held is inserted and committed before another member takes
        # the partitions over.
        self.flush()

    def flush(self) -> None:
        """Insert the batch (retrying until it goes, or the sink stops), then
        dead-letter its rejects, then commit its offsets."""
        batch, self.batch = self.batch, Batch()
        if not batch.offsets:
            return
        if batch.rows:
            self._insert(batch)
        if batch.rejected:
            self._dead_letter(batch)
        self._commit(batch)

    def _insert(self, batch: Batch) -> None:
        token = batch.token(self.topic)
        delay = 0.5
        paused: list[TopicPartition] = []
        try:
            while True:
                try:
                    insert_events(self.client, batch.in_order(), token)
                    break
                except Exception as exc:  # noqa: BLE001 - any failure: retry
                    self.stats.failures += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"[:500]
                    log.warning(
                        "sink: insert of %d rows failed (%s); again in %.1f s",
                        batch.rows,
                        self.stats.last_error,
                        delay,
                    )
                    if self.stopping.is_set():
                        # Not committed: read and inserted again after a restart.
                        raise SinkStopped("stopped while ClickHouse was down") from exc
                    if not paused and self.consumer is not None:
                        paused = self.consumer.assignment()
                        self.consumer.pause(paused)
                    self._wait(delay)
                    delay = min(MAX_BACKOFF, delay * 2)
        finally:
            if paused and self.consumer is not None:
                self.consumer.resume(paused)
        self.stats.rows += batch.rows
        self.stats.batches += 1
        self.stats.last_insert = time.time()
        self.stats.last_error = None

    def _wait(self, seconds: float) -> None:
        """Sleep, polling the paused consumer so it stays in its group. A
        message it still hands over (fetched before the pause) joins the
        next batch: dropped, the next commit would pass over it."""
        left = seconds
        while left > 0:
            if self.consumer is not None:
                message = self.consumer.poll(0)
                if message is not None:
                    self._take(message)
            step = min(0.2, left)
            self.sleep(step)
            left -= step

    def _dead_letter(self, batch: Batch) -> None:
        assert self.producer is not None  # noqa: S101 - set by run()
        target = topic_name(self.settings, DEADLETTER)
        failed: list[str] = []

        def report(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                failed.append(str(error))

        for partition, offset, key, value, reason in batch.rejected:
            source = f"{self.topic}[{partition}]@{offset}"
            log.warning("sink: dead-lettering %s: %s", source, reason)
            self.producer.produce(
                target,
                key=key,
                value=value,
                headers=[
                    (DLQ_REASON, reason.encode()),
                    (DLQ_CODE, b"not_an_event"),
                    (DLQ_STAGE, STAGE.encode()),
                    (DLQ_SOURCE, source.encode()),
                ],
                on_delivery=report,
            )
        left = self.producer.flush(30)
        if left or failed:
            # Not committed: the batch is read (and inserted, deduplicated)
            # again by whoever reads the partition next.
            raise RuntimeError(f"dead letters not acknowledged: {failed or left}")
        self.stats.rejected += len(batch.rejected)

    def _commit(self, batch: Batch) -> None:
        if self.consumer is None:
            return
        offsets = [
            TopicPartition(self.topic, partition, last + 1)
            for partition, (_, last) in batch.offsets.items()
        ]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:  # noqa: BLE001 - a lost partition: read again
            log.warning("sink: commit failed (%s); the batch will be read again", exc)
            return
        for partition, (_, last) in batch.offsets.items():
            self.stats.committed[partition] = last + 1
