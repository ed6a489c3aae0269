"""campaigns: each worker expands its own partitions of every running campaign.

The users live in the profiles table, partitioned by user across the
workers. Every tick, a worker looks at each campaign that expands now and,
for each profiles partition it owns, takes the next chunk of that
partition's users the target selects (from its local store, after the
partition's checkpoint), paced at the partition's share of the campaign's
rate. It produces one ordinary request per recipient onto the bulk lane's
requests topic, on the user's partition (ingest and fanout there take it
through preferences, caps, digest and quiet hours like any other), waits
until the broker has them all, and only then moves the checkpoint
(``campaign_progress``). A crash before the checkpoint expands the chunk
again: each request carries the campaign's idempotency key, so fanout takes
the second copy as a duplicate and nobody is sent twice. No process reads
another's partitions, so more workers expand faster; the critical lane
never sees a campaign's request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from pipeline.app import app
from pipeline.campaigns import (
    Pacer,
    expands,
    list_cursor,
    list_position,
    local_schedule,
    recipient_request,
    selects,
)
from pipeline.errors import InvalidMessage
from pipeline.partitioning import partition_for
from pipeline.policy import user_zone
from pipeline.scan import estimated_size, prefixed
from pipeline.streams import acting_for
from pipeline.sweep import PartitionEvent
from pipeline.topology import user_key
from schemas.campaigns import (
    UPLOAD_CHUNK,
    Audience,
    Campaign,
    MemberChunk,
    Progress,
    Segment,
    Uploaded,
)
from schemas.decode import decode
from tables.campaigns import (
    campaign_progress,
    campaigns,
    member_key,
    segment_key,
    segment_members,
    segments,
)
from tables.preferences import preferences
from tables.profiles import profiles

log = logging.getLogger(__name__)

#: Seconds between expansion steps.
TICK = 0.2
#: Profiles looked at per partition per step at most (a target that selects
#: few users must not hold the loop while it walks a large partition).
MAX_LOOKED_AT = 20_000


@dataclass
class Step:
    """One partition's chunk: the users selected, and where the walk stopped."""

    users: list[str]
    cursor: str | None
    looked_at: int
    walked: bool  # the partition has no more users after the cursor
    size: int | None = None  # about how many entries the walk goes over


def on_partition(table: Any, partition: int) -> PartitionEvent:
    """An event of ``table``'s own changelog partition, to read and write it."""
    return PartitionEvent(table.changelog_topic.get_topic_name(), partition)


def owned(table: Any) -> list[int]:
    """The partitions of ``table`` this worker holds (active)."""
    topic = table.changelog_topic.get_topic_name()
    return sorted(
        tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic
    )


def campaigns_on(partition: int) -> list[Campaign]:
    """Every campaign the partition's store holds (each is on every partition)."""
    found = []
    for _, raw in prefixed(campaigns, partition, ""):
        try:
            found.append(decode(Campaign, raw))
        except InvalidMessage:
            log.warning("campaign entry on partition %d does not decode", partition)
    return found


def audience_of(campaign: Campaign, partition: int) -> Audience | None:
    """The campaign's audience; a segment's as saved now (None if deleted)."""
    inline = campaign.request.target.audience()
    if inline is not None:
        return inline
    segment_id = getattr(campaign.request.target, "segment_id", "")
    with acting_for(on_partition(segments, partition)):  # type: ignore[arg-type]
        saved: Segment | None = segments.get(segment_key(campaign.tenant, segment_id))
    if saved is None or saved.deleted:
        return None
    return saved.audience


def next_users(
    campaign: Campaign,
    audience: Audience,
    partition: int,
    cursor: str | None,
    take: int,
) -> Step:
    """Up to ``take`` users of ``partition`` the audience selects after ``cursor``."""
    partitions = app.settings.topic_partitions
    if audience.uploaded is not None:
        return listed_users(campaign.tenant, audience.uploaded, partition, cursor, take)
    if audience.user_ids:
        listed = sorted(
            u
            for u in audience.user_ids
            if partition_for(user_key(campaign.tenant, u).encode(), partitions)
            == partition
        )
        rest = [u for u in listed if cursor is None or u > cursor]
        chunk = rest[:take]
        return Step(
            chunk,
            chunk[-1] if chunk else cursor,
            len(chunk),
            len(rest) <= take,
            len(listed),
        )
    users: list[str] = []
    looked = 0
    last = cursor
    prefix = user_key(campaign.tenant, "")
    size = estimated_size(profiles, partition)
    for key, raw in prefixed(profiles, partition, prefix, after=cursor):
        looked += 1
        last = key
        fields = orjson.loads(raw)
        if fields.get("tenant") == campaign.tenant and selects(
            audience, fields.get("tags") or ()
        ):
            users.append(str(fields["user_id"]))
            if len(users) >= take:
                return Step(users, last, looked, False, size)
        if looked >= MAX_LOOKED_AT:
            return Step(users, last, looked, False, size)
    return Step(users, last, looked, True, size)


