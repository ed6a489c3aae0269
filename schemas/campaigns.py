"""Campaigns and segments: the bulk API's bodies and what the workers keep.

A campaign is one request to notify many users (seed 002's
``POST /notifications/bulk``): its target names the audience, and each
worker expands the users of the partitions it owns into ordinary
notification requests on the bulk lane.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    RootModel,
    WithJsonSchema,
    model_validator,
)

from schemas.records import Channels, FieldError, Record
from schemas.types import (
    UNIQUE,
    Clock,
    Data,
    IdempotencyKey,
    Instant,
    ListedId,
    NonBlank,
    PathSegment,
    TypeName,
    unique,
)

#: A campaign's life: waiting for ``schedule_at``, being expanded, every
#: partition expanded, stopped for good by a cancel or its expiry, or held.
CampaignState = Literal[
    "scheduled", "expanding", "completed", "cancelled", "expired", "paused"
]
#: States no expansion follows.
FINAL_STATES = frozenset({"completed", "cancelled", "expired"})
#: ``type`` words of seed 002's body that name a priority, not a template
#: type: such a campaign sends its ``message`` with the ``campaign`` type.
PRIORITY_WORDS = frozenset({"promotional", "transactional"})
#: Most user ids a campaign or a segment may list inline.
MAX_INLINE_USERS = 10_000
#: User ids per stored chunk of an uploaded list, and most in one upload.
UPLOAD_CHUNK = 1_000
MAX_UPLOADED_USERS = 2_000_000


def _integral(value: object) -> object:
    """JSON's 1000.0 is the integer 1000 (JSON Schema says so); 1000.5 is not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


UserIds = Annotated[
    list[ListedId],
    Field(min_length=1, max_length=MAX_INLINE_USERS),
    UNIQUE,
    AfterValidator(unique),
]
Tags = Annotated[
    list[NonBlank], Field(min_length=1, max_length=50), UNIQUE, AfterValidator(unique)
]


class Uploaded(Record):
    """A list of user ids uploaded to a segment (``PUT /v1/segments/{id}/users``).

    The list is not kept whole anywhere: each partition's users are written
    in chunks onto that partition (``notify.segments.members``), so the
    owner expands them from its own store like profiles.
    """

    upload_id: str
    #: Distinct user ids in the list.
    count: int
    #: Partition number → chunks of the list on it (each ``UPLOAD_CHUNK`` ids).
    chunks: dict[str, int]
    uploaded_at: Instant


class MemberChunk(Record):
    """Up to ``UPLOAD_CHUNK`` user ids of an uploaded list, all on one
    partition, sorted; ``deleted``: the list was replaced or its segment
    deleted, and the chunk goes."""

    tenant: str
    upload_id: str
    partition: int
    chunk: int
    users: list[str] = Field(default_factory=list)
    deleted: bool = False


class Audience(Record):
    """Who a campaign or a segment selects: exactly one of its fields."""

    #: These users (at most 10,000 inline).
    user_ids: UserIds | None = None
    #: Users whose profile has every one of these tags.
    tags: Tags | None = None
    #: Every user of the tenant (every profile).
    all: Literal[True] | None = None
    #: The users of a list uploaded to the segment (any number).
    uploaded: Uploaded | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        given = [n for n in ("user_ids", "tags", "all", "uploaded") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError("give exactly one of user_ids, tags, all")
        return self


class SegmentTarget(Record):
    """A saved segment (read when the campaign expands)."""

    segment_id: PathSegment

    def audience(self) -> Audience | None:
        """None: the segment is read when the campaign expands."""
        return None


class UsersTarget(Record):
    """These users (at most 10,000 inline)."""

    user_ids: UserIds

    def audience(self) -> Audience:
        """The audience it names."""
        return Audience(user_ids=self.user_ids)


class TagsTarget(Record):
    """Users whose profile has every one of these tags."""

    tags: Tags

    def audience(self) -> Audience:
        """The audience it names."""
        return Audience(tags=self.tags)


class AllTarget(Record):
    """Every user of the tenant (every profile)."""

    all: Literal[True]

    def audience(self) -> Audience:
        """The audience it names."""
        return Audience(all=True)


#: A campaign's audience: exactly one of a segment, user ids, tags, all.
Target = SegmentTarget | UsersTarget | TagsTarget | AllTarget


class AudienceBody(RootModel[UsersTarget | TagsTarget | AllTarget]):
    """The body of ``PUT /v1/segments/{id}``: user_ids, tags or all."""


class Message(Record):
    """Seed 002's message: a title and a body, sent with the campaign type."""

    title: NonBlank
    body: NonBlank


class CampaignRequest(Record):
    """The body of ``POST /v1/notifications/bulk``."""

    idempotency_key: IdempotencyKey
    campaign_name: NonBlank
    #: A notification type (its templates get ``data``), or seed 002's
    #: ``promotional`` / ``transactional`` with a ``message`` (sent with the
    #: ``campaign`` type; ``data`` may add its optional fields, e.g. cta_url).
    type: TypeName
    target: Target
    channels: Channels | None = None
    message: Message | None = None
    data: Data = Field(default_factory=dict)
    schedule_at: Instant | None = None
    expiry_at: Instant | None = None
    #: ``HH:MM``: each recipient gets it at this time of day on their own
    #: clock (their time zone), the first at or after ``schedule_at`` (or the
    #: campaign's creation), through the scheduler.
    local_time: Clock | None = None
    #: Recipients expanded per second, across every worker.
    rate: Annotated[
        int,
        BeforeValidator(_integral),
        Field(ge=1, le=100_000),
        WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 100_000}),
    ] = 1_000
    #: Recipients per expansion step of one partition.
    chunk: Annotated[
        int,
        BeforeValidator(_integral),
        Field(ge=1, le=10_000),
        WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 10_000}),
    ] = 1_000
    #: Set by the API from the key.
    tenant: NonBlank = "default"

    @model_validator(mode="after")
    def _content(self) -> Self:
        if self.type in PRIORITY_WORDS and self.message is None:
            raise FieldError("message", f"required with type {self.type!r}")
        if self.schedule_at and self.expiry_at and self.expiry_at <= self.schedule_at:
            raise FieldError("expiry_at", "must be later than schedule_at")
        return self

    def priority(self) -> Literal["promotional", "transactional"]:
        """The priority of its notifications: never critical (bulk lane only)."""
        return "transactional" if self.type == "transactional" else "promotional"

    def notification_type(self) -> str:
        """The type its notifications are sent as."""
        return "campaign" if self.type in PRIORITY_WORDS else self.type

    def notification_data(self) -> dict[str, object]:
        """The data its notifications carry: ``data``, and with a ``message``
        its title and body as ``headline`` and ``message`` (the fields the
        ``campaign`` type's templates show)."""
        if self.message is not None:
            return {
                **self.data,
                "headline": self.message.title,
                "message": self.message.body,
            }
        return dict(self.data)


