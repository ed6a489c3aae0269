"""What the ``/dashboard`` page plots: this worker's metrics, sampled over time.

A timer on every worker reads ``pipeline.metrics.REGISTRY`` every
``SAMPLE_EVERY`` seconds and keeps the samples of the last ``WINDOW``
seconds in a ring. From consecutive samples come, per lane and channel,
decisions a second by outcome (counter increases over the interval) and the
send latency's p50/p95/p99 over the ``LATENCY_WINDOW`` before each point
(estimated from the histogram's bucket increases, interpolating linearly
within a bucket as Prometheus's ``histogram_quantile`` does); and, as they
were at each sample, queue depth per lane, consumer lag per topic and the
scheduler's backlog per timer. The math is pure functions over samples.

The dead-letter topic is read here too, off the event loop: its size from
each partition's offsets and the newest entries' reasons from its tail.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from bisect import bisect_right
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client.core import Metric

from pipeline import dlq, metrics
from pipeline.app import app
from pipeline.topology import DEADLETTER, topic_name
from schemas.dashboard import (
    DeadLetterEntry,
    DeadLetters,
    Quantiles,
    Series,
    Traffic,
)

log = logging.getLogger(__name__)

#: Seconds between samples, seconds of samples kept, and the window each
#: latency quantile is estimated over.
SAMPLE_EVERY = 5.0
WINDOW = 15 * 60.0
LATENCY_WINDOW = 60.0
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))

#: The metric families read, as ``REGISTRY.collect()`` names them (a
#: counter's family drops its ``_total``).
DECISIONS = "notify_notifications"
SEND_LATENCY = "notify_send_latency_seconds"
QUEUE_DEPTH = "notify_queue_depth_records"
CONSUMER_LAG = "notify_consumer_lag_records"
BACKLOG = "notify_scheduler_backlog_entries"

#: A histogram as cumulative buckets: (upper bound, observations at or
#: below it), ascending, the last bound +Inf.
Buckets = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Sample:
    """What the metrics said at one moment, summed to the dashboard's keys."""

    at: float
    #: (lane, channel, outcome) → decisions counted so far.
    counts: Mapping[tuple[str, str, str], float] = field(default_factory=dict)
    #: (lane, channel) → the send latency histogram, every priority together.
    latency: Mapping[tuple[str, str], Buckets] = field(default_factory=dict)
    queue_depth: Mapping[str, float] = field(default_factory=dict)
    #: Topic → every partition of it this worker reads.
    lag: Mapping[str, float] = field(default_factory=dict)
    backlog: Mapping[str, float] = field(default_factory=dict)


def sample_of(families: Iterable[Metric], at: float) -> Sample:
    """The sample ``families`` (what a registry's ``collect()`` yields) make
    at unix time ``at``."""
    counts: dict[tuple[str, str, str], float] = defaultdict(float)
    buckets: dict[tuple[str, str], dict[float, float]] = defaultdict(
        lambda: defaultdict(float)
    )
    gauges: dict[str, dict[str, float]] = {
        QUEUE_DEPTH: defaultdict(float),
        CONSUMER_LAG: defaultdict(float),
        BACKLOG: defaultdict(float),
    }
    label_of = {QUEUE_DEPTH: "lane", CONSUMER_LAG: "topic", BACKLOG: "timer"}
    for family in families:
        for point in family.samples:
            labels = point.labels
            if point.name == DECISIONS + "_total":
                key = (labels["lane"], labels["channel"], labels["outcome"])
                counts[key] += point.value
            elif point.name == SEND_LATENCY + "_bucket":
                cell = buckets[(labels["lane"], labels["channel"])]
                cell[float(labels["le"])] += point.value
            elif point.name in gauges:
                gauges[point.name][labels[label_of[point.name]]] += point.value
    return Sample(
        at=at,
        counts=dict(counts),
        latency={key: tuple(sorted(cell.items())) for key, cell in buckets.items()},
        queue_depth=dict(gauges[QUEUE_DEPTH]),
        lag=dict(gauges[CONSUMER_LAG]),
        backlog=dict(gauges[BACKLOG]),
    )


