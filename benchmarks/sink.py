"""The analytics path: the sink's rows/s end to end from the topic, a replay's
rows/s, both against a floor measured in the same run, and the funnel
query's latency on a large table.

On a fresh embedded broker and a fresh chDB store (in this process, as
``notify sink`` holds it):

1. N events like the stages write (default 1,000,000, ~350 bytes, several
   campaigns, every event type) are produced onto ``notify.events``;
2. the floor: a confluent-kafka loop consuming them in batches and decoding
   each (orjson), nothing inserted;
3. the columns alone: the same rows, already built, inserted through
   clickhouse-connect (what ClickHouse takes at most from this process);
4. the sink (``pipeline.analytics.sink.Sink``) from offset 0 until every
   row is inserted and committed: rows/s, and its ratio to the floor;
5. a replay of the whole range into ClickHouse (``notify replay --into
   clickhouse``'s own code): rows/s and its ratio to the floor, and the
   counts unchanged;
6. ``--funnel-rows`` more rows (default 10,000,000) inserted directly, then
   ``notify funnel``'s query and seed 001's query timed on the table.

    python -m benchmarks.sink [--events 1000000] [--funnel-rows 10000000]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
from confluent_kafka import Consumer

from benchmarks.send import send_all
from pipeline.admin import ensure_topics
from pipeline.analytics.funnel import funnel_sql
from pipeline.analytics.rows import Batch
from pipeline.analytics.sink import Sink
from pipeline.analytics.store import Reader, connect, insert_events, migrate
from pipeline.broker import EmbeddedBroker
from pipeline.replay import spans
from pipeline.replay_run import to_clickhouse
from pipeline.settings import Settings
from pipeline.topology import EVENTS, topic_name

KINDS = ("accepted", "queued", "sent", "delivered", "opened", "clicked", "suppressed")
CHANNELS = ("email", "push", "sms", "in_app")


def event(n: int, base_ms: int) -> dict[str, object]:
    """The n-th synthetic event."""
    kind = KINDS[n % len(KINDS)]
    return {
        "event_id": f"e_{n:012d}",
        "event_type": kind,
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((base_ms + n) / 1000))
        + f".{(base_ms + n) % 1000:03d}Z",
        "stage": "send.email",
        "notification_id": f"n_{n // 7:012d}",
        "tenant": "default",
        "user_id": f"u_{n % 50_000:06d}",
        "campaign_id": str(1000 + n % 20),
        "type": "campaign",
        "priority": "promotional",
        "lane": "bulk",
        "channel": None if kind == "accepted" else CHANNELS[n % 4],
        "provider": "sendgrid",
        "template": "campaign.email",
        "variant": "AB"[n % 2],
        "locale": "en",
        "reason": None,
        "attempt": 1,
    }


def events(count: int, topic: str) -> Iterator[tuple[str, bytes, bytes]]:
    """(topic, key, value) of ``count`` events."""
    base = int(time.time() * 1000) - count
    for n in range(count):
        value = event(n, base)
        yield topic, str(value["notification_id"]).encode(), orjson.dumps(value)


def floor(settings: Settings, topic: str, count: int) -> float:
    """Consume and decode every event: rows/s."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"floor-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    started = None
    while seen < count:
        messages = consumer.consume(num_messages=10_000, timeout=1.0)
        if messages and started is None:
            started = time.perf_counter()
        for message in messages:
            if message.error() is None:
                orjson.loads(message.value() or b"")
                seen += 1
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return count / elapsed


def columns_alone(client: object, count: int) -> float:
    """Insert pre-built columns of ``count`` rows: rows/s."""
    batches = []
    base = int(time.time() * 1000)
    for start in range(0, count, 10_000):
        batch = Batch()
        for n in range(start, min(count, start + 10_000)):
            batch.add(0, n, None, orjson.dumps(event(10**9 + n, base)))
        batches.append(batch)
    started = time.perf_counter()
    for batch in batches:
        insert_events(client, batch.in_order(), batch.token("columns"))  # type: ignore[arg-type]
    return count / (time.perf_counter() - started)


def sink_rate(settings: Settings, client: object, count: int) -> float:
    """The sink from offset 0 until ``count`` rows are in: rows/s."""
    sink = Sink(settings, client, group=f"bench-sink-{time.time_ns()}")  # type: ignore[arg-type]
    thread = threading.Thread(target=sink.run, daemon=True)
    started = time.perf_counter()
    thread.start()
    while sink.stats.rows < count:
        if not thread.is_alive():
            raise RuntimeError(f"the sink stopped at {sink.stats.rows} rows")
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    sink.stop()
    thread.join(60)
    return count / elapsed


def replay_rate(
    settings: Settings, client: object, topic: str, count: int, workdir: Path
) -> float:
    """Replay every event into ClickHouse: rows/s."""
    from pipeline.replay import Checkpoint, Progress, consumer_for

    consumer = consumer_for(settings)
    ranges = spans(consumer, topic, None, None)
    consumer.close()
    checkpoint = Checkpoint(workdir / "replay.json", ranges)
    progress = Progress(sum(s.size for s in ranges), lambda _line: None)
    started = time.perf_counter()
    to_clickhouse(settings, topic, ranges, checkpoint, progress, client)  # type: ignore[arg-type]
    return count / (time.perf_counter() - started)


