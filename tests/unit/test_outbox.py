"""The batch produce path: records appended to open batches, handed to the
client together, acknowledged before a commit, a failed batch tripping."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata, TopicPartition

from pipeline.app import create_app
from pipeline.outbox import Outbox
from pipeline.partitioning import partition_for
from pipeline.settings import Settings
from schemas.decode import decode
from schemas.records import NotificationEvent


class Client:
    """Stands for the started AIOKafkaProducer: real batch builders, and a
    future per batch handed over that the test resolves."""

    def __init__(self, max_batch_size: int = 16384) -> None:
        self.real = AIOKafkaProducer(
            bootstrap_servers="127.0.0.1:9", max_batch_size=max_batch_size
        )
        self.handed: list[tuple[str, int, int, asyncio.Future[Any]]] = []
        self.refuse: BaseException | None = None
        self.client = SimpleNamespace(
            cluster=SimpleNamespace(
                partitions_for_topic=lambda topic: (
                    {0, 1, 2, 3} if topic != "unknown" else None
                )
            )
        )

    def create_batch(self) -> Any:
        return self.real.create_batch()

    async def send_batch(self, builder: Any, topic: str, *, partition: int) -> Any:
        await asyncio.sleep(0)
        if self.refuse is not None:
            raise self.refuse
        future = asyncio.get_running_loop().create_future()
        self.handed.append((topic, partition, builder.record_count(), future))
        return future

    def ack(self, base_offset: int = 0) -> None:
        """Acknowledge every batch handed over and not settled yet."""
        for topic, partition, _, future in self.handed:
            if not future.done():
                tp = TopicPartition(topic, partition)
                future.set_result(
                    RecordMetadata(topic, partition, tp, base_offset, -1, 0, -1)
                )


@pytest.fixture
async def client() -> Client:
    return Client()


@pytest.fixture
def failures() -> list[BaseException]:
    return []


@pytest.fixture
async def outbox(client: Client, failures: list[BaseException]) -> Outbox:
    return Outbox(lambda: client, failures.append)


async def test_records_go_as_one_batch_per_partition(
    outbox: Outbox, client: Client
) -> None:
    for n in range(5):
        outbox.append("events", 1, b"k", b"v%d" % n)
    outbox.append("events", 2, b"k", b"w")
    outbox.append("jobs", 1, b"k", b"j")
    assert client.handed == []  # on the next turn of the loop, together
    await outbox.handed()
    assert sorted((t, p, n) for t, p, n, _ in client.handed) == [
        ("events", 1, 5),
        ("events", 2, 1),
        ("jobs", 1, 1),
    ]
    assert outbox.waiting == 7


async def test_a_full_batch_goes_and_a_new_one_takes_the_record() -> None:
    client = Client(max_batch_size=1024)
    outbox = Outbox(lambda: client, lambda exc: None)
    for n in range(40):
        outbox.append("events", 0, b"k", b"x" * 100 + b"%d" % n)
    await outbox.handed()
    counts = [n for _, _, n, _ in client.handed]
    assert sum(counts) == 40 and len(counts) > 1


async def test_the_acknowledged_batch_reports_its_last_offset(
    outbox: Outbox, client: Client
) -> None:
    acked: list[tuple[Any, int]] = []

    def on_acked(tp: Any, offset: int) -> None:
        acked.append((tp, offset))

    for n in range(3):
        outbox.append("changelog", 2, b"k%d" % n, b"v", on_acked=on_acked)
    await outbox.handed()
    settled = asyncio.ensure_future(outbox.settled())
    await asyncio.sleep(0.01)
    assert not settled.done()  # not acknowledged yet: a commit waits
    client.ack(base_offset=40)
    await asyncio.wait_for(settled, 1)
    assert acked == [(TopicPartition("changelog", 2), 42)]  # once per batch
    assert outbox.waiting == 0


async def test_a_batch_not_delivered_trips(
    outbox: Outbox, client: Client, failures: list[BaseException]
) -> None:
    outbox.append("events", 0, b"k", b"v")
    await outbox.handed()
    _, _, _, future = client.handed[0]
    future.set_exception(TimeoutError("no acknowledgement"))
    await outbox.settled()
    assert [type(f) for f in failures] == [TimeoutError]
    assert outbox.waiting == 0


async def test_a_batch_the_client_refuses_trips(
    outbox: Outbox, client: Client, failures: list[BaseException]
) -> None:
    client.refuse = RuntimeError("producer closed")
    outbox.append("events", 0, b"k", b"v")
    await outbox.handed()
    assert [str(f) for f in failures] == ["producer closed"]


async def test_records_appended_while_shipping_go_too(
    outbox: Outbox, client: Client
) -> None:
    outbox.append("events", 0, b"k", b"1")
    await asyncio.sleep(0)  # the shipping began, and waits in send_batch
    outbox.append("events", 0, b"k", b"2")
    await outbox.handed()
    assert sum(n for _, _, n, _ in client.handed) == 2


async def test_the_partition_is_kafkas_default_partitioners(outbox: Outbox) -> None:
    for key in (b"t/alice", b"t/bob", b"default/u17"):
        assert outbox.partition_for(key, 4) == partition_for(key, 4)
        assert outbox.partition_for(key, 4) == partition_for(key, 4)  # cached
        assert outbox.partition_for(key, 8) == partition_for(key, 8)
    assert outbox.partitions_of("events") == 4
    assert outbox.partitions_of("unknown") is None


async def test_the_worker_producer_serializes_and_partitions_as_faust_does(
    tmp_path: Any, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(Settings(data_dir=tmp_path, store_url="memory://"), discover=[])
    producer: Any = app.producer
    monkeypatch.setattr(producer, "_producer", client)
    appended: list[tuple[str, int, bytes | None, bytes | None]] = []
    monkeypatch.setattr(
        producer.outbox,
        "append",
        lambda topic, partition, key, value, headers, on_acked: appended.append(
            (topic, partition, key, value)
        ),
    )
    event = NotificationEvent(
        event_id="e1",
        event_type="sent",
        ts=datetime(2026, 12, 5, tzinfo=UTC),
        stage="send",
    )
    topic = app.topology.events
    producer.emit(topic, "t/alice", event)
    [(name, partition, key, value)] = appended
    assert name == topic.get_topic_name() and key == b"t/alice"
    assert partition == partition_for(b"t/alice", 4)
    assert decode(NotificationEvent, value) == event
    # A topic the client has no partitions of yet takes Faust's path.
    slow: list[Any] = []
    monkeypatch.setattr(producer.outbox, "partitions_of", lambda name: None)
    monkeypatch.setattr(topic, "send_soon", lambda **kw: slow.append(kw["value"]))
    producer.emit(topic, "t/alice", event)
    assert slow == [event] and len(appended) == 1
