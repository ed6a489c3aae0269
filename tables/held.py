"""held: due key → AcceptedRequest, requests waiting for their user to be known.

A request for a user the worker knows nothing about yet (no profile, device
or preferences) is usually one whose user was created a moment before: the
profile is on another topic, with no order between the two. Instead of
suppressing its channels at once (``no_email``), fanout holds it here and
looks again a little later. Keys are ``<due ms>:<notification_id>``
(``pipeline.due``); the entry is written and deleted by fanout on the user's
partition, and released by the timer in ``agents.held``.
"""

from __future__ import annotations

from pipeline.app import app
from schemas.records import AcceptedRequest

held = app.Table(
    "held_requests",
    key_type=str,
    value_type=AcceptedRequest,
    partitions=app.settings.topic_partitions,
    help="Requests waiting for their user's state, by due time.",
)
