"""``notify dlq`` as an operator runs it: list, show and replay on the real broker."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.dlq import REPLAYED_FROM, DeadLetter, DlqError, plan_replay
from pipeline.dlq import produce_replays as produce_replays_to
from pipeline.partitioning import partition_for
from pipeline.topology import DLQ_CODE, DLQ_REASON, DLQ_SOURCE, DLQ_STAGE
from tests.support import (
    BIN,
    REPO,
    BrokerUnderTest,
    Topics,
    consumer_config,
    read_until,
    unique,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4
DlqCli = Callable[..., subprocess.CompletedProcess[str]]


@dataclass(frozen=True)
class Written:
    """A dead letter this test wrote, and where the broker put it."""

    position: str
    key: bytes
    value: bytes


@dataclass(frozen=True)
class Scene:
    """One test's dead letters, codes and source topics, unique to it."""

    run: str
    deadletter: str  # this test's notify.deadletter, under its prefix
    requests: str  # stands for a notify.requests.* topic
    jobs: str  # stands for a notify.deliveries.* topic
    bad_json: Written  # ingest, from requests[2]
    binary: Written  # ingest, from requests[3], not UTF-8
    job: Written  # send.push, from jobs[1], no redrive yet
    retried_job: Written  # send.sms, from jobs[0], redrive 2 already

    @property
    def ingest_code(self) -> str:
        """The code both ingest dead letters carry."""
        return f"invalid_json-{self.run}"

    @property
    def push_code(self) -> str:
        """The code of the push job's dead letter."""
        return f"BadDeviceToken-{self.run}"

    @property
    def sms_code(self) -> str:
        """The code of the SMS job's dead letter."""
        return f"30007-{self.run}"


def create_topics(broker: BrokerUnderTest, *names: str) -> None:
    """Create topics of PARTITIONS partitions and wait until they are there."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=PARTITIONS) for name in names]
    )
    for future in futures.values():
        future.result(15)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=5).topics
        if all(
            name in topics and len(topics[name].partitions) == PARTITIONS
            for name in names
        ):
            return
        time.sleep(0.05)
    raise AssertionError(f"topics {names} never showed up")


def write_dead_letter(
    broker: BrokerUnderTest,
    topic: str,
    partition: int,
    key: bytes,
    value: bytes,
    *,
    stage: str,
    code: str,
    source: str,
) -> Written:
    """Write one dead letter the way pipeline.deadletter does, to ``partition``."""
    reports: list[Message] = []
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    producer.produce(
        topic,
        key=key,
        value=value,
        partition=partition,
        headers=[
            (DLQ_REASON, f"refused by {stage}".encode()),
            (DLQ_CODE, code.encode()),
            (DLQ_STAGE, stage.encode()),
            (DLQ_SOURCE, source.encode()),
        ],
        on_delivery=lambda error, message: reports.append(message),
    )
    assert producer.flush(30) == 0
    (report,) = reports
    assert report.error() is None, report.error()
    return Written(f"{report.partition()}@{report.offset()}", key, value)


@pytest.fixture
def scene(broker: BrokerUnderTest, topics: Topics) -> Scene:
    """Four dead letters from two fresh source topics."""
    topics.create(broker.url)
    run = unique("dlq")
    deadletter = topics("notify.deadletter")
    requests, jobs = f"{run}.requests", f"{run}.jobs"
    create_topics(broker, requests, jobs)
    job = {"notification_id": f"n-{run}", "channel": "push", "attempt": 3}
    retried = {"notification_id": f"m-{run}", "channel": "sms", "redrive": 2}
    return Scene(
        run=run,
        deadletter=deadletter,
        requests=requests,
        jobs=jobs,
        bad_json=write_dead_letter(
            broker,
            deadletter,
            0,
            b"u_1",
            f"not json {run}".encode(),
            stage="ingest",
            code=f"invalid_json-{run}",
            source=f"{requests}[2]@40",
        ),
        binary=write_dead_letter(
            broker,
            deadletter,
            1,
            b"u_2",
            b"\x00\xff" + run.encode(),
            stage="ingest",
            code=f"invalid_json-{run}",
            source=f"{requests}[3]@41",
        ),
        job=write_dead_letter(
            broker,
            deadletter,
            2,
            b"default/u_3",
            orjson.dumps(job),
            stage="send.push",
            code=f"BadDeviceToken-{run}",
            source=f"{jobs}[1]@7",
        ),
        retried_job=write_dead_letter(
            broker,
            deadletter,
            3,
            b"default/u_4",
            orjson.dumps(retried),
            stage="send.sms",
            code=f"30007-{run}",
            source=f"{jobs}[0]@8",
        ),
    )


@pytest.fixture
def notify_dlq(broker: BrokerUnderTest, topics: Topics, tmp_path: Path) -> DlqCli:
    """Run ``notify dlq ARGS`` as an operator would, against the test broker."""
    env = {
        **os.environ,
        "NOTIFY_BROKER_URL": broker.url,
        "NOTIFY_DATA_DIR": str(tmp_path / "cli"),
        "NOTIFY_TOPIC_PREFIX": topics.prefix,
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "notify"), "dlq", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    return run


def ok(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The stdout lines of a command that must have succeeded."""
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def records_on(
    broker: BrokerUnderTest, topic: str, partition: int, count: int
) -> list[Message]:
    """The first ``count`` records of one partition, read from offset 0."""
    consumer = Consumer(consumer_config(broker.bootstrap, unique("check")))
    consumer.assign([TopicPartition(topic, partition, 0)])
    got: list[Message] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                got.append(message)
    finally:
        consumer.close()
    assert len(got) == count, f"{topic}[{partition}]: {len(got)} of {count}"
    return got


