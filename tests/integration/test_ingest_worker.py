"""A real worker on the embedded broker: requests in, events and dead letters out."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import Message

from pipeline.ids import notification_id
from pipeline.topology import DLQ_CODE, DLQ_REASON, DLQ_SOURCE, DLQ_STAGE
from tests.conftest import WorkerFactory
from tests.support import BrokerUnderTest, Topics, produce, read_until, unique

pytestmark = pytest.mark.integration


def request(key: str, user: str, priority: str = "transactional") -> bytes:
    """A valid request body as a producer would write it."""
    body = {
        "idempotency_key": key,
        "recipient": {"user_id": user},
        "type": "order_shipped",
        "data": {"order_id": 4412},
        "priority": priority,
    }
    return orjson.dumps(body)


def test_worker_accepts_valid_requests_and_dead_letters_bad_ones(
    broker: BrokerUnderTest, start_worker: WorkerFactory, topics: Topics
) -> None:
    """Valid requests on both lanes are accepted; bad bytes land in the DLQ as-is."""
    topics.create(broker.url)
    worker = start_worker()
    worker.wait_ready(timeout=90)

    run = unique("run")
    critical, bulk = topics("notify.requests.critical"), topics("notify.requests.bulk")
    events, deadletter = topics("notify.events"), topics("notify.deadletter")
    good = {
        f"{run}-t": (critical, "transactional"),
        f"{run}-c": (critical, "critical"),
        f"{run}-p": (bulk, "promotional"),
    }
    for key, (topic, priority) in good.items():
        produce(broker.bootstrap, topic, [(b"u_991", request(key, "u_991", priority))])
    bad = {
        b"not json " + run.encode(),
        orjson.dumps({"idempotency_key": run, "type": "x", "recipient": {}}),
    }
    produce(broker.bootstrap, bulk, [(b"u_1", raw) for raw in bad])

    ids = {
        notification_id(
            "default", key, "u_991", "bulk" if priority == "promotional" else "critical"
        ): key
        for key, (_, priority) in good.items()
    }

    def ours(message: Message) -> bool:
        value = message.value() or b""
        if message.topic() == deadletter:
            return value in bad
        event = orjson.loads(value)
        # dead_lettered events are keyed by their source; matched below.
        return event["notification_id"] in ids or event["event_type"] == "dead_lettered"

    def complete(kept: list[Message]) -> bool:
        sources = {
            dict(m.headers() or [])[DLQ_SOURCE] for m in of_topic(kept, deadletter)
        }
        return (
            len(accepted_events(kept, events)) == len(good)
            and len(sources) == len(bad)
            and (sources <= {m.key() for m in of_topic(kept, events)})
        )

    messages = read_until(
        broker.bootstrap,
        [events, deadletter],
        complete,
        keep=ours,
        timeout=60,
    )
    accepted = accepted_events(messages, events)
    assert set(accepted) == set(ids)
    lanes = {ids[nid][-1]: event["lane"] for nid, event in accepted.items()}
    assert lanes == {"t": "critical", "c": "critical", "p": "bulk"}

    dead = of_topic(messages, deadletter)
    assert sorted(m.value() for m in dead) == sorted(bad)
    for message in dead:
        headers = dict(message.headers() or [])
        assert message.key() == b"u_1"
        assert headers[DLQ_STAGE] == b"ingest"
        # The source is the topic as the broker names it, prefix and all.
        assert headers[DLQ_SOURCE].startswith(f"{bulk}[".encode())
        assert headers[DLQ_CODE] in {b"invalid_json", b"required"}
        assert headers[DLQ_REASON]
        trail = [
            orjson.loads(m.value())
            for m in of_topic(messages, events)
            if m.key() == headers[DLQ_SOURCE]
        ]
        assert [(e["event_type"], e["reason"]) for e in trail] == [
            ("dead_lettered", headers[DLQ_CODE].decode())
        ]


def accepted_events(
    messages: list[Message], events: str
) -> dict[str, dict[str, object]]:
    """notification_id → its accepted event on ``events``, each keyed by that id."""
    found = {}
    for message in of_topic(messages, events):
        event = orjson.loads(message.value())
        if event["event_type"] == "accepted":
            assert message.key() == event["notification_id"].encode()
            found[event["notification_id"]] = event
    return found


def of_topic(messages: list[Message], topic: str) -> list[Message]:
    """The records among ``messages`` read from ``topic``."""
    return [m for m in messages if m.topic() == topic]
