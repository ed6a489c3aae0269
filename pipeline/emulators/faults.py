"""Fault knobs and the call log every provider emulator shares.

An emulator answers each call by asking its ``Faults`` whether to fail it (and
how), after waiting its latency; it records every call it accepted in its
``CallLog``, which counts duplicate deliveries: the same provider idempotency
id (apns-id, the message id we pass in data or custom args) accepted twice.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Faults:
    """How an emulator misbehaves; change the fields at any time, from any thread.

    ``error`` names the failure in the emulator's own vocabulary (for APNs
    "BadDeviceToken", "Unregistered", "TooManyRequests", "InternalServerError",
    "timeout"; each emulator
    documents the names it knows). A call fails with ``error`` at the rate
    ``error_rate``; ``fail_targets`` maps one target (token, address, number)
    to an error it always gets, whatever the rate.
    """

    error_rate: float = 0.0
    error: str | None = None
    latency: float = 0.0  # seconds added before every answer
    retry_after: int = 1  # seconds, for a 429
    timeout_hold: float = 30.0  # how long a "timeout" call hangs before answering
    fail_targets: dict[str, str] = field(default_factory=dict)
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)  # noqa: S311 - fault injection

    def pick(self, target: str | None = None) -> str | None:
        """The error this call gets, or None to answer it normally."""
        if target is not None and target in self.fail_targets:
            return self.fail_targets[target]
        if self.error and self.error_rate > 0 and self._rng.random() < self.error_rate:
            return self.error
        return None

    def reset(self) -> None:
        """Back to a well-behaved provider: every knob at its default."""
        self.error_rate, self.error, self.latency = 0.0, None, 0.0
        self.retry_after, self.timeout_hold = 1, 30.0
        self.fail_targets.clear()

    async def delay(self) -> None:
        """Wait the configured latency."""
        if self.latency > 0:
            await asyncio.sleep(self.latency)

    def update(self, **knobs: Any) -> None:
        """Set knobs by name (the control endpoint and tests use this)."""
        for name, value in knobs.items():
            if name.startswith("_") or not hasattr(self, name):
                raise ValueError(f"unknown fault knob {name!r}")
            setattr(self, name, value)


@dataclass(frozen=True)
class Call:
    """One call an emulator accepted (answered as delivered)."""

    message_id: str  # the provider idempotency id the client passed
    target: str  # token, address, number
    payload: dict[str, Any]  # what the emulator parsed out of the request
    at: float = field(default_factory=time.monotonic)  # when it was accepted


class CallLog:
    """Every accepted call, and how many were duplicates of an earlier one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[Call] = []
        self.attempts = 0  # every call received, failed or not
        self._seen: Counter[str] = Counter()

    def attempted(self) -> None:
        """Count a call received, whatever its answer."""
        with self._lock:
            self.attempts += 1

    def accept(self, message_id: str, target: str, payload: dict[str, Any]) -> None:
        """Record a call answered as delivered."""
        with self._lock:
            self.calls.append(Call(message_id, target, payload))
            self._seen[f"{message_id}|{target}"] += 1

    @property
    def delivered(self) -> int:
        """Calls answered as delivered."""
        return len(self.calls)

    @property
    def duplicates(self) -> int:
        """Deliveries beyond the first of the same (message id, target)."""
        with self._lock:
            return sum(count - 1 for count in self._seen.values() if count > 1)

    def to(self, target: str) -> list[Call]:
        """The calls delivered to one target."""
        with self._lock:
            return [call for call in self.calls if call.target == target]

    def clear(self) -> None:
        """Forget every call."""
        with self._lock:
            self.calls.clear()
            self._seen.clear()
            self.attempts = 0

    def summary(self) -> dict[str, int]:
        """Counts for the control endpoint and test output."""
        return {
            "attempts": self.attempts,
            "delivered": self.delivered,
            "duplicates": self.duplicates,
        }
