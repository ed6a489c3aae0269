"""A batch's effects (jobs, events) leave only once its table writes are durable."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.streams import send_effect, state_first


def batch(generation: int = 4) -> list[Any]:
    """A batch of one event read in ``generation``."""
    return [SimpleNamespace(message=SimpleNamespace(generation_id=generation))]


class Log:
    """A topic and a producer that write what happens, in order."""

    def __init__(self, problem: str | None = None) -> None:
        self.steps: list[tuple[str, Any]] = []
        self.problem = problem
        self.producer = self
        self.app = self
        self.consumer_generation_id = 4

    def send_soon(self, *, key: Any, value: Any) -> None:
        self.steps.append(("sent", value))

    def emit(self, topic: Any, key: Any, value: Any) -> None:
        """The batch produce path."""
        topic.steps.append(("sent", value))

    async def durable(self, timeout: float) -> str | None:
        self.steps.append(("durable", None))
        return self.problem


async def test_effects_wait_for_the_batchs_state() -> None:
    log = Log()
    table_write = Log()  # stands for a changelog record, sent at once
    async with state_first(log, batch()):  # type: ignore[arg-type]
        send_effect(log, "k", "job")  # type: ignore[arg-type]
        table_write.send_soon(key="k", value="state")
        send_effect(log, "k", "event")  # type: ignore[arg-type]
        assert log.steps == []
    assert table_write.steps == [("sent", "state")]
    assert log.steps == [("durable", None), ("sent", "job"), ("sent", "event")]


async def test_outside_a_batch_effects_leave_at_once() -> None:
    log = Log()
    send_effect(log, "k", "event")  # type: ignore[arg-type]
    assert log.steps == [("sent", "event")]


async def test_a_failed_batch_sends_nothing() -> None:
    log = Log()
    with pytest.raises(ValueError):
        async with state_first(log, batch()):  # type: ignore[arg-type]
            send_effect(log, "k", "job")  # type: ignore[arg-type]
            raise ValueError("decision failed")
    assert log.steps == []


async def test_state_that_cannot_be_made_durable_sends_nothing() -> None:
    log = Log(problem="a send failed")
    with pytest.raises(RuntimeError, match="a send failed"):
        async with state_first(log, batch()):  # type: ignore[arg-type]
            send_effect(log, "k", "job")  # type: ignore[arg-type]
    assert log.steps == [("durable", None)]


async def test_a_batch_the_group_moved_on_from_sends_nothing() -> None:
    """A rebalance mid-batch (a new generation): the partitions' next owner
    decides the batch again; two answers must not go out."""
    log = Log()
    async with state_first(log, batch()):  # type: ignore[arg-type]
        send_effect(log, "k", "job")  # type: ignore[arg-type]
        log.consumer_generation_id = 5
    assert log.steps == [("durable", None)]
