"""Backoff: full-jitter bounds per attempt, Retry-After floors, spent budgets."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.delivery.backoff import (
    LANE_POLICIES,
    BackoffPolicy,
    next_delay,
    retry_delay,
    schedule,
)
from pipeline.delivery.classify import SOFT_BOUNCE_DELAY, Action

policies = st.builds(
    lambda base, factor, attempts: BackoffPolicy(base, base * factor, attempts),
    base=st.floats(min_value=0.001, max_value=600),
    factor=st.floats(min_value=1, max_value=10_000),
    attempts=st.integers(min_value=1, max_value=40),
)
seeds = st.integers(min_value=0, max_value=2**32)


@given(policy=policies, seed=seeds, data=st.data())
def test_delay_is_within_the_full_jitter_bound(
    policy: BackoffPolicy, seed: int, data: st.DataObject
) -> None:
    """Retry after attempt n waits between 0 and min(cap, base * 2**n)."""
    attempt = data.draw(st.integers(min_value=0, max_value=policy.max_attempts - 1))
    delay = next_delay(policy, attempt, random.Random(seed))
    if attempt + 1 >= policy.max_attempts:
        assert delay is None
        return
    assert delay is not None
    assert 0 <= delay <= min(policy.cap, policy.base * 2**attempt)
    assert delay <= policy.cap


@given(
    policy=policies,
    seed=seeds,
    floor=st.floats(min_value=0, max_value=10_000),
    data=st.data(),
)
def test_delay_is_never_below_the_floor(
    policy: BackoffPolicy, seed: int, floor: float, data: st.DataObject
) -> None:
    """Retry-After is a floor: delay in [floor, cap], or exactly floor past the cap."""
    attempt = data.draw(st.integers(min_value=0, max_value=policy.max_attempts - 1))
    delay = next_delay(policy, attempt, random.Random(seed), floor=floor)
    if attempt + 1 >= policy.max_attempts:
        assert delay is None
        return
    assert delay is not None
    assert delay >= floor
    assert delay <= max(policy.cap, floor)
    if floor > policy.cap:
        assert delay == floor


@given(policy=policies, seed=seeds, extra=st.integers(min_value=0, max_value=100))
def test_no_delay_once_attempts_are_spent(
    policy: BackoffPolicy, seed: int, extra: int
) -> None:
    """The attempt numbered max_attempts - 1 was the last one: no retry after it."""
    last = policy.max_attempts - 1 + extra
    assert next_delay(policy, last, random.Random(seed)) is None
    assert next_delay(policy, last, random.Random(seed), floor=5.0) is None


def test_delays_are_spread_not_constant() -> None:
    """Full jitter: many draws cover the bound's low and high ends."""
    policy = BackoffPolicy(base=1, cap=60, max_attempts=6)
    rng = random.Random(7)
    draws = [next_delay(policy, 3, rng) for _ in range(2000)]
    values = [d for d in draws if d is not None]
    assert len(values) == 2000
    assert len(set(values)) > 1900
    assert min(values) < 1.0  # bound is 8: the low end is reached
    assert max(values) > 7.0  # and the high end
    mean = sum(values) / len(values)
    assert 3.5 < mean < 4.5  # uniform on [0, 8]


def test_same_seed_same_delays() -> None:
    """An injected rng makes a schedule reproducible (replays, tests)."""
    policy = LANE_POLICIES["bulk"]
    first = [next_delay(policy, n, random.Random(3)) for n in range(4)]
    again = [next_delay(policy, n, random.Random(3)) for n in range(4)]
    assert first == again


def test_lane_schedules() -> None:
    """critical: 5 fast retries under 31 s in all; bulk: 4 retries within 450 s."""
    rng = random.Random(1)
    critical = schedule(LANE_POLICIES["critical"], rng)
    bulk = schedule(LANE_POLICIES["bulk"], rng)
    assert [step.upper_bound for step in critical] == [1, 2, 4, 8, 16]
    assert [step.upper_bound for step in bulk] == [30, 60, 120, 240]
    assert [step.after_attempt for step in bulk] == [0, 1, 2, 3]
    for step in (*critical, *bulk):
        assert 0 <= step.example <= step.upper_bound


def test_cap_holds_for_late_attempts() -> None:
    """Doubling stops at the cap, even for absurd attempt numbers."""
    policy = BackoffPolicy(base=1, cap=60, max_attempts=100_000)
    assert policy.bound(10) == 60
    assert policy.bound(5000) == 60
    delay = next_delay(policy, 5000, random.Random(0))
    assert delay is not None and 0 <= delay <= 60


def test_soft_bounce_retries_once_after_an_hour() -> None:
    """The action's floor and budget narrow the lane's policy."""
    action = Action(retry=True, delay_floor=SOFT_BOUNCE_DELAY, max_retries=1)
    policy = LANE_POLICIES["bulk"]
    first = retry_delay(action, policy, 0, random.Random(0))
    assert first is not None and first >= 3600
    assert retry_delay(action, policy, 1, random.Random(0)) is None


def test_retry_delay_follows_the_lane_for_plain_retries() -> None:
    """Without overrides the lane's budget and bounds apply, Retry-After floors."""
    policy = LANE_POLICIES["critical"]
    plain = Action(retry=True)
    delays = [retry_delay(plain, policy, n, random.Random(n)) for n in range(6)]
    assert all(d is not None and d <= 2**n for n, d in enumerate(delays[:5]))
    assert delays[5] is None
    limited = Action(retry=True, delay_floor=30.0)
    delay = retry_delay(limited, policy, 0, random.Random(0))
    assert delay is not None and delay >= 30.0


def test_no_retry_action_has_no_delay() -> None:
    """A permanent failure is never scheduled again."""
    action = Action(retry=False)
    assert retry_delay(action, LANE_POLICIES["critical"], 0, random.Random()) is None


@pytest.mark.parametrize(
    ("base", "cap", "attempts"), [(0, 1, 1), (2, 1, 3), (1, 2, 0), (-1, 5, 2)]
)
def test_nonsense_policies_are_refused(base: float, cap: float, attempts: int) -> None:
    """A policy that could not back off is an error at construction."""
    with pytest.raises(ValueError):
        BackoffPolicy(base, cap, attempts)


def test_negative_attempt_or_floor_is_refused() -> None:
    """Attempts count from 0; a negative floor is a caller bug."""
    policy = LANE_POLICIES["critical"]
    with pytest.raises(ValueError):
        next_delay(policy, -1, random.Random())
    with pytest.raises(ValueError):
        next_delay(policy, 0, random.Random(), floor=-1.0)
