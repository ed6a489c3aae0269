"""The real chain as a contender: the project's worker drains preloaded requests.

The same N requests as the other contenders go onto ``notify.requests.critical``
(ingest routes promotional ones to the bulk lane); one real ``faust worker``
of ``pipeline.app`` runs ingest → fanout on both lanes (folding status as
they decide) plus the state agents, with the project's own settings and
RocksDB tables. The requests are keyed by user id, as kcat would produce
them, so each takes the ``notify.accepted`` hop. The window
runs from the first event the chain emits to the moment every request has all
of its decisions on ``notify.events`` (one ``accepted`` and one per channel).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import orjson
from confluent_kafka import Consumer

from benchmarks.workload import (
    Result,
    Sample,
    machine_busy_seconds,
    make_request,
    process_cpu_seconds,
)
from pipeline.topology import EVENTS, REQUESTS

#: The topology's names; a run under NOTIFY_TOPIC_PREFIX puts it before them.
REQUEST_TOPIC = REQUESTS["critical"].name
EVENTS_TOPIC = EVENTS.name


def expected_decisions(events: int, seed: int = 42) -> int:
    """Events the chain emits for the preload: one accepted and one per channel."""
    rng = random.Random(seed)  # the preload's own sequence
    total = 0
    for index in range(events):
        _, value = make_request(index, rng)
        total += 1 + len(orjson.loads(value)["channels"])
    return total


def sample(worker_pid: int, broker_pid: int | None) -> Sample:
    """The clocks, with the worker's CPU in place of this process's."""
    return Sample(
        wall=time.perf_counter(),
        cpu=process_cpu_seconds(worker_pid),
        broker_cpu=process_cpu_seconds(broker_pid) if broker_pid else 0.0,
        machine_cpu=machine_busy_seconds(),
    )


def measure(
    bootstrap: str,
    requests: int,
    worker_pid: int,
    broker_pid: int | None,
    timeout: float,
    alive: Callable[[], bool],
    events_topic: str = EVENTS_TOPIC,
) -> tuple[Result, int]:
    """Watch the events topic until every request is decided; the Result and count."""
    wanted = expected_decisions(requests)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-chain-watch",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 3000,
            "heartbeat.interval.ms": 500,
            "log_level": 3,
        }
    )
    consumer.subscribe([events_topic])
    start: Sample | None = None
    accepted = seen = 0
    deadline = time.monotonic() + timeout
    try:
        while seen < wanted or accepted < requests:
            if time.monotonic() > deadline or not alive():
                raise TimeoutError(
                    f"chain decided {accepted:,} of {requests:,} requests "
                    f"({seen:,} of {wanted:,} events) in time"
                )
            for message in consumer.consume(num_messages=1000, timeout=0.05):
                if message.error() is not None:
                    continue
                if start is None:
                    start = sample(worker_pid, broker_pid)
                seen += 1
                if b'"event_type":"accepted"' in (message.value() or b""):
                    accepted += 1
        end = sample(worker_pid, broker_pid)
    finally:
        consumer.close()
    assert start is not None
    return Result.between(start, end, requests, {"events_seen": seen}), accepted