def increase(before: float | None, after: float) -> float:
    """How much a counter grew from ``before`` to ``after``: a counter lower
    than before was reset (its process restarted) and counted from zero; one
    not there before started at zero."""
    if before is None or after < before:
        return after
    return after - before


def rate(before: float | None, after: float, seconds: float) -> float:
    """A counter's increase per second over ``seconds``."""
    if seconds <= 0:
        return 0.0
    return increase(before, after) / seconds


def bucket_increase(before: Buckets | None, after: Buckets) -> Buckets:
    """Each bucket's increase from ``before`` to ``after``; if any bucket went
    down the histogram was reset, and ``after`` is the whole increase."""
    if not before:
        return after
    earlier = dict(before)
    if any(count < earlier.get(bound, 0.0) for bound, count in after):
        return after
    return tuple((bound, count - earlier.get(bound, 0.0)) for bound, count in after)


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """The ``q``-quantile (0 to 1) of the observations counted in ``buckets``,
    as Prometheus estimates it: the bucket holding the rank, interpolated
    linearly between its bounds (from 0 for the first bucket); the highest
    finite bound if the rank falls in the +Inf bucket. None if the buckets
    hold nothing or lack +Inf."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"a quantile is between 0 and 1, not {q}")
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    index = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    if index == len(buckets) - 1:
        return buckets[-2][0]
    upper, count = buckets[index]
    if index == 0 and upper <= 0:
        return upper
    lower, below = (0.0, 0.0) if index == 0 else buckets[index - 1]
    inside = count - below
    if inside <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / inside


def latency_quantiles(
    samples: Sequence[Sample], key: tuple[str, str], window: float, slack: float
) -> Quantiles:
    """Send latency of ``key`` at each point (each sample but the first), over
    the ``window`` seconds before it: from the newest sample at least that old
    (``slack`` seconds of timer drift allowed), else the oldest one."""
    times = [sample.at for sample in samples]
    found: dict[str, list[float | None]] = {name: [] for name, _ in QUANTILES}
    for i in range(1, len(samples)):
        start = bisect_right(times, samples[i].at - window + slack) - 1
        base = samples[min(max(start, 0), i - 1)]
        after = samples[i].latency.get(key)
        observed = bucket_increase(base.latency.get(key), after) if after else ()
        for name, q in QUANTILES:
            value = histogram_quantile(q, observed)
            found[name].append(None if value is None else round(value, 6))
    return Quantiles(**found)


def gauge_series(
    samples: Sequence[Sample], gauge: Callable[[Sample], Mapping[str, float]]
) -> dict[str, list[float]]:
    """Name → its value at each point, for the gauge a sample gives with
    ``gauge`` (0 at a point where the worker did not report that name)."""
    names = sorted({name for sample in samples for name in gauge(sample)})
    return {
        name: [gauge(sample).get(name, 0.0) for sample in samples[1:]] for name in names
    }


def series(
    samples: Sequence[Sample],
    *,
    interval: float = SAMPLE_EVERY,
    window: float = WINDOW,
    latency_window: float = LATENCY_WINDOW,
) -> Series:
    """The dashboard's series from consecutive ``samples``: one point per
    sample but the first, which is the first interval's start."""
    traffic = []
    outcomes: dict[tuple[str, str], set[str]] = defaultdict(set)
    for sample in samples:
        for lane, channel, outcome in sample.counts:
            outcomes[(lane, channel)].add(outcome)
        for key in sample.latency:
            outcomes.setdefault(key, set())  # sends, perhaps nothing counted
    for key in sorted(outcomes):
        rates = {
            outcome: [
                round(
                    rate(
                        before.counts.get((*key, outcome)),
                        after.counts.get((*key, outcome), 0.0),
                        after.at - before.at,
                    ),
                    4,
                )
                for before, after in pairwise(samples)
            ]
            for outcome in sorted(outcomes[key])
        }
        last = samples[-1].counts
        traffic.append(
            Traffic(
                lane=key[0],
                channel=key[1],
                rates=rates,
                totals={o: int(last.get((*key, o), 0)) for o in sorted(outcomes[key])},
                latency=latency_quantiles(samples, key, latency_window, interval / 2),
            )
        )
    return Series(
        interval=interval,
        window=window,
        latency_window=latency_window,
        t=[round(sample.at, 3) for sample in samples[1:]],
        traffic=traffic,
        queue_depth=gauge_series(samples, lambda sample: sample.queue_depth),
        lag=gauge_series(samples, lambda sample: sample.lag),
        backlog=gauge_series(samples, lambda sample: sample.backlog),
    )


