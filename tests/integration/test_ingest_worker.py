"""A real worker on the embedded broker: requests in, events and dead letters out."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import Message

from pipeline.admin import ensure_topics
from pipeline.ids import notification_id
from pipeline.settings import Settings
from pipeline.topology import DLQ_CODE, DLQ_REASON, DLQ_SOURCE, DLQ_STAGE
from tests.conftest import WorkerFactory
from tests.support import BrokerUnderTest, produce, read_until, unique

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
    broker: BrokerUnderTest, start_worker: WorkerFactory
) -> None:
    """Valid requests on both lanes are accepted; bad bytes land in the DLQ as-is."""
    ensure_topics(Settings(broker_url=broker.url))
    worker = start_worker()
    worker.wait_ready(timeout=90)

    run = unique("run")
    good = {
        f"{run}-t": ("notify.requests.critical", "transactional"),
        f"{run}-c": ("notify.requests.critical", "critical"),
        f"{run}-p": ("notify.requests.bulk", "promotional"),
    }
    for key, (topic, priority) in good.items():
        produce(broker.bootstrap, topic, [(b"u_991", request(key, "u_991", priority))])
    bad = {
        b"not json " + run.encode(),
        orjson.dumps({"idempotency_key": run, "type": "x", "recipient": {}}),
    }
    produce(broker.bootstrap, "notify.requests.bulk", [(b"u_1", raw) for raw in bad])

    ids = {
        notification_id(
            "default", key, "u_991", "bulk" if priority == "promotional" else "critical"
        ): key
        for key, (_, priority) in good.items()
    }

    def ours(message: Message) -> bool:
        value = message.value() or b""
        if message.topic() == "notify.deadletter":
            return value in bad
        event = orjson.loads(value)
        # dead_lettered events are keyed by their source; matched below.
        return event["notification_id"] in ids or event["event_type"] == "dead_lettered"

    def complete(kept: list[Message]) -> bool:
        sources = {dict(m.headers() or [])[DLQ_SOURCE] for m in dead_letters(kept)}
        return (
            len(accepted_events(kept)) == len(good)
            and len(sources) == len(bad)
            and (sources <= {m.key() for m in kept if m.topic() == "notify.events"})
        )

    messages = read_until(
        broker.bootstrap,
        ["notify.events", "notify.deadletter"],
        complete,
        keep=ours,
        timeout=60,
    )
    accepted = accepted_events(messages)
    assert set(accepted) == set(ids)
    lanes = {ids[nid][-1]: event["lane"] for nid, event in accepted.items()}
    assert lanes == {"t": "critical", "c": "critical", "p": "bulk"}

    dead = dead_letters(messages)
    assert sorted(m.value() for m in dead) == sorted(bad)
    for message in dead:
        headers = dict(message.headers() or [])
        assert message.key() == b"u_1"
        assert headers[DLQ_STAGE] == b"ingest"
        assert headers[DLQ_SOURCE].startswith(b"notify.requests.bulk[")
        assert headers[DLQ_CODE] in {b"invalid_json", b"required"}
        assert headers[DLQ_REASON]
        trail = [
            orjson.loads(m.value())
            for m in messages
            if m.topic() == "notify.events" and m.key() == headers[DLQ_SOURCE]
        ]
        assert [(e["event_type"], e["reason"]) for e in trail] == [
            ("dead_lettered", headers[DLQ_CODE].decode())
        ]


def accepted_events(messages: list[Message]) -> dict[str, dict[str, object]]:
    """notification_id → its accepted event, checking each is keyed by that id."""
    found = {}
    for message in messages:
        if message.topic() != "notify.events":
            continue
        event = orjson.loads(message.value())
        if event["event_type"] == "accepted":
            assert message.key() == event["notification_id"].encode()
            found[event["notification_id"]] = event
    return found


def dead_letters(messages: list[Message]) -> list[Message]:
    """The dead-letter records among ``messages``."""
    return [m for m in messages if m.topic() == "notify.deadletter"]
