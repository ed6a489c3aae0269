"""Campaigns: who a target selects, what each recipient gets, how fast.

Pure decisions; ``agents.campaigns`` runs them on the partitions a worker
owns, and the API shows their sum.

- A recipient's request is an ordinary notification request on the bulk
  lane whose idempotency key is the campaign's (keys are per user), so a
  chunk expanded twice (a crash before its checkpoint) is a duplicate for
  fanout, never a second message.
- A campaign's stored state is what its owner asked for (``active``,
  ``paused``, ``cancelled``); what it shows (scheduled, expanding,
  completed, expired...) follows from that, the clock and the progress.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, time, tzinfo
from typing import Any

from pipeline.throttle import next_wall_time
from schemas.campaigns import (
    Audience,
    Campaign,
    CampaignRequest,
    CampaignState,
    Progress,
)
from schemas.records import NotificationRequest, Recipient

#: Channel outcomes a campaign's counts add up (one per recipient and channel).
OUTCOMES = (
    "queued",
    "sent",
    "delivered",
    "failed",
    "suppressed",
    "throttled",
    "deferred",
    "digested",
    "cancelled",
    "expired",
)
#: Outcomes that mean the message went, and those that mean it arrived.
SENT_OR_LATER = frozenset({"sent", "delivered", "opened", "clicked", "bounced"})
DELIVERED_OR_LATER = frozenset({"delivered", "opened", "clicked"})


def recipient_key(campaign: str) -> str:
    """The idempotency key of each of a campaign's requests (per user)."""
    return f"campaign:{campaign}"


def local_schedule(campaign: Campaign, zone: tzinfo) -> datetime | None:
    """When a recipient in ``zone`` gets a ``local_time`` campaign (None for
    a campaign without one): the first such wall time on the user's clock
    at or after the campaign's ``schedule_at`` (or its creation)."""
    asked = campaign.request
    if asked.local_time is None:
        return None
    hour, minute = (int(part) for part in asked.local_time.split(":"))
    base = asked.schedule_at or campaign.created_at
    return next_wall_time(base, time(hour, minute), zone)


def recipient_request(
    campaign: Campaign, user_id: str, schedule_at: datetime | None = None
) -> NotificationRequest:
    """What one recipient of ``campaign`` is sent: an ordinary request
    (``schedule_at``: the recipient's own, for a ``local_time`` campaign)."""
    asked: CampaignRequest = campaign.request
    return NotificationRequest(
        idempotency_key=recipient_key(campaign.campaign_id),
        recipient=Recipient(user_id=user_id),
        type=asked.notification_type(),
        priority=asked.priority(),
        tenant=campaign.tenant,
        channels=asked.channels,
        data=asked.notification_data(),
        schedule_at=schedule_at or asked.schedule_at,
        expiry_at=asked.expiry_at,
        campaign_id=campaign.campaign_id,
    )


def selects(audience: Audience, tags: Iterable[str]) -> bool:
    """True if a user whose profile has ``tags`` is in ``audience`` (not a
    user id list: those are selected by id)."""
    if audience.all:
        return True
    if audience.tags:
        return set(audience.tags) <= set(tags)
    return False


def inline_users(
    audience: Audience, owns: Mapping[str, int], partition: int
) -> list[str]:
    """The listed users whose partition is ``partition``, in a stable order;
    ``owns`` maps each user id to its partition."""
    return sorted(u for u in audience.user_ids or () if owns[u] == partition)


def shown_state(
    campaign: Campaign, progress: Iterable[Progress], partitions: int, now: datetime
) -> CampaignState:
    """What ``GET /v1/campaigns/{id}`` says the campaign is doing."""
    if campaign.state in ("cancelled", "paused"):
        return campaign.state
    done = [p for p in progress if p.done]
    if len(done) >= partitions:
        return "completed"
    asked = campaign.request
    if asked.expiry_at is not None and now >= asked.expiry_at:
        return "expired"
    if asked.schedule_at is not None and now < asked.schedule_at:
        return "scheduled"
    return "expanding"


def expands(campaign: Campaign, now: datetime) -> bool:
    """True if the campaign's expansion goes on at ``now``."""
    asked = campaign.request
    if campaign.state != "active":
        return False
    if asked.expiry_at is not None and now >= asked.expiry_at:
        return False
    # A schedule_at in the future: expanded ahead of it, each request held
    # by the scheduler until then, so the audience gets it on time.
    return True


class Pacer:
    """Tokens per (campaign, partition): a partition's share of the rate."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.tokens: dict[tuple[str, int], float] = {}

    def grant(
        self, key: tuple[str, int], rate: float, chunk: int, elapsed: float
    ) -> int:
        """Recipients this partition may expand now (at most a chunk)."""
        tokens = self.tokens.get(key, 0.0) + rate * elapsed / self.partitions
        tokens = min(tokens, float(chunk))
        self.tokens[key] = tokens
        return int(tokens)

    def spend(self, key: tuple[str, int], used: int) -> None:
        """``used`` recipients were expanded."""
        self.tokens[key] = max(0.0, self.tokens.get(key, 0.0) - used)


def channel_deltas(
    before: Mapping[Any, str] | None, after: Mapping[Any, str]
) -> dict[str, int]:
    """How a notification's channel outcomes moved the campaign's counts."""
    delta: dict[str, int] = {}
    for channel, outcome in after.items():
        old = (before or {}).get(channel)
        if old == outcome:
            continue
        if old is not None:
            delta[old] = delta.get(old, 0) - 1
        delta[outcome] = delta.get(outcome, 0) + 1
    return delta


def summed(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Per-outcome counts of every partition added up, with sent and
    delivered counting what went further (a click was sent and delivered)."""
    total: dict[str, int] = {}
    for part in counts:
        for outcome, n in part.items():
            total[outcome] = total.get(outcome, 0) + n
    shown = {name: total.get(name, 0) for name in OUTCOMES}
    shown["sent"] = sum(total.get(o, 0) for o in SENT_OR_LATER)
    shown["delivered"] = sum(total.get(o, 0) for o in DELIVERED_OR_LATER)
    for outcome in ("notifications", "opened", "clicked", "bounced", "retried"):
        shown[outcome] = total.get(outcome, 0)
    return shown
