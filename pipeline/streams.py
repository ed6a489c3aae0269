"""Stream helpers: table access on behalf of one event of a batch, durable flush."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from faust.streams import _current_event
from faust.types import EventT

if TYPE_CHECKING:
    import faust

#: How long a durable flush may wait for Faust's send buffer to empty.
FLUSH_TIMEOUT = 10.0


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

    Faust's ``send_soon`` buffer (every table write goes through it) gives up
    flushing after 0.1 s without progress, so flush until it is empty, then
    wait for the producer's in-flight batches.
    """
    producer = app.producer
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while producer.buffer.size:
        if loop.time() > deadline:
            raise TimeoutError("the producer buffer did not drain")
        await producer.flush()
    await producer.flush()
