"""Faust records that cross the app boundary, declared once, no Faust metadata."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import faust

from schemas.codec import CODEC_NAME

PRIORITIES = ("critical", "transactional", "promotional")
CHANNELS = ("push", "email", "sms", "in_app")

#: Every decision a stage can announce on ``notify.events``.
EVENT_TYPES = (
    "accepted",
    "deduplicated",
    "suppressed",
    "deferred",
    "throttled",
    "digested",
    "sent",
    "delivered",
    "opened",
    "clicked",
    "bounced",
    "failed",
    "retried",
    "dead_lettered",
    "expired",
    "cancelled",
)


class PublicRecord(
    faust.Record,
    abstract=True,
    serializer=CODEC_NAME,
    include_metadata=False,
    isodates=True,
    coerce=True,
):
    """Base of records that leave the app: plain JSON, orjson-encoded."""


class Recipient(PublicRecord):
    """Who a notification is for."""

    user_id: str


class NotificationRequest(PublicRecord):
    """One business event asking to notify one user (the API body, or a topic value)."""

    idempotency_key: str
    recipient: Recipient
    type: str
    priority: str = "transactional"
    tenant: str = "default"
    channels: list[str] | None = None
    data: dict[str, Any] = {}  # noqa: RUF012 - Faust copies field defaults
    schedule_at: datetime | None = None
    expiry_at: datetime | None = None
    campaign_id: str | None = None
    digest_key: str | None = None
    locale: str | None = None


class NotificationEvent(PublicRecord):
    """One decision of one stage: the row ``notif_events`` stores in ClickHouse."""

    event_id: str
    event_type: str
    ts: datetime
    stage: str
    notification_id: str | None = None
    tenant: str | None = None
    user_id: str | None = None
    campaign_id: str | None = None
    type: str | None = None
    priority: str | None = None
    lane: str | None = None
    channel: str | None = None
    provider: str | None = None
    template: str | None = None
    variant: str | None = None
    locale: str | None = None
    reason: str | None = None
    error: str | None = None
    attempt: int = 0
