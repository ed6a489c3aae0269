"""The fanout and state agents in Faust's test context, tables and topics mocked."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import AsyncMock, MagicMock, Mock

import pytest

import agents.fanout
import agents.held
import agents.ingest  # noqa: F401 - registers the agents
import agents.receipts  # noqa: F401 - registers the agents
import agents.user_state
import pipeline.status
from agents.ingest import accept
from pipeline.app import app
from pipeline.clock import FrozenClock
from pipeline.due import DueTimer, due_ms, time_at
from pipeline.ids import notification_id
from pipeline.partitioning import partition_for
from schemas import codec
from schemas.records import (
    AcceptedRequest,
    DeviceToken,
    NotificationEvent,
    NotificationRequest,
    NotificationStatus,
    Preferences,
    Recipient,
    UserProfile,
)
from tables.idempotency import SeenRequest, seen_key

NOW = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
KEY = "default/u_991"
#: The partition of KEY under Kafka's default partitioner: where its state lives.
HOME = partition_for(KEY.encode(), app.settings.topic_partitions)


@pytest.fixture
def wired(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Plain dicts for the tables, async mocks for every output topic."""
    tables: dict[str, Any] = {
        name: {}
        for name in (
            "profiles",
            "preferences",
            "devices",
            "idempotency",
            "held",
            "throttles",
            "digests",
        )
    }
    for name, table in tables.items():
        monkeypatch.setattr(agents.fanout, name, table)
        if hasattr(agents.user_state, name):
            monkeypatch.setattr(agents.user_state, name, table)
    monkeypatch.setattr(agents.held.held_timer, "table", tables["held"])
    tables["status"] = {}
    monkeypatch.setattr(pipeline.status, "status", tables["status"])
    # Fanout's outputs are buffered (send_soon); dead letters are awaited.
    sends: dict[str, Any] = {
        "events": MagicMock(),
        "deadletter": AsyncMock(),
    }
    monkeypatch.setattr(app.topology.events, "send_soon", sends["events"])
    monkeypatch.setattr(app.topology.events, "send", AsyncMock())
    monkeypatch.setattr(app.topology.deadletter, "send", sends["deadletter"])
    for (channel, lane), topic in app.topology.deliveries.items():
        if lane == "critical":
            sends[channel] = MagicMock()
            monkeypatch.setattr(topic, "send_soon", sends[channel])
    monkeypatch.setattr(app, "clock", FrozenClock(NOW))
    yield {"tables": tables, "sends": sends}


def request(**fields: Any) -> NotificationRequest:
    """A transactional order_shipped request for u_991."""
    values: dict[str, Any] = {
        "idempotency_key": "order-4412-shipped",
        "recipient": Recipient(user_id="u_991"),
        "type": "order_shipped",
        "channels": ["push", "email"],
        "data": {"order_id": 4412},
    }
    return NotificationRequest(**{**values, **fields})


async def test_state_agents_fill_the_tables_the_fanout_reads(
    wired: dict[str, Any],
) -> None:
    """Profile, preference and device updates land in their tables by user."""
    tables = wired["tables"]
    async with app.agents["state.profiles"].test_context() as agent:
        await agent.put(
            key=KEY,
            value=UserProfile(user_id="u_991", email="a@b.co").dumps(),
            partition=HOME,
        )
    async with app.agents["state.preferences"].test_context() as agent:
        await agent.put(
            key=KEY,
            value=Preferences(user_id="u_991", marketing=False).dumps(),
            partition=HOME,
        )
    async with app.agents["state.devices"].test_context() as agent:
        for token, active in (("t1", True), ("t2", True), ("t1", False)):
            device = DeviceToken(
                user_id="u_991", token=token, platform="fcm", active=active
            )
            await agent.put(key=f"{KEY}#{token}", value=device.dumps(), partition=HOME)
    assert tables["profiles"][KEY].email == "a@b.co"
    assert tables["preferences"][KEY].marketing is False
    assert [d.token for d in tables["devices"][KEY].active()] == ["t2"]


