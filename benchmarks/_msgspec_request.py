"""The notification request as a msgspec Struct: only for `benchmarks.decode`'s
comparison (msgspec is not a dependency; this imports only where installed)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

NonBlank = Annotated[str, msgspec.Meta(min_length=1, pattern=r"\S")]


class Recipient(msgspec.Struct):
    """Who a notification is for."""

    user_id: NonBlank


class Request(msgspec.Struct, forbid_unknown_fields=True):
    """The same fields and constraints as schemas.records.NotificationRequest."""

    idempotency_key: Annotated[
        str, msgspec.Meta(min_length=1, max_length=255, pattern=r"\S")
    ]
    recipient: Recipient
    type: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")]
    priority: Literal["critical", "transactional", "promotional"] = "transactional"
    tenant: NonBlank = "default"
    channels: list[Literal["push", "email", "sms", "in_app"]] | None = None
    data: dict[str, Any] = {}
    schedule_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    expiry_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    campaign_id: NonBlank | int | None = None
    digest_key: NonBlank | None = None
    locale: NonBlank | None = None


decoder = msgspec.json.Decoder(Request)
