"""The emulator stack with the worker's own clients: quiet calls, a clean stop."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.emulators.apns import ApnsEmulator, ProviderKey
from pipeline.emulators.ca import TestCA
from pipeline.emulators.stack import BUNDLE_ID, EmulatorStack
from pipeline.providers.apns import CLIENT_LOGGERS
from pipeline.providers.base import (
    Content,
    Outgoing,
    ProviderFailure,
    Sender,
    message_id_for,
)
from pipeline.providers.build import senders_from_settings
from pipeline.settings import Settings

#: Calls held in flight at stop: several streams of one HTTP/2 connection.
HELD = 5


@dataclass
class Running:
    """A started stack and the worker's senders aimed at it, by provider."""

    stack: EmulatorStack
    senders: dict[str, Sender]


def message(sender: Sender) -> Outgoing:
    """One call for ``sender``, to a fresh target of the right shape."""
    to = {
        "apns": secrets.token_hex(32),
        "fcm": f"{secrets.token_urlsafe(16)}:APA91b{secrets.token_urlsafe(100)}",
        "smtp": "u_1@example.com",
        "sendgrid": "u_1@example.com",
        "twilio": "+14155550123",
    }[sender.name]
    attempt_key = f"n-{secrets.token_hex(4)}:{sender.channel}:{to[:12]}"
    return Outgoing(
        attempt_key=attempt_key,
        message_id=message_id_for(attempt_key),
        notification_id=attempt_key.split(":")[0],
        tenant="acme",
        user_id="u_1",
        type="order_shipped",
        priority="transactional",
        channel=sender.channel,
        to=to,
        content=Content(body="Order 4412 has shipped", title="On its way"),
        platform=sender.name if sender.channel == "push" else None,
    )


@pytest.fixture
async def running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Running]:
    """A stack of its own (the test stops it) and started senders."""
    stack = EmulatorStack(tmp_path / "emulators").start()
    try:
        for name, value in stack.env().items():
            monkeypatch.setenv(name, value)
        built = senders_from_settings(Settings())
        senders = {s.name: s for channel in built.values() for s in channel}
        for sender in senders.values():
            await sender.start()
        yield Running(stack, senders)
        for sender in senders.values():
            await sender.stop()
    finally:
        await asyncio.to_thread(stack.stop)


def errors(records: list[logging.LogRecord]) -> list[str]:
    """The errors and tracebacks among ``records``, as their messages."""
    return [
        r.getMessage()
        for r in records
        if r.levelno >= logging.ERROR or r.exc_info is not None
    ]


async def test_an_apns_call_logs_no_line_from_its_http_client(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """httpx logged "HTTP Request: POST ..." at INFO for every push (and
    httpcore and hpack every frame at DEBUG): a line per push in a worker's
    log. The call is made and none of that is logged."""
    caplog.set_level(logging.DEBUG)
    apns = running.senders["apns"]
    sent = await apns.send(message(apns))
    assert sent.provider == "apns"
    assert running.stack.apns.calls.delivered == 1
    noise = [r for r in caplog.records if r.name.split(".")[0] in CLIENT_LOGGERS]
    assert noise == []


async def test_the_stack_stops_without_an_error_with_a_call_held(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """One call to each emulator, then APNs calls held when the stack stops (a
    worker still sending at Ctrl-C): the held calls fail on the client side,
    and the stop logs no error or traceback (it logged one from hypercorn,
    which wrote the held calls' ends to a TLS transport already aborted)."""
    for sender in running.senders.values():
        await sender.send(message(sender))
    assert all(running.stack.delivered().values())

    apns, emulator = running.senders["apns"], running.stack.apns
    emulator.faults.update(latency=60)
    attempts = emulator.calls.attempts + HELD
    held = [asyncio.ensure_future(apns.send(message(apns))) for _ in range(HELD)]
    deadline = time.monotonic() + 10
    while emulator.calls.attempts < attempts:
        assert time.monotonic() < deadline, "the held calls never reached APNs"
        await asyncio.sleep(0.01)

    caplog.clear()
    caplog.set_level(logging.WARNING)
    # In a thread, as make run stops it: this loop (the client's) keeps going.
    await asyncio.to_thread(running.stack.stop)
    for call in held:
        with pytest.raises(ProviderFailure):
            await call
    assert errors(caplog.records) == []


@pytest.fixture
def lone_apns(tmp_path: Path) -> Iterator[ApnsEmulator]:
    """An APNs emulator that is not serving: its ASGI app is called directly."""
    cert, key = TestCA.create(tmp_path / "ca").issue_server_cert()
    yield ApnsEmulator.for_key(ProviderKey.generate(), BUNDLE_ID, cert, key)


async def test_apns_gives_up_an_answer_once_its_client_has_left(
    lone_apns: ApnsEmulator,
) -> None:
    """hypercorn flushes a stream's last bytes from a task that ends with the
    connection, so an answer finished after the client left (a worker stopping
    mid-call) waited for ever and held its connection open: stop() then waited
    2 s and cancelled it, and Python 3.11 logged a CancelledError traceback.
    The answer is given up once the client is gone."""
    incoming: list[dict[str, Any]] = [
        {"type": "http.request", "body": b"{}", "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await asyncio.Event().wait()  # nothing more ever comes
        raise AssertionError("unreachable")

    async def send(event: dict[str, Any]) -> None:
        if event["type"] == "http.response.body":
            await asyncio.Event().wait()  # the flush that never comes

    scope = {
        "type": "http",
        "http_version": "2",
        "method": "POST",
        "path": f"/3/device/{secrets.token_hex(32)}",
        "headers": [],
    }
    await asyncio.wait_for(lone_apns._app(scope, receive, send), timeout=10)
    assert lone_apns.calls.attempts == 1
