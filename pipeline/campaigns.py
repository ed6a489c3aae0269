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

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, tzinfo
from typing import Any

from pipeline.partitioning import partition_for
from pipeline.throttle import next_wall_time
from pipeline.topology import user_key
from schemas.campaigns import (
    Audience,
    Campaign,
    CampaignRequest,
    CampaignState,
    Progress,
)
from schemas.records import NotificationRequest, Recipient
from schemas.types import LISTED_ID_PATTERN

LISTED_ID = re.compile(LISTED_ID_PATTERN)
#: Bad lines an upload's error names at most.
NAMED_ERRORS = 10

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


def list_position(cursor: str | None, upload_id: str) -> tuple[int, int]:
    """Where a partition's walk of an uploaded list stands: (chunk, offset).

    The cursor is ``<upload_id>:<chunk>:<offset>``. A cursor of another
    upload (the segment's list was replaced meanwhile) starts the new list
    over: its users already sent are duplicates for fanout, not second
    messages.
    """
    if cursor is None:
        return 0, 0
    upload, _, rest = cursor.partition(":")
    chunk, _, offset = rest.partition(":")
    if upload != upload_id or not chunk.isdigit() or not offset.isdigit():
        return 0, 0
    return int(chunk), int(offset)


def list_cursor(upload_id: str, chunk: int, offset: int) -> str:
    """The cursor ``list_position`` reads."""
    return f"{upload_id}:{chunk}:{offset}"


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


def walked_share(progress: Iterable[Progress], partitions: int) -> float:
    """How far the walk of every partition is, 0 to 1: a partition done
    counts whole, one under way by what it looked at of its estimated size,
    one not begun nothing."""
    share = 0.0
    for part in progress:
        if part.done:
            share += 1.0
        elif part.walk_size:
            share += min(1.0, part.looked_at / part.walk_size)
    return min(1.0, share / partitions) if partitions else 0.0


def audience_size(audience: Audience | None) -> int | None:
    """Users the audience selects, when known ahead (a list); None for tags
    or all, and for a segment not found."""
    if audience is None:
        return None
    if audience.uploaded is not None:
        return audience.uploaded.count
    if audience.user_ids is not None:
        return len(audience.user_ids)
    return None


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


@dataclass
class UploadedIds:
    """User ids read from an uploaded list, one per line (``text/plain``),
    as they arrive. Blank lines are skipped, repeats kept once; a line that
    is no user id is an error naming the line. A body is taken whole exactly
    when it matches ``LISTED_ID_PATTERN`` (the OpenAPI document says so)."""

    users: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    bad: int = 0
    lines: int = 0

    def add(self, raw: bytes) -> None:
        """Read one line of the upload (with or without its line break)."""
        self.lines += 1
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            self.error("not UTF-8")
            return
        if not text:
            return
        if LISTED_ID.match(text) is None:
            self.error(f"{text[:40]!r} is not a user id (no '/', '{{' or '}}')")
            return
        self.users.add(text)

    def error(self, why: str) -> None:
        """Remember a bad line (the first few by number)."""
        self.bad += 1
        if len(self.errors) < NAMED_ERRORS:
            self.errors.append(f"line {self.lines}: {why}")

    def problem(self) -> str | None:
        """What is wrong with the upload as a whole, if anything."""
        if self.bad:
            more = (
                f" (and {self.bad - len(self.errors)} more)"
                if self.bad > len(self.errors)
                else ""
            )
            return "; ".join(self.errors) + more
        if not self.users:
            return "no user ids (one per line)"
        return None


def by_partition(
    tenant: str, users: Iterable[str], partitions: int, size: int
) -> dict[int, list[list[str]]]:
    """The users split by the partition that holds each, sorted, in chunks
    of ``size``: what each partition's owner expands from its own store."""
    split: dict[int, list[str]] = {}
    for user in users:
        home = partition_for(user_key(tenant, user).encode(), partitions)
        split.setdefault(home, []).append(user)
    return {
        home: [listed[i : i + size] for i in range(0, len(listed), size)]
        for home, listed in ((h, sorted(u)) for h, u in sorted(split.items()))
    }
