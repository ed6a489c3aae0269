"""Prometheus metrics of a worker, served at ``GET /metrics``.

Counted where the decisions are made, gauged when scraped:

- every analytics event a worker emits counts in ``notify_notifications_total``
  by lane, channel, provider, outcome (the event type) and reason (a bounded
  code: ``cap marketing/day 5``, ``global_opt_out``, ``timeout``; never an id);
- every send observes ``notify_send_latency_seconds`` (from the moment the
  notification could first be sent: accepted, or due when it was scheduled);
- the due timers count releases and observe how late each was;
- a scrape reads consumer lag and queue depth from the consumer, breaker
  states from the providers, the schedule's backlog from its stores, campaign
  progress from this worker's partitions and the commit guard.

No label carries a user, notification or tenant id. The names are the
contract of ``deploy/prometheus`` (alert rules) and ``deploy/grafana`` (the
dashboard), checked by the suite against what a worker exports. With
``NOTIFY_METRICS=false`` nothing is counted and ``/metrics`` answers 404.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.stores import active_dbs

if TYPE_CHECKING:
    from pipeline.app import NotifyApp
    from schemas.records import DeliveryJob, NotificationEvent

log = logging.getLogger(__name__)

# A `_created` series per counter child and histogram doubles what a scrape
# carries, and Prometheus's text format does not use it.
disable_created_metrics()

#: What ``exposition()`` answers: the text format every Prometheus reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: The worker's own registry: nothing of the process's default one (a test
#: process may build several apps; each registers its collector here once).
REGISTRY = CollectorRegistry(auto_describe=False)
# process_start_time_seconds and friends: a worker whose commit guard tripped
# exits within seconds, so a restart is what a scrape reliably sees.
ProcessCollector(registry=REGISTRY)

#: Accepted→sent seconds: the critical SLO is 1 s, transactional 30 s,
#: promotional 15 min (seed 001); buckets around each.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
)  # fmt: skip
#: How late a due entry left its timer (seconds).
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

NOTIFICATIONS = Counter(
    "notify_notifications",
    "Decisions about notifications, one per analytics event this worker emitted.",
    ("lane", "channel", "provider", "outcome", "reason"),
    registry=REGISTRY,
)
SEND_LATENCY = Histogram(
    "notify_send_latency_seconds",
    "From the moment a notification could be sent (accepted, or due) to its send.",
    ("lane", "priority", "channel"),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
RELEASED = Counter(
    "notify_scheduler_released",
    "Due entries a timer released (held and scheduled requests, retries).",
    ("timer",),
    registry=REGISTRY,
)
RELEASE_LATENESS = Histogram(
    "notify_scheduler_release_lateness_seconds",
    "How long after its due time a timer released an entry.",
    ("timer",),
    buckets=LATENESS_BUCKETS,
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "notify_deadletter_records",
    "Records written to the dead-letter topic, by stage and reason code.",
    ("stage", "reason"),
    registry=REGISTRY,
)

#: Outcomes whose reason is not a class of cause (a digest's id, a provider's
#: detail): counted without one.
NO_REASON = frozenset(
    {"accepted", "queued", "sent", "delivered", "opened", "clicked", "digested"}
)
#: Distinct reason values kept as labels; later new ones count as "other".
MAX_REASONS = 64


class _State:
    enabled = True
    #: Label tuple → the counter's child: ``labels()`` checks and hashes its
    #: arguments each call, a dict lookup does not.
    counted: dict[tuple[str, ...], Any] = {}
    timed: dict[tuple[str, ...], Any] = {}
    reasons: dict[str, str] = {}


def enable(on: bool) -> None:
    """Count (the default) or not (``NOTIFY_METRICS=false``)."""
    _State.enabled = on


def reason_label(outcome: str, reason: str | None) -> str:
    """A reason as a label of bounded values: its code, or "other"."""
    if not reason or outcome in NO_REASON:
        return ""
    known = _State.reasons.get(reason)
    if known is not None:
        return known
    # "cap marketing/day 5" names a configured cap; any other reason is a
    # code, perhaps followed by a detail ("suppressed:hard_bounce" stays).
    code = reason if reason.startswith("cap ") else reason.split(" ", 1)[0]
    code = code[:60]
    if code not in _State.reasons.values() and len(set(_State.reasons.values())) >= (
        MAX_REASONS
    ):
        code = "other"
    _State.reasons[reason] = code
    return code


def count(event: NotificationEvent) -> None:
    """Count one emitted analytics event."""
    if not _State.enabled:
        return
    outcome = event.event_type
    key = (
        event.lane or "",
        event.channel or "",
        event.provider or "",
        outcome,
        reason_label(outcome, event.reason),
    )
    child = _State.counted.get(key)
    if child is None:
        child = _State.counted[key] = NOTIFICATIONS.labels(*key)
    child.inc()


def sent(job: DeliveryJob, now: datetime) -> None:
    """Observe the latency of one send of ``job``."""
    if not _State.enabled:
        return
    since = job.ready_at or job.created_at
    key = (job.lane, job.priority, job.channel)
    child = _State.timed.get(key)
    if child is None:
        child = _State.timed[key] = SEND_LATENCY.labels(*key)
    child.observe(max(0.0, (now - since).total_seconds()))


def released(timer: str, late: float) -> None:
    """Count one release by ``timer``, ``late`` seconds after it was due."""
    if not _State.enabled:
        return
    RELEASED.labels(timer).inc()
    RELEASE_LATENESS.labels(timer).observe(max(0.0, late))


def dead_lettered(stage: str, code: str) -> None:
    """Count one record written to the dead-letter topic."""
    if _State.enabled:
        DEAD_LETTERS.labels(stage, code).inc()


def _gauge(name: str, doc: str, labels: Iterable[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class WorkerCollector(Collector):
    """What a scrape reads from the running worker."""

    def __init__(self) -> None:
        #: The app a scrape reads (``register`` sets it).
        self.app: NotifyApp | None = None

    def collect(self) -> Iterator[Metric]:
        app = self.app
        if not _State.enabled or app is None:
            return
        yield from self._lag(app)
        yield from self._breakers()
        yield from self._backlog()
        yield from self._campaigns(app)
        yield from self._worker(app)

    def _lag(self, app: NotifyApp) -> Iterator[Metric]:
        """Committed offset against the high watermark, per input partition."""
        lag = _gauge(
            "notify_consumer_lag_records",
            "Records of an input partition not yet committed by this worker's "
            "group (high watermark minus committed offset).",
            ("topic", "partition", "lane"),
        )
        depth = _gauge(
            "notify_queue_depth_records",
            "Records waiting in a lane's work topics (requests, accepted, "
            "deliveries) on the partitions this worker owns.",
            ("lane",),
        )
        lanes = self._lanes(app)
        by_lane = dict.fromkeys(app.settings.worker_lanes, 0)
        for tp, behind in consumer_lag(app, lanes):
            lane = lanes[tp.topic]
            lag.add_metric([tp.topic, str(tp.partition), lane], behind)
            if lane:
                by_lane[lane] = by_lane.get(lane, 0) + behind
        for lane, waiting in sorted(by_lane.items()):
            depth.add_metric([lane], waiting)
        yield lag
        yield depth

    def _lanes(self, app: NotifyApp) -> dict[str, str]:
        """Broker topic name → the lane whose work it carries ("" for none)."""
        topology = app.topology
        lanes = {}
        for lane, topic in topology.requests.items():
            lanes[topic.get_topic_name()] = lane
        for lane, topic in topology.accepted.items():
            lanes[topic.get_topic_name()] = lane
        for (_, lane), topic in topology.delivery_inputs.items():
            lanes[topic.get_topic_name()] = lane
        for topic in topology.receipts.values():
            lanes[topic.get_topic_name()] = ""
        for topic in topology.state_inputs.values():
            lanes[topic.get_topic_name()] = ""
        lanes[topology.inbox_reads.get_topic_name()] = ""
        return lanes

    def _breakers(self) -> Iterator[Metric]:
        state = _gauge(
            "notify_provider_breaker_state",
            "1 for the state each provider's circuit breaker is in.",
            ("provider", "state"),
        )
        send = sys.modules.get("agents.send")
        if send is not None:
            for provider, snapshot in sorted(send.providers.health().items()):
                for name in ("closed", "open", "half_open"):
                    state.add_metric(
                        [provider, name], 1.0 if snapshot["state"] == name else 0.0
                    )
        yield state

    def _backlog(self) -> Iterator[Metric]:
        backlog = _gauge(
            "notify_scheduler_backlog_entries",
            "Entries waiting in a timer's table on this worker's partitions "
            "(held and scheduled requests, retries); RocksDB's estimate.",
            ("timer",),
        )
        for timer, module, name in (
            ("held", "agents.held", "held_timer"),
            ("retries", "agents.retry", "retry_timer"),
        ):
            loaded = sys.modules.get(module)
            if loaded is not None:
                backlog.add_metric([timer], entries(getattr(loaded, name).table))
        yield backlog

    def _campaigns(self, app: NotifyApp) -> Iterator[Metric]:
        progress = _gauge(
            "notify_campaign_recipients",
            "Recipients of the newest campaigns (at most 20, created in the "
            "last day) on this worker's partitions, by how far they got "
            "(targeted, expanded, sent, ...).",
            ("campaign_id", "state"),
        )
        api = sys.modules.get("pipeline.api.campaigns")
        if api is not None and "bulk" in app.settings.worker_lanes:
            try:
                for cid, counts in api.recent_counts():
                    for state, n in sorted(counts.items()):
                        progress.add_metric([cid, state], n)
            except Exception:  # noqa: BLE001 - a scrape must answer all the same
                log.exception("campaign progress not read for /metrics")
        yield progress

    def _worker(self, app: NotifyApp) -> Iterator[Metric]:
        from pipeline.web import recovered

        guard = app.commit_guard
        tripped = _gauge(
            "notify_commit_guard_tripped",
            "1 once a failed send tripped the commit guard (the worker stops).",
            (),
        )
        tripped.add_metric([], 1.0 if guard.failure is not None else 0.0)
        ready = _gauge(
            "notify_worker_ready",
            "1 once the worker's tables are recovered and it answers the API.",
            ("lanes",),
        )
        lanes = "+".join(app.settings.worker_lanes)
        ready.add_metric([lanes], 1.0 if recovered(app) else 0.0)
        yield tripped
        yield ready


def consumer_lag(app: NotifyApp, topics: dict[str, str]) -> Iterator[tuple[Any, int]]:
    """(partition, records behind) for each assigned partition of ``topics``
    whose high watermark the consumer knows."""
    consumer: Any = getattr(app, "_consumer", None)
    if consumer is None:
        return
    try:
        assigned = consumer.assignment()
    except Exception:  # noqa: BLE001 - not started, or stopping
        return
    for tp in sorted(assigned):
        if tp.topic not in topics:
            continue
        try:
            high = consumer.highwater(tp)
        except Exception:  # noqa: BLE001, S112 - revoked since the assignment was read
            continue
        if high is None:
            continue
        committed = consumer._committed_offset.get(tp)
        if committed is None:
            read = consumer._read_offset.get(tp)
            committed = None if read is None else read + 1
        if committed is None:
            continue
        yield tp, max(0, int(high) - int(committed))


def entries(table: Any) -> int:
    """Entries of ``table`` on this worker's active partitions (an estimate)."""
    dbs = active_dbs(table)
    if dbs is None:
        return len(table)
    # Each estimate counts the offset key Faust keeps in every store.
    return sum(
        max(0, (db.property_int_value("rocksdb.estimate-num-keys") or 0) - 1)
        for _, db in dbs
    )


#: One per process: a scrape reads the app that registered last.
COLLECTOR = WorkerCollector()
REGISTRY.register(COLLECTOR)


def exposition(registry: CollectorRegistry = REGISTRY) -> bytes:
    """``registry``'s metrics in the text format (``CONTENT_TYPE``)."""
    return generate_latest(registry)


def register(app: NotifyApp) -> None:
    """Count (or not, by ``NOTIFY_METRICS``) and read ``app`` at each scrape."""
    enable(app.settings.metrics)
    COLLECTOR.app = app
