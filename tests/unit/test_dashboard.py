"""The dashboard's figures from metric samples (rates, latency quantiles,
series, the ring of samples), its view of the dead-letter topic, and its page:
same-origin files from an allow-list, pinned uPlot, no inline code."""

from __future__ import annotations

import json
import math
import re
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from statistics import NormalDist

import pytest
from aiohttp.test_utils import TestClient, TestServer
from faust.web.drivers.aiohttp import Web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline import metrics
from pipeline.api import dashboard as page
from pipeline.app import DISCOVER, app
from pipeline.dashboard import (
    BACKLOG,
    CONSUMER_LAG,
    DECISIONS,
    QUEUE_DEPTH,
    SEND_LATENCY,
    Buckets,
    DeadLetterWatch,
    Sample,
    Sampler,
    bucket_increase,
    histogram_quantile,
    increase,
    rate,
    sample_of,
    series,
)
from pipeline.dlq import DlqError
from pipeline.settings import Settings
from pipeline.web import recovered
from schemas.dashboard import DeadLetterEntry, DeadLetters
from tests.unit.test_docs import referenced

REPO = Path(__file__).resolve().parents[2]
INF = math.inf


# Counters: increases and rates.


def test_a_counter_increase_survives_a_reset_and_a_late_start() -> None:
    """Growth is after minus before; a counter lower than before restarted
    from zero (its increase is all it holds now); one not there before
    started at zero."""
    assert increase(10.0, 25.0) == 15.0
    assert increase(25.0, 4.0) == 4.0
    assert increase(None, 7.0) == 7.0
    assert increase(3.0, 3.0) == 0.0


def test_a_rate_is_the_increase_per_second() -> None:
    """Per second over the interval; no time passed is no rate, not a division
    by zero."""
    assert rate(100.0, 150.0, 5.0) == 10.0
    assert rate(150.0, 20.0, 4.0) == 5.0  # reset: 20 since it restarted
    assert rate(1.0, 2.0, 0.0) == 0.0


# Histograms: bucket increases and quantiles.


def test_bucket_increases_are_per_bucket_and_a_reset_keeps_the_after() -> None:
    """Each cumulative bucket grows by itself; any bucket going down is a reset."""
    before: Buckets = ((0.1, 2.0), (1.0, 5.0), (INF, 6.0))
    after: Buckets = ((0.1, 4.0), (1.0, 9.0), (INF, 12.0))
    assert bucket_increase(before, after) == ((0.1, 2.0), (1.0, 4.0), (INF, 6.0))
    reset: Buckets = ((0.1, 1.0), (1.0, 1.0), (INF, 1.0))
    assert bucket_increase(before, reset) == reset
    assert bucket_increase(None, after) == after


def test_quantiles_interpolate_linearly_inside_the_bucket_as_prometheus_does() -> None:
    """Hand-computed from the buckets: 10 at or below 1 s, 10 more up to 2 s,
    20 more up to 4 s; rank q·40 lands in a bucket and is placed in it
    linearly, from 0 in the first."""
    buckets: Buckets = ((1.0, 10.0), (2.0, 20.0), (4.0, 40.0), (INF, 40.0))
    assert histogram_quantile(0.5, buckets) == pytest.approx(2.0)
    assert histogram_quantile(0.25, buckets) == pytest.approx(1.0)
    assert histogram_quantile(0.1, buckets) == pytest.approx(0.4)
    assert histogram_quantile(0.75, buckets) == pytest.approx(3.0)
    assert histogram_quantile(0.95, buckets) == pytest.approx(3.8)
    assert histogram_quantile(1.0, buckets) == pytest.approx(4.0)
    assert histogram_quantile(0.0, buckets) == pytest.approx(0.0)


def test_a_rank_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    """Past the last finite bound nothing is known but that bound."""
    buckets: Buckets = ((1.0, 5.0), (10.0, 8.0), (INF, 20.0))
    assert histogram_quantile(0.99, buckets) == 10.0
    assert histogram_quantile(0.2, buckets) == pytest.approx(0.8)


def test_no_observation_or_no_inf_bucket_gives_no_quantile() -> None:
    """Nothing observed in the window: no latency to show (null, not 0)."""
    assert histogram_quantile(0.5, ((1.0, 0.0), (INF, 0.0))) is None
    assert histogram_quantile(0.5, ()) is None
    assert histogram_quantile(0.5, ((1.0, 3.0), (2.0, 4.0))) is None
    with pytest.raises(ValueError, match="between 0 and 1"):
        histogram_quantile(1.5, ((1.0, 3.0), (INF, 3.0)))


