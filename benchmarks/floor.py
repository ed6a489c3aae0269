"""The floor: a hand-written confluent-kafka consume → transform → produce loop.

Run by the runner as ``python -m benchmarks.floor`` with a ``PhaseSpec`` in its
environment; it writes a ``Result`` and exits.
"""

from __future__ import annotations

import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from benchmarks.kafka import produce
from benchmarks.workload import PhaseSpec, Progress, Result, Sample, process

#: Messages per ``consume()`` call: librdkafka prefetches far more than this.
BATCH = 1000


def run(spec: PhaseSpec) -> Result:
    """Relay every input event through ``process`` to the output topic."""
    consumer = Consumer(
        {
            "bootstrap.servers": spec.bootstrap,
            "group.id": f"bench-{spec.name}",
            "auto.offset.reset": "earliest",
            # At-least-once as a hand-written loop does it: offsets are stored
            # after the batch is produced and committed every second (Faust's
            # broker_commit_interval in the dev profile).
            "enable.auto.offset.store": False,
            "auto.commit.interval.ms": 1000,
            "session.timeout.ms": 3000,
            "heartbeat.interval.ms": 500,
            "log_level": 3,
        }
    )
    producer = Producer(
        {"bootstrap.servers": spec.bootstrap, "linger.ms": 5, "log_level": 3}
    )
    failures: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(error)

    relay = spec.shape == "relay"
    progress = Progress(spec.last_offsets)
    start: Sample | None = None
    deadline = time.monotonic() + spec.timeout
    consumer.subscribe([spec.input_topic])
    try:
        done = False
        while not done:
            if time.monotonic() > deadline:
                raise TimeoutError(f"floor read {progress.events} events in time")
            messages = consumer.consume(num_messages=BATCH, timeout=0.5)
            if not messages:
                continue
            if start is None:
                start = Sample.now(spec.broker_pid)
            ends: dict[int, int] = {}
            for message in messages:
                error = message.error()
                if error is not None:
                    raise RuntimeError(f"consume failed: {error}")
                raw = message.value() or b""
                key, value = (message.key(), raw) if relay else process(raw)
                produce(producer, spec.output_topic, key, value, on_delivery)
                partition, offset = message.partition(), message.offset()
                assert partition is not None and offset is not None  # fetched
                ends[partition] = offset
                done = progress.saw(partition, offset)
            producer.poll(0)
            consumer.store_offsets(
                offsets=[
                    TopicPartition(spec.input_topic, p, o + 1) for p, o in ends.items()
                ]
            )
        remaining = producer.flush(30)
        if remaining or failures:
            raise RuntimeError(f"{remaining} undelivered, failures: {failures[:3]}")
        assert start is not None
        end = Sample.now(spec.broker_pid)
    finally:
        consumer.close()
    return Result.between(start, end, progress.events, {"client": "confluent-kafka"})


def main() -> None:
    """Run the phase named in the environment and write its result."""
    spec = PhaseSpec.from_env()
    run(spec).write(Path(spec.result_path))


if __name__ == "__main__":
    main()
