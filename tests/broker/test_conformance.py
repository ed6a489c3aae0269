"""Conformance: exactly the broker behaviours notify-pipeline relies on.

Runs against the embedded broker, or any broker named by NOTIFY_TEST_BROKER_URL
(e.g. Apache Kafka before a production upgrade). A behaviour the broker is
declared to get wrong (NOTIFY_BROKER_DEFECTS) is a strict expected failure: if
the broker starts getting it right, the run says so and the declaration goes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AioTP
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from pipeline.settings import Settings
from tests.support import BrokerUnderTest, consumer_config, produce, unique

pytestmark = pytest.mark.broker

END_OFFSETS_DEFECT = "list_offsets_latest"
FETCH_LONG_POLL_DEFECT = "fetch_long_poll"
#: The dev profile's group timings, as every worker of the suite uses them.
DEV = Settings()


def known_defect(
    request: pytest.FixtureRequest, broker: BrokerUnderTest, defect: str, why: str
) -> None:
    """Mark the running test a strict expected failure if ``defect`` is declared."""
    if defect in broker.defects:
        request.applymarker(
            pytest.mark.xfail(
                strict=True, reason=f"known broker defect {defect}: {why}"
            )
        )


def create_topic(broker: BrokerUnderTest, partitions: int = 1, **configs: str) -> str:
    """Create a fresh topic and wait until its metadata shows every partition."""
    name = unique("conf")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(
                name, num_partitions=partitions, replication_factor=1, config=configs
            )
        ]
    )
    futures[name].result(15)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        topic = admin.list_topics(name, timeout=5).topics.get(name)
        if (
            topic is not None
            and topic.error is None
            and len(topic.partitions) == partitions
        ):
            return name
        time.sleep(0.05)
    raise AssertionError(f"topic {name} never showed {partitions} partitions")


def produce_batches(broker: BrokerUnderTest, topic: str, sizes: list[int]) -> int:
    """Produce batches of the given sizes to partition 0; return the record count."""
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "linger.ms": 50,
            "batch.num.messages": 1000,
        }
    )
    sent = 0
    for size in sizes:
        for _ in range(size):
            producer.produce(topic, value=b"x" * 100, partition=0)
            sent += 1
        assert producer.flush(15) == 0
    return sent


def list_offsets_latest(broker: BrokerUnderTest, topic: str) -> int:
    """The broker's ListOffsets(latest) answer for partition 0."""
    consumer = Consumer(consumer_config(broker.bootstrap, unique("lo")))
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return int(high)
    finally:
        consumer.close()


def fetch_high_watermark(broker: BrokerUnderTest, topic: str) -> int:
    """The high watermark a Fetch response carries for partition 0."""
    consumer = Consumer(consumer_config(broker.bootstrap, unique("hw")))
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if consumer.poll(0.2) is not None:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, 0), cached=True
                )
                if high >= 0:
                    return int(high)
        raise AssertionError("no fetch response")
    finally:
        consumer.close()


def test_produce_fetch_keeps_order_and_offsets_per_partition(
    broker: BrokerUnderTest,
) -> None:
    """Each partition returns its records in produce order at the acked offsets."""
    topic = create_topic(broker, partitions=4)
    records = [(f"user-{i % 37}".encode(), str(i).encode()) for i in range(2000)]
    reports = produce(broker.bootstrap, topic, records, **{"linger.ms": 5})
    acked: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    for report in reports:
        acked[report.partition()].append((report.offset(), report.value()))

    consumer = Consumer(consumer_config(broker.bootstrap, unique("order")))
    consumer.subscribe([topic])
    fetched: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    deadline = time.monotonic() + 30
    while (
        sum(map(len, fetched.values())) < len(records) and time.monotonic() < deadline
    ):
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            fetched[message.partition()].append((message.offset(), message.value()))
    consumer.close()

    assert sum(map(len, fetched.values())) == len(records)
    for partition, got in fetched.items():
        assert [offset for offset, _ in got] == list(range(len(got)))
        assert got == sorted(acked[partition])
        sent_order = [v for k, v in records if v in {value for _, value in got}]
        assert [value for _, value in got] == sent_order


