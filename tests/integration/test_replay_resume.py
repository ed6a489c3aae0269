"""`notify replay`, killed mid-way and run again, resumes where its checkpoint
says and leaves nothing of the range out."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.replay import CHUNK
from tests.support import BIN, BrokerUnderTest, Topics, produce, unique

pytestmark = pytest.mark.integration

#: Records on the range: enough for several chunks per partition, so the
#: kill lands mid-way.
RECORDS = 120_000


def end_offsets(bootstrap: str, topic: str, partitions: int) -> list[int]:
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("ends")})
    try:
        return [
            reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        ]
    finally:
        reader.close()


def values_after(
    bootstrap: str, topic: str, starts: list[int], ends: list[int]
) -> list[bytes]:
    """The values between ``starts`` and ``ends`` of each partition."""
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("replayed"),
            "enable.auto.commit": False,
        }
    )
    reader.assign([TopicPartition(topic, p, start) for p, start in enumerate(starts)])
    wanted = sum(end - start for start, end in zip(starts, ends, strict=True))
    values: list[bytes] = []
    deadline = time.monotonic() + 120
    try:
        while len(values) < wanted and time.monotonic() < deadline:
            for message in reader.consume(5_000, timeout=1):
                partition, offset = message.partition(), message.offset()
                value = message.value()
                if message.error() is None and value is not None:
                    if partition is not None and offset is not None:
                        if offset < ends[partition]:
                            values.append(value)
    finally:
        reader.close()
    return values


def test_a_killed_replay_resumes_and_misses_nothing(
    broker: BrokerUnderTest, topics: Topics, tmp_path: Path
) -> None:
    topics.create(broker.url)
    topic = topics("notify.requests.bulk")
    bodies = [orjson.dumps({"n": n, "pad": "x" * 40}) for n in range(RECORDS)]
    produce(
        broker.bootstrap,
        topic,
        [(f"u{n % 501}".encode(), body) for n, body in enumerate(bodies)],
        **{"linger.ms": 50, "queue.buffering.max.messages": 2 * RECORDS},
    )
    metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(
        topic, timeout=10
    )
    partitions = len(metadata.topics[topic].partitions)
    before = end_offsets(broker.bootstrap, topic, partitions)
    assert sum(before) == RECORDS
    env = {
        "PATH": str(BIN),
        "NOTIFY_BROKER_URL": broker.url,
        "NOTIFY_TOPIC_PREFIX": topics.prefix,
        "NOTIFY_DATA_DIR": str(tmp_path),
    }
    command = [
        str(BIN / "notify"),
        "replay",
        "--topic",
        "notify.requests.bulk",
        "--from",
        "0",
        "--into",
        "pipeline",
    ]
    checkpoints = tmp_path / "replay"
    first = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    done = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        for path in checkpoints.glob("*.json"):
            try:
                done = sum(
                    offset
                    for offset in orjson.loads(path.read_bytes())["done"].values()
                )
            except (OSError, orjson.JSONDecodeError):
                continue
        if CHUNK <= done <= RECORDS - 2 * CHUNK:
            os.kill(first.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL, (
        done,
        first.stdout and first.stdout.read(),
    )
    halfway = end_offsets(broker.bootstrap, topic, partitions)
    assert RECORDS < sum(halfway) < 2 * RECORDS  # part of the range went again

    second = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming replay" in second.stdout, second.stdout
    assert not list(checkpoints.glob("*.json"))  # finished: forgotten
    after = end_offsets(broker.bootstrap, topic, partitions)
    replayed = values_after(broker.bootstrap, topic, before, after)
    # Every record of the range was produced again; at most the chunk in
    # flight on each partition when the first run died went twice.
    assert set(replayed) == set(bodies)
    assert RECORDS <= len(replayed) <= RECORDS + partitions * CHUNK
