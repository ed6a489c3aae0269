"""The ingest agents in Faust's test context, with the output topics mocked."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import orjson
import pytest

import agents.ingest  # noqa: F401 - registers the agents
from pipeline.app import app
from pipeline.clock import FrozenClock
from pipeline.ids import notification_id
from pipeline.partitioning import partition_for
from pipeline.topology import DLQ_CODE, DLQ_REASON, DLQ_SOURCE, DLQ_STAGE

NOW = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
#: Partitions away from default/u_991's own (see partition_for): requests put
#: there are re-keyed onto notify.accepted.<lane>.
HOME = partition_for(b"default/u_991", app.settings.topic_partitions)
AWAY = (HOME + 1) % app.settings.topic_partitions
REQUEST = {
    "idempotency_key": "order-4412-shipped",
    "recipient": {"user_id": "u_991"},
    "type": "order_shipped",
    "channels": ["push", "email"],
    "data": {"order_id": 4412, "eta": "Tue"},
    "priority": "transactional",
}


@pytest.fixture
def outputs(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Replace the events and dead-letter topics' send with async mocks."""
    mocks = {
        "events": AsyncMock(),
        "deadletter": AsyncMock(),
        "critical": MagicMock(),  # accepted requests are buffered (send_soon)
        "bulk": MagicMock(),
    }
    monkeypatch.setattr(app.topology.events, "send", mocks["events"])
    monkeypatch.setattr(app.topology.deadletter, "send", mocks["deadletter"])
    for lane in ("critical", "bulk"):
        monkeypatch.setattr(app.topology.accepted[lane], "send_soon", mocks[lane])
    monkeypatch.setattr(app, "clock", FrozenClock(NOW))
    yield mocks


async def test_valid_request_is_rekeyed_by_user_onto_its_lane(
    outputs: dict[str, Any],
) -> None:
    """A valid request goes to its lane's accepted topic, keyed tenant/user."""
    async with app.agents["ingest.critical"].test_context() as agent:
        await agent.put(key=b"whatever", value=orjson.dumps(REQUEST), partition=AWAY)
    outputs["deadletter"].assert_not_awaited()
    outputs["events"].assert_not_awaited()  # fanout announces it, after dedup
    outputs["bulk"].assert_not_called()
    call = outputs["critical"].call_args
    assert call is not None
    assert call.kwargs["key"] == "default/u_991"
    accepted = call.kwargs["value"]
    nid = notification_id("default", "order-4412-shipped", "u_991", "critical")
    assert (accepted.notification_id, accepted.lane) == (nid, "critical")
    assert accepted.accepted_at == NOW
    assert accepted.source.startswith("notify.requests.critical[")
    request = accepted.notification()
    assert (request.recipient.user_id, request.data) == ("u_991", REQUEST["data"])


async def test_promotional_request_is_routed_to_the_bulk_lane(
    outputs: dict[str, Any],
) -> None:
    """Promotional traffic goes to the bulk lane whatever topic it came on."""
    body = {**REQUEST, "priority": "promotional", "campaign_id": 1042}
    async with app.agents["ingest.critical"].test_context() as agent:
        await agent.put(key=b"u_991", value=orjson.dumps(body), partition=AWAY)
        # On its user's partition too: it belongs to the other lane's agents.
        await agent.put(key=b"u_991", value=orjson.dumps(body), partition=HOME)
    outputs["critical"].assert_not_called()
    assert outputs["bulk"].call_count == 2
    accepted = outputs["bulk"].call_args.kwargs["value"]
    assert (accepted.lane, accepted.notification().campaign_id) == ("bulk", "1042")


async def test_body_hash_ignores_json_formatting(
    outputs: dict[str, Any],
) -> None:
    """The same request written differently has the same digest (no false 409)."""
    spaced = orjson.dumps(REQUEST, option=orjson.OPT_INDENT_2)
    reordered = orjson.dumps(dict(reversed(list(REQUEST.items()))))
    async with app.agents["ingest.critical"].test_context() as agent:
        await agent.put(key=b"u_991", value=spaced, partition=AWAY)
        await agent.put(key=b"u_991", value=reordered, partition=AWAY)
    first, second = (c.kwargs["value"] for c in outputs["critical"].call_args_list)
    assert first.body_hash == second.body_hash
    assert first.source != second.source


async def test_malformed_message_goes_to_dead_letter_with_its_bytes(
    outputs: dict[str, Any],
) -> None:
    """Bad bytes reach the dead-letter topic unchanged, with the reason in headers."""
    raw = b'{"idempotency_key": "k1", "recipient": {}, "type": "x"}'
    async with app.agents["ingest.bulk"].test_context() as agent:
        await agent.put(key=b"u_1", value=raw)
    call = outputs["deadletter"].await_args
    assert call is not None
    assert (call.kwargs["key"], call.kwargs["value"]) == (b"u_1", raw)
    headers = dict(call.kwargs["headers"])
    assert headers[DLQ_REASON] == b"recipient.user_id: required"
    assert headers[DLQ_CODE] == b"required"
    assert headers[DLQ_STAGE] == b"ingest"
    assert headers[DLQ_SOURCE].startswith(b"notify.requests.bulk[")
    event = outputs["events"].await_args.kwargs["value"]
    assert (event.event_type, event.reason) == ("dead_lettered", "required")


async def test_agent_keeps_going_after_a_bad_message(
    outputs: dict[str, Any],
) -> None:
    """A malformed message does not stop the stream: the next one is accepted."""
    async with app.agents["ingest.critical"].test_context() as agent:
        await agent.put(key=b"u_1", value=b"\xff\xfe not json")
        await agent.put(key=b"u_2", value=orjson.dumps(REQUEST))
    assert outputs["deadletter"].await_count == 1
    kinds = [c.kwargs["value"].event_type for c in outputs["events"].await_args_list]
    assert kinds == ["dead_lettered"]
    assert outputs["critical"].call_count == 1


async def test_a_bug_trips_the_commit_guard_instead_of_skipping_the_message(
    outputs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception stops commits, so the message is redone, not lost."""
    crash = AsyncMock()
    monkeypatch.setattr(app, "crash", crash)
    monkeypatch.setattr(app.commit_guard, "failure", None)

    def broken(model: type, raw: bytes) -> None:
        raise KeyError("a bug, not bad input")

    monkeypatch.setattr(agents.ingest, "decode", broken)
    async with app.agents["ingest.critical"].test_context() as agent:
        # The agent takes batches: the crash surfaces here or as the agent stops.
        with contextlib.suppress(KeyError):
            await agent.put(key=b"u_1", value=orjson.dumps(REQUEST))
    assert "KeyError('a bug, not bad input')" in repr(app.commit_guard.failure)
    assert "notify.requests.critical" in repr(app.commit_guard.failure)
    crash.assert_called_once()
    outputs["critical"].assert_not_called()
