"""inbox: tenant/user_id → Inbox, a user's in-app messages (newest last).

Written by the in-app send agents and the read-marks agent, both on the user's
partition. Bounded to the newest MAX_INBOX messages per user.
"""

from __future__ import annotations

from pipeline.app import app
from schemas.records import Inbox

MAX_INBOX = 200

inbox = app.Table(
    "inbox",
    key_type=str,
    value_type=Inbox,
    partitions=app.settings.topic_partitions,
    help="In-app messages per user, with read marks.",
)
