"""throttle: tenant/user_id → ThrottleState, what each user used of the caps.

Written by fanout on the user's partition in the step that decides the
request (so one budget per user, however many workers run: a user's
requests are all decided by the worker owning that partition). Each cap
keeps only its current window and each bucket its last few notifications,
so an entry stays as small as the caps' limits; a user's entry is rewritten
only when a notification counts toward a cap or a bucket.
"""

from __future__ import annotations

from pipeline.app import app
from schemas.records import ThrottleState

throttles = app.Table(
    "throttle",
    key_type=str,
    value_type=ThrottleState,
    partitions=app.settings.topic_partitions,
    help="Per user: the notifications each cap window and bucket counted.",
)
