"""Cancel racing its release: every order of cancel, release, fanout and send.

A scheduled email goes: fanout holds it (deferred) → the timer releases it
when due → fanout decides it again and queues its job → the send agent
writes its ledger entry, calls the provider, records ``sent``. The cancel
(``pipeline.actions.cancel_here``, what ``DELETE /v1/notifications/{id}``
runs on the worker holding the status) may come between any two of these
steps, or while the provider call is in flight. Whatever the order, the
answer tells the truth: ``cancelled`` and no provider call ever, or refused
naming the channel, which was (or is being) sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest

import agents.fanout
import agents.held
import agents.retry
import agents.send
import agents.user_state
import pipeline.actions
import pipeline.status
import tables.campaigns as campaign_tables
from agents.ingest import accept
from pipeline.app import app
from pipeline.campaigns import recipient_request
from pipeline.cancel import Cancellation
from pipeline.clock import FrozenClock
from pipeline.partitioning import partition_for
from pipeline.providers.base import Outgoing, Sent
from pipeline.providers.registry import Providers
from pipeline.sweep import PartitionEvent
from schemas.campaigns import Campaign, CampaignRequest, UsersTarget
from schemas.records import (
    AcceptedRequest,
    DeliveryJob,
    NotificationRequest,
    NotificationStatus,
    Recipient,
    UserProfile,
)

NOW = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
DUE = NOW + timedelta(minutes=5)
KEY = "default/u_991"
HOME = partition_for(KEY.encode(), app.settings.topic_partitions)
#: The steps of a scheduled email after it was first decided (held).
STEPS = ("release", "decide", "send")


class GatedSender:
    """An email provider whose call waits until the test lets it answer."""

    name, channel = "smtp", "email"

    def __init__(self) -> None:
        self.calls: list[Outgoing] = []
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    async def start(self) -> None:
        """Nothing to open."""

    async def stop(self) -> None:
        """Nothing to close."""

    async def send(self, message: Outgoing) -> Sent:
        """Record the call; answer once the gate is open."""
        self.calls.append(message)
        self.started.set()
        await self.gate.wait()
        return Sent(self.name, "pm-1")


@pytest.fixture
async def chain(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, Any]]:
    """Fanout, the held timer and the email send agent over dict tables."""
    tables: dict[str, dict[str, Any]] = {
        name: {}
        for name in (
            "profiles",
            "preferences",
            "devices",
            "idempotency",
            "held",
            "throttles",
            "digests",
            "status",
            "ledger",
            "retries",
            "suppressions",
            "inbox",
            "failed_jobs",
            "campaigns",
            "campaign_counts",
        )
    }
    for module in (agents.fanout, agents.user_state, agents.send, pipeline.actions):
        for name, table in tables.items():
            if hasattr(module, name):
                monkeypatch.setattr(module, name, table)
    monkeypatch.setattr(pipeline.status, "status", tables["status"])
    monkeypatch.setattr(pipeline.status, "campaign_counts", tables["campaign_counts"])
    monkeypatch.setattr(campaign_tables, "campaigns", tables["campaigns"])
    monkeypatch.setattr(agents.held.held_timer, "table", tables["held"])
    monkeypatch.setattr(agents.retry.retry_timer, "table", tables["retries"])
    monkeypatch.setattr(
        pipeline.actions, "_source", lambda nid: PartitionEvent("status", HOME)
    )
    released: list[AcceptedRequest] = []

    async def release(entry: AcceptedRequest) -> None:
        released.append(entry)

    monkeypatch.setattr(agents.held.held_timer, "release", release)
    jobs = MagicMock()
    topology = app.topology
    for lane in ("critical", "bulk"):
        monkeypatch.setattr(topology.deliveries[("email", lane)], "send_soon", jobs)
    monkeypatch.setattr(topology.events, "send_soon", MagicMock())
    monkeypatch.setattr(topology.events, "send", AsyncMock())
    monkeypatch.setattr(topology.deadletter, "send", AsyncMock())
    monkeypatch.setattr(agents.send, "flush_durably", AsyncMock())
    sender = GatedSender()
    providers = Providers(app.settings, {"email": [sender]})
    await providers.start()
    monkeypatch.setattr(agents.send, "providers", providers)
    clock = FrozenClock(NOW)
    monkeypatch.setattr(app, "clock", clock)
    tables["profiles"][KEY] = UserProfile(user_id="u_991", email="a@b.co")
    yield {
        "tables": tables,
        "released": released,
        "jobs": jobs,
        "sender": sender,
        "clock": clock,
    }


def scheduled_request() -> NotificationRequest:
    """A transactional email due at DUE."""
    return NotificationRequest(
        idempotency_key="weekly-7",
        recipient=Recipient(user_id="u_991"),
        type="order_shipped",
        priority="transactional",
        channels=["email"],
        data={"order_id": 4412},
        schedule_at=DUE,
    )


async def fanout(accepted: AcceptedRequest) -> None:
    """Put one request through the lane's fanout agent."""
    async with app.agents[f"fanout.{accepted.lane}"].test_context() as agent:
        await agent.put(key=KEY, value=accepted, partition=HOME)


