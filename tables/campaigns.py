"""Campaigns, segments, and each partition's expansion progress and outcomes.

Global tables: every worker holds all of them. Each worker expands the
partitions it owns, and the API on any worker answers a campaign's state and
counts by adding up every partition's entries, with no call to another
worker.

- ``campaigns``: campaign id → Campaign, from ``notify.campaigns``.
- ``segments``: ``tenant/segment_id`` → Segment, from ``notify.segments``.
- ``campaign_progress``: ``<campaign id>:<partition>`` → Progress, written
  by the partition's owner after each chunk's requests were acknowledged: a
  new owner (a rebalance, a restart) resumes from it.
- ``campaign_counts``: ``<campaign id>:<partition>`` → CampaignCounts, the
  channel outcomes of the campaign's notifications on that partition,
  written with their statuses (``pipeline.status``).
"""

from __future__ import annotations

from pipeline.app import app
from schemas.campaigns import Campaign, CampaignCounts, Progress, Segment

campaigns = app.GlobalTable(
    "campaigns",
    key_type=str,
    value_type=Campaign,
    partitions=app.settings.topic_partitions,
    help="Every campaign and what its owner asked (active, paused, cancelled).",
)
segments = app.GlobalTable(
    "segments",
    key_type=str,
    value_type=Segment,
    partitions=app.settings.topic_partitions,
    help="Saved audiences, by tenant/segment_id.",
)
campaign_progress = app.GlobalTable(
    "campaign_progress",
    key_type=str,
    value_type=Progress,
    partitions=app.settings.topic_partitions,
    help="Each campaign's expansion checkpoint per partition.",
)
campaign_counts = app.GlobalTable(
    "campaign_counts",
    key_type=str,
    value_type=CampaignCounts,
    partitions=app.settings.topic_partitions,
    help="Each campaign's channel outcomes per partition.",
)


def part_key(campaign_id: str, partition: int) -> str:
    """The key of one partition's entry of a campaign."""
    return f"{campaign_id}:{partition}"


def segment_key(tenant: str, segment_id: str) -> str:
    """The key of a tenant's segment."""
    return f"{tenant}/{segment_id}"