def observed(values: list[float], buckets: tuple[float, ...]) -> Buckets:
    """``values`` observed by a real prometheus histogram, as the sampler reads
    its buckets."""
    registry = CollectorRegistry()
    histogram = Histogram(
        "observed_seconds", "test", buckets=buckets, registry=registry
    )
    for value in values:
        histogram.observe(value)
    return sample_of_histogram(registry)


def sample_of_histogram(registry: CollectorRegistry) -> Buckets:
    """The cumulative buckets of the only histogram in ``registry``."""
    return tuple(
        (float(point.labels["le"]), point.value)
        for family in registry.collect()
        for point in family.samples
        if point.name.endswith("_bucket")
    )


def test_uniform_latencies_give_their_true_quantiles() -> None:
    """10,000 latencies spread evenly over 0-2 s, in 0.1 s buckets: linear
    interpolation is exact for a uniform spread, so each quantile is q·2 s
    (within one observation's spacing)."""
    values = [(i + 0.5) / 5000 for i in range(10_000)]
    bounds = tuple(round(0.1 * k, 1) for k in range(1, 21))
    buckets = observed(values, bounds)
    for q in (0.5, 0.9, 0.95, 0.99):
        assert histogram_quantile(q, buckets) == pytest.approx(2 * q, abs=1e-3), q


def test_log_normal_latencies_land_in_the_bucket_of_their_true_quantile() -> None:
    """Latencies at the exact quantiles of a log-normal distribution (median
    80 ms), in the worker's own buckets: each estimate lies within the bucket
    holding the true quantile, as close as those buckets allow, and the
    estimates keep their order."""
    spread = NormalDist(mu=math.log(0.08), sigma=0.9)
    values = [math.exp(spread.inv_cdf((i + 0.5) / 20_000)) for i in range(20_000)]
    buckets = observed(values, metrics.LATENCY_BUCKETS)
    bounds = (0.0, *metrics.LATENCY_BUCKETS, INF)
    estimates = []
    for q in (0.5, 0.95, 0.99):
        true = math.exp(spread.inv_cdf(q))
        lower = max(b for b in bounds if b < true)
        upper = min(b for b in bounds if b >= true)
        estimate = histogram_quantile(q, buckets)
        assert estimate is not None
        assert lower <= estimate <= upper, (q, true, estimate)
        estimates.append(estimate)
    assert estimates == sorted(estimates)
    # The median, 80 ms, lies in the 50-100 ms bucket; so does its estimate.
    assert 0.05 <= estimates[0] <= 0.1


# Samples read from a registry.


class WorkerGauges(Collector):
    """Gauges shaped as the worker's collector reports them at a scrape."""

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            CONSUMER_LAG, "lag", labels=["topic", "partition", "lane"]
        )
        lag.add_metric(["t.accepted", "0", "critical"], 3)
        lag.add_metric(["t.accepted", "1", "critical"], 4)
        lag.add_metric(["t.users", "0", ""], 1)
        depth = GaugeMetricFamily(QUEUE_DEPTH, "depth", labels=["lane"])
        depth.add_metric(["critical"], 7)
        depth.add_metric(["bulk"], 0)
        backlog = GaugeMetricFamily(BACKLOG, "backlog", labels=["timer"])
        backlog.add_metric(["held"], 2)
        backlog.add_metric(["retries"], 5)
        yield lag
        yield depth
        yield backlog


def worker_registry() -> tuple[CollectorRegistry, Counter, Histogram]:
    """A registry holding the worker's counter and histogram (same names and
    labels as ``pipeline.metrics``) and its scrape-time gauges."""
    registry = CollectorRegistry()
    decisions = Counter(
        DECISIONS,
        "decisions",
        ("lane", "channel", "provider", "outcome", "reason"),
        registry=registry,
    )
    latency = Histogram(
        SEND_LATENCY,
        "latency",
        ("lane", "priority", "channel"),
        buckets=(0.1, 1.0),
        registry=registry,
    )
    registry.register(WorkerGauges())
    return registry, decisions, latency


def test_the_sampler_reads_the_names_the_worker_exports() -> None:
    """The counter and histogram families the sampler reads are the worker's."""
    names = {family.name for family in metrics.REGISTRY.collect()}
    assert {DECISIONS, SEND_LATENCY} <= names


