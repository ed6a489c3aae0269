"""Every record that crosses the app boundary, declared once as a pydantic model.

The same declaration validates (strictly, from JSON, for what arrives from
outside: `schemas.decode`), serialises (plain JSON, no Faust metadata), and
emits the JSON Schema that `schemas.jsonschema` publishes and the OpenAPI
document of `pipeline.api.openapi` embeds. Faust stores and sends them through
the ``model`` codec (`schemas.codec`): Faust asks a value type for
``_options.serializer`` and ``from_data``, which `Record` provides.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Annotated, Any, ClassVar, Literal, Self, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from schemas.types import (
    CHANNELS,
    LANES,
    NAME_PATTERN,
    PLATFORMS,
    PRIORITIES,
    UNIQUE,
    CampaignId,
    CapText,
    Channel,
    Clock,
    Data,
    Email,
    IdempotencyKey,
    Instant,
    Lane,
    Locale,
    NonBlank,
    Phone,
    Platform,
    Priority,
    PushToken,
    RateText,
    Scope,
    TimeZone,
    TypeName,
    unique,
)

__all__ = ["CHANNELS", "EVENT_TYPES", "LANES", "PLATFORMS", "PRIORITIES"]

#: Every decision a stage can announce on ``notify.events``.
EventType = Literal[
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
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)


class FieldError(ValueError):
    """A check across fields, naming the field it blames."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Record(BaseModel):
    """Base of every record: refuses unknown fields, speaks Faust's model API."""

    model_config = ConfigDict(extra="forbid")

    #: Faust reads a value type's serializer from here (`schemas.codec`).
    _options: ClassVar[SimpleNamespace] = SimpleNamespace(serializer="model")

    @classmethod
    def from_data(cls, data: Any, preferred_type: Any = None) -> Self:
        """A record from what the codec read: JSON bytes, or a decoded mapping.

        Faust calls this for table and topic values the app wrote itself, so
        it is lax (a datetime may come as text); `schemas.decode` is the
        strict door for what arrives from outside.
        """
        if isinstance(data, bytes | bytearray | str):
            return cls.model_validate_json(data)
        if isinstance(data, memoryview):
            return cls.model_validate_json(bytes(data))
        return cls.model_validate(data)

    @classmethod
    def loads(cls, raw: bytes) -> Self:
        """A record from its JSON form."""
        return cls.model_validate_json(raw)

    def dumps(self) -> bytes:
        """The JSON form: every field, nulls included."""
        return self.__pydantic_serializer__.to_json(self)

    def asdict(self) -> dict[str, Any]:
        """The JSON-ready dict of the record (times as RFC 3339 text)."""
        return self.model_dump(mode="json")


class Recipient(Record):
    """Who a notification is for."""

    # Producers may carry more about the recipient; only the user id is read.
    model_config = ConfigDict(extra="ignore")

    user_id: NonBlank


Channels = Annotated[list[Channel], Field(min_length=1), UNIQUE, AfterValidator(unique)]


class NotificationRequest(Record):
    """One business event asking to notify one user (the API body, or a topic value).

    ``expiry_at`` must be later than ``schedule_at``, which JSON Schema cannot say.
    """

    idempotency_key: IdempotencyKey
    recipient: Recipient
    type: TypeName
    priority: Priority = "transactional"
    #: The API sets it from the key; a topic producer names it.
    tenant: NonBlank = "default"
    #: Absent: the type's channels (notification_types.toml).
    channels: Channels | None = None
    data: Data = Field(default_factory=dict)
    schedule_at: Instant | None = None
    expiry_at: Instant | None = None
    campaign_id: CampaignId | None = None
    digest_key: NonBlank | None = None
    locale: NonBlank | None = None

    @model_validator(mode="after")
    def _times(self) -> Self:
        if self.schedule_at and self.expiry_at and self.expiry_at <= self.schedule_at:
            raise FieldError("expiry_at", "must be later than schedule_at")
        return self


class NotificationEvent(Record):
    """One decision of one stage: the row ``notif_events`` stores in ClickHouse."""

    event_id: str
    event_type: EventType
    ts: Instant
    stage: str
    notification_id: str | None = None
    tenant: str | None = None
    user_id: str | None = None
    campaign_id: str | None = None
    type: str | None = None
    priority: Priority | None = None
    lane: Lane | None = None
    channel: Channel | None = None
    provider: str | None = None
    template: str | None = None
    variant: str | None = None
    locale: str | None = None
    reason: str | None = None
    error: str | None = None
    attempt: int = 0
    until: Instant | None = None


