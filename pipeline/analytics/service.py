"""``notify sink``: the process that owns the analytics store.

It applies the DDL, runs the sink loop on a thread (``pipeline.analytics.sink``)
and serves, on ``NOTIFY_SINK_PORT``:

- ``GET /health``: rows inserted, batches, the last error, committed offsets;
- ``POST /query`` (the admin key): ``{"sql", "format"}`` answered read-only
  in that ClickHouse output format;
- ``POST /replay`` (the admin key): ``{"topic", "partition", "start",
  "end"}``, that range of the events topic inserted again. Workers pass their ``/v1/analytics``
  calls on to it when the store is in-process chDB, which no other process
  may open; against a ClickHouse server they query it themselves.

Queries use a client of their own, so a long query never holds an insert.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import threading
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.analytics.backfill import insert_span
from pipeline.analytics.sink import Sink
from pipeline.analytics.store import Reader, connect, media_type, migrate
from pipeline.errors import InvalidMessage
from pipeline.metrics import CONTENT_TYPE, exposition
from pipeline.replay import Span
from pipeline.settings import Settings
from schemas.analytics import ReplaySpan, SqlQuery
from schemas.decode import decode

log = logging.getLogger(__name__)


def error(status: int, code: str, message: str) -> web.Response:
    """The API's error body."""
    body = {"error": {"code": code, "message": message}}
    return web.json_response(body, status=status)


def admin_only(settings: Settings, request: web.Request) -> web.Response | None:
    """401 unless the request carries the admin key."""
    admin = settings.admin_api_key.get_secret_value()
    given = request.headers.get("Authorization", "")
    expected = f"Bearer {admin}"
    if not admin or not hmac.compare_digest(given.encode(), expected.encode()):
        return error(401, "unauthorized", "the sink answers the admin key only")
    return None


class SinkCollector(Collector):
    """The sink's figures, read at each scrape."""

    def __init__(self, service: SinkService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        stats = self.service.sink.stats
        lag = GaugeMetricFamily(
            "notify_sink_lag_records",
            "Events on notify.events not yet inserted into the analytics store "
            "and committed, per partition this sink reads.",
            labels=["partition"],
        )
        for partition, behind in stats.lag().items():
            lag.add_metric([str(partition)], behind)
        yield lag
        for name, doc, value in (
            ("notify_sink_rows_inserted", "Event rows inserted.", stats.rows),
            ("notify_sink_batches", "Batches inserted.", stats.batches),
            (
                "notify_sink_rejected_rows",
                "Records that were not events, dead-lettered.",
                stats.rejected,
            ),
            (
                "notify_sink_insert_failures",
                "Inserts that failed (each retried until it goes).",
                stats.failures,
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        last = GaugeMetricFamily(
            "notify_sink_last_insert_timestamp_seconds",
            "When the last batch was inserted (Unix time; 0 before the first).",
            value=stats.last_insert or 0.0,
        )
        up = GaugeMetricFamily(
            "notify_sink_up",
            "1 while the sink's loop runs, 0 once it died.",
            value=0.0 if self.service.failed else 1.0,
        )
        yield last
        yield up


class SinkService:
    """The sink thread and the query server of one process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.writer = connect(settings)
        applied = migrate(self.writer)
        if applied:
            log.info("analytics schema now at %s", applied[-1])
        self.reader = Reader.open(settings)
        self.sink = Sink(settings, self.writer)
        self.thread = threading.Thread(target=self._run, name="sink", daemon=True)
        self.failed: BaseException | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SinkCollector(self))
        ProcessCollector(registry=self.registry)

    def _run(self) -> None:
        try:
            self.sink.run()
        except BaseException as exc:  # noqa: BLE001 - reported by /health
            self.failed = exc
            log.exception("the sink stopped")

    async def health(self, _request: web.Request) -> web.Response:
        """The sink's figures; 503 once its loop died."""
        stats = self.sink.stats
        body = {
            "status": "failed" if self.failed else "ok",
            "rows": stats.rows,
            "batches": stats.batches,
            "rejected": stats.rejected,
            "failures": stats.failures,
            "last_error": stats.last_error
            or (repr(self.failed) if self.failed else None),
            "last_insert": stats.last_insert,
            "committed": {str(p): o for p, o in sorted(stats.committed.items())},
        }
        return web.json_response(body, status=503 if self.failed else 200)

    async def metrics(self, _request: web.Request) -> web.Response:
        """The sink's figures in the Prometheus text format."""
        if not self.settings.metrics:
            return error(404, "not_found", "metrics are off (NOTIFY_METRICS=false)")
        return web.Response(
            body=exposition(self.registry), headers={"Content-Type": CONTENT_TYPE}
        )

    async def query(self, request: web.Request) -> web.Response:
        """One read-only query, answered in the asked format."""
        refused = admin_only(self.settings, request)
        if refused is not None:
            return refused
        try:
            asked = decode(SqlQuery, await request.read())
        except InvalidMessage as exc:
            return error(422, "invalid_query", exc.reason)
        sql, fmt = asked.sql, asked.format
        try:
            answer = await asyncio.to_thread(self.reader.query, sql, fmt)
        except Exception as exc:  # noqa: BLE001 - ClickHouse's own message
            return error(400, "query_failed", str(exc)[:2000])
        return web.Response(body=answer, content_type=media_type(fmt), charset="utf-8")

    async def replay(self, request: web.Request) -> web.Response:
        """Insert one partition's range of the events topic again (``notify
        replay --into clickhouse`` with the in-process store)."""
        refused = admin_only(self.settings, request)
        if refused is not None:
            return refused
        try:
            asked = decode(ReplaySpan, await request.read())
        except InvalidMessage as exc:
            return error(422, "invalid_span", exc.reason)
        span = Span(asked.partition, asked.start, asked.end)
        try:
            rows, rejected = await asyncio.to_thread(
                insert_span, self.settings, self.writer, asked.topic, span
            )
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            return error(503, "replay_failed", f"{type(exc).__name__}: {exc}"[:2000])
        return web.json_response({"rows": rows, "rejected": rejected})

    async def serve(self, stop: asyncio.Event) -> None:
        """Run until ``stop``: the sink thread and the web server."""
        self.thread.start()
        application = web.Application()
        application.router.add_get("/health", self.health)
        application.router.add_get("/metrics", self.metrics)
        application.router.add_post("/query", self.query)
        application.router.add_post("/replay", self.replay)
        runner = web.AppRunner(application, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.web_host, self.settings.sink_port)
        await site.start()
        log.info(
            "sink: %s -> %s; queries on %s",
            self.sink.topic,
            self.settings.resolved_clickhouse_dsn.split("@")[-1],
            self.settings.resolved_sink_url,
        )
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), 1.0)
                except TimeoutError:
                    if not self.thread.is_alive():
                        raise RuntimeError(
                            f"the sink stopped: {self.failed!r}"
                        ) from None
        finally:
            self.sink.stop()
            await asyncio.to_thread(self.thread.join, 60)
            await runner.cleanup()
            self.writer.close()
            self.reader.close()


async def main(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    service = SinkService(settings)
    await service.serve(stop)
