"""pipeline.streams.batches: sized batches, a window started by the first event,
and no wake-ups while the stream is idle."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import faust
import pytest
from faust.types import EventT

from pipeline.streams import batches, overlapped_batches

WITHIN = 0.05


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """An app of its own (the project's app keeps only its real agents)."""
    app = faust.App("batches-test", store="memory://")
    topic = app.topic("batches-test-input", value_type=bytes, value_serializer="raw")
    seen: list[tuple[float, list[bytes]]] = []
    waits: list[float] = []

    @app.agent(topic, name="batches-test")
    async def agent(stream: Any) -> None:
        original = stream.wait_for_stopped

        async def counted(*args: Any, **kwargs: Any) -> bool:
            waits.append(asyncio.get_running_loop().time())
            return bool(await original(*args, **kwargs))

        stream.wait_for_stopped = counted
        events: Sequence[EventT]
        async for events in batches(stream, 3, WITHIN):
            now = asyncio.get_running_loop().time()
            seen.append((now, [e.value for e in events]))  # type: ignore[misc]

    return {"agent": agent, "seen": seen, "waits": waits}


async def handled(harness: dict[str, Any], count: int, timeout: float = 10.0) -> None:
    """Wait until ``count`` values have been handled (or the timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while sum(len(b) for _, b in harness["seen"]) < count and loop.time() < deadline:
        await asyncio.sleep(0.005)


async def test_batches_are_at_most_max_and_keep_order(harness: dict[str, Any]) -> None:
    async with harness["agent"].test_context() as agent:
        for n in range(7):
            await agent.put(str(n).encode(), wait=False)
        await handled(harness, 7)
    values = [v for _, batch in harness["seen"] for v in batch]
    assert values == [str(n).encode() for n in range(7)]
    assert all(len(batch) <= 3 for _, batch in harness["seen"])


async def test_a_lone_event_is_handled_within_the_window(
    harness: dict[str, Any],
) -> None:
    loop = asyncio.get_running_loop()
    async with harness["agent"].test_context() as agent:
        await asyncio.sleep(WITHIN * 3)  # idle first: the window must not be running
        put_at = loop.time()
        await agent.put(b"alone")
        await handled(harness, 1)
    (handled_at, batch), *_ = harness["seen"]
    assert batch == [b"alone"]
    # Not before the window (it waited for company), and without a second
    # event to push it out. The upper bound only catches a batch held for
    # something other than its window; it leaves room for a loaded machine.
    assert WITHIN * 0.5 <= handled_at - put_at < WITHIN + 2.0


async def test_an_idle_stream_does_not_wake_up(harness: dict[str, Any]) -> None:
    """Faust's take_events would wake every WITHIN: ~10 times in this sleep."""
    async with harness["agent"].test_context():
        await asyncio.sleep(WITHIN * 10)
    assert len(harness["waits"]) <= 2
    assert harness["seen"] == []


async def test_an_overlapped_batch_is_acknowledged_once_it_is_handled() -> None:
    """`overlapped_batches`: the next batch comes while this one is still
    being handled; each is acknowledged when its future says so, and one
    that failed is not (it is redone)."""
    app = faust.App("overlapped-test", store="memory://")
    topic = app.topic("overlapped-test-input", value_type=bytes, value_serializer="raw")
    held: list[tuple[list[EventT], asyncio.Future[None]]] = []

    @app.agent(topic, name="overlapped-test")
    async def agent(stream: Any) -> None:
        async for events, done in overlapped_batches(stream, 3, WITHIN):
            held.append((list(events), done))

    def acked(events: list[EventT]) -> list[bool]:
        return [e.message.acked for e in events]

    async with agent.test_context() as context:
        for n in range(5):
            await context.put(str(n).encode(), wait=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while sum(len(b) for b, _ in held) < 5 and loop.time() < deadline:
            await asyncio.sleep(0.005)
        (first, first_done), (second, second_done) = held
        assert acked(first + second) == [False] * 5
        second_done.set_result(None)
        while acked(second) != [True] * 2 and loop.time() < deadline:
            await asyncio.sleep(0.005)
        assert acked(second) == [True] * 2 and acked(first) == [False] * 3
        first_done.set_exception(RuntimeError("the batch failed"))
        await asyncio.sleep(0.05)
        assert acked(first) == [False] * 3