class QuietHours(Record):
    """A daily window, in the user's local time, when only critical traffic goes."""

    start: Clock  # "22:00"
    end: Clock  # "08:00"; an end before the start spans midnight


class UserOwned(Record):
    """What the stored form of a user-state update adds to its API body: whose
    it is, and when it was written (a producer's record without a time is
    stamped when the worker reads it)."""

    user_id: NonBlank
    tenant: NonBlank = "default"
    updated_at: Instant | None = None


class PreferencesUpdate(Record):
    """What one user wants to receive: the body of ``PUT .../preferences``.

    It replaces the stored preferences whole; an absent field takes its default.
    """

    #: False opts out of everything but critical traffic.
    enabled: bool = True
    #: Per-channel opt-outs.
    channels: dict[Channel, bool] = Field(default_factory=dict)
    #: Per-type (or category) opt-outs.
    types: dict[TypeName, bool] = Field(
        default_factory=dict,
        json_schema_extra={"propertyNames": {"pattern": NAME_PATTERN}},
    )
    #: Promotional traffic at all.
    marketing: bool = True
    quiet_hours: QuietHours | None = None
    #: IANA zone for quiet hours; the profile's if absent.
    timezone: TimeZone | None = None
    locale: Locale | None = None


class Preferences(UserOwned, PreferencesUpdate):
    """What one user wants to receive (seed 002's shape, extended)."""


class ProfileUpdate(Record):
    """Who a user is and how to reach them: the body of ``PUT /v1/users/{id}``."""

    email: Email | None = None
    phone: Phone | None = None
    locale: Locale | None = None
    #: IANA zone, e.g. "Europe/Paris".
    timezone: TimeZone | None = None
    #: Kept sorted, each once.
    tags: Annotated[list[NonBlank], AfterValidator(lambda tags: sorted(set(tags)))] = (
        Field(default_factory=list)
    )


class UserProfile(UserOwned, ProfileUpdate):
    """Who a user is and how to reach them."""


class DeviceRegistration(Record):
    """One push token: the body of ``POST .../devices``."""

    token: PushToken
    platform: Platform
    #: False removes the token.
    active: bool = True


class DeviceToken(UserOwned, DeviceRegistration):
    """One push token of one user; ``active=False`` removes it."""


class AcceptedRequest(Record):
    """A validated request with its id and lane, on its way to enrichment."""

    notification_id: str
    lane: Lane
    #: The request's JSON form.
    request: dict[str, Any]
    body_hash: str
    accepted_at: Instant
    #: topic[partition]@offset of the request: a redelivery has the same source,
    #: a caller's retry a new one.
    source: str
    #: Set on a request released from the held table: when it was first held
    #: (its user was unknown), and the held entry's key.
    held_since: Instant | None = None
    held_key: str | None = None
    #: Set on a digest's release: the digests table key of the window it closes.
    digest: str | None = None

    def notification(self) -> NotificationRequest:
        """The request as a record."""
        return NotificationRequest.model_validate(self.request)


class DeliveryJob(Record):
    """One notification on one channel, ready for that channel's sender."""

    notification_id: str
    tenant: str
    user_id: str
    type: TypeName
    priority: Priority
    lane: Lane
    channel: Channel
    data: dict[str, Any]
    created_at: Instant
    #: When the notification could first be sent: accepted, or due when it
    #: was held or scheduled (what its send latency is measured from).
    ready_at: Instant | None = None
    locale: str | None = None
    timezone: str | None = None
    campaign_id: str | None = None
    digest_key: str | None = None
    expiry_at: Instant | None = None
    email: str | None = None
    phone: str | None = None
    devices: list[DeviceToken] = Field(default_factory=list)
    #: 0 for the first try; a retry carries the attempt it is and when it is due.
    attempt: int = 0
    not_before: Instant | None = None
    #: Raised by `notify dlq replay`: lets a job the ledger saw fail try again.
    redrive: int = 0


class DeviceSet(Record):
    """Every known push token of one user, by token (a table value)."""

    devices: dict[str, DeviceToken] = Field(default_factory=dict)

    def active(self) -> list[DeviceToken]:
        """The tokens that may receive pushes."""
        return [device for device in self.devices.values() if device.active]


class TrailEntry(Record):
    """One decision in a notification's trail."""

    event_id: str
    event_type: EventType
    stage: str
    ts: Instant
    channel: Channel | None = None
    reason: str | None = None
    error: str | None = None
    until: Instant | None = None