def test_list_offsets_latest_after_confluent_batches(
    request: pytest.FixtureRequest, broker: BrokerUnderTest
) -> None:
    """ListOffsets(latest) after batches of 10, 5 and 7 records is 22."""
    known_defect(
        request, broker, END_OFFSETS_DEFECT, "answers 16: last batch start + 1"
    )
    topic = create_topic(broker)
    sent = produce_batches(broker, topic, [10, 5, 7])
    assert list_offsets_latest(broker, topic) == sent


async def aiokafka_produce(broker: BrokerUnderTest, topic: str, count: int) -> None:
    """Send ``count`` records to partition 0 the way Faust's producer does."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, b"y" * 100, partition=0) for _ in range(count)
        ]
        for future in futures:
            await future
    finally:
        await producer.stop()


async def test_end_offsets_after_aiokafka_batches(
    request: pytest.FixtureRequest, broker: BrokerUnderTest
) -> None:
    """aiokafka's end_offsets (Faust's table recovery target) after 500 sends."""
    known_defect(
        request, broker, END_OFFSETS_DEFECT, "answers the last batch start + 1"
    )
    topic = create_topic(broker)
    await aiokafka_produce(broker, topic, 500)
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
    await consumer.start()
    try:
        offsets = await consumer.end_offsets([AioTP(topic, 0)])
    finally:
        await consumer.stop()
    assert offsets[AioTP(topic, 0)] == 500


def test_fetch_high_watermark_is_right_after_batches(broker: BrokerUnderTest) -> None:
    """A Fetch response's high watermark is the true end, as ListOffsets says."""
    topic = create_topic(broker)
    sent = produce_batches(broker, topic, [10, 5, 7])
    assert fetch_high_watermark(broker, topic) == sent


def test_a_long_poll_fetch_returns_when_a_record_arrives(
    request: pytest.FixtureRequest, broker: BrokerUnderTest
) -> None:
    """A consumer long-polling with a 3 s max wait gets a new record at once.

    Each probe produces while the consumer's fetch is parked; the median of
    three deliveries must be well under the wait (Kafka answers a parked
    fetch as soon as min bytes arrive).
    """
    known_defect(
        request,
        broker,
        FETCH_LONG_POLL_DEFECT,
        "a parked fetch waits out its max wait whatever arrives",
    )
    topic = create_topic(broker)
    consumer = Consumer(
        consumer_config(broker.bootstrap, unique("poll"), **{"fetch.wait.max.ms": 3000})
    )
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    try:
        consumer.subscribe([topic])
        producer.produce(topic, b"warm-up")
        producer.flush(10)
        deadline = time.monotonic() + 30
        while consumer.poll(0.5) is None:
            assert time.monotonic() < deadline, "no warm-up record"
        delays = []
        for _ in range(3):
            consumer.poll(0.3)  # let the next fetch park on the broker
            started = time.monotonic()
            producer.produce(topic, b"probe")
            producer.flush(10)
            while consumer.poll(0.05) is None:
                assert time.monotonic() - started < 10, "probe never arrived"
            delays.append(time.monotonic() - started)
    finally:
        consumer.close()
    assert sorted(delays)[1] < 1.0, delays


def test_committed_offset_survives_consumer_restart(broker: BrokerUnderTest) -> None:
    """A group resumes from its committed offset after its consumer restarts."""
    topic = create_topic(broker)
    produce(broker.bootstrap, topic, [(None, str(i).encode()) for i in range(100)])
    group = unique("commit")

    first = Consumer(consumer_config(broker.bootstrap, group))
    first.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + 30
    while seen < 40 and time.monotonic() < deadline:
        message = first.poll(0.2)
        if message is not None and message.error() is None:
            seen += 1
            if seen == 40:
                first.commit(message=message, asynchronous=False)
    first.close()
    assert seen == 40

    second = Consumer(consumer_config(broker.bootstrap, group))
    committed = second.committed([TopicPartition(topic, 0)], timeout=10)
    assert committed[0].offset == 40
    second.subscribe([topic])
    deadline = time.monotonic() + 30
    message = None
    while message is None and time.monotonic() < deadline:
        polled = second.poll(0.2)
        if polled is not None and polled.error() is None:
            message = polled
    second.close()
    assert message is not None
    assert (message.offset(), message.value()) == (40, b"40")


