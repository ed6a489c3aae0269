"""tenant_limits: tenant → TenantLimits, a global table so every worker applies them.

Fed from the compacted ``notify.tenants.limits`` topic (``PUT
/v1/tenants/{tenant}/limits``); fanout reads the tenant's entry when it
throttles a request. A tenant without an entry keeps each type's settings.
"""

from __future__ import annotations

from pipeline.app import app
from schemas.records import TenantLimits

tenant_limits = app.GlobalTable(
    "tenant_limits",
    key_type=str,
    value_type=TenantLimits,
    partitions=app.settings.topic_partitions,
    help="Each tenant's throttle settings (caps, over_cap, rate), on every worker.",
)