class Campaign(Record):
    """A campaign as the workers keep it (the ``campaigns`` global table)."""

    campaign_id: str
    tenant: str
    request: CampaignRequest
    body_hash: str
    #: What its owner asked for; the state shown follows from it, the clock
    #: and the progress (``pipeline.campaigns.shown_state``).
    state: Literal["active", "paused", "cancelled"]
    created_at: Instant
    updated_at: Instant


class Segment(Record):
    """A saved audience (``PUT /v1/segments/{id}``); ``deleted`` once removed."""

    segment_id: str
    tenant: str
    audience: Audience
    updated_at: Instant
    deleted: bool = False


class Progress(Record):
    """How far one partition's expansion of one campaign got (a checkpoint)."""

    #: The last profile key (or inline list position) expanded.
    cursor: str | None = None
    #: Users the target selected so far, and requests produced for them.
    targeted: int = 0
    expanded: int = 0
    done: bool = False
    #: Entries the walk looked at so far (profiles, or listed users), and
    #: about how many the partition holds (RocksDB's estimate): how far the
    #: walk is when the audience is not known ahead.
    looked_at: int = 0
    walk_size: int | None = None
    updated_at: Instant
    #: The worker that expanded it last (its web address).
    by: str | None = None


class CampaignCounts(Record):
    """One partition's channel outcomes of one campaign's notifications."""

    counts: dict[str, int] = Field(default_factory=dict)


class CampaignAccepted(Record):
    """A campaign taken in (the same key again: the same campaign)."""

    status: Literal["accepted"]
    campaign_id: str


class CampaignStatus(Record):
    """``GET /v1/campaigns/{id}``: its state and where its recipients are.

    ``targeted``: users the target selected so far (all of them once
    ``completed``); ``expanded``: requests produced for them; then, per
    recipient and channel, its current outcome (``sent`` counts what went
    further too, ``delivered`` what was delivered, opened or clicked).
    """

    campaign_id: str
    campaign_name: str
    tenant: str
    state: CampaignState
    created_at: Instant
    schedule_at: Instant | None = None
    expiry_at: Instant | None = None
    #: Partitions whose users are all expanded, of how many.
    partitions_done: int
    partitions: int
    #: Which workers expanded how many partitions (its web address → count).
    expanded_by: dict[str, int] = Field(default_factory=dict)
    #: Users the target selects, when known ahead (a list of user ids, inline
    #: or uploaded); None for tags or all, known once every partition is
    #: walked (``targeted`` then).
    audience: int | None = None
    #: How far the walk of every partition is, 0 to 1 (for tags or all:
    #: profiles looked at against each partition's estimated size).
    walked: float = 0.0
    counts: dict[str, int]


class CampaignList(Record):
    """A tenant's campaigns, newest first."""

    items: list[CampaignStatus]


class CampaignPart(Record):
    """One partition's part of a campaign: its checkpoint and outcome counts."""

    progress: Progress | None = None
    counts: dict[str, int] = Field(default_factory=dict)


class CampaignParts(Record):
    """The parts of a campaign one worker holds, by partition number."""

    parts: dict[str, CampaignPart]
