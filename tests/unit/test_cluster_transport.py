"""A cluster of brokers, one of them down: the node configuration, and the
transport's topic creation and changelog seeks that must not stop a worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest
from aiokafka.errors import NodeNotReadyError
from faust.exceptions import NotReady
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

import pipeline.transport
from pipeline.app import NotifyApp, create_app
from pipeline.broker import EmbeddedCluster, server_properties
from pipeline.settings import Settings


def test_one_node_keeps_one_replica_of_everything(tmp_path: Path) -> None:
    props = server_properties(
        host="127.0.0.1", port=1, controller_port=2, log_dir=tmp_path
    )
    assert props["controller.quorum.voters"] == "1@127.0.0.1:2"
    assert props["default.replication.factor"] == "1"
    assert props["min.insync.replicas"] == "1"
    assert props["offsets.topic.replication.factor"] == "1"


def test_a_cluster_node_replicates_thrice_and_needs_two_in_sync(
    tmp_path: Path,
) -> None:
    """Every node of a three-node cluster names all three voters; every
    topic defaults to three replicas, acks=all needs two of them."""
    cluster = EmbeddedCluster(3, data_dir=tmp_path)
    ports = {n.port for n in cluster.nodes} | {n.controller_port for n in cluster.nodes}
    assert len(ports) == 6
    assert cluster.url.count(";") == 2 and cluster.bootstrap.count(",") == 2
    props = cluster.nodes[1].properties(tmp_path)
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"].count("@") == 3
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
    ):
        assert props[key] == "3"
    assert props["min.insync.replicas"] == "2"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["unclean.leader.election.enable"] == "false"


@pytest.fixture
def app(tmp_path: Path) -> NotifyApp:
    return create_app(Settings(data_dir=tmp_path, store_url="memory://"), discover=[])


async def test_an_unknown_changelog_position_is_read_from_its_start(
    app: NotifyApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faust asks for earliest-1 (-2 when the earliest is unknown, None when
    it has no answer): such partitions are read from 0, the rest as asked."""
    seen: dict[TP, int] = {}

    async def parent_seek_wait(self: Any, partitions: dict[TP, int]) -> None:
        seen.update(partitions)

    monkeypatch.setattr(aiokafka_driver.Consumer, "seek_wait", parent_seek_wait)
    a, b, c, d = (TP("notify-x-changelog", n) for n in range(4))
    await app.consumer.seek_wait({a: -2, b: None, c: -1, d: 41})  # type: ignore[dict-item]
    assert seen == {a: 0, b: 0, c: 0, d: 41}


async def test_topic_creation_asks_each_broker_until_one_answers(
    app: NotifyApp,
) -> None:
    """The first broker of the metadata is down: the next one names the node
    to send CreateTopics to (Faust asked only the first and gave up)."""
    transport = app.transport
    brokers = [MagicMock(nodeId=2), MagicMock(nodeId=3)]
    client = MagicMock()
    client.cluster.brokers.return_value = brokers

    async def send(node_id: int, request: Any) -> Any:
        if node_id == 2:
            raise NodeNotReadyError("node 2 is down")
        return MagicMock(controller_id=3)

    client.send = send
    owner = MagicMock()

    async def wait(coroutine: Any, timeout: float) -> Any:
        return MagicMock(stopped=False, result=await coroutine)

    owner.wait = wait
    assert await transport._get_controller_node(owner, client) == 3
    client.cluster.brokers.return_value = brokers[:1]
    with pytest.raises(NotReady):
        await transport._get_controller_node(owner, client)


async def test_topic_creation_is_tried_again_while_a_broker_is_down(
    app: NotifyApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = AsyncMock(side_effect=[NodeNotReadyError("down"), NotReady("no"), None])
    monkeypatch.setattr(aiokafka_driver.Transport, "_really_create_topic", attempts)
    monkeypatch.setattr(pipeline.transport.asyncio, "sleep", AsyncMock())
    owner = MagicMock(should_stop=False)
    client = MagicMock()
    await app.transport._really_create_topic(owner, client, "t", 4, 3)
    assert attempts.await_count == 3
    assert client.force_metadata_update.call_count == 2


async def test_no_commit_passes_a_record_this_worker_did_not_process(
    app: NotifyApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a rebalance a prefetched later record was acknowledged first:
    nothing is committed until every record from where reading began is
    acknowledged (Faust skipped its own check when the committed offset was
    0 or unknown, and let one unprocessed record through otherwise)."""
    tp = TP("notify.deliveries.email.critical", 0)

    async def committed(self: Any) -> dict[TP, int | None]:
        return {tp: None}

    async def earliest(self: Any, *tps: TP) -> dict[TP, int]:
        return dict.fromkeys(tps, 0)

    monkeypatch.setattr(aiokafka_driver.Consumer, "seek_to_committed", committed)
    monkeypatch.setattr(aiokafka_driver.Consumer, "earliest_offsets", earliest)
    sought: list[tuple[TP, int]] = []

    async def seek(self: Any, partition: TP, offset: int) -> None:
        sought.append((partition, offset))

    monkeypatch.setattr(aiokafka_driver.Consumer, "_seek", seek)
    consumer = app.consumer
    await consumer.perform_seek()
    # Reading begins at the log's start, whatever was fetched before.
    assert sought == [(tp, 0)]
    consumer._acked[tp].extend(range(40, 79))
    assert consumer._new_offset(tp) is None  # 0..39 not processed
    consumer._acked[tp].extend(range(40))
    assert consumer._new_offset(tp) == 79
    consumer._committed_offset[tp] = 79
    consumer._acked[tp].extend([80, 81])  # 79 unprocessed: Faust would pass it
    assert consumer._new_offset(tp) is None
    consumer._acked[tp].append(79)
    assert consumer._new_offset(tp) == 82


async def test_an_assignment_is_paused_and_forgets_where_reading_stood(
    app: NotifyApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An assigned partition stays paused until recovery resumes it (a fetch
    before Faust's own pause lost its records on a partition with no
    commit); and the fetch loop's read offset, set once more after a
    revocation cleared it, does not make the next assignment drop records."""
    tp, other = TP("notify.requests.bulk", 0), TP("notify.requests.bulk", 1)
    calls: list[set[TP]] = []

    async def parent_assigned(
        self: Any, assigned: set[TP], generation_id: int = 0
    ) -> None:
        calls.append(set(assigned))

    monkeypatch.setattr(
        aiokafka_driver.Consumer, "on_partitions_assigned", parent_assigned
    )
    consumer = app.consumer
    consumer._read_offset[tp] = 500  # the stale write after the revocation
    consumer._read_offset[other] = 7
    await consumer.on_partitions_assigned({tp}, 3)
    assert consumer._read_offset.get(tp) is None  # the next record read is kept
    assert consumer._read_offset.get(other) == 7
    assert calls == [{tp}]
    # Nothing is fetched for it until recovery resumes it.
    assert tp in consumer._paused_partitions
    consumer._set_active_tps({tp})
    assert tp not in consumer._get_active_partitions()
    consumer.resume_partitions({tp})
    assert tp in consumer._get_active_partitions()
