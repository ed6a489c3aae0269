"""Circuit breaker on a fake clock: opening, half-open probes, the sliding window."""

from __future__ import annotations

import pytest

from pipeline.delivery.breaker import BreakerState, CircuitBreaker


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass."""
        self.now += seconds


def make(clock: FakeClock, **overrides: float) -> CircuitBreaker:
    """A breaker with small numbers: 10 calls, 50% errors, 60% slow, 10 s window."""
    params: dict[str, float] = {
        "window": 10.0,
        "min_calls": 10,
        "error_rate": 0.5,
        "slow_call": 2.0,
        "slow_rate": 0.6,
        "open_for": 30.0,
        "half_open_probes": 2,
    }
    params.update(overrides)
    return CircuitBreaker(
        "apns",
        clock,
        window=params["window"],
        min_calls=int(params["min_calls"]),
        error_rate=params["error_rate"],
        slow_call=params["slow_call"],
        slow_rate=params["slow_rate"],
        open_for=params["open_for"],
        half_open_probes=int(params["half_open_probes"]),
    )


def record(breaker: CircuitBreaker, ok: int, failed: int, latency: float = 0.1) -> None:
    """Record ``ok`` successes then ``failed`` failures."""
    for _ in range(ok):
        breaker.record(True, latency)
    for _ in range(failed):
        breaker.record(False, latency)


def open_breaker(breaker: CircuitBreaker) -> None:
    """Trip it with a window full of errors."""
    record(breaker, 0, 10)
    assert breaker.state is BreakerState.OPEN


def test_opens_when_the_error_rate_reaches_the_threshold() -> None:
    """Four errors in ten calls keep it closed; five in ten open it."""
    clock = FakeClock()
    breaker = make(clock)
    record(breaker, 5, 4)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    breaker.record(False, 0.1)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()


def test_opens_when_the_slow_rate_reaches_the_threshold() -> None:
    """Successful but slow calls open it too: six of ten at or over 2 s."""
    clock = FakeClock()
    breaker = make(clock)
    record(breaker, 4, 0, latency=0.1)
    record(breaker, 5, 0, latency=2.0)
    assert breaker.state is BreakerState.CLOSED
    breaker.record(True, 3.5)
    assert breaker.state is BreakerState.OPEN


def test_stays_closed_below_min_calls() -> None:
    """Nine failures out of nine is no verdict when ten calls are needed."""
    clock = FakeClock()
    breaker = make(clock)
    record(breaker, 0, 9)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    assert breaker.snapshot()["error_rate"] == 1.0


def test_fractional_thresholds_are_reached_exactly() -> None:
    """3 of 10 reaches 0.3, though 0.3 * 10 is a hair above 3 in floats."""
    clock = FakeClock()
    breaker = make(clock, error_rate=0.3)
    record(breaker, 7, 3)
    assert breaker.state is BreakerState.OPEN


def test_open_refuses_until_open_for_has_passed() -> None:
    """OPEN says no for open_for seconds, then reads HALF_OPEN."""
    clock = FakeClock()
    breaker = make(clock)
    open_breaker(breaker)
    clock.advance(29.9)
    assert not breaker.allow()
    assert breaker.snapshot()["half_open_in"] == pytest.approx(0.1)
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN


def test_half_open_lets_only_the_probes_through() -> None:
    """At most half_open_probes calls at once; a finished probe frees a slot."""
    clock = FakeClock()
    breaker = make(clock, half_open_probes=2)
    open_breaker(breaker)
    clock.advance(30)
    assert breaker.allow()
    assert breaker.allow()
    assert not breaker.allow()
    assert breaker.snapshot()["probes_in_flight"] == 2
    breaker.record(True, 0.1)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()


def test_probes_all_succeeding_close_it_with_an_empty_window() -> None:
    """Closed again, the errors that opened it are forgotten."""
    clock = FakeClock()
    breaker = make(clock)
    open_breaker(breaker)
    clock.advance(30)
    assert breaker.allow() and breaker.allow()
    breaker.record(True, 0.1)
    breaker.record(True, 0.1)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot()["calls"] == 0
    # The old errors no longer count: nine new failures are below min_calls.
    record(breaker, 0, 9)
    assert breaker.state is BreakerState.CLOSED


def test_a_failing_probe_reopens_it_and_restarts_the_timer() -> None:
    """One failed probe is enough; the next half-open is open_for after it."""
    clock = FakeClock()
    breaker = make(clock)
    open_breaker(breaker)
    clock.advance(30)
    assert breaker.allow()
    breaker.record(True, 0.1)
    assert breaker.allow()
    clock.advance(5)
    breaker.record(False, 0.1)
    assert breaker.state is BreakerState.OPEN
    assert breaker.snapshot()["times_opened"] == 2
    clock.advance(29)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()


def test_a_slow_probe_counts_as_failing() -> None:
    """A provider that answers, but slowly, is not healthy yet."""
    clock = FakeClock()
    breaker = make(clock)
    open_breaker(breaker)
    clock.advance(30)
    assert breaker.allow()
    breaker.record(True, 2.5)
    assert breaker.state is BreakerState.OPEN


def test_old_calls_leave_the_window() -> None:
    """Errors older than the window (plus one bucket) no longer count."""
    clock = FakeClock()
    breaker = make(clock)  # 10 s window in 1 s buckets
    record(breaker, 0, 9)
    clock.advance(11.0)
    assert breaker.snapshot()["calls"] == 0
    breaker.record(False, 0.1)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot()["calls"] == 1


def test_calls_inside_the_window_add_up() -> None:
    """Errors spread over less than the window together open it."""
    clock = FakeClock()
    breaker = make(clock)
    record(breaker, 0, 5)
    clock.advance(5.0)
    record(breaker, 0, 4)
    assert breaker.state is BreakerState.CLOSED
    breaker.record(False, 0.1)
    assert breaker.state is BreakerState.OPEN


def test_the_window_slides_bucket_by_bucket() -> None:
    """Each second's calls leave one at a time, not all at once."""
    clock = FakeClock()
    breaker = make(clock, min_calls=100)
    for _ in range(10):
        record(breaker, 1, 1)
        clock.advance(1.0)
    assert breaker.snapshot()["calls"] == 20
    clock.advance(1.0)
    assert breaker.snapshot()["calls"] == 18
    clock.advance(5.0)
    assert breaker.snapshot()["calls"] == 8


