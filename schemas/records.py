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
    "queued",
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
    until: datetime | None = None


PLATFORMS = ("apns", "fcm")


class QuietHours(PublicRecord):
    """A daily window, in the user's local time, when only critical traffic goes."""

    start: str  # "22:00"
    end: str  # "08:00"; an end before the start spans midnight


class Preferences(PublicRecord):
    """What one user wants to receive (seed 002's shape, extended)."""

    user_id: str
    tenant: str = "default"
    enabled: bool = True  # global switch: False opts out of everything non-critical
    channels: dict[str, bool] = {}  # noqa: RUF012 - per-channel opt-outs
    types: dict[str, bool] = {}  # noqa: RUF012 - per-type (category) opt-outs
    marketing: bool = True  # promotional traffic at all
    quiet_hours: QuietHours | None = None
    timezone: str | None = None  # IANA zone for quiet hours; profile's if absent
    locale: str | None = None
    updated_at: datetime | None = None


class UserProfile(PublicRecord):
    """Who a user is and how to reach them."""

    user_id: str
    tenant: str = "default"
    email: str | None = None
    phone: str | None = None  # E.164
    locale: str | None = None
    timezone: str | None = None  # IANA zone, e.g. "Europe/Paris"
    tags: list[str] = []  # noqa: RUF012
    updated_at: datetime | None = None


class DeviceToken(PublicRecord):
    """One push token of one user; ``active=False`` removes it."""

    user_id: str
    token: str
    platform: str  # apns | fcm
    tenant: str = "default"
    active: bool = True
    updated_at: datetime | None = None


class AcceptedRequest(PublicRecord):
    """A validated request with its id and lane, on its way to enrichment."""

    notification_id: str
    lane: str
    # The request's JSON form, not a nested NotificationRequest: Faust mistakes
    # a nested record with a field called ``type`` for a field descriptor.
    request: dict[str, Any]
    body_hash: str
    accepted_at: datetime
    #: topic[partition]@offset of the request: a redelivery has the same source,
    #: a caller's retry a new one.
    source: str
    #: Set on a request released from the held table: when it was first held
    #: (its user was unknown), and the held entry's key.
    held_since: datetime | None = None
    held_key: str | None = None

    def notification(self) -> NotificationRequest:
        """The request as a record."""
        return NotificationRequest.from_data(self.request)


class DeliveryJob(PublicRecord):
    """One notification on one channel, ready for that channel's sender."""

    notification_id: str
    tenant: str
    user_id: str
    type: str
    priority: str
    lane: str
    channel: str
    data: dict[str, Any]
    created_at: datetime
    locale: str | None = None
    timezone: str | None = None
    campaign_id: str | None = None
    digest_key: str | None = None
    expiry_at: datetime | None = None
    email: str | None = None
    phone: str | None = None
    devices: list[DeviceToken] = []  # noqa: RUF012
    #: 0 for the first try; a retry carries the attempt it is and when it is due.
    attempt: int = 0
    not_before: datetime | None = None
    #: Raised by `notify dlq replay`: lets a job the ledger saw fail try again.
    redrive: int = 0


class Deferral(PublicRecord):
    """A notification held back (quiet hours, schedule_at) until ``until``."""

    notification_id: str
    lane: str
    until: datetime
    reason: str
    accepted: AcceptedRequest


class InternalRecord(PublicRecord, abstract=True):
    """Base of table values that never leave the app (no published schema)."""


class DeviceSet(InternalRecord):
    """Every known push token of one user, by token."""

    devices: dict[str, DeviceToken] = {}  # noqa: RUF012

    def active(self) -> list[DeviceToken]:
        """The tokens that may receive pushes."""
        return [device for device in self.devices.values() if device.active]


class TrailEntry(InternalRecord):
    """One decision in a notification's trail."""

    event_id: str
    event_type: str
    stage: str
    ts: datetime
    channel: str | None = None
    reason: str | None = None
    error: str | None = None
    until: datetime | None = None


class LedgerEntry(InternalRecord):
    """The send ledger's word on one (notification, channel, target).

    ``state`` is ``sending`` from just before the provider call until its
    result is recorded: a redelivered job that finds it there cannot know
    whether the call reached the provider.
    """

    state: str  # sending | sent | retrying | failed
    attempt: int
    redrive: int
    updated_at: datetime
    provider: str | None = None
    provider_message_id: str | None = None
    error: str | None = None


class ScheduledJob(InternalRecord):
    """A delivery job waiting for its retry time (the retry schedule's value)."""

    due_at: datetime
    topic: str
    key: str
    # The job's JSON form: Faust mistakes a nested record with a field called
    # ``type`` for a field descriptor (as in AcceptedRequest).
    job: dict[str, Any]

    def delivery_job(self) -> DeliveryJob:
        """The waiting job as a record."""
        return DeliveryJob.from_data(self.job)


class Suppression(PublicRecord):
    """An address or number that must not be sent to (bounce, invalid number).

    Keyed ``tenant/channel/address`` on the compacted suppressions topic; a
    record with ``active=False`` lifts it.
    """

    tenant: str
    channel: str  # email | sms
    address: str
    reason: str  # hard_bounce | invalid_number | manual
    created_at: datetime
    code: str | None = None
    active: bool = True


class InboxItem(PublicRecord):
    """One in-app message in a user's inbox."""

    notification_id: str
    type: str
    title: str | None
    body: str
    created_at: datetime
    data: dict[str, Any] = {}  # noqa: RUF012
    read_at: datetime | None = None


class InboxRead(PublicRecord):
    """A user marked one in-app message read."""

    tenant: str
    user_id: str
    notification_id: str
    read_at: datetime


class Inbox(InternalRecord):
    """A user's in-app messages, newest last, bounded."""

    items: list[InboxItem] = []  # noqa: RUF012


class NotificationStatus(InternalRecord):
    """A notification as ``GET /v1/notifications/{id}`` shows it."""

    notification_id: str
    tenant: str | None = None
    user_id: str | None = None
    type: str | None = None
    priority: str | None = None
    lane: str | None = None
    campaign_id: str | None = None
    status: str = "accepted"
    channels: dict[str, str] = {}  # noqa: RUF012 - channel → latest outcome
    trail: list[TrailEntry] = []  # noqa: RUF012


class ApiKey(InternalRecord):
    """One tenant API key, stored by id with the SHA-256 of its secret only."""

    key_id: str
    tenant: str
    secret_sha256: str
    scopes: list[str]
    created_at: datetime
    revoked: bool = False