def test_a_sample_sums_providers_reasons_priorities_and_partitions_away() -> None:
    """Decisions by lane, channel and outcome (whatever the provider or
    reason); latency by lane and channel (whatever the priority); lag by
    topic (whatever the partition); depth and backlog as reported."""
    registry, decisions, latency = worker_registry()
    decisions.labels("critical", "email", "smtp", "sent", "").inc(3)
    decisions.labels("critical", "email", "sendgrid", "sent", "").inc(2)
    decisions.labels("critical", "email", "smtp", "failed", "timeout").inc()
    decisions.labels("critical", "email", "smtp", "failed", "rejected").inc()
    decisions.labels("bulk", "", "", "dead_lettered", "invalid_json").inc()
    latency.labels("critical", "critical", "email").observe(0.05)
    latency.labels("critical", "transactional", "email").observe(0.5)
    latency.labels("critical", "transactional", "email").observe(5)

    sample = sample_of(registry.collect(), at=1000.0)

    assert sample.at == 1000.0
    assert sample.counts == {
        ("critical", "email", "sent"): 5.0,
        ("critical", "email", "failed"): 2.0,
        ("bulk", "", "dead_lettered"): 1.0,
    }
    assert sample.latency == {
        ("critical", "email"): ((0.1, 1.0), (1.0, 2.0), (INF, 3.0)),
    }
    assert sample.lag == {"t.accepted": 7.0, "t.users": 1.0}
    assert sample.queue_depth == {"critical": 7.0, "bulk": 0.0}
    assert sample.backlog == {"held": 2.0, "retries": 5.0}


# Series from samples.


def buckets_for(fast: float, slow: float) -> Buckets:
    """Cumulative buckets: ``fast`` sends under 0.1 s, ``slow`` ones 0.1-1 s."""
    return ((0.1, fast), (1.0, fast + slow), (INF, fast + slow))


def samples_every_5s() -> list[Sample]:
    """Five samples 5 s apart: 10 sends a second on critical email, then
    nothing for the last interval; one failure; a queue that drains."""
    sent = [0, 50, 100, 150, 150]
    fast = [0, 40, 80, 120, 120]
    return [
        Sample(
            at=100.0 + 5 * i,
            counts={
                ("critical", "email", "sent"): float(sent[i]),
                **({("critical", "email", "failed"): 1.0} if i >= 2 else {}),
            },
            latency={("critical", "email"): buckets_for(fast[i], sent[i] - fast[i])},
            queue_depth={"critical": float(40 - 10 * i)},
            lag={"t.accepted": float(4 - i)},
            backlog={"retries": 1.0} if i == 4 else {},
        )
        for i in range(5)
    ]


def test_series_give_rates_totals_gauges_and_one_point_per_interval() -> None:
    """Each point ends an interval: its rate is the counter's increase over
    it, per second; totals are the newest counts; gauges are as sampled; a
    counter or gauge absent at a point counts 0 there."""
    made = series(samples_every_5s(), interval=5.0, window=900.0, latency_window=10.0)
    assert made.t == [105.0, 110.0, 115.0, 120.0]
    (email,) = made.traffic
    assert (email.lane, email.channel) == ("critical", "email")
    assert email.rates == {
        "failed": [0.0, 0.2, 0.0, 0.0],
        "sent": [10.0, 10.0, 10.0, 0.0],
    }
    assert email.totals == {"failed": 1, "sent": 150}
    assert made.queue_depth == {"critical": [30.0, 20.0, 10.0, 0.0]}
    assert made.lag == {"t.accepted": [3.0, 2.0, 1.0, 0.0]}
    assert made.backlog == {"retries": [0.0, 0.0, 0.0, 1.0]}


def test_latency_quantiles_cover_the_window_before_each_point() -> None:
    """Over a 10 s window: 80 % of the sends were under 0.1 s and 20 % in
    0.1-1 s, so the median is interpolated in the first bucket (0.1·50/80)
    and p95 in the second (0.1 + 0.9·(95-80)/20); the first point has only
    5 s behind it; once 10 s pass with no send, there is no latency."""
    made = series(samples_every_5s(), interval=5.0, window=900.0, latency_window=10.0)
    (email,) = made.traffic
    assert email.latency.p50 == pytest.approx([0.0625, 0.0625, 0.0625, 0.0625])
    assert email.latency.p95 == pytest.approx([0.775] * 4)
    made = series(samples_every_5s(), interval=5.0, window=900.0, latency_window=5.0)
    (email,) = made.traffic
    assert email.latency.p99[-1] is None  # nothing sent in the last 5 s
    assert email.latency.p99[:3] == pytest.approx([0.955] * 3)


