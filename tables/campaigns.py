"""Campaigns and segments on every partition, and each partition's progress and outcomes.

Partitioned tables (Faust's global tables do not follow another worker's
writes), each partition holding what its owner needs:

- ``campaigns``: campaign id → Campaign. The API writes a campaign (and each
  pause, resume or cancel) onto every partition of ``notify.campaigns``, so
  the owner of each partition finds it in that partition's store.
- ``segments``: ``tenant/segment_id`` → Segment, the same way from
  ``notify.segments``.
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
from schemas.campaigns import Campaign, CampaignCounts, Progress, Segment

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
