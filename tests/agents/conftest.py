"""Agents run here in Faust's test contexts: no producer runs, so nothing
sent is ever acknowledged, and a durable flush would wait in vain."""

from __future__ import annotations

from unittest.mock import AsyncMock

import pytest

import pipeline.streams


@pytest.fixture(autouse=True)
def no_durable_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's effects leave at once (`pipeline.streams.state_first`)."""
    monkeypatch.setattr(pipeline.streams, "flush_durably", AsyncMock())
