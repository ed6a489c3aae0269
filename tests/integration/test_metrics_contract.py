"""The metrics contract: what the alert rules and the dashboard query is what a
real worker and a real sink export at ``GET /metrics``.

Every ``notify_*`` series an expression of ``deploy/prometheus/alerts.yml`` or a
panel of ``deploy/grafana/dashboards`` names must be exported, with every
label the expression filters, groups or joins on, every label its annotations
or legend print, and every value it matches exactly. ``up`` (Prometheus' own)
and the ``job``/``instance`` labels (added at scrape) are not the workers'.

Why traffic: prometheus_client writes HELP and TYPE for a labelled counter or
histogram before its first sample, but no labels until a sample exists, and
a collector's gauge (breakers, campaigns) likewise. A name can be checked
from the TYPE lines alone; a label cannot. So the worker is driven until
every family the queries use has samples: a malformed request (dead
letter), a critical in-app notification (sent at once), a transactional one
scheduled a second ahead (held, released by its timer, then sent) and a
promotional in-app campaign to one tagged user (the campaign gauge, the bulk
lane's latency). An SMTP and a Twilio provider are configured, on ports
nothing listens on, so each has a breaker to report; nothing is sent to them.
Both processes are scraped until the contract holds, for at most a minute
(a scheduled send comes a moment after the others); the tests then name
whatever is still missing.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pipeline.broker import free_port
from tests.support import (
    BrokerUnderTest,
    SinkProcess,
    Topics,
    WorkerProcess,
    call,
    produce,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"

#: Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
#: Label names that would carry one user's, notification's or tenant's
#: identity (unbounded values). ``campaign_id`` is allowed: the campaign
#: gauge keeps the newest 20 campaigns of the last day only.
IDENTITY_LABEL = re.compile(
    r"^(user|notification|tenant|event|device|idempotency|recipient|email|phone"
    r"|token|address)(_?(id|key))?$|_id$"
)
BOUNDED_ID_LABELS = frozenset({"campaign_id"})

_NAME = re.compile(r"\bnotify_[a-zA-Z0-9_]*[a-zA-Z0-9]")
_SELECTOR = re.compile(r"\b(notify_\w+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
)
_ALERT_LABEL = re.compile(r"\$labels\.(\w+)")
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_PLAIN_ALTERNATIVES = re.compile(r"\w+(\|\w+)*")


@dataclass(frozen=True)
class Query:
    """One PromQL expression, where it comes from, and the labels it prints."""

    origin: str
    expr: str
    printed: frozenset[str]

    @property
    def names(self) -> set[str]:
        """The notify_* series it reads."""
        return set(_NAME.findall(self.expr))

    def grouped(self) -> set[str]:
        """Labels it aggregates or joins on, and those it prints: every
        notify_* series it reads must carry them."""
        labels = {
            label.strip()
            for group in _GROUPING.findall(self.expr)
            for label in group.split(",")
            if label.strip()
        }
        return labels | self.printed

    def matchers(self) -> Iterator[tuple[str, str, str, str]]:
        """(series, label, operator, value) of each label matcher."""
        for name, body in _SELECTOR.findall(self.expr):
            for label, operator, value in _MATCHER.findall(body):
                yield name, label, operator, value


def rule_queries() -> list[Query]:
    """Each alert's expression, with the labels its annotations print."""
    queries = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            printed = frozenset(
                _ALERT_LABEL.findall(" ".join(rule.get("annotations", {}).values()))
            )
            queries.append(Query(f"alerts.yml {name}", rule["expr"], printed))
    return queries


def dashboard_queries() -> list[Query]:
    """Each dashboard panel target's expression, with its legend's labels."""
    queries = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                printed = frozenset(
                    _LEGEND_LABEL.findall(target.get("legendFormat", ""))
                )
                origin = f"{path.name} {panel['title']!r}"
                queries.append(Query(origin, target["expr"], printed))
    return queries


