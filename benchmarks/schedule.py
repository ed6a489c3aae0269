"""Release lateness of the schedule: many items due within one minute, and
the critical lane's latency while they are released.

On a fresh embedded broker, with the emulators and one worker per lane (as
``docker-compose.yml`` deploys them):

1. N promotional in-app requests (100,000 by default, one per user, so no
   frequency cap takes any: seed 003 allows one promotional a minute) are
   produced with ``schedule_at`` spread evenly over one minute that starts
   ``--lead`` seconds later; the bulk worker decides each (``deferred``,
   ``scheduled``) and keeps it in its held table until due;
2. through that minute and until every item is decided again, critical
   email requests go in at a steady rate through the critical worker;
3. afterwards, ``notify.accepted.bulk`` says when the timer released each
   item (the record's broker timestamp against the due time in its key),
   and ``notify.events`` when fanout queued it again (the ``queued`` event's
   time against the due time): p50, p99 and max of both lateness figures, the
   release rate, and the critical requests' accepted→sent p50 and p99.

Floor, in the same run: the due times themselves (a release can be no
earlier); the figures are printed as seconds late. Bounded in count and time;
everything binds loopback and stops itself.

    python -m benchmarks.schedule [--items 100000] [--lead 150] [--critical 600]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer

from benchmarks.send import (
    Stack,
    critical_line,
    critical_requests,
    percentile,
    pipeline_topic,
    preload_profiles,
    send_all,
)
from pipeline.due import due_ms
from pipeline.ids import notification_id
from pipeline.topology import ACCEPTED, EVENTS, REQUESTS

MINUTE = 60.0


def scheduled_request(n: int, run: str, due: datetime) -> tuple[str, bytes, bytes]:
    """The n-th scheduled item: promotional, in-app, due at ``due``."""
    uid = f"s{n:06d}"
    body = {
        "idempotency_key": f"{run}-sched-{n}",
        "recipient": {"user_id": uid},
        "type": "comment_reply",
        "channels": ["in_app"],
        "priority": "promotional",
        "data": {"author": "Bob", "excerpt": f"item {n}"},
        "schedule_at": due.isoformat(),
    }
    return (
        pipeline_topic(REQUESTS["bulk"]),
        f"default/{uid}".encode(),
        orjson.dumps(body),
    )


def read_all(
    bootstrap: str, topic: str, wanted: int, keep: Any, timeout: float
) -> list[Any]:
    """Read ``topic`` from the start until ``wanted`` records pass ``keep``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-read-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    consumer.subscribe([topic])
    kept: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(kept) < wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(kept):,} of {wanted:,} records on {topic}")
            for message in consumer.consume(num_messages=5000, timeout=0.5):
                if message.error() is None:
                    value = keep(message)
                    if value is not None:
                        kept.append(value)
    finally:
        consumer.close()
    return kept


def summary(name: str, seconds: list[float]) -> str:
    """p50, p99 and max of a lateness list."""
    return (
        f"{name}: p50 {statistics.median(seconds) * 1000:,.0f} ms, "
        f"p99 {percentile(seconds, 0.99) * 1000:,.0f} ms, "
        f"max {max(seconds) * 1000:,.0f} ms"
    )


def measure(workdir: Path, items: int, lead: float, critical: int, rate: float) -> None:
    """Run the stack and print the figures."""
    run = f"{int(time.time()) % 100000:05d}"
    with Stack(workdir, "schedule") as stack:
        bootstrap = stack.broker.bootstrap
        users = [f"c{n:03d}" for n in range(50)]
        preload_profiles(bootstrap, users)
        stack.start_worker("bulk", NOTIFY_LANES="bulk")
        stack.start_worker("critical", NOTIFY_LANES="critical")
        start = datetime.now(UTC) + timedelta(seconds=lead)
        due_at = {
            n: start + timedelta(seconds=MINUTE * n / items) for n in range(items)
        }
        produced = send_all(
            bootstrap, (scheduled_request(n, run, due_at[n]) for n in range(items))
        )
        print(f"  {produced:,} items produced, due from {start:%H:%M:%S}")  # noqa: T201
        nids = {
            notification_id("default", f"{run}-sched-{n}", f"s{n:06d}", "bulk"): n
            for n in range(items)
        }

        def deferred(message: Any) -> float | None:
            event = orjson.loads(message.value())
            if event["event_type"] == "deferred" and event["notification_id"] in nids:
                return datetime.fromisoformat(event["ts"]).timestamp()
            return None

        decided = read_all(
            bootstrap, pipeline_topic(EVENTS), items, deferred, lead + MINUTE
        )
        spare = start.timestamp() - max(decided)
        print(  # noqa: T201
            f"  every item scheduled {spare:,.1f} s before the first was due"
            + ("" if spare > 0 else ": raise --lead, the figures below are late")
        )
        while time.time() < start.timestamp():
            time.sleep(0.05)
        critical_ms = critical_requests(
            stack, users, run, critical, rate, time.monotonic() + 600
        )

        def released(message: Any) -> float | None:
            accepted = orjson.loads(message.value())
            key = accepted.get("held_key")
            if accepted.get("notification_id") not in nids or not key:
                return None
            _, stamp = message.timestamp()
            return stamp / 1000 - due_ms(key) / 1000

        release_lateness = read_all(
            bootstrap, pipeline_topic(ACCEPTED["bulk"]), items, released, 600
        )

        def queued(message: Any) -> tuple[float, float] | None:
            event = orjson.loads(message.value())
            n = nids.get(event.get("notification_id", ""))
            if event["event_type"] != "queued" or n is None:
                return None
            at = datetime.fromisoformat(event["ts"]).timestamp()
            return at, at - due_at[n].timestamp()

        decided_again = read_all(bootstrap, pipeline_topic(EVENTS), items, queued, 600)
        queue_lateness = [late for _, late in decided_again]
        span = max(at for at, _ in decided_again) - start.timestamp()
        print(  # noqa: T201
            f"\n{items:,} items due within one minute:\n"
            f"  {summary('released (timer → notify.accepted)', release_lateness)}\n"
            f"  {summary('queued again by fanout', queue_lateness)}\n"
            f"  all decided {span:,.1f} s after the first was due: "
            f"{items / span:,.0f} items/s (due at {items / MINUTE:,.0f}/s)\n"
            + critical_line(critical_ms, rate)
        )


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and measure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument(
        "--lead", type=float, default=150.0, help="seconds to schedule them all"
    )
    parser.add_argument("--critical", type=int, default=600)
    parser.add_argument("--rate", type=float, default=10.0, help="critical req/s")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="notify-bench-") as tmp:
        measure(Path(tmp), args.items, args.lead, args.critical, args.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
