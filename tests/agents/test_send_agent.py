"""The send agents in Faust's test context: tables as dicts, providers scripted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import AsyncMock, MagicMock, Mock

import pytest

import agents.inbox
import agents.retry
import agents.send
from pipeline.app import app
from pipeline.clock import FrozenClock
from pipeline.delivery import plan
from pipeline.due import DueTimer
from pipeline.inbox import inbox_hub
from pipeline.partitioning import partition_for
from pipeline.providers.base import (
    FailureKind,
    Outgoing,
    ProviderFailure,
    Sent,
    message_id_for,
)
from pipeline.providers.registry import Providers
from schemas.records import DeliveryJob, DeviceToken, InboxRead, Suppression

NOW = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
KEY = "default/u_991"
HOME = partition_for(KEY.encode(), app.settings.topic_partitions)


class ScriptedSender:
    """A provider whose answers the test decides, recording every call."""

    def __init__(self, name: str, channel: str) -> None:
        self.name, self.channel = name, channel
        self.calls: list[Outgoing] = []
        self.answers: list[Sent | ProviderFailure] = []
        #: Set: calls answer at once; cleared, they wait for it.
        self.gate = asyncio.Event()
        self.gate.set()

    async def start(self) -> None:
        """Nothing to open."""

    async def stop(self) -> None:
        """Nothing to close."""

    async def send(self, message: Outgoing) -> Sent:
        """The next scripted answer (Sent when none is left)."""
        self.calls.append(message)
        await self.gate.wait()
        answer = self.answers.pop(0) if self.answers else Sent(self.name, "pm-1")
        if isinstance(answer, ProviderFailure):
            raise answer
        return answer

    def fail_with(self, kind: FailureKind, code: str, times: int = 1) -> None:
        """Answer the next ``times`` calls with this failure."""
        for _ in range(times):
            self.answers.append(ProviderFailure(kind, code, provider=self.name))


@pytest.fixture
async def wired(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, Any]]:
    """Dict tables, mocked topics, scripted providers, a frozen clock."""
    tables: dict[str, dict[str, Any]] = {
        name: {} for name in ("ledger", "retries", "suppressions", "inbox")
    }
    for name, table in tables.items():
        monkeypatch.setattr(agents.send, name, table)
    monkeypatch.setattr(agents.retry, "retries", tables["retries"])
    monkeypatch.setattr(agents.retry.retry_timer, "table", tables["retries"])
    monkeypatch.setattr(agents.inbox, "inbox", tables["inbox"])
    sends: dict[str, Any] = {
        "events": MagicMock(),
        "deadletter": AsyncMock(),
        "devices": AsyncMock(),
        "suppressions": AsyncMock(),
    }
    topology = app.topology
    monkeypatch.setattr(topology.events, "send_soon", sends["events"])
    monkeypatch.setattr(topology.events, "send", AsyncMock())  # dead letters' events
    monkeypatch.setattr(topology.deadletter, "send", sends["deadletter"])
    monkeypatch.setattr(topology.devices, "send", sends["devices"])
    monkeypatch.setattr(
        topology.state_inputs["notify.suppressions"], "send", sends["suppressions"]
    )
    monkeypatch.setattr(agents.send, "flush_durably", AsyncMock())
    senders = {
        name: ScriptedSender(name, channel)
        for name, channel in (
            ("apns", "push"),
            ("fcm", "push"),
            ("smtp", "email"),
            ("sendgrid", "email"),
            ("twilio", "sms"),
        )
    }
    providers = Providers(
        app.settings,
        {
            "push": [senders["apns"], senders["fcm"]],
            "email": [senders["smtp"], senders["sendgrid"]],
            "sms": [senders["twilio"]],
        },
    )
    await providers.start()
    monkeypatch.setattr(agents.send, "providers", providers)
    clock = FrozenClock(NOW)
    monkeypatch.setattr(app, "clock", clock)
    yield {
        "tables": tables,
        "sends": sends,
        "senders": senders,
        "providers": providers,
        "clock": clock,
    }


def job(channel: str = "email", **fields: Any) -> DeliveryJob:
    """An order_shipped job for u_991 on ``channel``."""
    values: dict[str, Any] = {
        "notification_id": "n_0123456789ab",
        "tenant": "default",
        "user_id": "u_991",
        "type": "order_shipped",
        "priority": "transactional",
        "lane": "critical",
        "channel": channel,
        "data": {"order_id": 4412, "eta": "Tue"},
        "created_at": NOW,
        "email": "alice@example.com" if channel == "email" else None,
        "phone": "+14155550100" if channel == "sms" else None,
        "devices": [
            DeviceToken(user_id="u_991", token="tok-a", platform="apns"),
            DeviceToken(user_id="u_991", token="tok-f", platform="fcm"),
        ]
        if channel == "push"
        else [],
    }
    return DeliveryJob(**{**values, **fields})


async def deliver(*jobs: DeliveryJob, channel: str = "email") -> None:
    """Put jobs through the critical-lane agent of ``channel``."""
    async with app.agents[f"send.{channel}.critical"].test_context() as agent:
        for item in jobs:
            await agent.put(key=KEY, value=item.dumps(), partition=HOME)


def events(wired: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """(event type, provider, reason) of every event sent."""
    sent = [c.kwargs["value"] for c in wired["sends"]["events"].call_args_list]
    return [(e.event_type, e.provider, e.reason) for e in sent]


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail past ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_call_in_flight_is_not_made_again_by_the_next_batch(
    wired: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Send batches overlap: the next batch is planned while this one's calls
    are in flight. The ledger then says ``sending`` for a target being called;
    the same job in the next batch (a producer's duplicate) must not call it
    again, nor record a second outcome."""
    smtp = wired["senders"]["smtp"]
    smtp.gate.clear()
    async with app.agents["send.email.critical"].test_context() as agent:
        await agent.put(key=KEY, value=job().dumps(), partition=HOME)
        await until(lambda: bool(smtp.calls))  # the first batch's call is in flight
        key = "n_0123456789ab:email:alice@example.com"
        assert wired["tables"]["ledger"][key].state == "sending"
        caplog.set_level(logging.DEBUG, logger="agents.send")
        await agent.put(key=KEY, value=job().dumps(), partition=HOME)
        # The second batch is planned meanwhile, and refuses the target.
        await until(lambda: f"{key}: in_flight" in caplog.text)
        smtp.gate.set()
    assert len(smtp.calls) == 1
    assert wired["tables"]["ledger"][key].state == "sent"
    assert events(wired) == [("sent", "smtp", None)]
    assert not agents.send.in_flight


