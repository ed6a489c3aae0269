"""What to do about a failed provider call: retry or not, when, and what else.

The table is the product brief's retry table (seed 001, section 7) expressed
over ``FailureKind``; the send stage applies the ``Action`` and never looks at
provider codes itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import assert_never

from pipeline.providers.base import FailureKind, ProviderFailure

#: "Bounce (soft): retry once after 1 hour."
SOFT_BOUNCE_DELAY = 3600.0

#: Failures that say the provider (or our account with it) is in trouble, not
#: the recipient: they count against the provider's circuit breaker and are
#: worth trying on another provider of the same channel.
PROVIDER_SIDE = frozenset(
    {
        FailureKind.UNAVAILABLE,
        FailureKind.TIMEOUT,
        FailureKind.RATE_LIMITED,
        FailureKind.AUTH,
    }
)


class Effect(StrEnum):
    """A side effect a failure calls for, beyond retrying or not."""

    REMOVE_TOKEN = "remove_token"  # noqa: S105 - the push token, not a secret
    SUPPRESS_ADDRESS = "suppress_address"
    INVALID_CONTACT = "invalid_contact"
    ESCALATE = "escalate"


@dataclass(frozen=True, slots=True)
class Action:
    """The decision about one failure.

    ``delay_floor``: seconds the next try must not come before (Retry-After,
    the soft-bounce hour); the backoff delay is raised to it. ``max_retries``
    overrides the lane's budget for the whole job: at most that many retries
    counted from the first attempt (1 for a soft bounce).
    """

    retry: bool
    delay_floor: float | None = None
    max_retries: int | None = None
    effect: Effect | None = None


def classify(failure: ProviderFailure) -> Action:
    """The action seed 001's error table prescribes for ``failure``."""
    kind = failure.kind
    match kind:
        case FailureKind.INVALID_TOKEN | FailureKind.UNREGISTERED:
            return Action(retry=False, effect=Effect.REMOVE_TOKEN)
        case FailureKind.UNAVAILABLE | FailureKind.TIMEOUT:
            # A 503 may carry Retry-After too (FCM does); honour it when given.
            return Action(retry=True, delay_floor=failure.retry_after)
        case FailureKind.RATE_LIMITED:
            return Action(retry=True, delay_floor=failure.retry_after)
        case FailureKind.HARD_BOUNCE:
            return Action(retry=False, effect=Effect.SUPPRESS_ADDRESS)
        case FailureKind.SOFT_BOUNCE:
            return Action(retry=True, delay_floor=SOFT_BOUNCE_DELAY, max_retries=1)
        case FailureKind.INVALID_NUMBER:
            return Action(retry=False, effect=Effect.INVALID_CONTACT)
        case FailureKind.CARRIER_FILTERED:
            # The content was refused, not the number: a person reviews it.
            return Action(retry=False, effect=Effect.ESCALATE)
        case FailureKind.PAYLOAD_TOO_LARGE | FailureKind.REJECTED:
            return Action(retry=False)
        case FailureKind.AUTH:
            # Refused credentials are ours, not the message's: the message is
            # fine and will go through once ops fix the key. Dead-lettering
            # would turn one expired key into a mass replay; retrying lets the
            # provider's breaker open on the error rate and stop the calls,
            # and the failover takes the traffic meanwhile.
            return Action(retry=True, delay_floor=failure.retry_after)
        case _:
            assert_never(kind)


def is_provider_side(failure: ProviderFailure) -> bool:
    """Whether ``failure`` is the provider's trouble (it counts in its breaker).

    A recipient problem (a dead token, a bounce, a bad number) says nothing
    about the provider's health: the provider answered correctly.
    """
    return failure.kind in PROVIDER_SIDE


def should_failover(failure: ProviderFailure) -> bool:
    """Whether another provider of the channel should get this message.

    Only for provider-side trouble; a recipient problem would fail the same
    way on any provider.
    """
    return is_provider_side(failure)