async def send(job: DeliveryJob) -> None:
    """Put one job through the email send agent of its lane."""
    async with app.agents[f"send.email.{job.lane}"].test_context() as agent:
        await agent.put(key=KEY, value=job.dumps(), partition=HOME)


def cancel(chain: dict[str, Any], nid: str) -> Cancellation:
    """What DELETE runs on the worker holding the status."""
    current: NotificationStatus = chain["tables"]["status"][nid]
    return pipeline.actions.cancel_here(current, chain["clock"].now())


async def step(chain: dict[str, Any], name: str) -> None:
    """One step of the scheduled email's way to the provider."""
    if name == "release":
        chain["clock"].advance(DUE - chain["clock"].now())
        await agents.held.held_timer.tick()
    elif name == "decide":
        for entry in chain["released"]:
            await fanout(entry)
    elif name == "send":
        for call in chain["jobs"].call_args_list:
            await send(call.kwargs["value"])


@pytest.mark.parametrize("cancel_after", range(len(STEPS) + 1))
async def test_a_cancel_in_any_order_is_either_kept_or_refused_truthfully(
    chain: dict[str, Any], cancel_after: int
) -> None:
    """Cancel after 0-3 of release/decide/send: before the send it is
    ``cancelled`` and the provider is never called, whatever is on its way
    (a released entry, a queued job); after the send it is refused naming
    the email as sent."""
    accepted = accept(scheduled_request(), "notify.requests.critical[1]@8", NOW)
    nid = accepted.notification_id
    await fanout(accepted)
    assert chain["tables"]["status"][nid].channels == {"email": "deferred"}
    answer = None
    for n, name in enumerate(STEPS):
        if n == cancel_after:
            answer = cancel(chain, nid)
        await step(chain, name)
    if answer is None:
        answer = cancel(chain, nid)
    called = bool(chain["sender"].calls)
    # Released before the cancel: fanout queued the job all the same.
    assert chain["jobs"].called == (cancel_after >= STEPS.index("send"))
    current = chain["tables"]["status"][nid]
    if cancel_after < len(STEPS):
        assert not answer.refused and answer.cancelled == ("email",)
        assert not called
        assert current.channels == {"email": "cancelled"}
    else:
        assert answer.refused and answer.sent == {"email": "sent"}
        assert called and current.channels == {"email": "sent"}
    assert current.cancelled_at is not None
    assert current.status == current.channels["email"]
    assert chain["tables"]["held"] == {}  # nothing left to release


async def test_a_cancel_while_the_call_is_in_flight_is_refused_and_kept(
    chain: dict[str, Any],
) -> None:
    """The send began (ledger ``sending``) and awaits the provider when the
    cancel comes: it is refused naming the email as being sent, and the
    send's status write after the call keeps the cancel's mark."""
    accepted = accept(scheduled_request(), "notify.requests.critical[1]@8", NOW)
    nid = accepted.notification_id
    await fanout(accepted)
    await step(chain, "release")
    await step(chain, "decide")
    sender = chain["sender"]
    sender.gate.clear()
    [call] = chain["jobs"].call_args_list
    job = call.kwargs["value"]
    ledger = chain["tables"]["ledger"]
    # The agent stays up until the call's result is recorded.
    async with app.agents["send.email.critical"].test_context() as agent:
        await agent.put(key=KEY, value=job.dumps(), partition=HOME)
        await asyncio.wait_for(sender.started.wait(), 5)
        answer = cancel(chain, nid)
        assert answer.refused and answer.sent == {"email": "sending"}
        sender.gate.set()
        statuses = chain["tables"]["status"]
        for _ in range(500):  # until the batch writes the call's result
            if statuses[nid].channels == {"email": "sent"}:
                break
            await asyncio.sleep(0.01)
    assert [entry.state for entry in ledger.values()] == ["sent"]
    current = chain["tables"]["status"][nid]
    assert current.channels == {"email": "sent"}
    assert current.cancelled_at is not None  # the mark was not written over
    assert len(sender.calls) == 1