async def test_an_email_is_sent_once_and_recorded(wired: dict[str, Any]) -> None:
    """One provider call with the attempt's idempotency id; ledger says sent."""
    await deliver(job())
    smtp = wired["senders"]["smtp"]
    [call] = smtp.calls
    key = "n_0123456789ab:email:alice@example.com"
    assert call.attempt_key == key and call.message_id == message_id_for(key)
    assert call.to == "alice@example.com" and "4412" in call.content.body
    assert wired["tables"]["ledger"][key].state == "sent"
    [(kind, provider, _)] = events(wired)
    assert (kind, provider) == ("sent", "smtp")


async def test_a_redelivered_job_calls_no_provider_again(
    wired: dict[str, Any],
) -> None:
    """The same job twice (crash, rebalance, replay): one provider call."""
    await deliver(job(), job())
    assert len(wired["senders"]["smtp"].calls) == 1


async def test_a_redelivered_sent_job_says_sent_again_with_the_same_event(
    wired: dict[str, Any],
) -> None:
    """Stopped after the ledger said sent and before the event was out: the
    redelivery calls nobody and emits the same ``sent`` event (same id)."""
    await deliver(job())
    first = [c.kwargs["value"] for c in wired["sends"]["events"].call_args_list]
    wired["sends"]["events"].reset_mock()
    await deliver(job())
    again = [c.kwargs["value"] for c in wired["sends"]["events"].call_args_list]
    assert len(wired["senders"]["smtp"].calls) == 1
    assert [e.event_id for e in again] == [e.event_id for e in first]
    assert again[0].event_type == "sent" and again[0].provider == "smtp"
    wired["sends"]["events"].reset_mock()
    await deliver(job(attempt=3))  # an old copy of another attempt: no event
    wired["sends"]["events"].assert_not_called()


