"""api_keys: key_id → ApiKey, a global table so any worker can authenticate.

Fed from the compacted keys topic; a revoked key stays, marked revoked.
"""

from __future__ import annotations

from pipeline.app import app
from schemas.records import ApiKey

api_keys = app.GlobalTable(
    "api_keys",
    key_type=str,
    value_type=ApiKey,
    partitions=app.settings.topic_partitions,
    help="Tenant API keys by key id (hashed secrets only), on every worker.",
)