class LedgerEntry(Record):
    """The send ledger's word on one (notification, channel, target).

    ``state`` is ``sending`` from just before the provider call until its
    result is recorded: a redelivered job that finds it there cannot know
    whether the call reached the provider.
    """

    state: Literal["sending", "sent", "retrying", "failed"]
    attempt: int
    redrive: int
    updated_at: Instant
    provider: str | None = None
    provider_message_id: str | None = None
    error: str | None = None


class ScheduledJob(Record):
    """A delivery job waiting for its retry time (the retry schedule's value)."""

    due_at: Instant
    topic: str
    key: str
    job: DeliveryJob

    def delivery_job(self) -> DeliveryJob:
        """The waiting job."""
        return self.job


class Suppression(Record):
    """An address or number that must not be sent to (bounce, invalid number).

    Keyed ``tenant/channel/address`` on the compacted suppressions topic; a
    record with ``active=False`` lifts it.
    """

    tenant: str
    channel: Literal["email", "sms"]
    address: str
    reason: str  # hard_bounce | invalid_number | manual
    created_at: Instant
    code: str | None = None
    active: bool = True


class InboxItem(Record):
    """One in-app message in a user's inbox."""

    notification_id: str
    type: str
    title: str | None
    body: str
    created_at: Instant
    data: dict[str, Any] = Field(default_factory=dict)
    read_at: Instant | None = None


class InboxRead(Record):
    """A user marked one in-app message read."""

    tenant: str
    user_id: str
    notification_id: str
    read_at: Instant


class Inbox(Record):
    """A user's in-app messages, newest last, bounded (a table value)."""

    items: list[InboxItem] = Field(default_factory=list)


class NotificationStatus(Record):
    """A notification as ``GET /v1/notifications/{id}`` shows it."""

    notification_id: str
    tenant: str | None = None
    user_id: str | None = None
    type: str | None = None
    priority: Priority | None = None
    lane: Lane | None = None
    campaign_id: str | None = None
    status: str = "accepted"
    #: Channel → its latest outcome.
    channels: dict[Channel, str] = Field(default_factory=dict)
    #: When ``DELETE /v1/notifications/{id}`` cancelled it: no channel not
    #: yet sent is sent after that.
    cancelled_at: Instant | None = None
    trail: list[TrailEntry] = Field(default_factory=list)


class BucketState(Record):
    """One (user, channel) token bucket: its tokens at ``at``, and the
    notifications it took a token for lately (a redelivery takes none)."""

    tokens: float
    at: Instant
    recent: list[str] = Field(default_factory=list)


class ThrottleState(Record):
    """What one user used of the caps and buckets (a table value).

    ``caps``: per cap window (``marketing/day@2026-12-04T00:00Z``), the
    notifications (or ``notification:channel`` sends) it counted.
    """

    caps: dict[str, list[str]] = Field(default_factory=dict)
    buckets: dict[str, BucketState] = Field(default_factory=dict)


class DigestMember(Record):
    """One notification collected into a digest: its id, data and arrival."""

    notification_id: str
    data: dict[str, Any] = Field(default_factory=dict)
    at: Instant


class DigestState(Record):
    """One user's open (or just released) digest for one digest key (a table value)."""

    tenant: str
    user_id: str
    key: str
    type: str  # the members' type
    priority: Priority
    lane: Lane
    channels: list[Channel] | None = None
    locale: str | None = None
    opened_at: Instant
    closes_at: Instant
    members: list[DigestMember] = Field(default_factory=list)
    #: A look-back window's first notification, sent alone at once.
    lead: str | None = None
    #: Set once the window's digest went out: a redelivered release rebuilds
    #: the same digest from it; the next notification opens a new window.
    released: bool = False


class LimitsUpdate(Record):
    """A tenant's throttle settings: the body of ``PUT /v1/tenants/{tenant}/limits``.

    Each field left null keeps what each notification type says
    (``notification_types.toml``); set, it applies to every type of the tenant.
    """

    #: Frequency caps, e.g. ["marketing/day 3", "sms/month 20"]; [] for none.
    caps: Annotated[list[CapText], UNIQUE, AfterValidator(unique)] | None = None
    #: Over a cap: "throttle" (not sent) or "defer" (sent when the cap frees).
    over_cap: Literal["throttle", "defer"] | None = None
    #: A token bucket per user and channel, e.g. "10/minute burst 5".
    rate: RateText | None = None


class TenantLimits(LimitsUpdate):
    """A tenant's throttle settings, as stored (compacted, keyed by tenant)."""

    tenant: NonBlank
    updated_at: Instant | None = None


class ApiKey(Record):
    """One tenant API key, stored by id with the SHA-256 of its secret only."""

    key_id: str
    tenant: str
    secret_sha256: str
    scopes: list[Scope]
    created_at: Instant
    revoked: bool = False
