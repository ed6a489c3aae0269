"""inbox: apply read marks to users' in-app inboxes."""

from __future__ import annotations

from faust.types import StreamT

from pipeline.app import app
from pipeline.deadletter import source_of
from pipeline.inbox import inbox_hub
from pipeline.topology import user_key
from schemas.records import Inbox, InboxItem, InboxRead
from tables.inbox import inbox


def mark_read(current: Inbox | None, mark: InboxRead) -> Inbox | None:
    """The inbox with one message marked read; None if nothing changes."""
    if current is None:
        return None
    changed = False
    items: list[InboxItem] = []
    for item in current.items:
        if item.notification_id == mark.notification_id and item.read_at is None:
            item = item.model_copy(update={"read_at": mark.read_at})
            changed = True
        items.append(item)
    return Inbox(items=items) if changed else None


@app.agent(app.topology.inbox_reads, name="inbox.reads")
async def apply_reads(stream: StreamT[InboxRead]) -> None:
    """Mark in-app messages read in their user's inbox."""
    async for event in stream.events():
        with app.commit_guard.watching(source_of(event)):
            mark = event.value
            key = user_key(mark.tenant, mark.user_id)
            updated = mark_read(inbox.get(key), mark)
            if updated is not None:
                inbox[key] = updated


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def close_live_streams(sender: object, revoked: object, **kwargs: object) -> None:
    """Partitions are moving: end the live streams, clients reconnect to the owner."""
    inbox_hub.close_all()


@app.on_before_shutdown.connect  # type: ignore[arg-type]
async def end_live_streams(sender: object, **kwargs: object) -> None:
    """The worker stops: end the live streams before the web server waits on them.

    An open stream is a request still being handled; the web server's stop
    waits up to a minute for those, so a worker with one connected client
    took that long to stop.
    """
    inbox_hub.close_all()