async def test_a_call_left_sending_is_made_again_with_the_same_id(
    wired: dict[str, Any],
) -> None:
    """A worker that stopped between call and result: the call is repeated with
    the same provider idempotency id, so a provider that dedups drops it."""
    key = "n_0123456789ab:email:alice@example.com"
    wired["tables"]["ledger"][key] = plan.entry("sending", job(), NOW)
    await deliver(job())
    [call] = wired["senders"]["smtp"].calls
    assert call.message_id == message_id_for(key)


async def test_push_goes_to_every_active_device_by_platform(
    wired: dict[str, Any],
) -> None:
    """One call per device, each to its platform's provider."""
    await deliver(job("push"), channel="push")
    senders = wired["senders"]
    assert [c.to for c in senders["apns"].calls] == ["tok-a"]
    assert [c.to for c in senders["fcm"].calls] == ["tok-f"]


async def test_a_retryable_failure_is_scheduled_not_slept_on(
    wired: dict[str, Any],
) -> None:
    """5xx: a retried event, an entry in the retry table due later; the retried
    job then goes through and takes its entry out of the table."""
    smtp = wired["senders"]["smtp"]
    smtp.fail_with(FailureKind.UNAVAILABLE, "HTTP 503")
    await deliver(job())
    [(schedule_key, scheduled)] = wired["tables"]["retries"].items()
    assert scheduled.delivery_job().attempt == 1 and scheduled.due_at >= NOW
    assert scheduled.due_at <= NOW + timedelta(seconds=1)  # critical lane: base 1 s
    assert events(wired) == [("retried", "smtp", "unavailable")]
    await deliver(scheduled.delivery_job())
    assert wired["tables"]["retries"] == {}
    assert len(smtp.calls) == 2
    assert events(wired)[-1][:2] == ("sent", "smtp")


async def test_retry_after_is_honoured(wired: dict[str, Any]) -> None:
    """A 429's Retry-After is the earliest the retry may come."""
    smtp = wired["senders"]["smtp"]
    smtp.answers.append(
        ProviderFailure(
            FailureKind.RATE_LIMITED, "429", provider="smtp", retry_after=120
        )
    )
    await deliver(job())
    [scheduled] = wired["tables"]["retries"].values()
    assert scheduled.due_at >= NOW + timedelta(seconds=120)


async def test_an_unregistered_token_is_removed_and_dead_lettered(
    wired: dict[str, Any],
) -> None:
    """No retry; the token is deactivated; the DLQ entry has the job for it."""
    wired["senders"]["apns"].fail_with(FailureKind.UNREGISTERED, "Unregistered")
    await deliver(job("push"), channel="push")
    assert wired["tables"]["retries"] == {}
    removal = wired["sends"]["devices"].await_args.kwargs
    assert removal["value"].token == "tok-a" and removal["value"].active is False
    dead = wired["sends"]["deadletter"].await_args.kwargs
    headers = dict(dead["headers"])
    assert headers["notify.dlq.stage"] == b"send.push"
    assert headers["notify.dlq.code"] == b"unregistered"
    assert DeliveryJob.loads(dead["value"]).devices[0].token == "tok-a"
    assert ("failed", "apns", "unregistered") in events(wired)
    assert ("sent", "fcm", None) in events(wired)


