"""Analytics: the bodies and answers of ``/v1/analytics``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints

from schemas.records import Record
from schemas.types import NonBlank, PathSegment

#: Output formats of ``POST /v1/analytics/sql`` (ClickHouse's names).
OutputFormat = Literal[
    "PrettyCompact",
    "PrettyCompactMonoBlock",
    "Pretty",
    "TabSeparated",
    "TabSeparatedWithNames",
    "CSV",
    "CSVWithNames",
    "JSON",
    "JSONEachRow",
    "JSONCompact",
    "Vertical",
]


class SqlQuery(Record):
    """The body of ``POST /v1/analytics/sql``: read-only SQL on ``notif_events``."""

    sql: Annotated[
        str, StringConstraints(min_length=1, max_length=100_000, pattern=r"\S")
    ]
    format: OutputFormat = "PrettyCompact"


class FunnelQuery(Record):
    """``GET /v1/analytics/funnel``'s query string."""

    model_config = ConfigDict(extra="ignore")

    campaign_id: PathSegment
    #: How far back: ``7d``, ``24h``, ``30m``, ``90s``, ``2w``.
    since: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,5}[smhdw]$")] = "7d"
    by: Literal["channel", "variant", "template", "type"] = "channel"
    tenant: NonBlank | None = None


class Latency(Record):
    """Accepted→sent, in milliseconds."""

    p50: float
    p90: float
    p99: float


class FunnelRow(Record):
    """One value of the breakdown: recipients' channels at each step, the
    rates in percent (of sent, then of delivered), the latency."""

    key: str
    sent: int
    delivered: int
    opened: int
    clicked: int
    delivery_rate: float | None = None
    open_rate: float | None = None
    click_rate: float | None = None
    latency_ms: Latency | None = None


class FunnelReport(Record):
    """A campaign's funnel, broken down by ``by``."""

    campaign_id: str
    tenant: str
    since: str
    by: str
    rows: list[FunnelRow] = Field(default_factory=list)


class ReplaySpan(Record):
    """One partition's range of the events topic to insert again."""

    topic: NonBlank
    partition: Annotated[int, Field(ge=0)]
    start: Annotated[int, Field(ge=0)]
    end: Annotated[int, Field(ge=0)]
