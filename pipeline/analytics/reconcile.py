"""``notify reconcile``: the no-loss proof, a query over ``notif_events``.

Every accepted notification must end, on each channel it was decided for,
in exactly one terminal outcome: sent (or what follows a send: delivered,
opened, clicked, bounced), suppressed, throttled, expired, cancelled,
digested (collected into a digest), or failed (with its dead letter).
Looked at ``grace`` after it was accepted:

- *pending*: no outcome yet, and waiting for a due time it names (deferred
  by a schedule, quiet hours, a cap or a digest window; a retry);
- *missing*: no outcome and nothing it waits for, or a notification no
  channel was ever decided for;
- *doubled*: two outcomes that cannot both hold (sent and suppressed...);
  a failure followed by a send is an operator's retry, not a double.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.analytics.funnel import literal

#: Outcome of each terminal event type (one group per outcome).
OUTCOME = {
    "sent": "sent",
    "delivered": "sent",
    "opened": "sent",
    "clicked": "sent",
    "bounced": "sent",
    "suppressed": "suppressed",
    "throttled": "throttled",
    "expired": "expired",
    "cancelled": "cancelled",
    "digested": "digested",
    "failed": "failed",
    "dead_lettered": "failed",
}
#: Events that say a channel waits for a time (``until``).
WAITING = ("deferred", "retried")


def reconcile_sql(since_seconds: int, grace_seconds: int, tenant: str | None) -> str:
    """Per (notification, channel) of notifications accepted in the window
    and at least ``grace`` ago: the event types seen, the latest wait."""
    quoted = "" if tenant is None else " AND tenant = " + literal(tenant)
    accepted = (
        "SELECT notification_id FROM notif_events WHERE event_type = 'accepted'"  # noqa: S608
        f" AND ts >= now64(3) - toIntervalSecond({since_seconds})"
        f" AND ts < now64(3) - toIntervalSecond({grace_seconds}){quoted}"
    )
    return f"""
SELECT
    notification_id,
    channel,
    groupUniqArray(event_type) AS kinds,
    max(ts) AS last_at,
    maxIf(until, event_type IN ('deferred', 'retried')) AS waits_until,
    argMax(event_type, ts) AS last_kind
FROM notif_events
WHERE notification_id IN ({accepted})
GROUP BY notification_id, channel
ORDER BY notification_id, channel
"""  # noqa: S608 - numbers and a quoted literal


@dataclass
class Finding:
    """One notification's channel that is not simply done."""

    notification_id: str
    channel: str
    kinds: list[str]
    due: datetime | None = None


@dataclass
class Reconciliation:
    """What the check found."""

    notifications: int = 0
    channels: int = 0
    done: int = 0
    pending: list[Finding] = field(default_factory=list)
    missing: list[Finding] = field(default_factory=list)
    doubled: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing missing, nothing doubled."""
        return not self.missing and not self.doubled


def moment(value: Any) -> datetime | None:
    """A ClickHouse JSON time (``2026-12-05 03:00:00.250``, UTC) or None."""
    if not value or str(value).startswith("1970-01-01"):
        return None
    return datetime.fromisoformat(str(value).replace(" ", "T")).replace(tzinfo=UTC)


def classify(rows: list[dict[str, Any]], now: datetime) -> Reconciliation:
    """Sort each (notification, channel) row of ``reconcile_sql``."""
    found = Reconciliation()
    by_notification: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_notification.setdefault(row["notification_id"], []).append(row)
    found.notifications = len(by_notification)
    for nid, channels in by_notification.items():
        decided = [row for row in channels if row["channel"]]
        whole = {k for row in channels if not row["channel"] for k in row["kinds"]}
        if not decided:
            # Nothing decided per channel: fine for a duplicate or a cancel
            # of the whole, a loss otherwise.
            if not whole & {"deduplicated", "cancelled", "dead_lettered"}:
                found.missing.append(Finding(nid, "-", sorted(whole)))
            continue
        for row in decided:
            found.channels += 1
            kinds = sorted(row["kinds"])
            outcomes = {OUTCOME[k] for k in kinds if k in OUTCOME}
            finding = Finding(nid, row["channel"], kinds)
            if (
                outcomes == {"failed", "sent"}
                and row["last_kind"] in OUTCOME
                and OUTCOME[row["last_kind"]] == "sent"
            ):
                outcomes = {"sent"}  # failed for good, then an operator's retry went
            if len(outcomes) > 1:
                found.doubled.append(finding)
            elif outcomes:
                found.done += 1
            else:
                due = moment(row.get("waits_until"))
                if due is not None and row["last_kind"] in WAITING:
                    finding.due = due
                    found.pending.append(finding)
                else:
                    found.missing.append(finding)
    return found


def report(found: Reconciliation, most: int = 50) -> list[str]:
    """The lines ``notify reconcile`` prints."""
    lines = [
        f"{found.notifications:,} notifications, {found.channels:,} channels: "
        f"{found.done:,} done, {len(found.pending):,} pending, "
        f"{len(found.missing):,} missing, {len(found.doubled):,} doubled"
    ]
    for label, items in (("missing", found.missing), ("doubled", found.doubled)):
        for item in items[:most]:
            lines.append(
                f"  {label:8} {item.notification_id} {item.channel}: {', '.join(item.kinds)}"
            )
    for item in found.pending[:most]:
        due = item.due.isoformat() if item.due else "?"
        lines.append(f"  pending  {item.notification_id} {item.channel}: due {due}")
    return lines