async def join_seconds(broker: BrokerUnderTest, topic: str, group: str) -> float:
    """Seconds an aiokafka consumer (Faust's client) takes to get an assignment."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        session_timeout_ms=int(DEV.broker_session_timeout * 1000),
        heartbeat_interval_ms=int(DEV.broker_heartbeat_interval * 1000),
        enable_auto_commit=False,
    )
    started = time.monotonic()
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
            assert time.monotonic() - started < 30, "no assignment within 30 s"
        return time.monotonic() - started
    finally:
        await consumer.stop()


async def test_group_join_and_rejoin_with_dev_timeouts(
    broker: BrokerUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the dev profile's timings a group forms, and re-forms, promptly.

    The embedded broker's ``group.initial.rebalance.delay.ms=0`` lets a lone
    member's first rebalance finish at once; a clean stop leaves the group, so
    the next member does not wait for a session to expire.
    """
    topic = create_topic(broker, partitions=2)
    group = unique("join")
    first = await join_seconds(broker, topic, group)
    second = await join_seconds(broker, topic, group)
    with capsys.disabled():
        print(  # noqa: T201
            f"\n  dev profile: session {DEV.broker_session_timeout:g} s, heartbeat "
            f"{DEV.broker_heartbeat_interval:g} s; group join {first:.2f} s, "
            f"rejoin {second:.2f} s"
        )
    # Bounds generous enough for a loaded CI machine, far below Faust's defaults.
    assert first < 15
    assert second < 15


MEMBER = """
import asyncio, sys
from aiokafka import AIOKafkaConsumer

async def main(bootstrap, topic, group, session_ms, heartbeat_ms):
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group,
        session_timeout_ms=int(session_ms), heartbeat_interval_ms=int(heartbeat_ms),
        enable_auto_commit=False,
    )
    await consumer.start()
    announced = False
    while True:
        await consumer.getmany(timeout_ms=100)
        if consumer.assignment() and not announced:
            print("assigned", flush=True)
            announced = True

asyncio.run(main(*sys.argv[1:]))
"""


