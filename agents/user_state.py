"""user-state: fold profile, preference, device and API-key updates into tables.

One agent per state topic; each only copies the latest value into its table,
so a rebuilt table is exactly what the compacted topic holds. The topics are
read as bytes and validated like the API's bodies: another producer's bad
record goes to the dead-letter topic instead of being skipped by the decoder.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from faust.types import EventT, StreamT
from pydantic import BaseModel

from pipeline.app import app
from pipeline.deadletter import Rejection, dead_letter, source_of
from pipeline.errors import InvalidMessage
from pipeline.partitioning import check_user_partition
from pipeline.topology import (
    API_KEYS,
    CAMPAIGNS,
    DEVICES,
    PREFERENCES,
    PROFILES,
    SEGMENT_MEMBERS,
    SEGMENTS,
    SUPPRESSIONS,
    TENANT_LIMITS,
    user_key,
)
from schemas.campaigns import Campaign, MemberChunk, Segment
from schemas.decode import decode
from schemas.records import (
    ApiKey,
    DeviceSet,
    DeviceToken,
    Preferences,
    Suppression,
    TenantLimits,
    UserOwned,
    UserProfile,
)
from tables.api_keys import api_keys
from tables.campaigns import (
    campaigns,
    member_key,
    segment_key,
    segment_members,
    segments,
)
from tables.devices import devices
from tables.preferences import preferences
from tables.profiles import profiles
from tables.suppressions import suppression_key, suppressions
from tables.tenant_limits import tenant_limits

STAGE = "state"
S = TypeVar("S", bound=UserOwned)
R = TypeVar("R", bound=BaseModel)


def with_device(current: DeviceSet | None, update: DeviceToken) -> DeviceSet:
    """The user's device set after one device update (add, refresh or deactivate)."""
    known = dict(current.devices) if current else {}
    known[update.token] = update
    return DeviceSet(devices=known)


def parse_state(raw: bytes | None, model: type[S], now: datetime) -> S:
    """A user-state record from its topic, checked like an API body.

    A record without ``updated_at`` (a producer's own) is stamped ``now``.
    """
    if raw is None:
        raise InvalidMessage("empty message (no value)", code="empty")
    record = decode(model, raw)
    if record.updated_at is None:
        record = record.model_copy(update={"updated_at": now})
    return record


def parse_record(model: type[R]) -> Callable[[bytes | None], R]:
    """A parser of ``model`` records for a global table's state agent: written
    by the API (or another producer), and checked all the same."""

    def parse(raw: bytes | None) -> R:
        if raw is None:
            raise InvalidMessage("empty message (no value)", code="empty")
        return decode(model, raw)

    return parse


async def apply(
    event: EventT,
    parse: Callable[[bytes | None], Any],
    store: Callable[[Any], None],
    *,
    per_user: bool = True,
) -> None:
    """Parse one state record and store it, or dead-letter it with the reason."""
    source = source_of(event)
    try:
        record = parse(event.message.value)
        if per_user:
            check_user_partition(
                record.tenant, record.user_id, event.message.partition, app.settings
            )
    except InvalidMessage as exc:
        await dead_letter(app, event, Rejection(exc.reason, exc.code, source, STAGE))
        return
    store(record)


def _state_agent(
    topic: str,
    name: str,
    parse: Callable[[bytes | None], Any],
    store: Callable[[Any], None],
    doc: str,
    *,
    per_user: bool = True,
) -> None:
    async def fold(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            with app.commit_guard.watching(source_of(event)):
                await apply(event, parse, store, per_user=per_user)

    fold.__doc__ = doc
    app.agent(app.topology.state_inputs[topic], name=name)(fold)


def _now() -> datetime:
    return app.clock.now()


def _store_profile(profile: Any) -> None:
    profiles[user_key(profile.tenant, profile.user_id)] = profile


def _store_preferences(prefs: Any) -> None:
    preferences[user_key(prefs.tenant, prefs.user_id)] = prefs


def _store_device(device: Any) -> None:
    key = user_key(device.tenant, device.user_id)
    devices[key] = with_device(devices.get(key), device)


def _store_api_key(key: Any) -> None:
    api_keys[key.key_id] = key


def _store_tenant_limits(record: Any) -> None:
    tenant_limits[record.tenant] = record


def _store_campaign(record: Any) -> None:
    campaigns[record.campaign_id] = record


def _store_segment(record: Any) -> None:
    segments[segment_key(record.tenant, record.segment_id)] = record


def _store_members(record: Any) -> None:
    key = member_key(record.tenant, record.upload_id, record.partition, record.chunk)
    if record.deleted:
        segment_members.pop(key, None)
    else:
        segment_members[key] = record


def _store_suppression(record: Any) -> None:
    suppressions[suppression_key(record.tenant, record.channel, record.address)] = (
        record
    )


_state_agent(
    PROFILES.name,
    "state.profiles",
    lambda raw: parse_state(raw, UserProfile, _now()),
    _store_profile,
    "Keep the profiles table equal to the latest profile of every user.",
)
_state_agent(
    PREFERENCES.name,
    "state.preferences",
    lambda raw: parse_state(raw, Preferences, _now()),
    _store_preferences,
    "Keep the preferences table equal to the latest preferences of every user.",
)
_state_agent(
    DEVICES.name,
    "state.devices",
    lambda raw: parse_state(raw, DeviceToken, _now()),
    _store_device,
    "Fold device registrations and removals into each user's device set.",
)
_state_agent(
    API_KEYS.name,
    "state.api_keys",
    parse_record(ApiKey),
    _store_api_key,
    "Keep the global API keys table equal to the keys topic.",
    per_user=False,  # a global table: every worker reads every partition
)
_state_agent(
    TENANT_LIMITS.name,
    "state.tenant_limits",
    parse_record(TenantLimits),
    _store_tenant_limits,
    "Keep the global tenant limits table equal to the tenant limits topic.",
    per_user=False,
)
_state_agent(
    CAMPAIGNS.name,
    "state.campaigns",
    parse_record(Campaign),
    _store_campaign,
    "Keep the global campaigns table equal to the campaigns topic.",
    per_user=False,
)
_state_agent(
    SEGMENTS.name,
    "state.segments",
    parse_record(Segment),
    _store_segment,
    "Keep the global segments table equal to the segments topic.",
    per_user=False,
)
_state_agent(
    SEGMENT_MEMBERS.name,
    "state.segment_members",
    parse_record(MemberChunk),
    _store_members,
    "Keep each partition's chunks of uploaded user lists (or drop them).",
    per_user=False,
)
_state_agent(
    SUPPRESSIONS.name,
    "state.suppressions",
    parse_record(Suppression),
    _store_suppression,
    "Keep the global suppression list equal to the suppressions topic.",
    per_user=False,
)