def series_names(family: Any) -> set[str]:
    """The series names a metric family declares, by its type."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
    }.get(family.type, ("",))
    return {family.name + suffix for suffix in suffixes}


@dataclass
class Scrape:
    """One process' /metrics: the series it declares, and each's samples."""

    declared: set[str]
    #: Series name → (label name → the values seen).
    labels: dict[str, dict[str, set[str]]]

    @classmethod
    def of(cls, text: str) -> Scrape:
        """Parse the Prometheus text format."""
        declared: set[str] = set()
        labels: dict[str, dict[str, set[str]]] = {}
        for family in text_string_to_metric_families(text):
            declared |= series_names(family)
            for sample in family.samples:
                seen = labels.setdefault(sample.name, {})
                for label, value in sample.labels.items():
                    seen.setdefault(label, set()).add(value)
        return cls(declared, labels)

    def merged(self, other: Scrape) -> Scrape:
        """Both processes' series together: no notify_* name is exported by
        both (the process_* ones are, each of its own process)."""
        both = {n for n in self.declared & other.declared if n.startswith("notify_")}
        assert not both, both
        return Scrape(self.declared | other.declared, self.labels | other.labels)


def scrape(url: str) -> Scrape:
    """GET ``url``/metrics and parse it."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:  # noqa: S310 - loopback
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain")
        return Scrape.of(answer.read().decode())


def used_names(queries: Iterable[Query]) -> set[str]:
    """Every notify_* series the queries read."""
    return {name for query in queries for name in query.names}


QUERIES = rule_queries() + dashboard_queries()


@dataclass
class Stack:
    """A worker and a sink on topics of their own."""

    worker: WorkerProcess
    sink: SinkProcess
    topics: Topics

    @property
    def worker_url(self) -> str:
        """The worker's web server."""
        return f"http://127.0.0.1:{self.worker.web_port}"


