"""Web views served by the worker's Faust web server."""

from __future__ import annotations

from faust.web import Request, Response, View

from pipeline.app import app


@app.page("/health")
class Health(View):
    """Liveness and readiness of this worker."""

    async def get(self, request: Request) -> Response:
        """200 while the worker runs and no produce has failed, else 503."""
        guard = app.send_guard
        ok = guard.failure is None and not app.should_stop
        body = {
            "status": "ok" if ok else "failing",
            "app_id": app.settings.app_id,
            "lanes": list(app.settings.worker_lanes),
            "ready": app.tables.recovery.completed.is_set(),
            "send_failure": repr(guard.failure) if guard.failure else None,
        }
        return self.json(body, status=200 if ok else 503)
