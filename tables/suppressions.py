"""suppressions: tenant/channel/address → Suppression, on every worker.

Fed from the compacted suppressions topic (hard bounces, invalid numbers,
operators); an address is suppressed while its latest record is active. A
global table: an address is not tied to one user's partition.
"""

from __future__ import annotations

from pipeline.app import app
from schemas.records import Suppression

suppressions = app.GlobalTable(
    "suppressions",
    key_type=str,
    value_type=Suppression,
    partitions=app.settings.topic_partitions,
    help="Suppressed email addresses and phone numbers per tenant.",
)


#: The tenant of a suppression that holds for every tenant (a bounced mailbox).
ANY_TENANT = "*"


def suppression_key(tenant: str, channel: str, address: str) -> str:
    """The key of one address; email addresses compare case-insensitively."""
    return f"{tenant}/{channel}/{address.lower() if channel == 'email' else address}"
