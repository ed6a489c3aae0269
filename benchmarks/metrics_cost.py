"""What the Prometheus metrics cost the chain: throughput with them on and off.

Runs `benchmarks.send`'s whole-chain measurement (one worker, ingest →
fanout → send, emulators answering at once) in rounds that alternate
``NOTIFY_METRICS=true`` and ``false``, and prints each run, the medians and
their ratio (target: metrics on within 5 % of off). Run-to-run noise on a
shared machine is about ±10 %, so the run also times the counting itself in
this process (the calls a notification makes: three counted events and one
latency observation, plus a scrape's share at one scrape per 15 s) and
prints it as a share of the chain's CPU per notification: the figure that
does not drown in the noise.

    python -m benchmarks.metrics_cost [--requests 10000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from benchmarks.send import chain_throughput
from pipeline import metrics
from schemas.records import NotificationEvent

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
#: Scrapes per second a worker answers (Prometheus's default 15 s interval).
SCRAPES_PER_SECOND = 1 / 15


def counting_cost(rounds: int = 50_000) -> float:
    """µs of CPU the metrics calls of one notification cost in this process."""
    metrics.enable(True)
    events = [
        NotificationEvent(
            event_id="e",
            event_type=kind,
            ts=NOW,
            stage="s",
            lane="critical",
            channel="email",
            provider=provider,
        )  # fmt: skip
        for kind, provider in (
            ("accepted", None),
            ("queued", None),
            ("sent", "sendgrid"),
        )
    ]
    job = SimpleNamespace(
        lane="critical",
        priority="transactional",
        channel="email",
        created_at=NOW,
        ready_at=NOW - timedelta(milliseconds=40),
    )
    start = time.process_time()
    for _ in range(rounds):
        for event in events:
            metrics.count(event)
        metrics.sent(job, NOW)  # type: ignore[arg-type]
    return (time.process_time() - start) / rounds * 1e6


def scrape_cost(rounds: int = 200) -> float:
    """µs of CPU one exposition of the counters costs (no app collector)."""
    start = time.process_time()
    for _ in range(rounds):
        metrics.exposition()
    return (time.process_time() - start) / rounds * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    runs: dict[str, list[tuple[float, float]]] = {"true": [], "false": []}
    with tempfile.TemporaryDirectory(prefix="metrics-cost-") as tmp:
        for n in range(args.rounds):
            for on in ("true", "false") if n % 2 == 0 else ("false", "true"):
                rate, cpu = chain_throughput(
                    Path(tmp) / f"{on}{n}",
                    args.requests,
                    args.timeout,
                    worker_env={"NOTIFY_METRICS": on},
                )
                runs[on].append((rate, cpu))
                print(  # noqa: T201
                    f"  metrics {'on ' if on == 'true' else 'off'}: "
                    f"{rate:,.0f} notifications/s, {cpu:,.0f} µs of worker CPU each"
                )
    on_rate = statistics.median(r for r, _ in runs["true"])
    off_rate = statistics.median(r for r, _ in runs["false"])
    on_cpu = statistics.median(c for _, c in runs["true"])
    off_cpu = statistics.median(c for _, c in runs["false"])
    counted = counting_cost()
    scrape = scrape_cost()
    per_notification = counted + scrape * SCRAPES_PER_SECOND / max(on_rate, 1.0)
    print(  # noqa: T201
        f"whole chain, median of {args.rounds}: metrics on {on_rate:,.0f}/s "
        f"({on_cpu:,.0f} µs), off {off_rate:,.0f}/s ({off_cpu:,.0f} µs): "
        f"on = {on_rate / off_rate:.3f}x off (target ≥ 0.95x)\n"
        f"counting per notification: {counted:.1f} µs "
        f"(+ a scrape, {scrape:,.0f} µs every 15 s) = "
        f"{per_notification / off_cpu:.2%} of the chain's CPU per notification"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