def headers_of(message: Message) -> dict[str, bytes]:
    """A record's headers by name."""
    return dict(DeadLetter.from_message(message).headers)


def test_list_shows_each_entry_on_one_line(scene: Scene, notify_dlq: DlqCli) -> None:
    """list filters by code and stage, in text and JSON, and honours --limit."""
    lines = ok(notify_dlq("list", "--code", scene.ingest_code))
    assert [line.split("  ")[0] for line in lines] == [
        scene.bad_json.position,
        scene.binary.position,
    ]
    fields = lines[0].split("  ")
    assert fields[2:] == [
        "ingest",
        scene.ingest_code,
        f"{scene.requests}[2]@40",
        '"refused by ingest"',
        "u_1",
    ]
    assert fields[1].endswith("Z")

    limited = ok(notify_dlq("list", "--code", scene.ingest_code, "--limit", "1"))
    assert [line.split("  ")[0] for line in limited] == [scene.bad_json.position]

    only_push = ("--stage", "send", "--code", scene.push_code, "--json")
    jobs = ok(notify_dlq("list", *only_push))
    (document,) = [orjson.loads(line) for line in jobs]
    assert document["position"] == scene.job.position
    assert document["stage"] == "send.push"
    assert document["source"] == f"{scene.jobs}[1]@7"
    assert document["key"] == "default/u_3"
    assert orjson.loads(document["value"]) == orjson.loads(scene.job.value)

    other_stage = ok(notify_dlq("list", "--stage", "ingest", "--code", scene.push_code))
    assert other_stage == []


def test_show_prints_headers_key_and_value(scene: Scene, notify_dlq: DlqCli) -> None:
    """show: JSON values indented, other bytes as their repr; a bad position fails."""
    shown = ok(notify_dlq("show", scene.job.position))
    text = "\n".join(shown)
    assert f"{DLQ_STAGE}: send.push" in text
    assert f"{DLQ_SOURCE}: {scene.jobs}[1]@7" in text
    assert "key: default/u_3" in text
    assert f'  "notification_id": "n-{scene.run}",' in text
    # The position as a replayed_from header names it: the prefixed topic.
    p, o = scene.job.position.split("@")
    assert f"position: {scene.deadletter}[{p}]@{o}" in text
    assert ok(notify_dlq("show", f"{scene.deadletter}[{p}]@{o}")) == shown

    binary = ok(notify_dlq("show", scene.binary.position))
    assert binary[-1] == repr(scene.binary.value)

    missing = notify_dlq("show", "0@999999999")
    assert missing.returncode == 1
    assert "no dead letter at 0@999999999" in missing.stderr