def test_no_samples_or_one_give_empty_series() -> None:
    """Rates need two samples: before that, nothing to plot."""
    assert series([]).t == []
    one = series(samples_every_5s()[:1])
    assert one.t == [] and one.traffic[0].rates["sent"] == []
    assert one.traffic[0].totals == {"sent": 0}


def test_the_ring_keeps_the_window_and_starts_over_when_the_clock_steps_back() -> None:
    """Samples older than the window before the newest are dropped; a sample
    not newer than the last clears the ring; the series are made once per
    sample."""
    sampler = Sampler(interval=5.0, window=20.0)
    for at in range(0, 60, 5):
        sampler.add(Sample(at=float(at)))
    assert [s.at for s in sampler.samples] == [35.0, 40.0, 45.0, 50.0, 55.0]
    assert sampler.sampled_at == 55.0
    first = sampler.series()
    assert sampler.series() is first
    assert first.t == [40.0, 45.0, 50.0, 55.0]
    sampler.add(Sample(at=50.0))
    assert [s.at for s in sampler.samples] == [50.0]
    assert sampler.series() is not first


# The dead-letter topic, read in a thread.


class GatedReader:
    """A reader that answers when let through, counting its reads."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.reads = 0
        self.failure: Exception | None = None

    def read(self, bootstrap: str, topic: str, timeout: float) -> DeadLetters:
        self.reads += 1
        self.gate.wait(10)
        if self.failure is not None:
            raise self.failure
        entry = DeadLetterEntry(
            position="0@3", stage="ingest", code="invalid_json", reason="bad", source=""
        )
        return DeadLetters(size=self.reads, newest=[entry])


async def test_a_slow_read_answers_the_last_figures_and_says_why() -> None:
    """A read longer than the timeout answers at once (nothing known yet,
    with the reason); asked again, the same read (never a second one at the
    same time) gives its figures, kept for the TTL; a failed read keeps the
    last figures with its error."""
    reader = GatedReader()
    watch = DeadLetterWatch(reader, ttl=60.0, timeout=0.2)
    first = await watch.summary("b", "dlq")
    assert first.size is None and "not read within 0.2 s" in (first.error or "")
    reader.gate.set()
    second = await watch.summary("b", "dlq")
    assert (second.size, second.error, reader.reads) == (1, None, 1)
    assert await watch.summary("b", "dlq") is second  # within the TTL
    watch.ttl = 0.0
    reader.failure = DlqError("broker down")
    failed = await watch.summary("b", "dlq")
    assert (failed.size, failed.error) == (1, "broker down")
    assert failed.newest == second.newest


# The page and its files.


def fake_install(directory: Path) -> dict[str, Path]:
    """Every served file, each with distinct content, flat in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in page.SERVED:
        (directory / name).write_text(f"/* {name} */")
    return {name: directory / name for name in page.SERVED}


def test_the_worker_discovers_the_sampler_and_serves_the_dashboard() -> None:
    """Both modules are discovered; the page, its files and the API are mounted."""
    assert {"pipeline.dashboard", "pipeline.api.dashboard"} <= set(DISCOVER)
    assert {path: type(app.web.views[path]) for path in page.ROUTES} == {
        page.PAGE_PATH: page.DashboardPage,
        page.ROUTES[1]: page.DashboardAsset,
    }
    assert type(app.web.views[page.API_PATH]) is page.DashboardView


