"""Agents run here in Faust's test contexts: no producer runs, so nothing
sent is ever acknowledged, and a durable flush would wait in vain."""

from __future__ import annotations

from typing import Any
from unittest.mock import AsyncMock

import pytest

import pipeline.streams
from pipeline.transport import Producer


@pytest.fixture(autouse=True)
def no_durable_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's effects leave at once (`pipeline.streams.state_first`)."""
    monkeypatch.setattr(pipeline.streams, "flush_durably", AsyncMock())


@pytest.fixture(autouse=True)
def effects_through_send_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    """No client runs here either: the batch produce path (`pipeline.outbox`,
    tested on its own and against a broker) hands each record to its topic's
    ``send_soon``, which these tests watch."""

    def emit(
        self: Producer,
        topic: Any,
        key: Any,
        value: Any,
        *,
        partition: int | None = None,
        key_serializer: Any = None,
        value_serializer: Any = None,
        on_acked: Any = None,
    ) -> None:
        topic.send_soon(
            key=key,
            value=value,
            partition=partition,
            key_serializer=key_serializer,
            value_serializer=value_serializer,
        )

    monkeypatch.setattr(Producer, "emit", emit)
