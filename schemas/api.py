"""The HTTP API's own bodies, answers and query strings, declared once.

The records that travel on topics live in `schemas.records`; these are the
shapes only the API speaks. The OpenAPI document (`pipeline.api.openapi`) is
generated from them and from the records.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints

from pipeline.ids import NOTIFICATION_ID_PATTERN
from schemas.records import (
    DeviceToken,
    InboxItem,
    InboxRead,
    NotificationStatus,
    Preferences,
    Record,
    TenantLimits,
    UserProfile,
)
from schemas.types import UNIQUE, Instant, NonBlank, Platform, Scope, unique


class ErrorDetail(Record):
    """What went wrong, with a stable code; ``field`` names the faulty field."""

    code: str
    message: str
    field: str | None = None
    #: The channels the error is about, with their outcome (a refused cancel
    #: names the channels already sent).
    channels: dict[str, str] | None = None


class Error(Record):
    """The body of every 4xx and 5xx answer."""

    error: ErrorDetail


class NotificationAccepted(Record):
    """A notification taken in: ``duplicate`` when the key was already used
    for this same request (nothing more is enqueued)."""

    notification_id: str
    status: Literal["accepted", "duplicate"]


class NotificationCancelled(Record):
    """A cancel that stopped every channel not yet sent."""

    notification_id: str
    status: Literal["cancelled"]
    #: The channels cancelled (none when the notification was stopped before
    #: any channel was decided).
    cancelled: list[str]


class RetryScheduled(Record):
    """An operator's retry: the failed channels put back to be sent again."""

    notification_id: str
    status: Literal["retry_scheduled"]
    channels: list[str]


class Unsubscribed(Record):
    """A one-click unsubscribe: the user no longer gets the category."""

    status: Literal["unsubscribed"]
    category: str


class NotificationList(Record):
    """A user's notifications, newest first, each with its status."""

    items: list[NotificationStatus]
    #: Pass as ``cursor`` for the next page; null on the last.
    next_cursor: str | None = None


class PreferencesAccepted(Record):
    """The preferences as they will be stored once the worker applies them."""

    status: Literal["accepted"]
    preferences: Preferences


class ProfileAccepted(Record):
    """The profile as it will be stored once the worker applies it."""

    status: Literal["accepted"]
    profile: UserProfile


class DeviceAccepted(Record):
    """The push token as it will be stored once the worker applies it."""

    status: Literal["accepted"]
    device: DeviceToken


class LimitsAccepted(Record):
    """The tenant's throttle settings as every worker will apply them."""

    status: Literal["accepted"]
    limits: TenantLimits


class ReadAccepted(Record):
    """The read mark, applied to the inbox by the worker holding it."""

    status: Literal["accepted"]
    read: InboxRead


class InboxPage(Record):
    """A user's in-app messages, newest first."""

    user_id: str
    unread: int = Field(ge=0)
    items: list[InboxItem]


class KeyRequest(Record):
    """A new tenant API key."""

    tenant: NonBlank
    scopes: Annotated[
        list[Scope], Field(min_length=1), UNIQUE, AfterValidator(unique)
    ] = ["notify"]


class KeyCreated(Record):
    """The new key: ``api_key`` is shown here only; the worker keeps its hash."""

    key_id: str
    tenant: str
    scopes: list[Scope]
    api_key: str


class KeyInfo(Record):
    """One API key, without its secret."""

    key_id: str
    tenant: str
    scopes: list[Scope]
    created_at: Instant
    revoked: bool


class KeyList(Record):
    """API keys, by id."""

    keys: list[KeyInfo]


class KeyRevoked(Record):
    """The key is revoked on every worker once they read the change."""

    key_id: str
    revoked: Literal[True]


class ReceiptsApplied(Record):
    """Provider receipts: how many the call carried, how many became events."""

    received: int = Field(ge=0)
    applied: int = Field(ge=0)


class Health(Record):
    """Liveness and readiness of one worker."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ok", "failing"]
    app_id: str
    lanes: list[str]
    ready: bool
    assigned: int
    failure: str | None
    providers: dict[str, Any] | None = None


class TenantQuery(Record):
    """``?tenant=``: admin keys act for any tenant, tenant keys only for their own."""

    model_config = ConfigDict(extra="ignore")

    tenant: NonBlank | None = None


class InboxQuery(TenantQuery):
    """``?unread=true`` lists unread messages only."""

    unread: Literal["true", "false"] | None = None


#: A list cursor: the time and id of the last item of the page before.
CURSOR_PATTERN = r"^[0-9]{1,15}\." + NOTIFICATION_ID_PATTERN.removeprefix("^")


class ListQuery(TenantQuery):
    """A page of a user's notifications: at most ``limit``, after ``cursor``."""

    #: 1 to 100 (default 20).
    limit: Annotated[str, StringConstraints(pattern=r"^([1-9][0-9]?|100)$")] = "20"
    #: ``next_cursor`` of the previous page: ``<epoch ms>.<notification id>``
    #: of the last item it showed.
    cursor: Annotated[str, StringConstraints(pattern=CURSOR_PATTERN)] | None = None


class DeviceQuery(TenantQuery):
    """The platform of the token being removed."""

    platform: Platform = "fcm"


class WebhookQuery(Record):
    """The tenant a provider's receipts belong to, when its callback URL names it."""

    model_config = ConfigDict(extra="ignore")

    tenant: NonBlank | None = None


class SchemaList(Record):
    """The published JSON Schemas: name → path."""

    schemas: dict[str, str]
