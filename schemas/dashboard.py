"""The answer of ``GET /v1/dashboard``: what the ``/dashboard`` page draws.

The series come from this worker's own metrics (`pipeline.dashboard`
samples them every few seconds); the breakers, the dead-letter topic and the
campaigns are read when the answer is made.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.campaigns import CampaignStatus
from schemas.records import Record


class Quantiles(Record):
    """Send latency (seconds) at each point of the series, over the latency
    window before it; null where nothing was sent in that window."""

    p50: list[float | None] = Field(default_factory=list)
    p95: list[float | None] = Field(default_factory=list)
    p99: list[float | None] = Field(default_factory=list)


class Traffic(Record):
    """One lane and channel: decisions a second at each point, by outcome,
    the decisions counted since the worker started, and the send latency."""

    lane: str
    #: Empty for decisions about a whole request (accepted, dead_lettered).
    channel: str
    #: Outcome (``sent``, ``failed``, ``suppressed``...) → per second, over
    #: the interval ending at each point.
    rates: dict[str, list[float]] = Field(default_factory=dict)
    #: Outcome → decisions counted by this worker since it started.
    totals: dict[str, int] = Field(default_factory=dict)
    latency: Quantiles = Field(default_factory=Quantiles)


class Series(Record):
    """This worker's figures over the last minutes, one point per sample."""

    #: Seconds between samples, seconds the series cover at most, and the
    #: window each latency quantile is estimated over.
    interval: float
    window: float
    latency_window: float
    #: Unix seconds of each point; every list below has one value per point.
    t: list[float] = Field(default_factory=list)
    traffic: list[Traffic] = Field(default_factory=list)
    #: Lane → records waiting in its work topics on this worker's partitions.
    queue_depth: dict[str, list[float]] = Field(default_factory=dict)
    #: Topic → records not yet committed by this worker's group (its partitions).
    lag: dict[str, list[float]] = Field(default_factory=dict)
    #: Timer → entries waiting in its table on this worker's partitions.
    backlog: dict[str, list[float]] = Field(default_factory=dict)


class Breaker(Record):
    """A provider's circuit breaker, as ``/health`` shows it."""

    name: str
    state: Literal["closed", "open", "half_open"]
    calls: int
    errors: int
    slow: int
    error_rate: float
    slow_rate: float
    half_open_in: float | None = None
    probes_in_flight: int
    times_opened: int


class DeadLetterEntry(Record):
    """One record of the dead-letter topic: where it is and why."""

    position: str
    time: datetime | None = None
    stage: str
    code: str
    reason: str
    source: str


class DeadLetters(Record):
    """The dead-letter topic: its records (from its offsets) and the newest."""

    #: Records on the topic (end minus start offset of every partition);
    #: null when the topic could not be read.
    size: int | None = None
    newest: list[DeadLetterEntry] = Field(default_factory=list)
    #: Why the topic could not be read (the figures are then the last read).
    error: str | None = None


class Dashboard(Record):
    """This worker's throughput, latency, lag, queues and schedule over the last
    minutes, its breakers, the dead-letter topic and every tenant's newest
    campaigns."""

    app_id: str
    lanes: list[str]
    generated_at: datetime
    #: Unix seconds of the newest sample (null before the first).
    sampled_at: float | None = None
    series: Series
    breakers: dict[str, Breaker] = Field(default_factory=dict)
    dead_letters: DeadLetters
    campaigns: list[CampaignStatus] = Field(default_factory=list)