async def test_a_hard_bounce_suppresses_the_address(wired: dict[str, Any]) -> None:
    """The address goes on the suppression list; a later job is not sent."""
    wired["senders"]["smtp"].fail_with(FailureKind.HARD_BOUNCE, "550")
    await deliver(job())
    suppression = Suppression.loads(
        wired["sends"]["suppressions"].await_args.kwargs["value"]
    )
    assert (suppression.address, suppression.reason) == (
        "alice@example.com",
        "hard_bounce",
    )
    key = "default/email/alice@example.com"
    wired["tables"]["suppressions"][key] = suppression
    await deliver(job(notification_id="n_another000001"))
    assert len(wired["senders"]["smtp"].calls) == 1
    assert events(wired)[-1] == ("suppressed", None, "suppressed:hard_bounce")


async def test_attempts_run_out_into_the_dead_letter_topic(
    wired: dict[str, Any],
) -> None:
    """The last retryable failure fails for good, with the whole job."""
    wired["senders"]["smtp"].fail_with(FailureKind.TIMEOUT, "timeout")
    await deliver(job(attempt=5))  # critical lane: 6 attempts in all
    assert wired["tables"]["retries"] == {}
    assert ("failed", "smtp", "timeout") in events(wired)
    assert wired["sends"]["deadletter"].await_count == 1


async def test_an_open_breaker_sends_email_through_the_secondary(
    wired: dict[str, Any],
) -> None:
    """SMTP failing every call trips its breaker; SendGrid takes the mail."""
    smtp, sendgrid = wired["senders"]["smtp"], wired["senders"]["sendgrid"]
    calls = app.settings.breaker_min_calls
    smtp.fail_with(FailureKind.UNAVAILABLE, "421", times=calls)
    await deliver(*(job(notification_id=f"n_{i:012d}") for i in range(calls)))
    assert wired["providers"].open_breakers() == ["smtp"]
    await deliver(job(notification_id="n_after0000000"))
    assert len(smtp.calls) == calls
    assert [c.notification_id for c in sendgrid.calls] == ["n_after0000000"]


async def test_in_app_lands_in_the_inbox_and_live_stream(
    wired: dict[str, Any],
) -> None:
    """The inbox gets the rendered message; a connected stream gets it too;
    a read mark marks it read."""
    queue = inbox_hub.subscribe(KEY)
    try:
        await deliver(
            job("in_app", type="comment_reply", data={"author": "Bob"}),
            channel="in_app",
        )
        [item] = wired["tables"]["inbox"][KEY].items
        assert item.notification_id == "n_0123456789ab" and item.body
        assert queue.get_nowait() == item
    finally:
        inbox_hub.unsubscribe(KEY, queue)
    mark = InboxRead(
        tenant="default",
        user_id="u_991",
        notification_id=item.notification_id,
        read_at=NOW,
    )
    async with app.agents["inbox.reads"].test_context() as agent:
        await agent.put(key=KEY, value=mark, partition=HOME)
    assert wired["tables"]["inbox"][KEY].items[0].read_at == NOW


async def test_an_expired_job_is_not_sent(wired: dict[str, Any]) -> None:
    """Past expiry_at: an expired event, no call."""
    await deliver(job(expiry_at=NOW - timedelta(seconds=1)))
    assert wired["senders"]["smtp"].calls == []
    assert events(wired) == [("expired", None, "expiry_at")]


async def test_a_template_that_cannot_render_fails_the_job(
    wired: dict[str, Any],
) -> None:
    """A render error is a permanent failure with its reason, not a crash."""
    await deliver(job(type="password_reset", data={}))
    assert wired["senders"]["smtp"].calls == []
    dead = dict(wired["sends"]["deadletter"].await_args.kwargs["headers"])
    assert dead["notify.dlq.code"] == b"rejected"
    assert b"render_error" in dead["notify.dlq.reason"]


