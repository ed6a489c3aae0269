"""When to try again: exponential backoff with full jitter, per lane.

Full jitter (a uniform draw between zero and the exponential bound) spreads
the retries of many jobs that failed together, so a provider coming back is
not hit by all of them at the same instant.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from pipeline.delivery.classify import Action

#: 2.0 ** 1023 is the largest power of two a float holds; beyond it the bound
#: is the cap anyway.
_MAX_EXPONENT = 1023


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Backoff of one lane: first bound ``base`` seconds, doubling up to ``cap``.

    ``max_attempts`` counts every attempt, the first one included: 5 means the
    first try and up to 4 retries.
    """

    base: float
    cap: float
    max_attempts: int

    def __post_init__(self) -> None:
        if self.base <= 0:
            raise ValueError(f"base must be positive, got {self.base}")
        if self.cap < self.base:
            raise ValueError(f"cap {self.cap} is below base {self.base}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")

    def bound(self, attempt: int) -> float:
        """Upper bound of the wait after failed attempt ``attempt`` (0-based)."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        return min(self.cap, self.base * 2.0 ** min(attempt, _MAX_EXPONENT))


#: critical: a 2FA code goes stale within minutes, so retries come fast; the
#: five bounds 1+2+4+8+16 s add up to 31 s at most. bulk: 5 attempts (seed
#: 001's "retry up to 4x") whose bounds 30+60+120+240 s fit the promotional
#: 15-minute target; the cap only matters if the budget grows.
LANE_POLICIES: dict[str, BackoffPolicy] = {
    "critical": BackoffPolicy(base=1, cap=60, max_attempts=6),
    "bulk": BackoffPolicy(base=30, cap=3600, max_attempts=5),
}


def next_delay(
    policy: BackoffPolicy,
    attempt: int,
    rng: random.Random,
    floor: float | None = None,
) -> float | None:
    """Seconds to wait after failed attempt ``attempt`` (0-based), or None if spent.

    The delay is uniform in ``[0, min(cap, base * 2**attempt)]`` (full jitter),
    raised to ``floor`` (the provider's Retry-After) when that is later: a
    provider that names a time is believed over our own cap.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if floor is not None and floor < 0:
        raise ValueError(f"floor must be >= 0, got {floor}")
    if attempt + 1 >= policy.max_attempts:
        return None
    delay = rng.uniform(0.0, policy.bound(attempt))
    if floor is not None:
        delay = max(delay, floor)
    return delay


def retry_delay(
    action: Action, policy: BackoffPolicy, attempt: int, rng: random.Random
) -> float | None:
    """Seconds until the retry ``action`` calls for after ``attempt``, or None.

    None when the action is not a retry or the budget (the lane's, narrowed
    by the action's ``max_retries``) is spent: the job is then dead-lettered.
    """
    if not action.retry:
        return None
    if action.max_retries is not None:
        budget = min(policy.max_attempts, action.max_retries + 1)
        policy = dataclasses.replace(policy, max_attempts=budget)
    return next_delay(policy, attempt, rng, floor=action.delay_floor)


@dataclass(frozen=True, slots=True)
class Step:
    """One retry of a schedule: after which attempt, its bound, one sampled wait."""

    after_attempt: int
    upper_bound: float
    example: float


def schedule(policy: BackoffPolicy, rng: random.Random) -> list[Step]:
    """Every retry ``policy`` allows, with its upper bound and a sample (for docs)."""
    steps = []
    for attempt in range(policy.max_attempts - 1):
        bound = policy.bound(attempt)
        steps.append(Step(attempt, bound, rng.uniform(0.0, bound)))
    return steps