def test_dry_run_produces_nothing_and_replay_restores_the_record(
    broker: BrokerUnderTest, scene: Scene, notify_dlq: DlqCli
) -> None:
    """Replay by position: same key and bytes on the source partition, redrive+1
    and the attempt back to 0."""
    chosen = (scene.bad_json.position, scene.job.position)
    redriven = orjson.dumps(
        {**orjson.loads(scene.job.value), "redrive": 1, "attempt": 0}
    )
    dry = ok(notify_dlq("replay", *chosen, "--dry-run"))
    assert dry == [
        f"would replay {scene.bad_json.position} -> {scene.requests}[2]  key=u_1"
        f"  value={len(scene.bad_json.value)} bytes",
        f"would replay {scene.job.position} -> {scene.jobs}[1]  key=default/u_3"
        f"  value={len(redriven)} bytes  redrive=1",
    ]

    # A marker first on each target partition: if the dry run had produced
    # anything, the marker would not be the first record there.
    marker = f"marker {scene.run}".encode()
    for topic, partition in ((scene.requests, 2), (scene.jobs, 1)):
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
        producer.produce(topic, value=marker, partition=partition)
        assert producer.flush(30) == 0
        (first,) = records_on(broker, topic, partition, 1)
        assert first.value() == marker, f"the dry run produced onto {topic}"

    done = ok(notify_dlq("replay", *chosen))
    assert len(done) == 2 and all(line.startswith("replayed ") for line in done)

    _, request = records_on(broker, scene.requests, 2, 2)
    assert request.key() == b"u_1"
    assert request.value() == scene.bad_json.value
    p, o = scene.bad_json.position.split("@")
    assert headers_of(request) == {
        REPLAYED_FROM: f"{scene.deadletter}[{p}]@{o}".encode()
    }

    _, job = records_on(broker, scene.jobs, 1, 2)
    assert job.key() == b"default/u_3"
    assert job.value() == redriven
    p, o = scene.job.position.split("@")
    assert headers_of(job)[REPLAYED_FROM] == f"{scene.deadletter}[{p}]@{o}".encode()
    assert DLQ_STAGE not in headers_of(job)


def test_replay_by_filter_and_onto_another_topic(
    broker: BrokerUnderTest, scene: Scene, notify_dlq: DlqCli, topics: Topics
) -> None:
    """--stage/--code pick the entries; --to sends them where the key says; a
    pipeline topic named there is this deployment's, under its prefix."""
    ok(notify_dlq("replay", "--stage", "send", "--code", scene.sms_code))
    (job,) = records_on(broker, scene.jobs, 0, 1)
    assert orjson.loads(job.value() or b"")["redrive"] == 3

    elsewhere = f"{scene.run}.elsewhere"
    create_topics(broker, elsewhere)
    ok(notify_dlq("replay", "--code", scene.ingest_code, "--to", elsewhere))
    got = read_until(broker.bootstrap, [elsewhere], lambda kept: len(kept) >= 2)
    assert {(m.key(), m.value()) for m in got} == {
        (scene.bad_json.key, scene.bad_json.value),
        (scene.binary.key, scene.binary.value),
    }
    for message in got:
        # Faust's partitioner, so keyed consumers find the record where expected.
        assert message.partition() == partition_for(message.key() or b"", PARTITIONS)

    to_pipeline = ("--to", "notify.requests.bulk", "--dry-run")
    dry = ok(notify_dlq("replay", scene.bad_json.position, *to_pipeline))
    assert [line.split("  ")[0] for line in dry] == [
        f"would replay {scene.bad_json.position} -> "
        f"{topics('notify.requests.bulk')}[by key]"
    ]


def test_refusals_and_failed_produces_exit_non_zero(
    broker: BrokerUnderTest, scene: Scene, notify_dlq: DlqCli
) -> None:
    """Nothing chosen, a missing topic, a produce the client refuses: all errors."""
    nothing = notify_dlq("replay")
    assert nothing.returncode == 2
    assert "replay takes positions" in nothing.stderr

    missing = notify_dlq("replay", scene.bad_json.position, "--to", f"{scene.run}.x")
    assert missing.returncode == 1
    assert f"no topic '{scene.run}.x'" in missing.stderr

    entry = DeadLetter(
        0,
        0,
        None,
        b"k",
        b"x" * 2_000_000,  # over the client's message.max.bytes
        ((DLQ_SOURCE, f"{scene.requests}[0]@1".encode()),),
    )
    with pytest.raises(DlqError, match="1 of 1 replays were not produced"):
        produce_replays_to(broker.bootstrap, [plan_replay(entry)])
