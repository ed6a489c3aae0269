"""pipeline.metrics: what is counted, with which labels, bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import rocksdict
from faust.types import TP
from prometheus_client import generate_latest

from pipeline import metrics
from schemas.records import NotificationEvent

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def event(outcome: str, reason: str | None = None, **more: Any) -> NotificationEvent:
    fields = {"lane": "bulk", "channel": "email", "provider": "sendgrid"} | more
    return NotificationEvent(
        event_id="e1",
        event_type=outcome,
        ts=NOW,
        stage="send.email",
        reason=reason,
        **fields,
    )


@pytest.fixture(autouse=True)
def counting(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Counting on, and the reasons seen so far this test's own."""
    monkeypatch.setattr(metrics._State, "reasons", {})
    metrics.enable(True)
    yield
    metrics.enable(True)


def test_an_event_counts_once_under_its_lane_channel_provider_outcome_and_reason() -> (
    None
):
    labels = {
        "lane": "bulk",
        "channel": "email",
        "provider": "sendgrid",
        "outcome": "throttled",
        "reason": "cap marketing/day 5",
    }
    before = sample("notify_notifications_total", **labels)
    metrics.count(event("throttled", "cap marketing/day 5"))
    metrics.count(event("throttled", "cap marketing/day 5"))
    assert sample("notify_notifications_total", **labels) == before + 2


def test_reasons_are_codes_and_ids_never_become_labels() -> None:
    """A digest's id, a provider's detail: outcomes whose reason is not a
    cause count without one; a reason with a detail keeps its code."""
    assert metrics.reason_label("digested", "digest n_0123456789") == ""
    assert metrics.reason_label("sent", "queued as 250 2.0.0 abc") == ""
    assert metrics.reason_label("failed", "timeout after 5 s") == "timeout"
    assert metrics.reason_label("suppressed", "suppressed:hard_bounce") == (
        "suppressed:hard_bounce"
    )
    assert metrics.reason_label("throttled", "cap sms/month 50") == "cap sms/month 50"


def test_reason_values_are_bounded() -> None:
    """However many distinct reasons arrive, the label takes at most
    MAX_REASONS values; the rest count as "other"."""
    for n in range(metrics.MAX_REASONS * 3):
        metrics.reason_label("failed", f"code{n}")
    values = {metrics.reason_label("failed", f"code{n}") for n in range(300)}
    assert len(values - {"other"}) <= metrics.MAX_REASONS
    assert "other" in values


def test_send_latency_runs_from_ready_not_from_the_job() -> None:
    """A scheduled notification's latency starts when it was due."""
    job = SimpleNamespace(
        lane="critical",
        priority="critical",
        channel="push",
        created_at=NOW - timedelta(seconds=5),
        ready_at=NOW - timedelta(milliseconds=300),
    )
    labels = {"lane": "critical", "priority": "critical", "channel": "push"}
    count = sample("notify_send_latency_seconds_count", **labels)
    under = sample("notify_send_latency_seconds_bucket", le="0.5", **labels)
    metrics.sent(job, NOW)  # type: ignore[arg-type]
    assert sample("notify_send_latency_seconds_count", **labels) == count + 1
    assert sample("notify_send_latency_seconds_bucket", le="0.5", **labels) == under + 1


def test_off_counts_nothing() -> None:
    labels = {"lane": "bulk", "channel": "email", "provider": "sendgrid"}
    labels |= {"outcome": "failed", "reason": "rejected"}
    before = sample("notify_notifications_total", **labels)
    metrics.enable(False)
    metrics.count(event("failed", "rejected"))
    metrics.released("held", 0.2)
    metrics.enable(True)
    assert sample("notify_notifications_total", **labels) == before


def test_release_lateness_is_observed_per_timer() -> None:
    before = sample("notify_scheduler_released_total", timer="retries")
    metrics.released("retries", 0.03)
    assert sample("notify_scheduler_released_total", timer="retries") == before + 1
    assert b"notify_scheduler_release_lateness_seconds_bucket" in generate_latest(
        metrics.REGISTRY
    )


class Consumer:
    """What the lag reads of Faust's consumer."""

    def __init__(self) -> None:
        self.assigned = {
            TP("notify.requests.bulk", 0),
            TP("notify.requests.bulk", 1),
            TP("notify.deliveries.email.bulk", 0),
            TP("notify-pipeline-status-changelog", 0),  # a table's: not counted
        }
        self.high = {
            TP("notify.requests.bulk", 0): 120,
            TP("notify.requests.bulk", 1): 40,
            TP("notify.deliveries.email.bulk", 0): 7,
        }
        self._committed_offset = {TP("notify.requests.bulk", 0): 100}
        self._read_offset = {TP("notify.requests.bulk", 1): 29}

    def assignment(self) -> set[TP]:
        return self.assigned

    def highwater(self, tp: TP) -> int | None:
        return self.high.get(tp)


def test_lag_is_the_high_watermark_less_the_committed_offset() -> None:
    """Committed 100 of 120: 20 behind; never committed but read up to 29:
    10 behind; no high watermark fetched yet: not reported; a changelog the
    worker reads for its tables is not an input."""
    app = SimpleNamespace(_consumer=Consumer())
    lanes = {
        "notify.requests.bulk": "bulk",
        "notify.deliveries.email.bulk": "bulk",
    }
    found = {(tp.topic, tp.partition): n for tp, n in metrics.consumer_lag(app, lanes)}  # type: ignore[arg-type]
    assert found == {
        ("notify.requests.bulk", 0): 20,
        ("notify.requests.bulk", 1): 10,
    }


def test_a_table_backlog_counts_only_this_workers_partitions(tmp_path: Path) -> None:
    """RocksDB's key estimate per active partition, less Faust's offset key."""
    dbs = {}
    for partition, n in ((0, 30), (1, 50)):
        db = rocksdict.Rdict(str(tmp_path / str(partition)))
        for i in range(n):
            db[f"k{i}"] = i
        db["__faust\0offset__"] = 1
        dbs[partition] = db
    actives = {TP("held-changelog", 0)}
    table = SimpleNamespace(
        data=SimpleNamespace(_dbs=dbs),
        app=SimpleNamespace(assignor=SimpleNamespace(assigned_actives=lambda: actives)),
        changelog_topic_name="held-changelog",
    )
    assert metrics.entries(table) == 30
    assert metrics.entries({"a": 1, "b": 2}) == 2  # a memory store