def listed_users(
    tenant: str, uploaded: Uploaded, partition: int, cursor: str | None, take: int
) -> Step:
    """Up to ``take`` users of an uploaded list's chunks on ``partition``,
    read by key from the local store after ``cursor``. Until the partition's
    last chunk is in the store (its chunks are on their way), none: the walk
    waits rather than ending short."""
    chunks = uploaded.chunks.get(str(partition), 0)
    upload = uploaded.upload_id
    chunk, offset = list_position(cursor, upload)
    users: list[str] = []
    with acting_for(on_partition(segment_members, partition)):  # type: ignore[arg-type]
        last = member_key(tenant, upload, partition, chunks - 1) if chunks else None
        if last is not None and segment_members.get(last) is None:
            return Step([], cursor, 0, False)
        while chunk < chunks and len(users) < take:
            stored: MemberChunk | None = segment_members.get(
                member_key(tenant, upload, partition, chunk)
            )
            if stored is None:  # the list is being replaced: wait for the new
                break
            part = stored.users[offset : offset + take - len(users)]
            users.extend(part)
            offset += len(part)
            if offset >= len(stored.users):
                chunk, offset = chunk + 1, 0
    return Step(
        users,
        list_cursor(upload, chunk, offset),
        len(users),
        chunk >= chunks,
        chunks * UPLOAD_CHUNK,
    )


def own_time(campaign: Campaign, user_id: str, partition: int) -> datetime | None:
    """A ``local_time`` campaign's time for this user, on the user's clock
    (their preferences' zone, else their profile's, else UTC)."""
    if campaign.request.local_time is None:
        return None
    ukey = user_key(campaign.tenant, user_id)
    with acting_for(on_partition(profiles, partition)):  # type: ignore[arg-type]
        profile = profiles.get(ukey)
    with acting_for(on_partition(preferences, partition)):  # type: ignore[arg-type]
        prefs = preferences.get(ukey)
    return local_schedule(campaign, user_zone(prefs, profile))


class Expander:
    """Expands the owned partitions of running campaigns, paced, checkpointed."""

    def __init__(self) -> None:
        self.pacer = Pacer(app.settings.topic_partitions)
        self.last = time.monotonic()

    async def tick(self) -> int:
        """One step of every running campaign on every owned partition; the
        number of requests produced."""
        started = time.monotonic()
        elapsed, self.last = started - self.last, started
        if app.rebalancing:
            return 0
        now = app.clock.now()
        produced = 0
        for partition in owned(profiles):
            for campaign in campaigns_on(partition):
                if not expands(campaign, now):
                    continue
                audience = audience_of(campaign, partition)
                if audience is None:
                    continue
                produced += await self.step(campaign, audience, partition, elapsed)
                if app.rebalancing:
                    return produced
        return produced

    async def step(
        self, campaign: Campaign, audience: Audience, partition: int, elapsed: float
    ) -> int:
        """Expand the next chunk of one partition; how many requests."""
        cid = campaign.campaign_id
        here = on_partition(campaign_progress, partition)
        with acting_for(here):  # type: ignore[arg-type]
            progress: Progress | None = campaign_progress.get(cid)
        if progress is not None and progress.done:
            return 0
        asked = campaign.request
        pace = (cid, partition)
        take = self.pacer.grant(pace, asked.rate, asked.chunk, elapsed)
        if take < 1:
            return 0
        cursor = progress.cursor if progress else None
        found = next_users(campaign, audience, partition, cursor, take)
        topic = app.topology.requests["bulk"]
        pending = []
        for user_id in found.users:
            request = recipient_request(
                campaign, user_id, own_time(campaign, user_id, partition)
            )
            pending.append(
                await topic.send(
                    key=user_key(campaign.tenant, user_id),
                    value=request.dumps(),
                    partition=partition,
                )
            )
        # Every request acknowledged before the checkpoint moves past it.
        await asyncio.gather(*pending)
        self.pacer.spend(pace, len(found.users))
        checkpoint = Progress(
            cursor=found.cursor,
            targeted=(progress.targeted if progress else 0) + len(found.users),
            expanded=(progress.expanded if progress else 0) + len(found.users),
            done=found.walked,
            looked_at=(progress.looked_at if progress else 0) + found.looked_at,
            walk_size=found.size,
            updated_at=app.clock.now(),
            by=str(app.conf.canonical_url),
        )
        with acting_for(here):  # type: ignore[arg-type]
            campaign_progress[cid] = checkpoint
        if found.walked:
            log.info(
                "campaign %s: partition %d expanded (%d recipients)",
                cid,
                partition,
                checkpoint.expanded,
            )
        return len(found.users)


expander = Expander()


#: Only workers of the bulk lane expand: a critical-lane deployment
#: (NOTIFY_LANES=critical) never spends a cycle on a campaign.
EXPANDS = "bulk" in app.settings.worker_lanes


@app.timer(TICK, name="campaigns.expand")
async def expand_campaigns() -> None:
    """Expand the next chunk of every running campaign on owned partitions."""
    if EXPANDS:
        await expander.tick()
