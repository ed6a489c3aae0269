"""A worker app from the project's factory with one counting table, for recovery."""

from __future__ import annotations

import os

from faust.types import StreamT
from faust.web import Request, Response, View

from pipeline.app import create_app
from pipeline.settings import Settings

settings = Settings()
app = create_app(settings, discover=[__name__])

counts = app.Table(
    "recovery-counts",
    default=int,
    key_type=str,
    value_type=int,
    partitions=settings.topic_partitions,
    help="Events seen per key; rebuilt from its changelog after a wiped store.",
)
source = app.topic(
    os.environ.get("RECOVERY_TOPIC", "recovery-source"),
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
)


@app.agent(source, name="recovery.count")
async def count(stream: StreamT[bytes]) -> None:
    """Count events per key into the table."""
    async for event in stream.events():
        assert event.key is not None
        counts[event.key.decode()] += 1


@app.page("/counts")
class Counts(View):
    """The table's contents as this worker sees them."""

    async def get(self, request: Request) -> Response:
        """Every key's count, and the total."""
        items = {key: int(value) for key, value in counts.items()}
        return self.json({"total": sum(items.values()), "counts": items})
