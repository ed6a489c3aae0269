"""profiles: tenant/user_id → UserProfile, from the compacted profiles topic.

Never expires: the compacted topic keeps the last profile of every user, and a
rebuilt table holds what the topic holds.
"""

from __future__ import annotations

from pipeline.app import app
from schemas.records import UserProfile

profiles = app.Table(
    "profiles",
    key_type=str,
    value_type=UserProfile,
    partitions=app.settings.topic_partitions,
    help="User profiles (contacts, locale, time zone) by tenant/user_id.",
)
