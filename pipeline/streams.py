"""Stream helpers: batches, table access on behalf of one event, durable flush."""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from faust.streams import _current_event
from faust.types import EventT, StreamT
from mode import want_seconds
from mode.utils.aiter import aiter
from mode.utils.futures import notify

if TYPE_CHECKING:
    import faust
    from faust.types import TopicT

    from pipeline.transport import Producer

log = logging.getLogger(__name__)

#: How long a durable flush may wait for Faust's send buffer to empty.
FLUSH_TIMEOUT = 10.0
#: How long a lane's agents wait, after a batch's first event, for more
#: (seconds). A fetch's records all arrive within a millisecond, so the
#: critical lane waits no longer than that; the bulk lane trades a little
#: latency for fuller batches while traffic trickles. Under load batches
#: fill up and leave at once in both lanes.
BATCH_WINDOW = {"critical": 0.001, "bulk": 0.01}


@contextmanager
def acting_for(event: EventT) -> Iterator[None]:
    """Read and write tables as if ``event`` were the stream's current event.

    A table picks the partition of a read or write (its RocksDB store and its
    changelog partition) from the current event. In a batch taken with
    ``take_events`` the current event is the batch's last one, which may be on
    another partition: every table access for an event of the batch goes
    through this, so each lands on that event's own partition.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


async def flush_durably(app: faust.App, timeout: float = FLUSH_TIMEOUT) -> None:
    """Return once everything sent so far (table changelogs too) is acknowledged.

    Records other agents send meanwhile are not waited for. Raises if the
    records were not handed to the client within ``timeout`` seconds, or if
    a send failed (the commit guard then stops the worker).
    """
    producer: Producer = app.producer  # type: ignore[assignment]
    problem = await producer.durable(timeout)
    if problem is not None:
        raise RuntimeError(problem)


def of_this_generation(app: faust.App, events: Sequence[EventT]) -> bool:
    """True if every event of a batch was read in the group's current
    generation: its partitions are still this worker's to decide."""
    current = app.consumer_generation_id
    return all(e.message.generation_id == current for e in events)


#: Records held back until the batch's table writes are durable (`state_first`).
_outbox: ContextVar[list[tuple[TopicT, Any, Any]] | None] = ContextVar(
    "outbox", default=None
)


def send_effect(topic: TopicT, key: Any, value: Any) -> None:
    """Send a record that acts on a decision (an event, a delivery job).

    Inside `state_first` it leaves only once the batch's table writes are
    durable; elsewhere at once. Either way through the batch produce path
    (`pipeline.outbox`): a commit waits until it is acknowledged, a failed
    batch trips the commit guard.
    """
    held = _outbox.get()
    if held is None:
        emit(topic, key, value)
    else:
        held.append((topic, key, value))


def emit(topic: TopicT, key: Any, value: Any) -> None:
    """Send a record through the worker's batch produce path."""
    topic.app.producer.emit(topic, key, value)  # type: ignore[attr-defined]


@asynccontextmanager
async def state_first(app: faust.App, events: Sequence[EventT]) -> AsyncIterator[None]:
    """Decide a batch, then make its table writes durable, then act on them.

    A worker killed after a batch's jobs and events went out but before its
    offsets were committed decides the batch again. Had its table writes
    (the idempotency entry with the time of the first look, the caps it
    counted) been lost while its effects survived, the redo could decide
    otherwise: a notification throttled once and sent the second time. With
    the writes durable before any effect leaves, a redo always finds them,
    and takes the same decisions. Costs one acknowledgement wait per batch.

    If the batch raises, nothing it held is sent. Nor if the group moved on
    while it was decided (``events`` of an earlier generation): a rebalance
    does not wait for the batches in hand, and the partitions' next owner,
    perhaps another worker that recovered their tables without this batch's
    writes, decides the same requests again; two answers about one
    notification (``queued`` here, ``throttled`` there) must not both go
    out. `batches` then acknowledges none of the batch, so it is redone.
    """
    held: list[tuple[TopicT, Any, Any]] = []
    token = _outbox.set(held)
    try:
        yield
    finally:
        _outbox.reset(token)
    if held:
        await flush_durably(app)
        if not of_this_generation(app, events):
            log.info(
                "the group moved on during a batch of %d: its %d effects are "
                "dropped, the partitions' owner decides it again",
                len(events),
                len(held),
            )
            return
        for topic, key, value in held:
            emit(topic, key, value)


