"""Broker-side helpers of the runner: topics, the preload, counting output records."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks.workload import make_request

#: The project's topic_partitions in the dev profile.
PARTITIONS = 4


def create_topics(bootstrap: str, *names: str) -> None:
    """Create ``names`` with ``PARTITIONS`` partitions each, and wait for them."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    futures = admin.create_topics(
        [NewTopic(name, PARTITIONS, 1) for name in names], operation_timeout=10
    )
    for future in futures.values():
        future.result(timeout=15)


def preload(
    bootstrap: str, topic: str, events: int, seed: int = 42
) -> tuple[dict[int, int], float]:
    """Produce ``events`` requests keyed by user id.

    Returns each partition's last offset (from the produce acks, which the dev
    broker gets right) and the average value size in bytes.
    """
    rng = random.Random(seed)
    last = dict.fromkeys(range(PARTITIONS), -1)
    errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            errors.append(error)
            return
        partition, offset = message.partition(), message.offset()
        assert partition is not None and offset is not None  # set on every ack
        last[partition] = max(last[partition], offset)

    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "log_level": 3}
    )
    size = 0
    for index in range(events):
        key, value = make_request(index, rng)
        size += len(value)
        produce(producer, topic, key, value, on_delivery)
        producer.poll(0)
    if producer.flush(60) or errors:
        raise RuntimeError(f"preload failed: {errors[:3]}")
    return last, size / max(events, 1)


def produce(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes,
    on_delivery: Callable[[KafkaError | None, Message], None],
) -> None:
    """Produce one record, serving delivery reports while the local queue is full."""
    while True:
        try:
            producer.produce(topic, value, key, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)


def count_records(bootstrap: str, topic: str, timeout: float = 60.0) -> int:
    """Records in ``topic``, read to the end of each partition.

    Reading, rather than end offsets, counts records, not offsets: a
    transaction marker or a compacted gap would not be a record.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-counter",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "log_level": 3,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = list(metadata.topics[topic].partitions)
        consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        )
        count, at_end = 0, set[int | None]()
        deadline = time.monotonic() + timeout
        while len(at_end) < len(partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"counted {count} records of {topic} in time")
            for message in consumer.consume(num_messages=10_000, timeout=0.5):
                error = message.error()
                if error is None:
                    count += 1
                elif error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())
                else:
                    raise RuntimeError(f"counting {topic}: {error}")
        return count
    finally:
        consumer.close()
