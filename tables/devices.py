"""devices: tenant/user_id → DeviceSet, from the compacted devices topic.

A removed device stays as inactive until its tombstone is compacted away;
inactive devices never receive pushes.
"""

from __future__ import annotations

from pipeline.app import app
from schemas.records import DeviceSet

devices = app.Table(
    "devices",
    key_type=str,
    value_type=DeviceSet,
    partitions=app.settings.topic_partitions,
    help="Push tokens of each user by tenant/user_id.",
)
