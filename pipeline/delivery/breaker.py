"""A circuit breaker per provider: stop calling a provider that is failing or slow.

CLOSED lets every call through and watches a sliding time window; when, over
at least ``min_calls`` calls, the share of errors reaches ``error_rate`` or the
share of calls slower than ``slow_call`` seconds reaches ``slow_rate``, it
OPENs. OPEN refuses calls for ``open_for`` seconds, then turns HALF_OPEN and
lets at most ``half_open_probes`` calls through at once: if all of them
succeed it CLOSEs with an empty window, and the first that fails (or is slow)
OPENs it again for another ``open_for``.

Only provider-side failures are errors here. The caller passes
``success=True`` for a call the provider answered correctly even if the
message failed for its recipient (APNs BadDeviceToken, a hard bounce, an
invalid number): see ``pipeline.delivery.classify.is_provider_side``.

The window is a ring of time buckets with running totals, so a call costs
O(1) amortised; a call leaves the window between ``window`` and ``window``
plus one bucket width after it was recorded.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class BreakerState(StrEnum):
    """Where a circuit breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class _Bucket:
    index: int  # floor(time / bucket width)
    calls: int = 0
    errors: int = 0
    slow: int = 0


class CircuitBreaker:
    """One provider's breaker; ``clock`` returns monotonic seconds.

    The defaults suit an HTTP provider answering in well under a second: half
    the calls failing, or most taking 5 s, over the last 30 s stops the calls
    for 30 s.
    """

    def __init__(
        self,
        name: str,
        clock: Callable[[], float],
        window: float = 30.0,
        min_calls: int = 20,
        error_rate: float = 0.5,
        slow_call: float = 5.0,
        slow_rate: float = 0.8,
        open_for: float = 30.0,
        half_open_probes: int = 3,
        buckets: int = 10,
    ) -> None:
        if window <= 0 or open_for < 0 or slow_call <= 0:
            raise ValueError("window and slow_call must be > 0, open_for >= 0")
        if min_calls < 1 or half_open_probes < 1 or buckets < 1:
            raise ValueError("min_calls, half_open_probes and buckets must be >= 1")
        if not (0 < error_rate <= 1 and 0 < slow_rate <= 1):
            raise ValueError("error_rate and slow_rate must be in (0, 1]")
        self.name = name
        self._clock = clock
        self.window = window
        self.min_calls = min_calls
        self.error_rate = error_rate
        self.slow_call = slow_call
        self.slow_rate = slow_rate
        self.open_for = open_for
        self.half_open_probes = half_open_probes
        self._width = window / buckets
        self._buckets: deque[_Bucket] = deque()
        self._calls = 0
        self._errors = 0
        self._slow = 0
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probes_in_flight = 0
        self._probes_passed = 0
        self._times_opened = 0

    @property
    def state(self) -> BreakerState:
        """The current state (an OPEN breaker whose time is up reads HALF_OPEN)."""
        self._advance(self._clock())
        return self._state

    def allow(self) -> bool:
        """Whether a call may go to the provider now; a True in HALF_OPEN is a probe."""
        self._advance(self._clock())
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            return False
        if self._probes_in_flight >= self.half_open_probes:
            return False
        self._probes_in_flight += 1
        return True

    def record(self, success: bool, latency: float) -> None:
        """Record one finished call: ``success`` unless the provider failed it.

        A call that was let through before the breaker opened and finishes
        while it is OPEN is not counted: the breaker already decided.
        """
        now = self._clock()
        self._advance(now)
        slow = latency >= self.slow_call
        if self._state is BreakerState.HALF_OPEN:
            self._record_probe(success and not slow, now)
        elif self._state is BreakerState.CLOSED:
            self._add(now, success, slow)
            if self._tripped():
                self._open(now)

    def snapshot(self) -> dict[str, Any]:
        """State and window figures, JSON-ready, for /health and metrics."""
        now = self._clock()
        self._advance(now)
        reopens_in = None
        if self._state is BreakerState.OPEN:
            reopens_in = max(0.0, self._opened_at + self.open_for - now)
        return {
            "name": self.name,
            "state": str(self._state),
            "calls": self._calls,
            "errors": self._errors,
            "slow": self._slow,
            "error_rate": self._errors / self._calls if self._calls else 0.0,
            "slow_rate": self._slow / self._calls if self._calls else 0.0,
            "half_open_in": reopens_in,
            "probes_in_flight": self._probes_in_flight,
            "times_opened": self._times_opened,
        }

    def _advance(self, now: float) -> None:
        if self._state is BreakerState.OPEN and now - self._opened_at >= self.open_for:
            self._state = BreakerState.HALF_OPEN
            self._probes_in_flight = 0
            self._probes_passed = 0
        self._expire(now)

    def _expire(self, now: float) -> None:
        # A bucket leaves once its newest possible call is older than the window.
        oldest = now - self.window
        while self._buckets and (self._buckets[0].index + 1) * self._width <= oldest:
            gone = self._buckets.popleft()
            self._calls -= gone.calls
            self._errors -= gone.errors
            self._slow -= gone.slow

    def _add(self, now: float, success: bool, slow: bool) -> None:
        index = math.floor(now / self._width)
        if not self._buckets or self._buckets[-1].index < index:
            self._buckets.append(_Bucket(index))
        # A clock that steps back a little lands in the newest bucket.
        bucket = self._buckets[-1]
        bucket.calls += 1
        self._calls += 1
        if not success:
            bucket.errors += 1
            self._errors += 1
        if slow:
            bucket.slow += 1
            self._slow += 1

    def _tripped(self) -> bool:
        if self._calls < self.min_calls:
            return False
        # Divided, not multiplied: 3 / 10 >= 0.3 holds, 3 >= 0.3 * 10 does not.
        return (
            self._errors / self._calls >= self.error_rate
            or self._slow / self._calls >= self.slow_rate
        )

    def _record_probe(self, passed: bool, now: float) -> None:
        self._probes_in_flight = max(0, self._probes_in_flight - 1)
        if not passed:
            self._open(now)
            return
        self._probes_passed += 1
        if self._probes_passed >= self.half_open_probes:
            self._close()

    def _open(self, now: float) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = now
        self._times_opened += 1
        self._probes_in_flight = 0
        self._probes_passed = 0

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._buckets.clear()
        self._calls = self._errors = self._slow = 0
        self._probes_in_flight = 0
        self._probes_passed = 0