def test_calls_finishing_while_open_are_not_counted() -> None:
    """Late answers of calls let through before it opened change nothing."""
    clock = FakeClock()
    breaker = make(clock)
    open_breaker(breaker)
    calls_when_opened = breaker.snapshot()["calls"]
    record(breaker, 20, 0)
    assert breaker.state is BreakerState.OPEN
    assert breaker.snapshot()["calls"] == calls_when_opened


def test_snapshot_is_json_ready() -> None:
    """/health shows the state and the window's figures."""
    clock = FakeClock()
    breaker = make(clock)
    record(breaker, 3, 1)
    breaker.record(True, 2.0)
    assert breaker.snapshot() == {
        "name": "apns",
        "state": "closed",
        "calls": 5,
        "errors": 1,
        "slow": 1,
        "error_rate": 0.2,
        "slow_rate": 0.2,
        "half_open_in": None,
        "probes_in_flight": 0,
        "times_opened": 0,
    }


@pytest.mark.parametrize(
    "bad",
    [
        {"window": 0},
        {"min_calls": 0},
        {"error_rate": 0},
        {"error_rate": 1.5},
        {"slow_rate": 0},
        {"half_open_probes": 0},
        {"slow_call": 0},
    ],
)
def test_nonsense_settings_are_refused(bad: dict[str, float]) -> None:
    """A breaker that could never open, or never close, is a configuration error."""
    with pytest.raises(ValueError):
        make(FakeClock(), **bad)