def test_the_page_loads_every_listed_file_from_this_origin_and_no_inline_code(
    tmp_path: Path,
) -> None:
    """Each URL is a /dashboard/assets/ file on the list, versioned by its
    content, and every listed file is used; no other host is named; no
    inline script, handler or style (the policy would refuse them)."""
    assets = page.installed_assets([fake_install(tmp_path)])
    assert assets is not None
    html = page.dashboard_page(assets)
    assert "://" not in html
    names = []
    for url in referenced(html):
        if url == "data:,":  # the empty icon: no request for /favicon.ico
            continue
        assert url.startswith(page.ASSETS_PATH), url
        name, _, version = url.removeprefix(page.ASSETS_PATH).partition("?v=")
        assert version == assets[name].digest
        names.append(name)
    assert sorted(names) == sorted(page.SERVED)
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert not re.search(r"\sstyle=|<style|\son[a-z]+=", html)
    policy = page.PAGE_HEADERS["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe-inline" not in policy


def test_assets_come_from_the_first_install_holding_every_file(tmp_path: Path) -> None:
    """An install lacking a file is passed over; none at all is None."""
    partial = fake_install(tmp_path / "partial")
    partial["uPlot.iife.min.js"].unlink()
    whole = fake_install(tmp_path / "whole")
    assert page.installed_assets([partial]) is None
    found = page.installed_assets([partial, whole])
    assert found is not None
    assert found["dashboard.css"].body == b"/* dashboard.css */"
    assert found["dashboard.js"].content_type.startswith("text/javascript")


def test_this_checkout_has_the_page_and_uplot_installed() -> None:
    """``make install`` put uPlot in web/node_modules; the page's own files are
    in web/dashboard."""
    if not page.CHECKOUT_ASSETS["uPlot.iife.min.js"].exists():
        pytest.fail("uPlot is not installed: run `make install`")
    assert page.installed_assets([page.CHECKOUT_ASSETS]) is not None


def test_uplot_is_pinned_exactly_with_an_integrity_hash() -> None:
    """web/package.json pins one exact uPlot; the lock agrees and hashes it."""
    manifest = json.loads((REPO / "web/package.json").read_text())
    lock = json.loads((REPO / "web/package-lock.json").read_text())
    pinned = manifest["dependencies"]["uplot"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), pinned
    locked = lock["packages"]["node_modules/uplot"]
    assert locked["version"] == pinned
    assert locked["integrity"].startswith("sha512-")
    assert "resolved" not in locked


def test_the_docker_image_copies_every_file_of_the_page() -> None:
    """The image serves /dashboard: its build stage copies each served file
    to the prefix the worker looks in."""
    dockerfile = (REPO / "Dockerfile").read_text()
    for name in page.SERVED:
        assert name in dockerfile, name
    assert str(page.PREFIX_DIR.relative_to(sys.prefix)) in dockerfile


@pytest.fixture
async def page_client() -> AsyncIterator[TestClient]:
    """A client of a web server serving the dashboard's views of the (not
    started) app: its tables are not recovered, as while a worker starts."""
    web = Web(app)
    for view in (page.DashboardPage, page.DashboardAsset, page.DashboardView):
        web.add_view(view)
    async with TestClient(TestServer(web.web_app)) as client:
        yield client


async def test_the_page_answers_while_the_worker_starts_the_figures_do_not(
    page_client: TestClient,
) -> None:
    """The page and its files answer with the policy while the API answers
    503 not_ready; names off the list are 404 before any file is read."""
    assert not recovered(app)
    reply = await page_client.get("/dashboard")
    assert reply.status == 200
    assert (
        reply.headers["Content-Security-Policy"]
        == (page.PAGE_HEADERS["Content-Security-Policy"])
    )
    for url in referenced(await reply.text()):
        if url == "data:,":
            continue
        asset = await page_client.get(url)
        assert asset.status == 200, url
        assert "max-age=31536000" in asset.headers["Cache-Control"]
    for name in ("package.json", "uPlot.esm.js", "..%2Fdashboard.js", "LICENSE"):
        assert (await page_client.get(f"/dashboard/assets/{name}")).status == 404
    figures = await page_client.get("/v1/dashboard")
    assert figures.status == 503
    assert (await figures.json())["error"]["code"] == "not_ready"


async def test_with_metrics_off_there_is_no_dashboard(
    page_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NOTIFY_METRICS=false: nothing is counted, and the page says 404."""
    monkeypatch.setattr(app, "settings", Settings(metrics=False))
    reply = await page_client.get("/dashboard")
    assert reply.status == 404
    assert "NOTIFY_METRICS" in (await reply.json())["error"]["message"]


async def test_without_the_files_installed_the_page_answers_503_naming_the_fix(
    page_client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No install: the project's JSON error saying how to install."""
    monkeypatch.setattr(page, "INSTALLS", ({n: tmp_path / n for n in page.SERVED},))
    for path in ("/dashboard", "/dashboard/assets/dashboard.js"):
        reply = await page_client.get(path)
        assert reply.status == 503, path
        error = (await reply.json())["error"]
        assert error["code"] == "dashboard_not_installed"
        assert "make install" in error["message"]