@pytest.fixture(scope="module")
def stack(
    broker: BrokerUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """One worker running both lanes and one sink, on a fresh topic prefix."""
    topics = Topics.fresh()
    topics.create(broker.url)
    directory = tmp_path_factory.mktemp("metrics")
    common = {
        "NOTIFY_BROKER_URL": broker.url,
        "NOTIFY_APP_ID": unique("metrics"),
        "NOTIFY_TOPIC_PREFIX": topics.prefix,
    }
    sink = SinkProcess.reading(broker.url, topics, directory, common["NOTIFY_APP_ID"])
    worker = WorkerProcess(
        app="pipeline.app",
        env={
            **common,
            "NOTIFY_DATA_DIR": str(directory / "worker"),
            "NOTIFY_SINK_URL": sink.url,
            # Providers with breakers; nothing here sends email or SMS.
            "NOTIFY_EMAIL_PROVIDERS": "smtp",
            "NOTIFY_SMTP_URL": f"smtp://127.0.0.1:{free_port()}",
            "NOTIFY_TWILIO_URL": f"http://127.0.0.1:{free_port()}",
            "NOTIFY_TWILIO_ACCOUNT_SID": "AC0123456789abcdef0123456789abcdef",
            "NOTIFY_TWILIO_FROM": "+15005550006",
        },
        log_path=directory / "worker.log",
    )
    sink.start()
    worker.start()
    try:
        sink.wait_ready(timeout=90)
        worker.wait_ready(timeout=90)
        yield Stack(worker, sink, topics)
    finally:
        worker.stop()
        sink.stop()


def drive(broker: BrokerUnderTest, stack: Stack) -> None:
    """The traffic after which every family the queries use has samples."""
    topics, port = stack.topics, stack.worker.web_port
    produce(broker.bootstrap, topics("notify.requests.critical"), [(b"k", b"{oops")])
    user, tag = unique("mu"), unique("tag")
    profile = {
        "tenant": "default",
        "user_id": user,
        "tags": [tag],
        "updated_at": datetime.now(UTC).isoformat(),
    }
    produce(
        broker.bootstrap,
        topics("notify.users.profiles"),
        [(f"default/{user}".encode(), orjson.dumps(profile))],
        partitioner="murmur2_random",
    )
    wait_for(lambda: call(port, "GET", f"/v1/users/{user}").status == 200, timeout=30)

    def notify(priority: str, **extra: Any) -> None:
        body = {
            "idempotency_key": unique("m"),
            "recipient": {"user_id": user},
            "type": "comment_reply",
            "priority": priority,
            "channels": ["in_app"],
            "data": {"author": "Bob", "excerpt": "see you"},
            **extra,
        }
        reply = call(port, "POST", "/v1/notifications", body)
        assert reply.status == 202, reply.body

    notify("critical")
    notify(
        "transactional",
        schedule_at=(datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
    )
    campaign = {
        "idempotency_key": unique("camp"),
        "campaign_name": "Metrics",
        "type": "promotional",
        "target": {"tags": [tag]},
        "channels": ["in_app"],
        "message": {"title": "Winter sale", "body": "Everything half off."},
    }
    reply = call(port, "POST", "/v1/notifications/bulk", campaign)
    assert reply.status == 202, reply.body


def unexported(scrape: Scrape) -> list[str]:
    """The series the queries read that are not exported, or without samples."""
    problems = [
        f"{query.origin}: {name} is not exported"
        for query in QUERIES
        for name in sorted(query.names)
        if name not in scrape.declared
    ]
    problems += [
        f"{name} is exported without samples"
        for name in sorted(used_names(QUERIES) & scrape.declared)
        if name not in scrape.labels
    ]
    return problems


def label_problems(scrape: Scrape) -> list[str]:
    """Labels a query uses that its series lack, and exact values it matches
    that never occur."""
    problems = []
    for query in QUERIES:
        for name in sorted(query.names):
            have = scrape.labels.get(name, {}).keys() | TARGET_LABELS
            for label in sorted(query.grouped() - have):
                problems.append(f"{query.origin}: {name} has no label {label!r}")
        for name, label, operator, value in query.matchers():
            seen = scrape.labels.get(name, {})
            if label not in seen.keys() | TARGET_LABELS:
                problems.append(f"{query.origin}: {name} has no label {label!r}")
                continue
            if label in TARGET_LABELS or operator.startswith("!"):
                continue
            if operator == "=~" and not _PLAIN_ALTERNATIVES.fullmatch(value):
                continue
            for wanted in value.split("|"):
                if wanted not in seen[label]:
                    problems.append(
                        f"{query.origin}: {name}{{{label}={wanted!r}}} is never "
                        f"exported (seen: {sorted(seen[label])})"
                    )
    return problems


@pytest.fixture(scope="module")
def exported(broker: BrokerUnderTest, stack: Stack) -> Scrape:
    """The worker's and the sink's series once the contract holds, or as
    they are at the deadline (the tests then say what is missing): a sample
    or a label value may come a moment after another of its family."""
    drive(broker, stack)
    latest: list[Scrape] = []

    def holds() -> bool:
        stack.worker.assert_alive()
        both = scrape(stack.worker_url).merged(scrape(stack.sink.url))
        latest[:] = [both]
        return not unexported(both) and not label_problems(both)

    try:
        wait_for(holds, timeout=60, interval=0.5)
    except AssertionError:
        if not latest:  # not one scrape: nothing for the tests below to name
            raise
    return latest[0]


def test_the_queries_are_found() -> None:
    """The extraction sees the rules and the dashboard (else all below holds
    vacuously)."""
    assert len(rule_queries()) >= 10
    assert len(dashboard_queries()) >= 12
    assert "notify_send_latency_seconds_bucket" in used_names(rule_queries())
    assert "notify_campaign_recipients" in used_names(dashboard_queries())


def test_every_series_the_rules_and_dashboard_read_is_exported(
    exported: Scrape,
) -> None:
    """Each notify_* name in an alert or a panel is a series the worker or
    the sink declares, and it has samples."""
    problems = unexported(exported)
    assert problems == [], "\n".join(problems)


def test_every_label_the_rules_and_dashboard_use_is_on_its_series(
    exported: Scrape,
) -> None:
    """Labels an expression matches on belong to the series it matches; labels
    it groups, joins or prints are on every series it reads; exact values it
    matches (and each plain alternative of a regex) occur in the export."""
    problems = label_problems(exported)
    assert problems == [], "\n".join(problems)


def test_no_label_names_a_user_a_notification_or_a_tenant(exported: Scrape) -> None:
    """No exported label carries an identity: the series a worker exports
    stay bounded however many users and notifications it serves."""
    names = {label for seen in exported.labels.values() for label in seen}
    assert {"lane", "outcome", "partition"} <= names  # the scrape saw labels
    assert {n for n in names if IDENTITY_LABEL.search(n)} <= BOUNDED_ID_LABELS