async def test_a_cancel_before_fanout_stops_every_channel(
    chain: dict[str, Any],
) -> None:
    """Cancelled while still on its way to fanout (status ``accepted``, as the
    API remembers it): fanout then cancels every channel and queues nothing."""
    accepted = accept(scheduled_request(), "notify.requests.critical[1]@8", NOW)
    nid = accepted.notification_id
    remembered = NotificationStatus(
        notification_id=nid, tenant="default", user_id="u_991", lane="critical"
    )
    answer = pipeline.actions.cancel_here(remembered, NOW)
    assert not answer.refused and answer.cancelled == ()
    assert chain["tables"]["status"][nid].status == "cancelled"
    await fanout(accepted)
    current = chain["tables"]["status"][nid]
    assert current.channels == {"email": "cancelled"}
    assert chain["tables"]["held"] == {}
    chain["jobs"].assert_not_called()


def campaign_of(state: str) -> Campaign:
    """Campaign c_1 as every partition's copy holds it, in ``state``."""
    asked = CampaignRequest(
        idempotency_key="spring",
        campaign_name="Spring",
        type="order_shipped",
        target=UsersTarget(user_ids=["u_991"]),
        channels=["email"],
        data={"order_id": 4412},
    )
    return Campaign(
        campaign_id="c_1",
        tenant="default",
        request=asked,
        body_hash="h",
        state=state,  # type: ignore[arg-type]
        created_at=NOW,
        updated_at=NOW,
    )


def campaign_request() -> NotificationRequest:
    """Campaign c_1's request for u_991, as its expansion produces it."""
    return recipient_request(campaign_of("active"), "u_991")


async def test_a_cancelled_campaign_stops_its_requests_still_on_their_way(
    chain: dict[str, Any],
) -> None:
    """Expanded before its campaign was cancelled, a recipient's request is
    cancelled when fanout reaches it: nothing queued, every channel
    ``cancelled`` with the campaign named as the reason, and counted."""
    chain["tables"]["campaigns"]["c_1"] = campaign_of("cancelled")
    accepted = accept(campaign_request(), "notify.requests.bulk[1]@8", NOW)
    await fanout(accepted)
    current = chain["tables"]["status"][accepted.notification_id]
    assert current.channels == {"email": "cancelled"}
    [said] = [entry for entry in current.trail if entry.event_type == "cancelled"]
    assert (said.channel, said.reason) == ("email", "campaign_cancelled")
    chain["jobs"].assert_not_called()
    counts = chain["tables"]["campaign_counts"]["c_1"].counts
    assert counts["cancelled"] == 1 and counts.get("queued", 0) == 0


async def test_a_campaign_cancelled_after_its_job_was_queued_sends_nothing(
    chain: dict[str, Any],
) -> None:
    """Queued while the campaign ran, the job reaches the send agent after
    the cancel: no ledger entry, no provider call, the channel cancelled."""
    chain["tables"]["campaigns"]["c_1"] = campaign_of("active")
    accepted = accept(campaign_request(), "notify.requests.bulk[1]@8", NOW)
    await fanout(accepted)
    [call] = chain["jobs"].call_args_list
    chain["tables"]["campaigns"]["c_1"] = campaign_of("cancelled")
    await send(call.kwargs["value"])
    assert chain["sender"].calls == []
    assert chain["tables"]["ledger"] == {}
    current = chain["tables"]["status"][accepted.notification_id]
    assert current.channels == {"email": "cancelled"}
