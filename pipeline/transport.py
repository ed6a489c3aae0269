"""The Kafka transport the app runs on: Faust's aiokafka driver plus three guards.

1. No silent loss. Faust logs a failed send and drops the record, then commits
   the source offset anyway; and an agent that raises has its current event
   acked (a stream's ``finally``), so a restarted agent skips it. Both are
   at-least-once holes on any broker. Here either trips a guard that refuses
   every later offset commit and crashes the worker, so its uncommitted input
   is redelivered to the worker that takes over (or the same one, restarted).
2. Flushes that end. Faust flushes its ``send_soon`` buffer until it is empty.
   While other agents keep sending, it may not be empty for seconds; a send
   batch waiting for its ledger writes, or a commit, then waited for records
   sent after it asked (a worker under load crashed on that). Here a flush
   waits for the records sent before it was called, and no others.
3. Quiet back-pressure. When more than ``max_messages`` records wait in that
   buffer, the streams are held until it is back under the limit. Faust logs
   a WARNING each time (a thousand lines in a busy minute of normal flow
   control); here the holds are counted and reported at most once a minute.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from aiokafka.errors import (
    KafkaConnectionError,
    NodeNotReadyError,
    RequestTimedOutError,
)
from aiokafka.protocol.metadata import MetadataRequest
from faust.exceptions import NotReady
from faust.sensors import Sensor
from faust.transport import producer as faust_producer
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, AppT, ProducerT, TopicT
from faust.types.tuples import FutureMessage

from pipeline.outbox import OnAcked, Outbox
from pipeline.reading import HiddenReadOffsets, OffsetSet

log = logging.getLogger(__name__)

#: How long a commit waits for buffered table updates to reach the producer.
BUFFER_DRAIN_TIMEOUT = 10.0
#: The exit status of a worker whose commit guard tripped.
TRIPPED_EXIT = 70


class CommitGuard(Sensor):
    """Trips on the first failed produce or agent crash; see the module docstring."""

    def __init__(self, app: AppT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._app = app
        self.failure: BaseException | None = None
        #: Seconds a tripped worker gets to stop before it exits hard; None
        #: outside a running worker (``arm``), where a trip only records.
        self.grace: float | None = None

    def arm(self, grace: float) -> None:
        """In a running worker: a trip ends the process within ``grace`` s."""
        self.grace = grace

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
            if self.grace is not None:
                # Faust's stop waits out the broker's timeouts (a frozen
                # broker: half a minute). Nothing is committed after a trip,
                # so an exit as abrupt as a SIGKILL loses nothing; a thread,
                # so a blocked loop cannot hold it.
                timer = threading.Timer(self.grace, _exit_tripped, (reason,))
                timer.daemon = True
                timer.start()

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


def _exit_tripped(reason: BaseException) -> None:
    log.critical(
        "still stopping after the commit guard tripped; exiting now: %r", reason
    )
    logging.shutdown()
    os._exit(TRIPPED_EXIT)


class ProducerBuffer(faust_producer.ProducerBuffer):
    """Faust's ``send_soon`` buffer, counting records queued and handed over.

    The buffer hands records to the client one at a time, in order, so once
    ``handed`` reaches the ``queued`` count read at some moment, every record
    queued before that moment is in the client's batches (or already sent).
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self.queued = 0
        self.handed = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self.holds = HoldReport()

    def put(self, fut: FutureMessage) -> None:
        """Queue a record for the client (counted)."""
        super().put(fut)
        self.queued += 1

    async def _send_pending(self, fut: FutureMessage) -> None:
        try:
            await super()._send_pending(fut)
        finally:
            # Counted even when the hand-over failed: that record is no
            # longer waiting, and its failure trips the commit guard.
            self.handed += 1
            waiters = self._waiters
            while waiters and waiters[0][0] <= self.handed:
                waiter = heapq.heappop(waiters)[2]
                if not waiter.done():
                    waiter.set_result(None)

    async def handed_over(self, count: int) -> None:
        """Return once the first ``count`` records queued have been handed over."""
        if self.handed >= count:
            return
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (count, next(self._order), waiter))
        await waiter

    async def wait_until_ebb(self) -> None:
        """Past ``max_messages`` waiting records, hold the streams until half left.

        Called by the conductor before each record goes to the streams: table
        writes are synchronous, so this is where their records push back. The
        hold lasts until the client took the records that were waiting down
        to half the limit, not one record at a time.
        """
        outbox: Outbox = self.app.producer.outbox  # type: ignore[union-attr]
        if outbox.waiting > self.max_messages:
            # Appended batches wait in the client for their partition's
            # previous batch (a slow broker): hold until they are handed over.
            await outbox.handed()
        waiting = self.queued - self.handed
        if waiting <= self.max_messages:
            return
        started = time.monotonic()
        await self.handed_over(self.queued - self.max_messages // 2)
        self.holds.add(waiting, time.monotonic() - started)


class HoldReport:
    """How often and how long back-pressure held the streams, logged per minute."""

    EVERY = 60.0

    def __init__(self) -> None:
        self.count = 0
        self.peak = 0
        self.seconds = 0.0
        self._since = time.monotonic()

    def add(self, waiting: int, seconds: float) -> None:
        """Count one hold; log the summary once a reporting period is over."""
        self.count += 1
        self.peak = max(self.peak, waiting)
        self.seconds += seconds
        now = time.monotonic()
        if now - self._since < self.EVERY:
            return
        log.info(
            "producer back-pressure held the streams %d times (%.1f s in all) "
            "in the last %.0f s; up to %d records waited for the client",
            self.count,
            self.seconds,
            now - self._since,
            self.peak,
        )
        self.count, self.peak, self.seconds, self._since = 0, 0, 0.0, now


class Producer(aiokafka_driver.Producer):
    """aiokafka producer whose flush waits for what was sent before it, only."""

    buffer: ProducerBuffer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.app.conf.producer_threaded:
            raise ValueError("producer_threaded is not supported by this transport")
        self.buffer = ProducerBuffer(loop=self.loop, beacon=self.beacon)
        self.buffer.app = self.app
        self.outbox = Outbox(self._ensure_producer, self._outbox_failed)

    def _outbox_failed(self, exc: BaseException) -> None:
        self.app.commit_guard.trip(exc)  # type: ignore[attr-defined]

    def emit(
        self,
        topic: TopicT,
        key: Any,
        value: Any,
        *,
        partition: int | None = None,
        key_serializer: Any = None,
        value_serializer: Any = None,
        on_acked: OnAcked | None = None,
    ) -> None:
        """Send a record through the batch produce path (`pipeline.outbox`).

        Serialized as Faust would, and partitioned by Kafka's default
        partitioner unless ``partition`` is given. A topic whose partitions
        the client does not know yet (its first record) takes Faust's path,
        which waits for the metadata; a commit covers both paths alike.
        """
        name = topic.get_topic_name()
        key_bytes, headers = topic.prepare_key(key, key_serializer)
        value_bytes, headers = topic.prepare_value(  # type: ignore[call-arg]
            value, value_serializer, None, headers
        )
        if partition is None and key_bytes is not None:
            partitions = self.outbox.partitions_of(name)
            if partitions is not None:
                partition = self.outbox.partition_for(key_bytes, partitions)
        if partition is None:
            topic.send_soon(
                key=key,
                value=value,
                key_serializer=key_serializer,
                value_serializer=value_serializer,
            )
            return
        if isinstance(headers, Mapping):
            headers = list(headers.items())
        self.outbox.append(name, partition, key_bytes, value_bytes, headers, on_acked)

    async def acknowledged(self, timeout: float) -> bool:
        """True once every record sent before the call is acknowledged (or failed).

        Both paths: Faust's buffer and the batch path's open batches. False
        if records queued before the call were still not handed to the
        client after ``timeout`` seconds. A failed record trips the commit
        guard through ``on_send_error``; callers that need success check it.
        """
        sent_before = self.buffer.queued
        try:
            await asyncio.wait_for(self._hand_over(sent_before), timeout)
        except TimeoutError:
            return False
        if self._producer is not None:
            await self._producer.flush()
        await self.outbox.settled()
        return True

    async def _hand_over(self, sent_before: int) -> None:
        await self.outbox.handed()
        await self.buffer.handed_over(sent_before)

    async def durable(self, timeout: float) -> str | None:
        """None once every record sent before the call is acknowledged and no
        send has failed; otherwise what is wrong.

        A failed send trips the commit guard from its callback, so the
        callbacks of the last acknowledgements get their turn first.
        """
        if not await self.acknowledged(timeout):
            return f"records sent earlier were not handed to the client in {timeout} s"
        await asyncio.sleep(0)
        failure = self.app.commit_guard.failure  # type: ignore[attr-defined]
        return None if failure is None else f"a send failed: {failure!r}"

    async def flush(self) -> None:
        """Wait for the records sent before this call (Faust's commit calls it)."""
        if not await self.acknowledged(BUFFER_DRAIN_TIMEOUT):
            log.warning("flush: buffered records not handed over yet")


class Consumer(aiokafka_driver.Consumer):
    """aiokafka consumer whose commits wait until earlier sends are durable,
    and never pass a record this worker did not process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Per partition, the offset this worker began reading at (the group's
        #: committed offset when the partition was assigned, 0 included).
        self._began_at: dict[TP, int] = {}
        # What is dropped and what is a gap is decided in `getmany`.
        self._read_offset = HiddenReadOffsets()
        #: Per partition, the offsets handed to the streams since it was last
        #: sought (or assigned).
        self._handed: dict[TP, OffsetSet] = {}
        #: Per partition, the last offset the fetcher gave since its last seek.
        self._last: dict[TP, int] = {}
        #: The partitions the batch being handed over may hand over (live).
        self._batch_active: set[TP] | None = None

    async def _wait_next_records(
        self, timeout: float
    ) -> tuple[Mapping[TP, Any] | None, set[TP] | None]:
        records, active = await super()._wait_next_records(timeout)
        self._batch_active = active
        return records, None  # `getmany` below filters, rewinding what it holds back

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        """The fetched records to hand to the streams, each at most once
        since its partition was last sought, with the offsets that do not
        exist counted as gaps.

        - A record of a partition paused while its batch was handed over
          (recovery, a rebalance) is held back, and the partition sought back
          to it: it is fetched again once resumed. Faust dropped it, with the
          client's position past it.
        - A record handed over already since the partition was last sought
          (fetched again after a seek back, by a batch that was being handed
          over during the seek) is not handed over twice.
        - A jump between two records the fetcher gave with no seek between
          them skips offsets that hold no record (compaction, transaction
          markers): a gap, which commits may pass. A jump after a seek is no
          gap: the records before it come, or came, on their own.
        """
        held_back: set[TP] = set()
        skipped: set[TP] = set()
        async for tp, message in super().getmany(timeout):
            offset: int = message.offset
            active = self._batch_active
            if active is not None and tp not in active:
                if tp not in self._buffered_partitions:
                    if tp not in held_back and tp in self.assignment():
                        held_back.add(tp)
                        log.info(
                            "%s paused while handed over: sought back to %d", tp, offset
                        )
                        await self.seek(tp, offset)
                    continue
            last = self._last.get(tp)
            self._last[tp] = offset
            handed = self._handed.setdefault(tp, OffsetSet())
            if offset in handed:
                if tp not in skipped:
                    skipped.add(tp)
                    log.info(
                        "%s: %d handed over already since its last seek", tp, offset
                    )
                continue
            if (
                last is not None
                and offset > last + 1
                and self.app.topics.acks_enabled_for(message.topic)
            ):
                await self._add_gap(tp, last + 1, offset - 1)
            handed.add(offset)
            yield tp, message

    async def seek(self, partition: TP, offset: int) -> None:
        await super().seek(partition, offset)
        self._sought(partition)

    def refetch(self, first: Mapping[TP, int]) -> None:
        """Seek back to the records a flow-control clear dropped from the
        stream buffers (`pipeline.reading.RefetchingFlowControl`), so that
        they are handed over again. Changelogs are left to recovery, and a
        stopping worker or a partition no longer assigned needs nothing."""
        if self.app.should_stop:
            return
        assigned = self.assignment()
        for tp, offset in first.items():
            if tp not in assigned or self._is_changelog_tp(tp):
                continue
            try:
                self._thread.seek(tp, offset)
            except Exception as exc:  # noqa: BLE001 - any: a rebalance redoes it
                log.warning("%s: could not seek back to %d: %r", tp, offset, exc)
                continue
            self._sought(tp)
            log.info(
                "%s: buffered records dropped by a clear: sought back to %d", tp, offset
            )

    def _sought(self, tp: TP) -> None:
        """Reading ``tp`` starts again where it was sought: what was handed
        over before may not have reached a stream (one skips records while
        recovery holds the flow), so it is handed over again from there."""
        self._handed.pop(tp, None)
        self._last.pop(tp, None)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            self._sought(tp)
        await super().on_partitions_revoked(revoked)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        began = {
            tp: offset
            for tp, offset in committed.items()
            if offset is not None and offset >= 0
        }
        # No committed offset: reading begins at the log's start (the group
        # resets to earliest).
        if fresh := [tp for tp in committed if tp not in began]:
            try:
                earliest = await self.earliest_offsets(*fresh)
            except Exception as exc:  # noqa: BLE001 - any: then no commit yet
                log.warning(
                    "log start of %s unknown (%r): not committed yet", fresh, exc
                )
            else:
                began.update({tp: at for tp, at in earliest.items() if at is not None})
                # Reading begins there, whatever was fetched before (the
                # client seeks only partitions with a commit above 0).
                for tp in fresh:
                    if tp in began:
                        await self._seek(tp, began[tp])
        self._began_at = began
        for tp in committed:
            self._sought(tp)
        return committed

    async def on_partitions_assigned(
        self, assigned: set[TP], generation_id: int = 0
    ) -> None:
        """Take the partitions paused, and forget where reading stood on them.

        Faust makes every assigned partition active here and pauses them a
        few awaits later, until recovery is done. A worker's first
        assignment comes with the flow running: a fetch in that window
        returned records that the pause then discarded (Faust pauses only
        its own view, the client's position had moved past them). Recovery
        ends with a seek to the committed offsets, which brings such records
        back, except on a partition nothing was committed on yet: there
        they were never read (the chaos run's restarted worker began
        partitions at offset 25). Paused from the start, no record is
        fetched for them before recovery resumes them.

        Faust also drops a fetched record below the partition's last read
        offset (read already). A revocation clears that offset, but the
        fetch loop, woken from a full stream buffer by the revocation, sets
        it once more to a record it never handed over; reading here begins
        afresh instead.
        """
        self._paused_partitions.update(assigned)
        for tp in assigned:
            self._read_offset.pop(tp, None)
            self._sought(tp)
        began = time.monotonic()
        await super().on_partitions_assigned(assigned, generation_id)
        took, session = time.monotonic() - began, self.app.conf.broker_session_timeout
        if took > session / 2:
            # The client sends no heartbeat while this callback runs.
            log.warning(
                "taking %d partitions took %.1f s of the %.1f s session timeout: "
                "no heartbeat goes out meanwhile, and past the timeout the "
                "broker expires this worker",
                len(assigned),
                took,
                session,
            )
        else:
            log.info("took %d partitions in %.2f s", len(assigned), took)

    def _new_offset(self, tp: TP) -> int | None:
        """The offset to commit for ``tp``, or None to commit nothing yet.

        Faust's own check of a gap at the head of the acknowledged offsets
        is skipped when the committed offset is 0 or unknown, and lets one
        unprocessed record through otherwise: after a rebalance a prefetched
        later record, acknowledged first, then committed every record before
        it, unprocessed (the chaos run lost delivery jobs so). Where the
        topic has no gap of its own (a compacted topic's missing offsets),
        the acknowledged offsets must begin where reading began.
        """
        acked = self._acked[tp]
        if acked and not self._gap[tp]:
            committed = self._committed_offset[tp]
            start = committed if committed is not None else self._began_at.get(tp)
            if start is None or min(acked) > start:
                return None
        return super()._new_offset(tp)

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        """Seek changelog partitions before reading them into tables.

        Faust's recovery is the only caller. It seeks to the earliest offset
        minus one; while a just-created replicated changelog has no leader
        yet the earliest offset is unknown (-1) and Faust asks for -2, which
        the client refuses, crashing the worker as it starts. Reading such a
        partition from its beginning is always right (the table is rebuilt
        whole), so an unknown position is read from 0.
        """
        fixed = {
            tp: offset if offset is not None and offset >= 0 else 0
            for tp, offset in partitions.items()
        }
        unknown = sorted(
            str(tp)
            for tp, offset in partitions.items()
            if offset is None or offset < -1
        )
        if unknown:
            log.warning("reading changelogs from their start: %s", ", ".join(unknown))
        await super().seek_wait(fixed)
        for tp in fixed:
            self._sought(tp)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        # The commit path flushed the producer just before this, but that
        # flush gives up after a while; the offsets must never cover table
        # updates (send_soon records) that have not left the worker.
        producer: Producer = self.app.producer  # type: ignore[assignment]
        problem = await producer.durable(BUFFER_DRAIN_TIMEOUT)
        if problem is not None:
            log.error("not committing %d offsets: %s", len(offsets), problem)
            return False
        return await super()._commit(offsets)


#: What a broker that is down (or just came back) answers; worth another try.
BROKER_DOWN = (NodeNotReadyError, KafkaConnectionError, RequestTimedOutError)
#: Tries to create a topic while brokers come and go, a second apart.
CREATE_TOPIC_TRIES = 30


class Transport(aiokafka_driver.Transport):
    """Faust's aiokafka transport with the guarded consumer, and topic
    creation that survives a broker of the cluster being down."""

    Consumer = Consumer
    Producer = Producer

    async def _get_controller_node(
        self, owner: Any, client: Any, timeout: int = 30000
    ) -> int | None:
        """The node to send CreateTopics to, asked of any broker that answers.

        Faust asks only the first broker of its metadata: with that broker
        down, a worker starting then stops with NodeNotReadyError. Each is
        tried in turn (a KRaft broker forwards CreateTopics to the active
        controller and names a live broker as "controller")."""
        last: Exception | None = None
        for broker in client.cluster.brokers():
            try:
                waited = await owner.wait(
                    client.send(broker.nodeId, MetadataRequest([])), timeout=timeout
                )
            except BROKER_DOWN as exc:
                last = exc
                continue
            if waited.stopped:
                return None
            return int(waited.result.controller_id)
        raise NotReady(f"no broker answered a metadata request: {last!r}")

    async def _really_create_topic(
        self,
        owner: Any,
        client: Any,
        topic: str,
        partitions: int,
        replication: int,
        **kwargs: Any,
    ) -> None:
        """Faust's topic creation, tried again while a broker is down."""
        for attempt in itertools.count(1):
            try:
                await super()._really_create_topic(
                    owner, client, topic, partitions, replication, **kwargs
                )
                return
            except (*BROKER_DOWN, NotReady) as exc:
                if attempt >= CREATE_TOPIC_TRIES or owner.should_stop:
                    raise
                log.warning("creating topic %s: %r; trying again", topic, exc)
                client.force_metadata_update()
                await asyncio.sleep(1.0)