async def test_a_bad_state_record_is_dead_lettered_not_skipped(
    wired: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another producer's invalid profile lands in the DLQ with its reason."""
    deadletter = wired["sends"]["deadletter"]
    raw = b'{"user_id": "u_991", "phone": "0612"}'
    async with app.agents["state.profiles"].test_context() as agent:
        await agent.put(key=KEY, value=raw, partition=HOME)
    assert wired["tables"]["profiles"] == {}
    call = deadletter.await_args
    assert call is not None and call.kwargs["value"] == raw
    headers = dict(call.kwargs["headers"])
    assert headers["notify.dlq.stage"] == b"state"
    assert headers["notify.dlq.reason"].startswith(b"phone:")


async def test_a_state_record_off_its_users_partition_is_refused(
    wired: dict[str, Any],
) -> None:
    """A record a CRC32 producer put on another partition is dead-lettered: fanout
    would never find it there, and forwarding could let it overwrite newer state."""
    elsewhere = (HOME + 1) % app.settings.topic_partitions
    raw = UserProfile(user_id="u_991", email="a@b.co").dumps()
    async with app.agents["state.profiles"].test_context() as agent:
        await agent.put(key=KEY, value=raw, partition=elsewhere)
    assert wired["tables"]["profiles"] == {}
    headers = dict(wired["sends"]["deadletter"].await_args.kwargs["headers"])
    assert headers["notify.dlq.code"] == b"misrouted"
    assert b"murmur2" in headers["notify.dlq.reason"]


async def test_fanout_writes_jobs_events_and_the_idempotency_entry(
    wired: dict[str, Any],
) -> None:
    """Jobs go to the lane's per-channel topics; events say why for each channel."""
    tables, sends = wired["tables"], wired["sends"]
    tables["profiles"][KEY] = UserProfile(user_id="u_991", email="a@b.co")
    accepted = accept(request(), "notify.requests.critical[1]@7", NOW)
    async with app.agents["fanout.critical"].test_context() as agent:
        await agent.put(key=KEY, value=accepted)
    sends["push"].assert_not_called()  # no device: suppressed
    job = sends["email"].call_args.kwargs["value"]
    assert (job.notification_id, job.email) == (accepted.notification_id, "a@b.co")
    assert sends["email"].call_args.kwargs["key"] == KEY
    events = [c.kwargs["value"] for c in sends["events"].call_args_list]
    assert [(e.event_type, e.channel, e.reason) for e in events] == [
        ("accepted", None, None),
        ("suppressed", "push", "no_active_device"),
        ("queued", "email", None),
    ]
    seen = SeenRequest.loads(
        tables["idempotency"][seen_key("default", "u_991", "order-4412-shipped")]
    )
    assert seen is not None and seen.source == accepted.source


async def test_ingest_decides_a_request_on_its_users_partition_in_place(
    wired: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the API produces (key tenant/user_id, murmur2) needs no accepted hop:
    ingest runs fanout's stages on it, with the same tables and outputs."""
    tables, sends = wired["tables"], wired["sends"]
    tables["profiles"][KEY] = UserProfile(user_id="u_991", email="a@b.co")
    rekeyed = MagicMock()
    monkeypatch.setattr(app.topology.accepted["critical"], "send_soon", rekeyed)
    body = codec.dumps(request())
    async with app.agents["ingest.critical"].test_context() as agent:
        await agent.put(key=KEY.encode(), value=body, partition=HOME)
    rekeyed.assert_not_called()
    job = sends["email"].call_args.kwargs["value"]
    assert (job.channel, job.email, job.lane) == ("email", "a@b.co", "critical")
    nid = notification_id("default", "order-4412-shipped", "u_991", "critical")
    assert job.notification_id == nid
    assert tables["status"][nid].channels == {"push": "suppressed", "email": "queued"}
    seen = SeenRequest.loads(
        tables["idempotency"][seen_key("default", "u_991", "order-4412-shipped")]
    )
    assert seen is not None and seen.source.startswith("notify.requests.critical[")


async def test_a_busy_users_idempotency_entries_stay_small(
    wired: dict[str, Any],
) -> None:
    """One entry per key, written once: a user's hundredth request writes as
    little as the first (a value per user grew with every request)."""
    tables = wired["tables"]
    tables["profiles"][KEY] = UserProfile(user_id="u_991", email="a@b.co")
    async with app.agents["fanout.critical"].test_context() as agent:
        for n in range(100):
            accepted = accept(
                request(idempotency_key=f"alert-{n}", channels=["email"]),
                f"notify.requests.critical[1]@{n}",
                NOW,
            )
            await agent.put(key=KEY, value=accepted)
    stored = tables["idempotency"]
    assert len(stored) == 100
    assert max(len(value) for value in stored.values()) < 200
    assert wired["sends"]["email"].call_count == 100


async def test_fanout_defers_in_quiet_hours_and_sends_when_they_end(
    wired: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deferral waits in the held table, due when the quiet hours end: the
    timer releases nothing before, then the request once; fanout decides it
    again, sends it, and the entry is gone."""
    tables, sends = wired["tables"], wired["sends"]
    tables["profiles"][KEY] = UserProfile(user_id="u_991", email="a@b.co")
    tables["preferences"][KEY] = Preferences(
        user_id="u_991",
        quiet_hours={"start": "09:00", "end": "10:00"},  # type: ignore[arg-type]
    )
    accepted = accept(request(channels=["email"]), "notify.requests.critical[1]@8", NOW)
    async with app.agents["fanout.critical"].test_context() as agent:
        await agent.put(key=KEY, value=accepted)
    sends["email"].assert_not_called()
    (key,) = tables["held"]
    assert time_at(due_ms(key)) == NOW.replace(hour=10, minute=0)
    released: list[AcceptedRequest] = []

    async def release(entry: AcceptedRequest) -> None:
        released.append(entry)

    timer = agents.held.held_timer
    monkeypatch.setattr(timer, "release", release)
    clock = FrozenClock(NOW.replace(hour=10, minute=0) - timedelta(milliseconds=1))
    monkeypatch.setattr(app, "clock", clock)
    assert await timer.tick() == 0  # a millisecond early: nothing
    clock.advance(timedelta(milliseconds=1))
    assert await timer.tick() == 1
    assert await timer.tick() == 0  # released once, until fanout takes it
    async with app.agents["fanout.critical"].test_context() as agent:
        await agent.put(key=KEY, value=released[0])
    assert sends["email"].call_args.kwargs["value"].notification_id == (
        accepted.notification_id
    )
    assert tables["held"] == {}


async def test_fanout_writes_the_status_of_what_it_decides(
    wired: dict[str, Any],
) -> None:
    """No agent reads the events back: fanout folds its decisions itself."""
    tables, sends = wired["tables"], wired["sends"]
    tables["profiles"][KEY] = UserProfile(user_id="u_991", email="a@b.co")
    accepted = accept(request(), "notify.requests.critical[1]@9", NOW)
    async with app.agents["fanout.critical"].test_context() as agent:
        await agent.put(key=KEY, value=accepted, partition=HOME)
    current = tables["status"][accepted.notification_id]
    assert [e.event_type for e in current.trail] == ["accepted", "suppressed", "queued"]
    assert current.channels == {"push": "suppressed", "email": "queued"}
    assert (current.tenant, current.user_id, current.lane) == (
        "default",
        "u_991",
        "critical",
    )
    emitted = [c.kwargs["value"].event_id for c in sends["events"].call_args_list]
    assert emitted == [e.event_id for e in current.trail]


def receipt(nid: str, kind: str, channel: str = "email") -> NotificationEvent:
    """A receipt's event as a webhook or tracking link puts it on the lane."""
    return NotificationEvent(
        event_id=f"{nid}-{kind}-{channel}",
        event_type=kind,
        ts=NOW,
        stage="receipt.sendgrid",
        notification_id=nid,
        channel=channel,
    )


async def test_receipts_agent_folds_interleaved_notifications(
    wired: dict[str, Any],
) -> None:
    """Receipts of two notifications, interleaved, each end in their own trail,
    and each is emitted on notify.events once folded."""
    nid1 = notification_id("default", "k1", "u_991", "critical")
    nid2 = notification_id("default", "k2", "u_991", "critical")
    for nid in (nid1, nid2):  # the send stage wrote them before any receipt
        wired["tables"]["status"][nid] = NotificationStatus(notification_id=nid)

    async with app.agents["receipts.critical"].test_context() as agent:
        for nid, kind, channel in (
            (nid1, "sent", "email"),
            (nid2, "sent", "sms"),
            (nid1, "clicked", "email"),
            (nid2, "delivered", "sms"),
            (nid1, "opened", "email"),  # the pixel after the click
            (nid1, "opened", "email"),  # a redelivered receipt changes nothing
        ):
            value = receipt(nid, kind, channel)
            await agent.put(key=nid, value=value, partition=HOME)
    table = wired["tables"]["status"]
    assert [e.event_type for e in table[nid1].trail] == ["sent", "clicked", "opened"]
    assert table[nid1].channels == {"email": "clicked"}
    assert table[nid2].channels == {"sms": "delivered"}
    assert wired["sends"]["events"].call_count == 6


async def test_a_receipt_event_carries_its_notifications_context(
    wired: dict[str, Any],
) -> None:
    """A webhook names only the attempt: the emitted open carries the tenant,
    user, type, lane and campaign its status knows, so it counts in funnels."""
    nid = notification_id("acme", "k3", "u_991", "critical")
    wired["tables"]["status"][nid] = NotificationStatus(
        notification_id=nid,
        tenant="acme",
        user_id="u_991",
        type="campaign",
        priority="transactional",
        lane="critical",
        campaign_id="1042",
    )
    opened = receipt(nid, "opened")
    async with app.agents["receipts.critical"].test_context() as agent:
        await agent.put(key=nid, value=opened, partition=HOME)
    emitted = wired["sends"]["events"].call_args.kwargs["value"]
    assert (emitted.event_id, emitted.event_type) == (opened.event_id, "opened")
    assert (emitted.tenant, emitted.user_id, emitted.type) == (
        "acme",
        "u_991",
        "campaign",
    )
    assert (emitted.lane, emitted.campaign_id) == ("critical", "1042")
    assert wired["tables"]["status"][nid].channels == {"email": "opened"}


async def test_a_receipt_after_its_status_expired_is_emitted_and_begins_none(
    wired: dict[str, Any],
) -> None:
    """A click weeks on, after the status retention swept the status: the
    event still reaches notify.events; no status holding only it is begun, so
    GET status stays a 404 like the rest of the notification's history."""
    nid = notification_id("acme", "k4", "u_991", "critical")
    clicked = receipt(nid, "clicked")
    async with app.agents["receipts.critical"].test_context() as agent:
        await agent.put(key=nid, value=clicked, partition=HOME)
    emitted = wired["sends"]["events"].call_args.kwargs["value"]
    assert (emitted.event_id, emitted.event_type) == (clicked.event_id, "clicked")
    assert nid not in wired["tables"]["status"]


async def test_a_request_for_an_unknown_user_waits_for_its_profile(
    wired: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No table knows the user: the email is held, not suppressed. The profile
    arrives, the timer releases the request, fanout queues it and drops the
    held entry."""
    tables, sends = wired["tables"], wired["sends"]
    accepted = accept(request(channels=["email"]), "notify.requests.critical[1]@7", NOW)
    async with app.agents["fanout.critical"].test_context() as agent:
        await agent.put(key=KEY, value=accepted)
    sends["email"].assert_not_called()
    [held] = tables["held"].values()
    nid = accepted.notification_id
    assert tables["status"][nid].channels == {"email": "deferred"}
    assert tables["status"][nid].trail[-1].reason == "unknown_user"

    tables["profiles"][KEY] = UserProfile(user_id="u_991", email="a@b.co")
    released = Mock()
    monkeypatch.setattr(app.topology.accepted["critical"], "send_soon", released)
    timer = DueTimer(app, tables["held"], agents.held.release, "held requests")
    assert await timer.tick() == 0  # due in 0.5 s
    app.clock.advance(timedelta(seconds=1))  # type: ignore[attr-defined]
    assert await timer.tick() == 1
    assert await timer.tick() == 0  # released once
    call = released.call_args.kwargs
    assert (call["key"], call["partition"], call["value"]) == (KEY, HOME, held)

    async with app.agents["fanout.critical"].test_context() as agent:
        await agent.put(key=KEY, value=call["value"])
    job = sends["email"].call_args.kwargs["value"]
    assert (job.notification_id, job.email) == (nid, "a@b.co")
    assert tables["held"] == {}
    current = tables["status"][nid]
    assert current.channels == {"email": "queued"}
    assert [e.event_type for e in current.trail] == ["accepted", "deferred", "queued"]


async def test_each_look_at_a_held_request_is_released_once(
    wired: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user still unknown when the wait ends: the timer releases each look
    once, and the last look suppresses the email and leaves nothing held, even
    for a request first seen at a fraction of a millisecond."""
    tables = wired["tables"]
    start = NOW + timedelta(microseconds=123_456)
    monkeypatch.setattr(app, "clock", FrozenClock(start))
    released = Mock()
    monkeypatch.setattr(app.topology.accepted["critical"], "send_soon", released)
    timer = agents.held.held_timer
    monkeypatch.setattr(timer, "released", set())
    accepted = accept(
        request(channels=["email"]), "notify.requests.critical[1]@7", start
    )
    wait = timedelta(seconds=app.settings.unknown_user_wait)
    fanout = app.agents["fanout.critical"]
    async with fanout.test_context() as agent:
        await agent.put(key=KEY, value=accepted)
    keys: list[str] = []
    # The timer's ticks, driven by the clock, until well past the wait; each
    # release is decided by fanout before the next tick, as a live worker does.
    while app.clock.now() < start + wait + timedelta(seconds=5):
        app.clock.advance(timedelta(seconds=agents.held.TICK))  # type: ignore[attr-defined]
        await timer.tick()
        looks = [call.kwargs["value"] for call in released.call_args_list]
        released.reset_mock()
        for look in looks:
            keys.append(look.held_key)
            async with fanout.test_context() as agent:
                await agent.put(key=KEY, value=look)
    assert len(keys) == len(set(keys)) == 7  # 0.5 s, 1 s, 2 s, ... 30 s
    assert tables["held"] == {}
    status = tables["status"][accepted.notification_id]
    assert status.channels == {"email": "suppressed"}


async def test_a_digest_window_closes_on_the_wall_clock_alone(
    wired: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two likes, then nothing: the window still closes when its time comes
    (the timer, not a later event), and one digest goes out with both."""
    tables, sends = wired["tables"], wired["sends"]
    tables["profiles"][KEY] = UserProfile(user_id="u_991", email="a@b.co")
    likes = [
        accept(
            NotificationRequest(
                idempotency_key=f"like-{n}",
                recipient=Recipient(user_id="u_991"),
                type="post_liked",
                data={"liker": f"friend{n}"},
                digest_key="post-7",
            ),
            f"notify.requests.critical[1]@{20 + n}",
            NOW,
        )
        for n in range(2)
    ]
    async with app.agents["fanout.critical"].test_context() as agent:
        for liked in likes:
            await agent.put(key=KEY, value=liked)
    sends["in_app"].assert_not_called()
    for liked in likes:
        member = tables["status"][liked.notification_id]
        assert member.channels == {"push": "digested", "in_app": "digested"}
    released: list[AcceptedRequest] = []

    async def release(entry: AcceptedRequest) -> None:
        released.append(entry)

    timer = agents.held.held_timer
    monkeypatch.setattr(timer, "release", release)
    clock = FrozenClock(NOW + timedelta(seconds=29))
    monkeypatch.setattr(app, "clock", clock)
    assert await timer.tick() == 0
    clock.advance(timedelta(seconds=1))
    assert await timer.tick() == 1
    async with app.agents["fanout.critical"].test_context() as agent:
        await agent.put(key=KEY, value=released[0])
    job = sends["in_app"].call_args.kwargs["value"]
    assert (job.type, job.data["count"]) == ("post_liked.digest", 2)
    assert job.notification_id == released[0].notification_id
    assert tables["held"] == {}
    (window,) = tables["digests"].values()
    assert window.released
