"""Failure classification: seed 001's error table over the provider-neutral kinds."""

from __future__ import annotations

import pytest

from pipeline.delivery.classify import (
    SOFT_BOUNCE_DELAY,
    Action,
    Effect,
    classify,
    is_provider_side,
    should_failover,
)
from pipeline.providers.base import FailureKind, ProviderFailure


def failure(kind: FailureKind, retry_after: float | None = None) -> ProviderFailure:
    """A failure of ``kind`` as a sender would raise it."""
    return ProviderFailure(kind, "CODE", provider="test", retry_after=retry_after)


EXPECTED = {
    FailureKind.INVALID_TOKEN: Action(retry=False, effect=Effect.REMOVE_TOKEN),
    FailureKind.UNREGISTERED: Action(retry=False, effect=Effect.REMOVE_TOKEN),
    FailureKind.UNAVAILABLE: Action(retry=True),
    FailureKind.TIMEOUT: Action(retry=True),
    FailureKind.RATE_LIMITED: Action(retry=True),
    FailureKind.HARD_BOUNCE: Action(retry=False, effect=Effect.SUPPRESS_ADDRESS),
    FailureKind.SOFT_BOUNCE: Action(
        retry=True, delay_floor=SOFT_BOUNCE_DELAY, max_retries=1
    ),
    FailureKind.INVALID_NUMBER: Action(retry=False, effect=Effect.INVALID_CONTACT),
    FailureKind.CARRIER_FILTERED: Action(retry=False, effect=Effect.ESCALATE),
    FailureKind.PAYLOAD_TOO_LARGE: Action(retry=False),
    FailureKind.REJECTED: Action(retry=False),
    FailureKind.AUTH: Action(retry=True),
}

RECIPIENT_SIDE = {
    FailureKind.INVALID_TOKEN,
    FailureKind.UNREGISTERED,
    FailureKind.HARD_BOUNCE,
    FailureKind.SOFT_BOUNCE,
    FailureKind.INVALID_NUMBER,
    FailureKind.CARRIER_FILTERED,
    FailureKind.PAYLOAD_TOO_LARGE,
    FailureKind.REJECTED,
}


def test_the_table_covers_every_kind() -> None:
    """A kind added to FailureKind without a row here is caught."""
    assert set(EXPECTED) == set(FailureKind)


@pytest.mark.parametrize("kind", list(FailureKind))
def test_each_kind_gets_the_seed_table_action(kind: FailureKind) -> None:
    """Token errors remove the token, bounces suppress, 5xx and timeouts retry..."""
    assert classify(failure(kind)) == EXPECTED[kind]


def test_soft_bounce_retries_once_after_an_hour() -> None:
    """Bounce (soft): retry once after 1 hour."""
    action = classify(failure(FailureKind.SOFT_BOUNCE))
    assert action.retry
    assert action.delay_floor == 3600
    assert action.max_retries == 1


def test_rate_limit_waits_for_retry_after() -> None:
    """Rate limit (429): respect Retry-After; without one, backoff alone decides."""
    assert classify(failure(FailureKind.RATE_LIMITED, 17.0)).delay_floor == 17.0
    assert classify(failure(FailureKind.RATE_LIMITED)).delay_floor is None


def test_service_unavailable_honours_a_retry_after_too() -> None:
    """A 503 that names a time is not retried before it."""
    action = classify(failure(FailureKind.UNAVAILABLE, 120.0))
    assert action == Action(retry=True, delay_floor=120.0)


@pytest.mark.parametrize("kind", sorted(RECIPIENT_SIDE))
def test_recipient_problems_never_fail_over(kind: FailureKind) -> None:
    """Another provider would refuse the same token, address or number."""
    assert not should_failover(failure(kind))
    assert not is_provider_side(failure(kind))


@pytest.mark.parametrize("kind", sorted(set(FailureKind) - RECIPIENT_SIDE))
def test_provider_trouble_fails_over(kind: FailureKind) -> None:
    """5xx, timeouts, 429 and refused credentials are the provider's side."""
    assert should_failover(failure(kind))
    assert is_provider_side(failure(kind))


def test_no_retry_for_permanent_failures() -> None:
    """Every kind that neither retries nor has an effect is a plain permanent one."""
    permanent = {
        kind
        for kind in FailureKind
        if not classify(failure(kind)).retry and classify(failure(kind)).effect is None
    }
    assert permanent == {FailureKind.PAYLOAD_TOO_LARGE, FailureKind.REJECTED}