class Sampler:
    """The ring of samples of the last ``window`` seconds, and its series."""

    def __init__(
        self,
        interval: float = SAMPLE_EVERY,
        window: float = WINDOW,
        latency_window: float = LATENCY_WINDOW,
    ) -> None:
        self.interval = interval
        self.window = window
        self.latency_window = latency_window
        # Bounded by count too, should the timer ever fire faster.
        self.samples: deque[Sample] = deque(maxlen=2 * int(window / interval) + 2)
        #: The series made, and the newest sample they end at.
        self._series: tuple[Sample | None, Series] | None = None

    @property
    def sampled_at(self) -> float | None:
        """Unix time of the newest sample, None before the first."""
        return self.samples[-1].at if self.samples else None

    def add(self, sample: Sample) -> None:
        """Keep ``sample`` and drop those older than the window before it. A
        sample not newer than the last (the clock stepped back) starts anew."""
        if self.samples and sample.at <= self.samples[-1].at:
            self.samples.clear()
        self.samples.append(sample)
        while self.samples[0].at < sample.at - self.window:
            self.samples.popleft()

    def take(self, families: Iterable[Metric], at: float) -> None:
        """Sample ``families`` at unix time ``at``."""
        self.add(sample_of(families, at))

    def series(self) -> Series:
        """The series of the samples kept (made once per new sample)."""
        newest = self.samples[-1] if self.samples else None
        if self._series is None or self._series[0] is not newest:
            made = series(
                list(self.samples),
                interval=self.interval,
                window=self.window,
                latency_window=self.latency_window,
            )
            self._series = (newest, made)
        return self._series[1]


#: This worker's samples.
SAMPLER = Sampler()


def take_sample() -> None:
    """Sample this worker's metrics (not with NOTIFY_METRICS off)."""
    if app.settings.metrics:
        SAMPLER.take(metrics.REGISTRY.collect(), app.clock.now().timestamp())


@app.task
async def first_sample() -> None:
    """Sample the metrics as the worker starts, all counters at zero: the
    first interval's rates then count from the start."""
    take_sample()


@app.timer(SAMPLE_EVERY, name="dashboard.sample")
async def sample_metrics() -> None:
    """Sample this worker's metrics for the dashboard."""
    take_sample()


#: Dead letters listed newest first, and how long one read of the topic may take.
NEWEST_DEAD_LETTERS = 10
DEAD_LETTER_TIMEOUT = 5.0
#: A read this recent is answered again rather than read anew.
DEAD_LETTER_TTL = 2.0


def topic_offsets(
    bootstrap: str, topic: str, timeout: float
) -> dict[int, tuple[int, int]]:
    """Partition → (start, end) offsets of ``topic``; empty if it does not
    exist (no dead letter was ever written)."""
    consumer = Consumer(dlq.consumer_config(bootstrap))
    try:
        return {
            partition: consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout
            )
            for partition in dlq.partitions_of(consumer, topic, timeout)
        }
    except KafkaException as exc:
        raise dlq.DlqError(f"reading {topic}'s offsets: {exc}") from exc
    finally:
        consumer.close()