async def test_a_batch_taken_before_the_providers_start_waits_for_them(
    wired: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agents take records once recovery resumes the flow, before Faust starts
    app services: a restarted worker's first batch waits for the provider
    sessions instead of failing its jobs with provider_not_configured."""
    smtp = wired["senders"]["smtp"]
    entry_key = "n_0123456789ab:email:alice@example.com"
    unstarted = Providers(app.settings, {"email": [smtp]})
    waiting = asyncio.Event()
    opened = unstarted.opened

    async def waits_for_opened() -> None:
        waiting.set()
        await opened()

    monkeypatch.setattr(unstarted, "opened", waits_for_opened)
    monkeypatch.setattr(agents.send, "providers", unstarted)
    async with app.agents["send.email.critical"].test_context() as agent:
        await agent.put(key=KEY, value=job().dumps(), partition=HOME)
        await asyncio.wait_for(waiting.wait(), timeout=10)  # the batch is held
        [entry] = wired["tables"]["ledger"].values()
        assert entry.state == "sending" and smtp.calls == []
        await unstarted.start()
        for _ in range(100):
            if wired["tables"]["ledger"][entry_key].state == "sent":
                break
            await asyncio.sleep(0.05)
    assert len(smtp.calls) == 1
    assert wired["tables"]["ledger"][entry_key].state == "sent"
    wired["sends"]["deadletter"].assert_not_awaited()


async def test_a_channel_without_a_provider_fails_with_that_reason(
    wired: dict[str, Any],
) -> None:
    """No SMS provider configured: failed, provider_not_configured, DLQ."""
    wired["providers"].configure({"email": [wired["senders"]["smtp"]]})
    await deliver(job("sms"), channel="sms")
    dead = dict(wired["sends"]["deadletter"].await_args.kwargs["headers"])
    assert b"provider_not_configured" in dead["notify.dlq.reason"]


async def test_the_retry_timer_releases_due_jobs_once(
    wired: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Due entries go back to their topic once; entries not yet due stay."""
    wired["senders"]["smtp"].fail_with(FailureKind.UNAVAILABLE, "503")
    await deliver(job())
    [scheduled] = wired["tables"]["retries"].values()
    topic = app.topology.deliveries[("email", "critical")]
    sent = Mock()
    monkeypatch.setattr(topic, "send_soon", sent)
    timer = DueTimer(app, wired["tables"]["retries"], agents.retry.release, "retries")
    assert await timer.tick() == 0  # not due yet
    wired["clock"].advance(timedelta(seconds=2))
    assert await timer.tick() == 1
    assert await timer.tick() == 0  # released once, until the agent takes it
    assert sent.call_args.kwargs["value"] == scheduled.delivery_job()
    assert sent.call_args.kwargs["partition"] == HOME


@pytest.mark.parametrize(
    ("raw", "partition", "code"),
    [
        (b"{not json", HOME, b"invalid_json"),
        (job("sms").dumps(), HOME, b"misrouted"),  # an SMS job on the email topic
        (job().dumps(), (HOME + 1) % app.settings.topic_partitions, b"misrouted"),
    ],
)
async def test_a_bad_job_is_dead_lettered_with_its_bytes(
    wired: dict[str, Any], raw: bytes, partition: int, code: bytes
) -> None:
    """Another producer's bad job: no call, the original bytes in the DLQ with
    the reason, and the agent goes on with the next job."""
    async with app.agents["send.email.critical"].test_context() as agent:
        await agent.put(key=KEY, value=raw, partition=partition)
        await agent.put(key=KEY, value=job().dumps(), partition=HOME)
    dead = wired["sends"]["deadletter"].await_args_list[0].kwargs
    assert dead["value"] == raw
    headers = dict(dead["headers"])
    assert (headers["notify.dlq.code"], headers["notify.dlq.stage"]) == (
        code,
        b"send.email",
    )
    assert len(wired["senders"]["smtp"].calls) == 1  # the good job still went
