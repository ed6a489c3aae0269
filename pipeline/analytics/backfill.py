"""A range of ``notify.events`` into ``notif_events`` again (``notify replay
--into clickhouse``): read, built and inserted as the sink does. The table
keeps each event id once, so a replayed range changes no count; only what
was missing is added. Run by the process that owns the store (``notify
sink``, through ``POST /replay``, when it is in-process chDB)."""

from __future__ import annotations

from collections.abc import Callable

from clickhouse_connect.driver.client import Client

from pipeline.analytics.rows import Batch
from pipeline.analytics.store import insert_events
from pipeline.replay import Span, consumer_for, read
from pipeline.settings import Settings


def insert_span(
    settings: Settings,
    client: Client,
    topic: str,
    span: Span,
    on_inserted: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Insert the span's events, read in one pass; (rows inserted, messages
    that are no event). ``on_inserted(next offset, messages)`` after each
    batch is in (a checkpoint, a progress line)."""
    consumer = consumer_for(settings)
    rows = rejected = 0
    batch = Batch()

    def flush() -> None:
        nonlocal batch, rows, rejected
        if not batch.offsets:
            return
        if batch.rows:
            insert_events(client, batch.in_order(), batch.token(topic))
        rows += batch.rows
        rejected += len(batch.rejected)  # dead-lettered when the sink saw them
        if on_inserted is not None:
            on_inserted(batch.offsets[span.partition][1] + 1, len(batch))
        batch = Batch()

    try:
        for message in read(consumer, topic, span):
            batch.add(
                span.partition,
                int(message.offset() or 0),
                message.key(),
                message.value(),
            )
            if len(batch) >= settings.sink_batch_rows:
                flush()
        flush()
    finally:
        consumer.close()
    return rows, rejected