def timed(reader: Reader, sql: str, runs: int = 3) -> float:
    """The fastest of ``runs`` answers, in seconds."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        reader.query(sql, "JSON")
        best = min(best, time.perf_counter() - started)
    return best


def fill(client: object, rows: int) -> None:
    """``rows`` more synthetic events, inserted directly in large blocks."""
    rng = random.Random(7)  # noqa: S311 - synthetic data
    base = int(time.time() * 1000) - rows
    block = 500_000
    for start in range(0, rows, block):
        size = min(block, rows - start)
        ids = range(start, start + size)
        columns = {
            "event_id": [f"f_{n:012d}" for n in ids],
            "notification_id": [f"n_f{n // 5:011d}" for n in ids],
            "tenant": ["default"] * size,
            "user_id": [f"u_{rng.randrange(1_000_000):07d}" for _ in ids],
            "campaign_id": [str(1000 + n % 50) for n in ids],
            "type": ["campaign"] * size,
            "priority": ["promotional"] * size,
            "lane": ["bulk"] * size,
            "channel": [CHANNELS[n % 4] for n in ids],
            "provider": ["sendgrid"] * size,
            "event_type": [KINDS[1 + n % 6] for n in ids],
            "stage": ["send"] * size,
            "template": ["campaign.email"] * size,
            "variant": ["AB"[n % 2] for n in ids],
            "locale": ["en"] * size,
            "reason": [""] * size,
            "error": [""] * size,
            "attempt": [1] * size,
            "digest": [""] * size,
            "until": [None] * size,
            "ts": [base + n for n in ids],
            "kafka_partition": [0] * size,
            "kafka_offset": list(ids),
        }
        from pipeline.analytics.store import COLUMNS

        insert_events(
            client,  # type: ignore[arg-type]
            [columns[name] for name in COLUMNS],
            f"fill-{start}",
        )


def main(argv: list[str] | None = None) -> int:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--funnel-rows", type=int, default=10_000_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="notify-bench-sink-") as tmp:
        workdir = Path(tmp)
        with EmbeddedBroker(
            data_dir=workdir / "broker", log_path=workdir / "broker.log"
        ) as broker:
            settings = Settings(broker_url=broker.url, data_dir=workdir / "data")
            ensure_topics(settings)
            topic = topic_name(settings, EVENTS)
            produced = send_all(broker.bootstrap, events(args.events, topic))
            client = connect(settings)
            migrate(client)
            reader = Reader.open(settings)
            raw = floor(settings, topic, produced)
            alone = columns_alone(client, 200_000)
            sunk = sink_rate(settings, client, produced)
            count_sql = "SELECT count() AS n FROM notif_events"
            before = reader.query(count_sql, "JSON")
            print(  # noqa: T201
                f"\n{produced:,} events on notify.events "
                f"({settings.topic_partitions} partitions):\n"
                f"  floor (consume + decode)      {raw:>10,.0f} rows/s\n"
                f"  columns alone (insert)        {alone:>10,.0f} rows/s\n"
                f"  sink, end to end              {sunk:>10,.0f} rows/s  "
                f"{sunk / raw:.2f}x the floor (target 150,000 rows/s)",
                flush=True,
            )
            replayed = replay_rate(settings, client, topic, produced, workdir)
            after = reader.query(count_sql, "JSON")
            same = orjson.loads(before)["data"] == orjson.loads(after)["data"]
            print(  # noqa: T201
                f"  replay into ClickHouse        {replayed:>10,.0f} rows/s  "
                f"{replayed / raw:.2f}x the floor (target 0.8x); counts unchanged: {same}",
                flush=True,
            )
            if args.funnel_rows:
                started = time.perf_counter()
                fill(client, args.funnel_rows)
                filled = time.perf_counter() - started
                total = orjson.loads(reader.query(count_sql, "JSON"))["data"][0]["n"]
                funnel = timed(reader, funnel_sql("default", "1007", "52w", "variant"))
                seed = timed(
                    reader,
                    "SELECT channel, countIf(event_type = 'sent') AS sent, "
                    "countIf(event_type = 'delivered') AS delivered, "
                    "countIf(event_type = 'opened') AS opened, "
                    "round(countIf(event_type='opened') * 100.0 / "
                    "nullIf(countIf(event_type='delivered'), 0), 2) AS open_rate_pct "
                    "FROM notif_events WHERE campaign_id = '1007' "
                    "AND ts >= now() - INTERVAL 7 DAY GROUP BY channel",
                )
                print(  # noqa: T201
                    f"  {args.funnel_rows:,} rows filled in {filled:.1f} s; table now "
                    f"{int(total):,} rows\n"
                    f"  notify funnel's query (one campaign, by variant)  {funnel * 1000:,.0f} ms\n"
                    f"  seed 001's query (one campaign, 7 days)           {seed * 1000:,.0f} ms"
                )
            reader.close()
            client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
