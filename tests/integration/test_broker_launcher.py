"""The embedded broker's launcher: a broker that cannot start says why, at
once; a cluster of three loses nothing acknowledged with one node."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.broker import BrokerStartError, EmbeddedBroker, EmbeddedCluster
from tests.support import wait_for

pytestmark = pytest.mark.integration


def test_a_taken_port_fails_the_start_with_the_brokers_own_error(
    tmp_path: Path,
) -> None:
    """Something else listens on the port: the JVM exits, and start() raises
    with the cause from the broker's log instead of waiting out its timeout
    (the listener there accepts connections, so it looks up for a while)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = EmbeddedBroker(port=taken.getsockname()[1], data_dir=tmp_path)
        with pytest.raises(BrokerStartError) as raised:
            broker.start(timeout=120)
    assert "broker exited" in str(raised.value)
    assert "Unable to start acceptor" in str(raised.value)
    assert broker.pid is None  # nothing left running


def test_a_cluster_keeps_every_acknowledged_record_through_a_node_loss(
    tmp_path: Path,
) -> None:
    """Three nodes, three replicas, min ISR two: with one node SIGKILLed,
    acks=all writes still succeed; brought back on its data, the node rejoins
    and every record written before, during and after is read back."""
    with EmbeddedCluster(3, data_dir=tmp_path) as cluster:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        admin.create_topics([NewTopic("kept", 2)])["kept"].result(30)
        # A just-created topic's partitions reach every node's metadata a
        # moment later (on a loaded machine, seconds).
        partitions = wait_for(
            lambda: (
                admin.list_topics("kept", timeout=10).topics["kept"].partitions or None
            ),
            timeout=30,
        )
        partition = partitions[0]
        assert sorted(partition.replicas) == [1, 2, 3]
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
        failed: list[object] = []

        def write(prefix: str) -> None:
            for n in range(200):
                producer.produce(
                    "kept",
                    f"{prefix}{n}".encode(),
                    on_delivery=lambda error, _m: error and failed.append(error),
                )
            assert producer.flush(60) == 0

        write("before")
        cluster.kill(1)
        assert not cluster.nodes[1].running
        write("during")
        cluster.restart(1)
        write("after")
        assert not failed
        consumer = Consumer(
            {"bootstrap.servers": cluster.bootstrap, "group.id": "kept-reader"}
        )
        consumer.assign([TopicPartition("kept", p, 0) for p in range(2)])
        values = set()
        while len(values) < 600:
            messages = consumer.consume(600, timeout=10)
            assert messages, f"only {len(values)} of 600 read back"
            values.update(m.value() for m in messages if m.error() is None)
        consumer.close()
        assert values == {
            f"{prefix}{n}".encode()
            for prefix in ("before", "during", "after")
            for n in range(200)
        }
