"""held: due key → AcceptedRequest, requests waiting for a time to come.

Two kinds wait here, both written and deleted by fanout on the user's
partition and released, once due, by the timer in ``agents.held``:

- channels deferred by the request's ``schedule_at`` or the user's quiet
  hours, due when those end (keys ``<due ms>:<notification_id>/scheduled``);
- channels of a request whose user the worker knows nothing about yet (no
  profile, device or preferences): usually a user created a moment before,
  whose profile is on another topic in no order with the request. Instead of
  suppressing them at once (``no_email``), fanout looks again a little later
  (keys ``<due ms>:<notification_id>``).

Keys start with the due time (``pipeline.due``), so each partition's store
lists the due entries first; the changelog keeps them through a crash or a
wiped disk. An entry is deleted when fanout has decided its release.
"""

from __future__ import annotations

from pipeline.app import app
from schemas.records import AcceptedRequest

held = app.Table(
    "held_requests",
    key_type=str,
    value_type=AcceptedRequest,
    partitions=app.settings.topic_partitions,
    help="Requests waiting for a due time (schedule, quiet hours, unknown user).",
)