def batches(
    stream: StreamT[Any], max_: int, within: float
) -> AsyncIterator[Sequence[EventT]]:
    """Events in batches of up to ``max_``, each yielded at most ``within``
    seconds after its first event arrived; nothing while the stream is idle.

    Faust's ``take_events`` wakes every ``within`` seconds whether or not an
    event came, and each wake creates tasks: with short windows on the hot
    path (a few ms) an idle worker spent 0.14 of a core waking its agents.
    This is the same machinery (a processor fills the buffer, the stream is
    consumed passively, events are acked only after the batch is handled),
    with the clock started by the first event instead of a fixed period.
    """
    agen = _batches(stream, max_, within)
    stream._active_agens.add(agen)  # type: ignore[attr-defined]  # closed on stop
    return agen


def overlapped_batches(
    stream: StreamT[Any], max_: int, within: float
) -> AsyncIterator[tuple[Sequence[EventT], asyncio.Future[None]]]:
    """`batches`, each with a future the agent resolves once the batch is
    handled: its events are acknowledged then, not when the next batch is
    asked for. An agent may so take the next batch while it still finishes
    this one (a send batch's provider calls). A batch whose future fails, or
    is never resolved, is not acknowledged: it is redone."""
    agen = _batches(stream, max_, within, deferred=True)
    stream._active_agens.add(agen)  # type: ignore[attr-defined]  # closed on stop
    return agen


def _ack_when_done(
    stream: Any, events: list[EventT], done: asyncio.Future[None]
) -> None:
    if done.cancelled() or done.exception() is not None:
        return
    # A batch read before the group moved on is not acknowledged: the
    # partitions' owner in the new generation redoes it.
    if of_this_generation(stream.app, events):
        asyncio.ensure_future(_ack_all(stream, events))


async def _ack_all(stream: Any, events: list[EventT]) -> None:
    for event in events:
        await stream.ack(event)


async def _batches(  # noqa: C901 - one state machine, kept whole
    stream: Any, max_: int, within: float, deferred: bool = False
) -> AsyncIterator[Any]:
    events: list[EventT] = []
    started = asyncio.Event()  # the buffer holds at least one event
    full = asyncio.Event()
    consumed = asyncio.Event()
    consuming: asyncio.Future[None] | None = None
    timeout = want_seconds(within)
    acks_before: bool = stream.enable_acks
    channel_it = aiter(stream.channel)

    async def add_to_buffer(value: Any) -> Any:
        nonlocal consuming
        try:
            if consuming is not None:
                try:
                    await consuming
                finally:
                    consuming = None
            event = stream.current_event
            if event is None:
                raise RuntimeError("batch buffer found no current event")
            events.append(event)
            started.set()
            if len(events) >= max_:
                full.set()
                consumed.clear()
                await stream.wait(consumed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - as Faust's own buffer does
            stream.log.exception("Error adding to batch buffer: %r", exc)
            await stream.crash(exc)
        return value

    # Events are acked by hand, only once their batch has been handled.
    stream.enable_acks = False
    stream.add_processor(add_to_buffer)
    stream._enable_passive(channel_it)
    try:
        while not stream.should_stop:
            # Both waits end early when the stream stops: what is buffered
            # then is still handled (and acked), as with take_events.
            await stream.wait_for_stopped(started)
            if not events:
                continue
            await stream.wait_for_stopped(full, timeout=timeout)
            consuming = stream.loop.create_future()
            done: asyncio.Future[None] | None = None
            try:
                if deferred:
                    done = stream.loop.create_future()
                    yield list(events), done
                else:
                    yield list(events)
            finally:
                if done is not None:
                    done.add_done_callback(
                        functools.partial(_ack_when_done, stream, list(events))
                    )
                # A batch read before the group moved on is not acknowledged:
                # the partitions' owner in the new generation redoes it.
                elif of_this_generation(stream.app, events):
                    await _ack_all(stream, events)
                events.clear()
                started.clear()
                notify(consuming)
                full.clear()
                consumed.set()
    finally:
        stream.enable_acks = acks_before
        stream._processors.remove(add_to_buffer)
