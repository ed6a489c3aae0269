"""The provider-calls benchmark makes real, distinct calls to the emulators."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.provider_calls import measure
from pipeline.emulators.stack import EmulatorStack
from pipeline.settings import Settings


def test_every_call_reaches_an_emulator_once(
    emulators: EmulatorStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in emulators.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NOTIFY_SEND_BATCH", "7")  # several batches, the last short
    result = asyncio.run(measure(30, Settings()))
    assert result["calls"] == 30
    assert result["failed"] == 0
    assert result["cpu_s"] > 0
    delivered = emulators.delivered()
    # 30 measured calls and one warm-up call each, half push, half email.
    assert (delivered["fcm"], delivered["sendgrid"]) == (16, 16)
    assert sum(emulators.duplicates().values()) == 0
