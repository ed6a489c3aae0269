"""preferences: tenant/user_id → Preferences, from the compacted preferences topic.

Never expires; a user without an entry has every default (everything allowed).
"""

from __future__ import annotations

from pipeline.app import app
from schemas.records import Preferences

preferences = app.Table(
    "preferences",
    key_type=str,
    value_type=Preferences,
    partitions=app.settings.topic_partitions,
    help="User preferences by tenant/user_id.",
)
