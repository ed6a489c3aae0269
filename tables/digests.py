"""digests: [tenant, user, digest key] → DigestState, each user's open digests.

Written by fanout on the user's partition: a digestible notification joins
the user's open window (or opens one, whose close is scheduled in
``held_requests``); the window's release marks it released, and the next
notification of that key replaces it with a new window. So an entry per
(user, digest key) ever used, as small as one window's members.
"""

from __future__ import annotations

from pipeline.app import app
from schemas.records import DigestState

digests = app.Table(
    "digests",
    key_type=str,
    value_type=DigestState,
    partitions=app.settings.topic_partitions,
    help="Per user and digest key: the notifications collected until it closes.",
)
