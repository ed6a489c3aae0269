"""Campaigns and segments on every partition, and each partition's progress and outcomes.

Partitioned tables (Faust's global tables do not follow another worker's
writes), each partition holding what its owner needs:

- ``campaigns``: campaign id → Campaign. The API writes a campaign (and each
  pause, resume or cancel) onto every partition of ``notify.campaigns``, so
  the owner of each partition finds it in that partition's store.
- ``segments``: ``tenant/segment_id`` → Segment, the same way from
  ``notify.segments``.
- ``segment_members``: ``tenant/upload_id/partition/chunk`` → MemberChunk,
  the users of an uploaded list that live on this partition, written from
  ``notify.segments.members`` (the API sends each chunk to its users'
  partition).
- ``campaign_progress``: campaign id → Progress of this partition's
  expansion, written by its owner after each chunk's requests were
  acknowledged: a new owner (a rebalance, a restart) resumes from it.
- ``campaign_counts``: campaign id → CampaignCounts, the channel outcomes of
  the campaign's notifications on this partition, written with their
  statuses (``pipeline.status``).

A campaign's state and counts are the sum over every partition: the API
asks each worker for the partitions it holds (``pipeline.api.campaigns``).
"""

from __future__ import annotations

from pipeline.app import app
from schemas.campaigns import (
    Campaign,
    CampaignCounts,
    MemberChunk,
    Progress,
    Segment,
)

campaigns = app.Table(
    "campaigns",
    key_type=str,
    value_type=Campaign,
    partitions=app.settings.topic_partitions,
    help="Every campaign on every partition, as its owner last asked.",
)
segments = app.Table(
    "segments",
    key_type=str,
    value_type=Segment,
    partitions=app.settings.topic_partitions,
    help="Saved audiences on every partition, by tenant/segment_id.",
)
segment_members = app.Table(
    "segment_members",
    key_type=str,
    value_type=MemberChunk,
    partitions=app.settings.topic_partitions,
    help="Uploaded user lists, each partition's users of a list in chunks.",
)
campaign_progress = app.Table(
    "campaign_progress",
    key_type=str,
    value_type=Progress,
    partitions=app.settings.topic_partitions,
    help="Each campaign's expansion checkpoint of the partition.",
)
campaign_counts = app.Table(
    "campaign_counts",
    key_type=str,
    value_type=CampaignCounts,
    partitions=app.settings.topic_partitions,
    help="Each campaign's channel outcomes on the partition.",
)


def segment_key(tenant: str, segment_id: str) -> str:
    """The key of a tenant's segment."""
    return f"{tenant}/{segment_id}"


def member_key(tenant: str, upload_id: str, partition: int, chunk: int) -> str:
    """The key of one chunk of an uploaded list (zero-padded: in order)."""
    return f"{tenant}/{upload_id}/{partition:04d}/{chunk:07d}"


def campaign_cancelled(campaign_id: str | None) -> bool:
    """True if ``campaign_id`` names a cancelled campaign: read from the copy
    on the partition of the event being handled (every partition has one)."""
    if campaign_id is None:
        return False
    found: Campaign | None = campaigns.get(campaign_id)
    return found is not None and found.state == "cancelled"
