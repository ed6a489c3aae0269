"""The single Faust app: settings mapped to Faust in one place, topics, agents."""

from __future__ import annotations

import logging
import socket
from typing import Any

import faust
from faust.types import TransportT
from faust.web.base import BlueprintManager, Web
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from pipeline import web
from pipeline.clock import Clock, SystemClock
from pipeline.reading import RefetchingFlowControl
from pipeline.settings import Settings, get_settings
from pipeline.topology import Topology
from pipeline.transport import CommitGuard, Transport
from schemas import codec

#: Modules that declare agents, tables and web views. Listed, not scanned, so a
#: moved file is an import error rather than a silently missing agent.
DISCOVER = [
    "agents.ingest",
    "agents.fanout",
    "agents.user_state",
    "agents.receipts",
    "agents.send",
    "agents.retry",
    "agents.inbox",
    "agents.retention",
    "agents.idempotency_peer",
    "agents.campaigns",
    "pipeline.api.views",
    "pipeline.api.lifecycle",
    "pipeline.api.campaigns",
    "pipeline.api.delivery",
    "pipeline.api.analytics",
    "pipeline.api.docs",
    "pipeline.dashboard",
    "pipeline.api.dashboard",
]

#: Never change by accident: the version is part of every internal topic name.
APP_VERSION = 1


class NotifyApp(faust.App):
    """The Faust app, carrying the settings, clock, topology and send guard."""

    settings: Settings
    clock: Clock
    topology: Topology
    commit_guard: CommitGuard

    def _new_transport(self) -> TransportT:
        return Transport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> TransportT:
        return Transport(self.conf.broker_producer, self)

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        """Faust's flow control, except that the records its clears drop
        from the stream buffers are fetched again."""
        return RefetchingFlowControl(
            lambda first: self.consumer.refetch(first),  # type: ignore[attr-defined]
            loop=self.loop,
        )

    def _new_web(self) -> Web:
        # Faust's built-in pages (index, stats, graph, router, tables) answer
        # without authentication and show internals; only our views are served.
        web = super()._new_web()
        web.blueprints = BlueprintManager()
        return web


def faust_options(
    settings: Settings, discover: list[str] | None = None
) -> dict[str, Any]:
    """Map our settings onto Faust's App keyword arguments (the only place)."""
    return {
        "version": APP_VERSION,
        "broker": settings.broker_url,
        "store": settings.store_url,
        "datadir": str(settings.data_dir / "faust"),
        "autodiscover": DISCOVER if discover is None else discover,
        "origin": "pipeline",
        "web_host": settings.web_host,
        "web_bind": settings.web_host,
        "web_port": settings.web_port,
        "web_in_thread": False,
        **(
            {"canonical_url": settings.web_canonical_url}
            if settings.web_canonical_url
            else {}
        ),
        "broker_session_timeout": settings.broker_session_timeout,
        "broker_heartbeat_interval": settings.broker_heartbeat_interval,
        "broker_commit_interval": settings.broker_commit_interval,
        "broker_request_timeout": max(30.0, settings.broker_session_timeout * 2),
        "producer_request_timeout": settings.broker_request_timeout,
        "producer_linger": settings.producer_linger,
        "topic_partitions": settings.topic_partitions,
        "topic_replication_factor": settings.topic_replication_factor,
        "key_serializer": "raw",
        "value_serializer": codec.CODEC_NAME,
        # Do not wait for stream buffers to drain on rebalance: un-acked events
        # are redelivered to the new owner (at-least-once), and rejoin is faster.
        "stream_wait_empty": False,
        "table_cleanup_interval": 30.0,
        "logging_config": None,
        "Table": "pipeline.tables:Table",
        "GlobalTable": "pipeline.tables:GlobalTable",
    }


def canonical_url(settings: Settings) -> str:
    """The URL peers use to reach this worker (table routing).

    Faust's default is the machine's hostname, which need not resolve to the
    address the server binds; a specific bind address is used as is.
    """
    if settings.web_canonical_url:
        return settings.web_canonical_url
    host = settings.web_host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - compared, not bound
        host = socket.gethostname()
    return f"http://{host}:{settings.web_port}"


async def _restore_root_log_level() -> None:
    """Undo the DEBUG root level Faust's worker sets for its terminal spinner.

    With ``-l warn`` (or any level from WARN up) the worker lowers the root
    logger to DEBUG so its spinner handler sees every record, and filters at
    the other handlers: every ``log.debug`` in aiokafka and Faust then builds
    a record nobody prints (~10 per delivered notification). The root goes
    back to the least severe level a real handler wants.
    """
    root = logging.getLogger()
    wanted = [
        handler.level
        for handler in root.handlers
        if handler.level > logging.DEBUG and type(handler).__name__ != "SpinnerHandler"
    ]
    if root.level == logging.DEBUG and wanted:
        root.setLevel(min(wanted))


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    discover: list[str] | None = None,
) -> NotifyApp:
    """Build the app for ``settings``; tests build their own with other settings.

    ``discover`` replaces the modules scanned for agents (a test app's own).
    """
    codec.register()
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = NotifyApp(settings.group_id, **faust_options(settings, discover))
    app.settings = settings
    app.clock = clock or SystemClock()
    app.topology = Topology(app, settings)
    app.commit_guard = CommitGuard(app)
    app.sensors.add(app.commit_guard)
    web.register(app)
    app.task(_restore_root_log_level)

    async def _arm_commit_guard() -> None:
        app.commit_guard.arm(settings.crash_grace)

    app.task(_arm_commit_guard)
    return app


app = create_app(get_settings())
