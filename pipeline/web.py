"""Web views served by the worker's Faust web server."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from faust.tables.manager import TableManager
from faust.web import Request, Response, View

from pipeline import metrics

if TYPE_CHECKING:
    from pipeline.app import NotifyApp


def register(app: NotifyApp) -> None:
    """Add the project's views to ``app``'s web server."""
    from pipeline.api.contract import operation, route
    from schemas.api import Health as HealthAnswer

    @route("/health", on=app)
    class Health(View):
        """Liveness and readiness of this worker."""

        @operation(
            operation_id="getHealth",
            summary="Liveness and readiness of this worker",
            status=200,
            answer=HealthAnswer,
            same_answer={503: "Failing: stopping, or its commit guard tripped."},
            public=True,
        )
        async def get(self, request: Request) -> Response:
            """200 while the worker runs and its commit guard holds, else 503."""
            guard = app.commit_guard
            ok = guard.failure is None and not app.should_stop
            body = {
                "status": "ok" if ok else "failing",
                "app_id": app.settings.app_id,
                "lanes": list(app.settings.worker_lanes),
                "ready": recovered(app),
                "assigned": len(app.assignor.assigned_actives()),
                "failure": repr(guard.failure) if guard.failure else None,
            }
            # Breakers per provider, once the send agents are loaded.
            send = sys.modules.get("agents.send")
            if send is not None:
                body["providers"] = send.providers.health()
            return self.json(body, status=200 if ok else 503)

    @route("/metrics", on=app)
    class Metrics(View):
        """This worker's Prometheus metrics (`pipeline.metrics`)."""

        @operation(
            operation_id="getMetrics",
            summary="This worker's metrics, in the Prometheus text format",
            status=200,
            media={metrics.CONTENT_TYPE: "Every metric the worker exports."},
            errors=(404,),
            public=True,
        )
        async def get(self, request: Request) -> Response:
            """Counters, histograms and gauges for Prometheus to scrape; no
            key (no label names a user, a notification or a tenant). 404 when
            NOTIFY_METRICS is false."""
            if not app.settings.metrics:
                return self.json(
                    {
                        "error": {
                            "code": "not_found",
                            "message": "metrics are off (NOTIFY_METRICS=false)",
                        }
                    },
                    status=404,
                )
            # The type carries parameters (version, charset), which the web
            # driver's content_type refuses: it goes as a header.
            return self.bytes(
                metrics.exposition(), headers={"Content-Type": metrics.CONTENT_TYPE}
            )

    metrics.register(app)


def recovered(app: NotifyApp) -> bool:
    """True once this worker's tables have been recovered from their changelogs."""
    tables = app.tables
    if not isinstance(tables, TableManager):
        return False
    return tables.recovery.completed.is_set()