async def test_partitions_of_a_killed_member_move_within_seconds(
    broker: BrokerUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    """A SIGKILLed member's partitions reach the survivor after its session ends.

    The dev profile's session timeout is what a SIGKILLed worker costs: the
    broker only notices the member is gone when its heartbeats stop for that
    long (the embedded broker's ``group.min.session.timeout.ms`` allows it).
    """
    topic = create_topic(broker, partitions=4)
    group = unique("failover")
    session_ms = str(int(DEV.broker_session_timeout * 1000))
    heartbeat_ms = str(int(DEV.broker_heartbeat_interval * 1000))
    member = subprocess.Popen(
        [
            sys.executable,
            "-c",
            MEMBER,
            broker.bootstrap,
            topic,
            group,
            session_ms,
            heartbeat_ms,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    survivor = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        session_timeout_ms=int(session_ms),
        heartbeat_interval_ms=int(heartbeat_ms),
        enable_auto_commit=False,
    )
    try:
        assert member.stdout is not None
        assert member.stdout.readline().strip() == "assigned"
        await survivor.start()
        deadline = time.monotonic() + 60
        while len(survivor.assignment()) not in range(1, 4):
            await survivor.getmany(timeout_ms=100)
            assert time.monotonic() < deadline, "the group never shared partitions"
        member.kill()
        member.wait(10)
        killed = time.monotonic()
        while len(survivor.assignment()) < 4:
            await survivor.getmany(timeout_ms=100)
            assert time.monotonic() - killed < 60, "partitions never moved"
        moved = time.monotonic() - killed
    finally:
        member.kill()
        member.wait(10)
        await survivor.stop()
    with capsys.disabled():
        print(  # noqa: T201
            f"\n  a SIGKILLed member's partitions moved in {moved:.2f} s "
            f"(session {DEV.broker_session_timeout:g} s)"
        )
    # Generous for a loaded machine; far below Faust's default 60 s session.
    assert moved < 30


def test_topic_creation_with_configs(broker: BrokerUnderTest) -> None:
    """Topics are created with partitions and configs; duplicates are refused."""
    topic = create_topic(broker, partitions=3, **{"retention.ms": "3600000"})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(15)
    assert configs["retention.ms"].value == "3600000"
    duplicate = admin.create_topics([NewTopic(topic, num_partitions=3)])[topic]
    with pytest.raises(KafkaException) as raised:
        duplicate.result(15)
    assert raised.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS


def test_compaction_config_is_accepted(broker: BrokerUnderTest) -> None:
    """The state-feeding topics' ``cleanup.policy=compact`` is taken and kept."""
    topic = create_topic(broker, **{"cleanup.policy": "compact"})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(15)
    assert configs["cleanup.policy"].value == "compact"


def test_compaction_is_performed(
    request: pytest.FixtureRequest, broker: BrokerUnderTest
) -> None:
    """A compacted topic eventually keeps only the last value of a key."""
    known_defect(request, broker, "compaction", "accepted but never performed")
    topic = create_topic(
        broker,
        **{
            "cleanup.policy": "compact",
            "segment.ms": "100",
            "min.cleanable.dirty.ratio": "0.01",
            "delete.retention.ms": "100",
            "min.compaction.lag.ms": "0",
        },
    )
    for round_ in range(5):
        produce(broker.bootstrap, topic, [(b"k", str(round_).encode())] * 20)
        time.sleep(0.2)  # lets segments roll (segment.ms=100), not a wait for a result
    deadline = time.monotonic() + (5 if "compaction" in broker.defects else 90)
    values: list[bytes] = []
    while time.monotonic() < deadline:
        consumer = Consumer(consumer_config(broker.bootstrap, unique("compact")))
        consumer.assign([TopicPartition(topic, 0, 0)])
        values = []
        idle = time.monotonic() + 2
        while time.monotonic() < idle:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                values.append(message.value())
        consumer.close()
        if len(values) < 100:
            break
    assert 0 < len(values) < 100
    assert values[-1] == b"4"


def test_idempotent_producer_delivers_each_record_once(broker: BrokerUnderTest) -> None:
    """``enable.idempotence`` produces work and deliver every record exactly once."""
    topic = create_topic(broker, partitions=2)
    records = [(str(i % 7).encode(), str(i).encode()) for i in range(1000)]
    produce(broker.bootstrap, topic, records, **{"enable.idempotence": True})
    consumer = Consumer(consumer_config(broker.bootstrap, unique("idem")))
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(values) < 1000 and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            values.append(message.value())
    consumer.close()
    assert sorted(values) == sorted(value for _, value in records)


async def test_transactions_with_faust_client(
    request: pytest.FixtureRequest, broker: BrokerUnderTest
) -> None:
    """aiokafka transactions (Faust's exactly_once) hide aborted records.

    The pipeline runs at-least-once with a send ledger, so it does not depend on
    this; the case is here so that a broker which gets it right is noticed.
    """
    known_defect(
        request,
        broker,
        "transactions",
        "InitProducerId fails for aiokafka; read_committed saw aborted records",
    )
    topic = create_topic(broker)
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap,
        transactional_id=unique("tx"),
        request_timeout_ms=10000,
    )
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted", partition=0)
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed", partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, isolation_level="read_committed"
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        consumer.assign([AioTP(topic, 0)])
        await consumer.seek_to_beginning()
        idle = time.monotonic() + 3
        while time.monotonic() < idle:
            batches = await consumer.getmany(timeout_ms=200)
            values += [m.value for messages in batches.values() for m in messages]
    finally:
        await consumer.stop()
    assert values == [b"committed"]
