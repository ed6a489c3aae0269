"""The Kafka transport the app runs on: Faust's aiokafka driver plus three guards.

1. End offsets. Table recovery reads a changelog up to its end offset. Where the
   broker declares the ``list_offsets_latest`` defect (ListOffsets answering the
   first offset of the last batch + 1), the end offset is taken from a Fetch
   response's high watermark instead, which such brokers get right.
2. Fetch long polls. Where the broker declares ``fetch_long_poll`` (a Fetch
   that waits out its whole max wait even when records arrive), the consumer
   asks for a short wait, or every hop of the chain would add up to 1.5 s.
3. No silent loss. Faust logs a failed send and drops the record, then commits
   the source offset anyway; and an agent that raises has its current event
   acked (a stream's ``finally``), so a restarted agent skips it. Both are
   at-least-once holes on any broker. Here either trips a guard that refuses
   every later offset commit and crashes the worker, so its uncommitted input
   is redelivered to the worker that takes over (or the same one, restarted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import KafkaError, TopicPartition
from faust.sensors import Sensor
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, AppT, ProducerT

log = logging.getLogger(__name__)

END_OFFSETS_DEFECT = "list_offsets_latest"
FETCH_LONG_POLL_DEFECT = "fetch_long_poll"
#: The Fetch max wait where the broker does not answer a long poll early: a
#: record waits at most this long per hop, for ~50 empty fetches a second.
SHORT_FETCH_WAIT_MS = 20
#: How long a commit waits for buffered table updates to reach the producer.
BUFFER_DRAIN_TIMEOUT = 10.0


def fetch_end_offsets(
    bootstrap: str,
    hints: Mapping[tuple[str, int], int],
    *,
    timeout: float = 10.0,
) -> dict[tuple[str, int], int]:
    """True end offsets, read from Fetch high watermarks rather than ListOffsets.

    ``hints`` maps (topic, partition) to the broker's ListOffsets answer, which
    is never above the true end: a fetch starts just below it, inside the last
    batch, and its response carries the partition's high watermark.
    """
    result = {tp: 0 for tp, hint in hints.items() if hint <= 0}
    pending = {tp: hint for tp, hint in hints.items() if hint > 0}
    if not pending:
        return result
    consumer = KafkaConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "notify-end-offset-probe",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
            "log_level": 3,
        }
    )
    try:
        consumer.assign(
            [TopicPartition(t, p, hint - 1) for (t, p), hint in pending.items()]
        )
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is None:
                continue
            error = message.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise RuntimeError(f"end-offset probe failed: {error}")
            tp = (message.topic(), message.partition())
            if tp not in pending:
                continue
            _, high = consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            if high >= 0:
                result[tp] = max(high, pending.pop(tp))
        if pending:
            raise TimeoutError(f"no high watermark within {timeout}s for {pending}")
    finally:
        consumer.close()
    return result


class CommitGuard(Sensor):
    """Trips on the first failed produce or agent crash; see the module docstring."""

    def __init__(self, app: AppT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._app = app
        self.failure: BaseException | None = None

    def trip(self, reason: BaseException) -> None:
        """Refuse all further offset commits and crash the worker."""
        if self.failure is None:
            self.failure = reason
            log.critical(
                "refusing further offset commits and stopping the worker so its "
                "uncommitted input is redelivered: %r",
                reason,
            )
            asyncio.ensure_future(self._app.crash(reason))

    @contextmanager
    def watching(self, source: str) -> Iterator[None]:
        """Trip if the block raises: for an agent's work on the event at ``source``."""
        try:
            yield
        except Exception as exc:
            log.exception("agent crashed on %s", source)
            self.trip(RuntimeError(f"agent crashed on {source}: {exc!r}"))
            raise

    def on_send_error(
        self, producer: ProducerT, exc: BaseException, state: Any
    ) -> None:
        """A produce failed: Faust would drop the record, so trip."""
        log.error("produce failed: %r", exc)
        self.trip(exc)


class ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Faust's consumer thread, with a short Fetch wait where long polls stall."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        settings = self.app.settings  # type: ignore[attr-defined]
        if FETCH_LONG_POLL_DEFECT in settings.defects:
            # Faust hard-codes fetch_max_wait_ms=1500; the fetcher reads it
            # when the consumer starts.
            consumer._fetch_max_wait_ms = SHORT_FETCH_WAIT_MS
        return consumer


class Consumer(aiokafka_driver.Consumer):
    """aiokafka consumer that honours the guard and the declared defects."""

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        # The commit path flushed the producer just before this, but Faust's
        # buffer of send_soon records (every table update goes that way) gives
        # up after 0.1 s without progress and can leave records behind: the
        # offsets would then cover updates that never left the worker.
        if not await self._drain_buffer():
            log.warning("not committing yet: the producer buffer did not drain")
            return False
        # Give failed sends' callbacks their turn, then refuse if any failed.
        await asyncio.sleep(0)
        guard: CommitGuard = self.app.commit_guard  # type: ignore[attr-defined]
        if guard.failure is not None:
            log.error("not committing %d offsets: %r", len(offsets), guard.failure)
            return False
        return await super()._commit(offsets)

    async def _drain_buffer(self, timeout: float | None = None) -> bool:
        """Flush until Faust's send_soon buffer is empty; False if it stays full."""
        producer = self.app.producer
        limit = BUFFER_DRAIN_TIMEOUT if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + limit
        while producer.buffer.size:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await producer.flush()
        return True

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        """End offsets, corrected where the broker's ListOffsets is known wrong."""
        offsets = await super().highwaters(*partitions)
        settings = self.app.settings  # type: ignore[attr-defined]
        if END_OFFSETS_DEFECT not in settings.defects:
            return offsets
        hints = {(tp.topic, tp.partition): value or 0 for tp, value in offsets.items()}
        loop = asyncio.get_running_loop()
        true = await loop.run_in_executor(
            None, fetch_end_offsets, settings.bootstrap_servers, hints
        )
        corrected = {TP(topic, partition): v for (topic, partition), v in true.items()}
        _log_corrections(offsets, corrected)
        return corrected


def _log_corrections(reported: Mapping[TP, int], corrected: Mapping[TP, int]) -> None:
    changed: Iterable[TP] = (
        tp for tp in corrected if (reported.get(tp) or 0) != corrected[tp]
    )
    for tp in changed:
        log.info(
            "end offset of %s[%s]: broker said %s, fetch high watermark %s",
            tp.topic,
            tp.partition,
            reported.get(tp),
            corrected[tp],
        )


class Transport(aiokafka_driver.Transport):
    """Faust's aiokafka transport with the guarded consumer."""

    Consumer = Consumer
