"""Project commands added to the app's CLI: ``notify topics``, ``notify broker``, ..."""

from __future__ import annotations

import asyncio
import os

from faust.cli import AppCommand, option

from pipeline.admin import ensure_topics
from pipeline.app import app
from pipeline.broker import EmbeddedBroker
from pipeline.diagram import mermaid


@app.command()
async def topics(self: AppCommand) -> None:
    """Create every topic of the topology that does not exist yet."""
    app.discover()
    created = ensure_topics(app.settings)
    self.say(f"created: {', '.join(created) if created else 'nothing (all exist)'}")


@app.command()
async def diagram(self: AppCommand) -> None:
    """Print the chain as a Mermaid flowchart, from the app's agents and topics."""
    app.discover()
    self.say(mermaid(app))


@app.command(
    option("--port", type=int, default=0, help="Loopback port (0: pick a free one)."),
)
async def broker(self: AppCommand, port: int) -> None:
    """Run the embedded Kafka-protocol broker in the foreground until Ctrl-C."""
    log_path = app.settings.data_dir / "broker.log"
    with EmbeddedBroker(port=port or None, log_path=log_path) as running:
        self.say(f"broker listening: export NOTIFY_BROKER_URL={running.url}")
        self.say(f"broker log: {log_path} (pid {running.pid}, parent {os.getpid()})")
        stop = asyncio.Event()
        try:
            await stop.wait()
        finally:
            self.say("stopping broker")
