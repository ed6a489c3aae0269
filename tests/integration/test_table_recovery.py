"""A table survives SIGKILL plus a wiped local store, rebuilt exactly from its changelog."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import WorkerFactory
from tests.support import BrokerUnderTest, consumer_config, produce, unique, wait_for

pytestmark = pytest.mark.integration

EVENTS = 5_000
KEYS = 1_000
PARTITIONS = 4


def committed_total(broker: BrokerUnderTest, group: str, topic: str) -> int:
    """Sum of the group's committed offsets over the topic's partitions."""
    consumer = Consumer(consumer_config(broker.bootstrap, group))
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
    finally:
        consumer.close()


def test_table_recovers_exactly_after_sigkill_and_wiped_store(
    broker: BrokerUnderTest, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    """5,000 updates → SIGKILL → store wiped → a new worker holds the same table."""
    topic = unique("recovery-src")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS)])[topic].result(15)
    records = [(f"k{i % KEYS}".encode(), b"1") for i in range(EVENTS)]
    produce(broker.bootstrap, topic, records, **{"linger.ms": 5})
    expected = {f"k{i}": EVENTS // KEYS for i in range(KEYS)}

    app_id = unique("recovery")
    data_dir = tmp_path / "store"
    env = {
        "recovery_topic": topic,
        "notify_topic_partitions": str(PARTITIONS),
        # Many changelog records per batch: recovery must read the changelog to
        # its true end offset after batched produce, not one record a batch.
        "notify_producer_linger": "0.05",
    }
    first = start_worker(
        "tests.integration.recovery_app",
        app_id=app_id,
        data_dir=data_dir,
        name="first",
        **env,
    )
    first.wait_ready(timeout=90)
    wait_for(lambda: (first.get("/counts") or {}).get("total") == EVENTS, timeout=120)
    # Offsets are committed only after the producer flushed the changelog, so a
    # full commit means every table update is on the changelog.
    wait_for(lambda: committed_total(broker, app_id, topic) == EVENTS, timeout=60)
    first.kill()
    shutil.rmtree(data_dir)

    second = start_worker(
        "tests.integration.recovery_app",
        app_id=app_id,
        data_dir=data_dir,
        name="second",
        **env,
    )
    second.wait_ready(timeout=90)

    def recovered() -> dict[str, int] | None:
        second.assert_alive()
        body = second.get("/counts")
        return body["counts"] if body and body["total"] >= EVENTS else None

    try:
        table = wait_for(recovered, timeout=60)
    except AssertionError:
        body = second.get("/counts") or {}
        pytest.fail(
            f"table short after recovery: total {body.get('total')} of {EVENTS}\n"
            + second.log_tail()
        )
    assert table == expected
