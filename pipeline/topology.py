"""Every topic of the pipeline, declared once: name, types, partitions, lane."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.settings import LANES, Settings
from schemas.campaigns import Campaign, MemberChunk, Segment
from schemas.records import (
    CHANNELS,
    AcceptedRequest,
    ApiKey,
    DeliveryJob,
    DeviceToken,
    InboxRead,
    NotificationEvent,
    Preferences,
    Suppression,
    TenantLimits,
    UserProfile,
)

if TYPE_CHECKING:
    import faust
    from faust.types import TopicT

#: Headers a dead-letter record carries; its key and value are the original bytes.
DLQ_REASON = "notify.dlq.reason"
DLQ_CODE = "notify.dlq.code"
DLQ_STAGE = "notify.dlq.stage"
DLQ_SOURCE = "notify.dlq.source"  # topic[partition]@offset of the original
#: Failed deliveries also say which provider answered and at which attempt.
DLQ_PROVIDER = "notify.dlq.provider"
DLQ_ATTEMPT = "notify.dlq.attempt"


@dataclass(frozen=True)
class TopicSpec:
    """What one topic is: its name, key and value types, lane and configs."""

    name: str  # logical; ``topic_name`` gives the name it has on the broker
    key: str
    value: str
    lane: str | None
    description: str
    record: type[Any] | None = None  # None: raw bytes
    compacted: bool = False
    configs: dict[str, str] = field(default_factory=dict)

    def kafka_configs(self) -> dict[str, str]:
        """Topic configs to create it with."""
        configs = dict(self.configs)
        if self.compacted:
            configs["cleanup.policy"] = "compact"
        return configs


def user_key(tenant: str, user_id: str) -> str:
    """The partitioning key of everything about one user of one tenant."""
    return f"{tenant}/{user_id}"


USER_KEY = "tenant/user_id (str)"

REQUESTS = {
    lane: TopicSpec(
        name=f"notify.requests.{lane}",
        key="user_id (str, any partitioner)",
        value="NotificationRequest JSON (raw bytes, validated by ingest)",
        lane=lane,
        description=f"Requests from the API or any producer, {lane} lane.",
    )
    for lane in LANES
}
ACCEPTED = {
    lane: TopicSpec(
        name=f"notify.accepted.{lane}",
        key=USER_KEY,
        value="AcceptedRequest",
        lane=lane,
        record=AcceptedRequest,
        description="Valid requests re-keyed by user: co-partitioned with user state.",
    )
    for lane in LANES
}
DELIVERIES = {
    (channel, lane): TopicSpec(
        name=f"notify.deliveries.{channel}.{lane}",
        key=USER_KEY,
        value="DeliveryJob",
        lane=lane,
        record=DeliveryJob,
        description=f"Jobs for the {channel} sender, {lane} lane.",
    )
    for lane in LANES
    for channel in CHANNELS
}
RECEIPTS = {
    lane: TopicSpec(
        name=f"notify.receipts.{lane}",
        key="notification_id (str), on its user's partition",
        value="NotificationEvent",
        lane=lane,
        record=NotificationEvent,
        description="Receipts and tracking (delivered, opened, ...) for the lane's status.",
    )
    for lane in LANES
}
PROFILES = TopicSpec(
    name="notify.users.profiles",
    key=USER_KEY,
    value="UserProfile",
    lane=None,
    record=UserProfile,
    compacted=True,
    description="User profiles (contacts, locale, time zone); the last one counts.",
)
PREFERENCES = TopicSpec(
    name="notify.users.preferences",
    key=USER_KEY,
    value="Preferences",
    lane=None,
    record=Preferences,
    compacted=True,
    description="User preferences; the last one counts.",
)
DEVICES = TopicSpec(
    name="notify.users.devices",
    key="tenant/user_id#token (str), partitioned by tenant/user_id",
    value="DeviceToken",
    lane=None,
    record=DeviceToken,
    compacted=True,
    description="Push tokens, one key per device so compaction keeps every device.",
)
API_KEYS = TopicSpec(
    name="notify.auth.keys",
    key="key_id (str)",
    value="ApiKey (hashed secret only)",
    lane=None,
    record=ApiKey,
    compacted=True,
    description="Tenant API keys and their revocations; the last record counts.",
)
TENANT_LIMITS = TopicSpec(
    name="notify.tenants.limits",
    key="tenant (str)",
    value="TenantLimits",
    lane=None,
    record=TenantLimits,
    compacted=True,
    description="Each tenant's throttle settings; the last record counts.",
)
CAMPAIGNS = TopicSpec(
    name="notify.campaigns",
    key="campaign_id (str)",
    value="Campaign",
    lane=None,
    record=Campaign,
    compacted=True,
    description="Campaigns and their owners' pause, resume and cancel; the last counts.",
)
SEGMENTS = TopicSpec(
    name="notify.segments",
    key="tenant/segment_id (str)",
    value="Segment",
    lane=None,
    record=Segment,
    compacted=True,
    description="Saved audiences of campaigns; the last record counts.",
)
SEGMENT_MEMBERS = TopicSpec(
    name="notify.segments.members",
    key="tenant/upload_id/partition/chunk (str)",
    value="MemberChunk",
    lane=None,
    record=MemberChunk,
    compacted=True,
    description=(
        "Uploaded user lists of segments, in chunks on the users' partitions."
    ),
)
SUPPRESSIONS = TopicSpec(
    name="notify.suppressions",
    key="tenant/channel/address (str)",
    value="Suppression",
    lane=None,
    record=Suppression,
    compacted=True,
    description="Addresses and numbers not to send to (bounces, invalid numbers).",
)
INBOX_READS = TopicSpec(
    name="notify.inbox.reads",
    key=USER_KEY,
    value="InboxRead",
    lane=None,
    record=InboxRead,
    description="In-app messages marked read, co-partitioned with the inbox.",
)
EVENTS = TopicSpec(
    name="notify.events",
    key="notification_id (str)",
    value="NotificationEvent",
    lane=None,
    record=NotificationEvent,
    description="Every stage's decision: status, trail, analytics, reconciliation.",
)
DEADLETTER = TopicSpec(
    name="notify.deadletter",
    key="original key (bytes)",
    value="original value (bytes); reason in notify.dlq.* headers",
    lane=None,
    description="Messages that could not be processed, byte for byte, with why.",
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    *REQUESTS.values(),
    *ACCEPTED.values(),
    *DELIVERIES.values(),
    *RECEIPTS.values(),
    PROFILES,
    PREFERENCES,
    DEVICES,
    API_KEYS,
    TENANT_LIMITS,
    CAMPAIGNS,
    SEGMENTS,
    SEGMENT_MEMBERS,
    SUPPRESSIONS,
    INBOX_READS,
    EVENTS,
    DEADLETTER,
)


def topic_name(settings: Settings, topic: TopicSpec | str) -> str:
    """The name ``topic`` has on the broker: NOTIFY_TOPIC_PREFIX, then its own."""
    name = topic.name if isinstance(topic, TopicSpec) else topic
    return f"{settings.topic_prefix}{name}"


class Topology:
    """The topics of ``ALL_TOPICS`` bound to one Faust app, under its prefix."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self._app = app
        self.settings = settings
        self.requests = {lane: self._bind(spec) for lane, spec in REQUESTS.items()}
        self.accepted = {lane: self._bind(spec) for lane, spec in ACCEPTED.items()}
        self.deliveries = {key: self._bind(spec) for key, spec in DELIVERIES.items()}
        # The send agents read jobs as bytes and check them: a job another
        # producer got wrong is dead-lettered, not skipped by the decoder.
        self.delivery_inputs = {
            key: self._bind(spec, raw=True) for key, spec in DELIVERIES.items()
        }
        self.receipts = {lane: self._bind(spec) for lane, spec in RECEIPTS.items()}
        self.profiles = self._bind(PROFILES)
        self.preferences = self._bind(PREFERENCES)
        self.devices = self._bind(DEVICES)
        self.api_keys = self._bind(API_KEYS)
        self.tenant_limits = self._bind(TENANT_LIMITS)
        self.campaigns = self._bind(CAMPAIGNS)
        self.segments = self._bind(SEGMENTS)
        self.segment_members = self._bind(SEGMENT_MEMBERS)
        # The state agents read these topics as bytes and validate them, so a
        # bad record from another producer is dead-lettered, not skipped.
        # Keyed by the logical name, so callers need not know the prefix.
        self.state_inputs = {
            spec.name: self._bind(spec, raw=True)
            for spec in (
                PROFILES,
                PREFERENCES,
                DEVICES,
                API_KEYS,
                TENANT_LIMITS,
                CAMPAIGNS,
                SEGMENTS,
                SEGMENT_MEMBERS,
                SUPPRESSIONS,
            )
        }
        self.inbox_reads = self._bind(INBOX_READS)
        self.events = self._bind(EVENTS)
        self.deadletter = self._bind(DEADLETTER)

    def _bind(self, spec: TopicSpec, *, raw: bool = False) -> TopicT:
        raw = raw or spec.record is None
        return self._app.topic(
            topic_name(self.settings, spec),
            key_type=bytes if raw else str,
            value_type=bytes if raw else spec.record,
            key_serializer="raw",
            value_serializer="raw" if raw else None,
            partitions=self.settings.topic_partitions,
            config=spec.kafka_configs() or None,
            internal=True,
        )
