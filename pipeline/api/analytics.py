"""``/v1/analytics``: read-only SQL on the analytics store, and funnels.

Any worker answers: against a ClickHouse server it queries it itself; with
the in-process chDB store it passes the query on to ``notify sink``, the
one process that owns it (``pipeline.analytics.queries``).
"""

from __future__ import annotations

import orjson
from faust.web import Request, Response

from pipeline.analytics import queries
from pipeline.analytics.funnel import funnel_rows, funnel_sql
from pipeline.analytics.store import media_type
from pipeline.api import auth
from pipeline.api.contract import operation, route
from pipeline.api.errors import ApiError
from pipeline.api.views import ApiView
from pipeline.app import app
from schemas.analytics import FunnelQuery, FunnelReport, FunnelRow, SqlQuery


async def answer_of(sql: str, fmt: str) -> bytes:
    """The store's answer; 422 naming ClickHouse's complaint, 503 if down."""
    try:
        return await queries.run(app.settings, sql, fmt, app.http_client)
    except queries.QueryFailed as exc:
        raise ApiError(422, "query_failed", str(exc), field="sql") from exc
    except queries.StoreUnavailable as exc:
        raise ApiError(
            503, "analytics_unavailable", str(exc), headers={"Retry-After": "5"}
        ) from exc


@route("/v1/analytics/sql")
class AnalyticsSql(ApiView):
    """Read-only SQL, as clickhouse-client would print it."""

    @operation(
        operation_id="analyticsSql",
        summary="Run read-only SQL on the analytics store (admin)",
        status=200,
        body=SqlQuery,
        media={
            "text/plain": "The answer in the asked ClickHouse output format.",
            "application/json": "The answer in JSON or JSONCompact.",
            "application/x-ndjson": "The answer in JSONEachRow.",
        },
    )
    async def post(self, request: Request) -> Response:
        """Any SELECT on ``notif_events`` (and the other tables); a write is
        refused by ClickHouse (the query runs with ``readonly=1``): 422 with
        ClickHouse's message. ``format``: ``PrettyCompact`` (default),
        ``TabSeparated``, ``CSV``, ``JSON``, ``JSONEachRow``..."""
        self.principal(request).require(auth.ADMIN_SCOPE)
        asked = await self.parse(request, SqlQuery)
        answer = await answer_of(asked.sql, asked.format)
        return self.bytes(answer, content_type=media_type(asked.format))


@route("/v1/analytics/funnel")
class Funnel(ApiView):
    """A campaign's delivery funnel."""

    @operation(
        operation_id="getFunnel",
        summary="A campaign's funnel: sent, delivered, opened, clicked, rates, latency",
        status=200,
        answer=FunnelReport,
        query=FunnelQuery,
    )
    async def get(self, request: Request) -> Response:
        """Recipients' channels at each step over ``since`` (default ``7d``),
        broken down ``by`` channel, variant (A/B side by side), template or
        type, with delivery, open and click rates (percent) and the
        accepted→sent latency percentiles."""
        principal = self.principal(request)
        asked = self.query(request, FunnelQuery)
        tenant = principal.tenant_for(asked.tenant)
        sql = funnel_sql(tenant, asked.campaign_id, asked.since, asked.by)
        rows = funnel_rows(orjson.loads(await answer_of(sql, "JSON")))
        report = FunnelReport(
            campaign_id=asked.campaign_id,
            tenant=tenant,
            since=asked.since,
            by=asked.by,
            rows=[FunnelRow.model_validate(row) for row in rows],
        )
        return self.answer(report)
