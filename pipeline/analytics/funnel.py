"""A campaign's funnel: sent → delivered → opened → clicked, with rates and
the accepted→sent latency, from ``notif_events``.

Each recipient's channel counts once per step (three opens of one email are
one open), and the variant, template and type a row is grouped by are the
ones its ``sent`` event named (the receipts that follow do not repeat them).
Pure: it builds the SQL and reads its JSON answer.
"""

from __future__ import annotations

import re
from typing import Any, Literal

#: What a funnel may be broken down by.
FunnelBy = Literal["channel", "variant", "template", "type"]
#: ``7d``, ``24h``, ``30m``, ``90s``, ``2w``.
SINCE_PATTERN = r"^[1-9][0-9]{0,5}[smhdw]$"
UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
STEPS = ("sent", "delivered", "opened", "clicked")


def seconds(since: str) -> int:
    """``7d`` in seconds."""
    if re.match(SINCE_PATTERN, since) is None:
        raise ValueError(f"{since!r} is not a duration like 7d, 24h, 30m, 45s")
    return int(since[:-1]) * UNITS[since[-1]]


def literal(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def funnel_sql(tenant: str, campaign_id: str, since: str, by: FunnelBy) -> str:
    """The query, answering one row per value of ``by``."""
    where = (
        f"tenant = {literal(tenant)} AND campaign_id = {literal(campaign_id)} "
        f"AND ts >= now64(3) - toIntervalSecond({seconds(since)})"
    )
    key = {
        "channel": "channel",
        "variant": "variant",
        "template": "template",
        "type": "type",
    }[by]
    # Every value is a quoted literal, the key a fixed column name.
    return f"""
SELECT
    {key} AS key,
    countIf(was_sent) AS sent,
    countIf(was_delivered) AS delivered,
    countIf(was_opened) AS opened,
    countIf(was_clicked) AS clicked,
    quantilesIf(0.5, 0.9, 0.99)(
        dateDiff('millisecond', accepted_at, sent_at), was_sent AND accepted_at > 0
    ) AS latency_ms
FROM
(
    SELECT
        notification_id,
        channel,
        anyIf(variant, event_type = 'sent') AS variant,
        anyIf(template, event_type = 'sent') AS template,
        any(type) AS type,
        minIf(ts, event_type = 'sent') AS sent_at,
        countIf(event_type = 'sent') > 0 AS was_sent,
        countIf(event_type = 'delivered') > 0 AS was_delivered,
        countIf(event_type = 'opened') > 0 AS was_opened,
        countIf(event_type = 'clicked') > 0 AS was_clicked
    FROM notif_events
    WHERE {where} AND channel != ''
    GROUP BY notification_id, channel
) AS per
LEFT JOIN
(
    SELECT notification_id, min(ts) AS accepted_at
    FROM notif_events
    WHERE {where} AND event_type = 'accepted'
    GROUP BY notification_id
) AS acc USING (notification_id)
GROUP BY key
ORDER BY key
"""  # noqa: S608


def rate(part: int, whole: int) -> float | None:
    """``part`` of ``whole`` in percent (two decimals), None of nothing."""
    return round(part * 100.0 / whole, 2) if whole else None


def funnel_rows(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the query's ``JSON`` answer, with their rates."""
    rows = []
    for row in answer.get("data", []):
        counts = {step: int(row[step]) for step in STEPS}
        latency = [float(v) for v in row.get("latency_ms") or []]
        rows.append(
            {
                "key": row["key"],
                **counts,
                "delivery_rate": rate(counts["delivered"], counts["sent"]),
                "open_rate": rate(counts["opened"], counts["delivered"]),
                "click_rate": rate(counts["clicked"], counts["delivered"]),
                "latency_ms": (
                    dict(zip(("p50", "p90", "p99"), latency, strict=True))
                    if counts["sent"] and len(latency) == 3
                    else None
                ),
            }
        )
    return rows


def table(rows: list[dict[str, Any]], by: str) -> str:
    """The funnel as the command line prints it."""
    head = [by, *STEPS, "delivered%", "opened%", "clicked%", "p50 ms", "p99 ms"]
    lines = [head]
    for row in rows:
        latency = row["latency_ms"] or {}
        lines.append(
            [
                row["key"] or "-",
                *(str(row[step]) for step in STEPS),
                *(
                    "-" if row[r] is None else f"{row[r]:.2f}"
                    for r in ("delivery_rate", "open_rate", "click_rate")
                ),
                *(
                    "-" if p not in latency else f"{latency[p]:.0f}"
                    for p in ("p50", "p99")
                ),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )
