"""The in-process hub that pushes new in-app messages to connected clients.

Only the worker that owns a user's partition writes that user's inbox, so it
is the one that holds the user's live streams: the stream endpoint sends a
client to the owner. A rebalance that moves the partition away closes the
streams it held, and the client reconnects to the new owner.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from schemas.records import InboxItem

#: Messages a slow client may fall behind by before its stream is closed.
MAX_QUEUED = 100


class InboxHub:
    """Subscribers per user key; each gets a queue of new messages."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[InboxItem | None]]] = (
            defaultdict(set)
        )

    def subscribe(self, user: str) -> asyncio.Queue[InboxItem | None]:
        """A queue receiving the user's new messages; None means 'reconnect'."""
        queue: asyncio.Queue[InboxItem | None] = asyncio.Queue(MAX_QUEUED)
        self._subscribers[user].add(queue)
        return queue

    def unsubscribe(self, user: str, queue: asyncio.Queue[InboxItem | None]) -> None:
        """Stop delivering to ``queue``."""
        queues = self._subscribers.get(user)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._subscribers[user]

    def publish(self, user: str, item: InboxItem) -> None:
        """Hand a new message to every live stream of the user."""
        for queue in list(self._subscribers.get(user, ())):
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                self.close(user, queue)

    def close(self, user: str, queue: asyncio.Queue[InboxItem | None]) -> None:
        """End one stream: the client reconnects and reads the inbox again."""
        self.unsubscribe(user, queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)

    def close_all(self) -> None:
        """End every stream (partitions moved away, or the worker stops)."""
        for user, queues in list(self._subscribers.items()):
            for queue in list(queues):
                self.close(user, queue)

    def listeners(self, user: str) -> int:
        """How many streams the user has open here."""
        return len(self._subscribers.get(user, ()))


inbox_hub = InboxHub()
