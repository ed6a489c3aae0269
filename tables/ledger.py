"""ledger: attempt key → LedgerEntry, one per (notification, channel, target).

The attempt key is ``<notification_id>:<channel>:<target id>``; entries live
on the partition of the user the job was for (the send agents write them while
handling that user's jobs). An entry says ``sending`` before the provider call
and the call's result after it, so a redelivered job never calls a provider
again for an attempt that succeeded. An entry is deleted
``NOTIFY_LEDGER_RETENTION`` hours after its last change (``agents/retention``):
a replay of older jobs would find no entry and call again.
"""

from __future__ import annotations

from pipeline.app import app
from schemas.records import LedgerEntry

ledger = app.Table(
    "send_ledger",
    key_type=str,
    value_type=LedgerEntry,
    partitions=app.settings.topic_partitions,
    help="Send attempts per (notification, channel, target): sending, sent, "
    "retrying or failed.",
)