def entry_of(letter: dlq.DeadLetter) -> DeadLetterEntry:
    """A dead letter as the dashboard lists it."""
    return DeadLetterEntry(
        position=str(letter.position),
        time=letter.timestamp,
        stage=letter.stage,
        code=letter.code,
        reason=letter.reason,
        source=letter.source,
    )


class DeadLetterReader:
    """Reads the dead-letter topic's size and newest entries (blocking: run it
    in a thread, one read at a time); the tail is read again only when some
    partition's offsets moved."""

    def __init__(self, newest: int = NEWEST_DEAD_LETTERS) -> None:
        self.newest = newest
        self._offsets: dict[int, tuple[int, int]] | None = None
        self._entries: list[DeadLetterEntry] = []

    def read(self, bootstrap: str, topic: str, timeout: float) -> DeadLetters:
        """The records on ``topic`` and the newest ``newest`` of them."""
        offsets = topic_offsets(bootstrap, topic, timeout)
        if offsets != self._offsets:
            tail = {
                partition: (max(start, end - self.newest), end - 1)
                for partition, (start, end) in offsets.items()
                if end > start
            }
            letters = (
                dlq.read_entries(
                    bootstrap,
                    topic=topic,
                    ranges=tail,
                    timeout=timeout,
                    metadata_timeout=timeout,
                )
                if tail
                else []
            )
            # Oldest first across the partitions: the newest are at the end.
            newest = dlq.select(letters)[-self.newest :] if self.newest else []
            self._entries = [entry_of(letter) for letter in reversed(newest)]
            self._offsets = offsets
        size = sum(end - start for start, end in offsets.values())
        return DeadLetters(size=size, newest=list(self._entries))


class DeadLetterWatch:
    """The dead-letter topic as the dashboard shows it: read in a thread, at
    most once every ``ttl`` seconds whoever asks, answered within ``timeout``
    (with the last figures and the reason if the read takes longer or fails)."""

    def __init__(
        self,
        reader: DeadLetterReader,
        ttl: float = DEAD_LETTER_TTL,
        timeout: float = DEAD_LETTER_TIMEOUT,
    ) -> None:
        self.reader = reader
        self.ttl = ttl
        self.timeout = timeout
        self._last: DeadLetters | None = None
        self._read_at = -math.inf
        self._pending: asyncio.Future[DeadLetters] | None = None

    async def summary(self, bootstrap: str, topic: str) -> DeadLetters:
        """The topic's size and newest entries."""
        if self._last is not None and time.monotonic() - self._read_at < self.ttl:
            return self._last
        if self._pending is None:
            # The reader's own Kafka calls time out too, so the thread ends.
            self._pending = asyncio.ensure_future(
                asyncio.to_thread(self.reader.read, bootstrap, topic, self.timeout)
            )
        pending = self._pending
        try:
            found = await asyncio.wait_for(asyncio.shield(pending), self.timeout)
        except TimeoutError:
            return self._stale(f"{topic} was not read within {self.timeout:g} s")
        except dlq.DlqError as exc:
            log.warning("dashboard: %s", exc)
            found = self._stale(str(exc))
        finally:
            if pending.done() and self._pending is pending:
                self._pending = None
        self._last, self._read_at = found, time.monotonic()
        return found

    def _stale(self, error: str) -> DeadLetters:
        """The last figures, saying why they are not new."""
        last = self._last or DeadLetters()
        return last.model_copy(update={"error": error})


#: This worker's view of the dead-letter topic.
DEAD_LETTERS = DeadLetterWatch(DeadLetterReader())


async def dead_letters() -> DeadLetters:
    """The deployment's dead-letter topic, as the dashboard shows it."""
    settings = app.settings
    topic = topic_name(settings, DEADLETTER)
    return await DEAD_LETTERS.summary(settings.bootstrap_servers, topic)
