"""Pure decisions of the enrich and preferences stages: channels, reach, verdicts."""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta, tzinfo
from functools import lru_cache
from os import PathLike
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pipeline.digest import DigestPolicy, base_type, parse_duration
from pipeline.throttle import DEFAULT_CAPS, Bucket, Cap, Limits, parse_caps
from schemas.records import (
    CHANNELS,
    DeviceToken,
    NotificationRequest,
    Preferences,
    QuietHours,
    TenantLimits,
    UserProfile,
)

#: The catalogue beside this module; the package-data must ship it.
DEFAULT_CATALOGUE_PATH = Path(__file__).with_name("notification_types.toml")
#: The catalogue entry that stands for every type it does not list.
DEFAULT_TYPE = "default"

Outcome = Literal["deliver", "suppress", "defer", "expire"]
OverCap = Literal["throttle", "defer"]
OUTCOMES: tuple[Outcome, ...] = ("deliver", "suppress", "defer", "expire")

# Priorities that keep the request out of the marketing rules; anything else,
# including a priority this module does not know, is held to all of them, so a
# typo can never slip past an opt-out.
_NON_MARKETING_PRIORITIES = ("critical", "transactional")
_TYPE_KEYS = frozenset(
    {"channels", "category", "marketing", "caps", "over_cap", "rate", "digest"}
)
_DIGEST_KEYS = frozenset({"mode", "window", "at", "items"})
_RATE = re.compile(
    r"^(?P<count>[0-9]+)/(?P<unit>second|minute|hour) burst (?P<burst>[0-9]+)$"
)
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600}
# ASCII digits only: ``\d`` would also accept other scripts' digits.
_WALL_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
# Hops of the window-exit walk: one per UTC-offset change crossed, plus one; no
# zone changes its offset more than twice in the two days one window can last.
_MAX_HOPS = 4


@dataclass(frozen=True)
class TypeInfo:
    """What the catalogue says about one notification type."""

    channels: tuple[str, ...]
    category: str
    marketing: bool = False
    #: Frequency caps its notifications count toward (seed 003's by default).
    caps: tuple[Cap, ...] = DEFAULT_CAPS
    #: Over a cap: ``throttle`` (not sent, the cap named) or ``defer`` (sent
    #: when the cap's period ends, through the schedule).
    over_cap: OverCap = "throttle"
    #: A token bucket per (user, channel), if the type has one.
    bucket: Bucket | None = None
    #: How its notifications are collected into digests, if they are.
    digest: DigestPolicy | None = None


class TypeCatalogue:
    """The notification types: default channels, opt-out category, marketing flag."""

    def __init__(self, types: Mapping[str, TypeInfo]) -> None:
        for name, info in types.items():
            _check_type_info(name, info)
        if DEFAULT_TYPE not in types:
            raise ValueError(f"the catalogue needs a {DEFAULT_TYPE!r} type")
        self._types = dict(types)

    @classmethod
    def load(cls, path: str | PathLike[str] | None = None) -> TypeCatalogue:
        """Read and validate a catalogue file (the packaged one when no path)."""
        source = DEFAULT_CATALOGUE_PATH if path is None else Path(path)
        with source.open("rb") as handle:
            document = tomllib.load(handle)
        return cls(_parse_types(document, str(source)))

    def lookup(self, type_name: str) -> TypeInfo:
        """The entry of ``type_name``, or the default entry for an unknown type.

        A digest (``<type>.digest``) is its members' type, never digested again.
        """
        base = base_type(type_name)
        info = self._types.get(base, self._types[DEFAULT_TYPE])
        if base != type_name and info.digest is not None:
            return replace(info, digest=None)
        return info

    def __contains__(self, type_name: object) -> bool:
        """Whether ``type_name`` has an entry of its own."""
        return type_name in self._types


def _parse_types(document: Mapping[str, Any], source: str) -> dict[str, TypeInfo]:
    extra = set(document) - {"types"}
    if extra:
        raise ValueError(f"{source}: unknown top-level keys {sorted(extra)}")
    tables = document.get("types")
    if not isinstance(tables, dict):
        raise ValueError(f"{source}: needs a [types] table")
    types: dict[str, TypeInfo] = {}
    for name, table in tables.items():
        where = f"{source}: type {name!r}"
        if not isinstance(table, dict):
            raise ValueError(f"{where}: must be a table")
        unknown = set(table) - _TYPE_KEYS
        if unknown:
            # A misspelt key ("chanels") would otherwise be ignored silently.
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        channels = table.get("channels")
        if not isinstance(channels, list) or not all(
            isinstance(channel, str) for channel in channels
        ):
            raise ValueError(f"{where}: channels must be a list of strings")
        category = table.get("category")
        if not isinstance(category, str):
            raise ValueError(f"{where}: category must be a string")
        marketing = table.get("marketing", False)
        if not isinstance(marketing, bool):
            raise ValueError(f"{where}: marketing must be true or false")
        types[name] = TypeInfo(
            tuple(channels),
            category,
            marketing,
            caps=_caps(table, where),
            over_cap=_over_cap(table, where),
            bucket=_bucket(table, where),
            digest=_digest(table, where),
        )
    return types


def _caps(table: Mapping[str, Any], where: str) -> tuple[Cap, ...]:
    caps = table.get("caps")
    if caps is None:
        return DEFAULT_CAPS
    if not isinstance(caps, list) or not all(isinstance(cap, str) for cap in caps):
        raise ValueError(f'{where}: caps must be a list like ["sms/month 50"]')
    try:
        return parse_caps(caps)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _over_cap(table: Mapping[str, Any], where: str) -> OverCap:
    over_cap = table.get("over_cap", "throttle")
    if over_cap not in ("throttle", "defer"):
        raise ValueError(f'{where}: over_cap must be "throttle" or "defer"')
    return over_cap


def _bucket(table: Mapping[str, Any], where: str) -> Bucket | None:
    rate = table.get("rate")
    if rate is None:
        return None
    try:
        return parse_rate(rate)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _digest(table: Mapping[str, Any], where: str) -> DigestPolicy | None:
    digest = table.get("digest")
    if digest is None:
        return None
    if not isinstance(digest, dict) or set(digest) - _DIGEST_KEYS:
        raise ValueError(
            f"{where}: digest must be a table of {sorted(_DIGEST_KEYS)}, "
            'e.g. { mode = "window", window = "30s" }'
        )
    try:
        at = digest.get("at")
        items = digest.get("items", 5)
        if not isinstance(items, int) or isinstance(items, bool):
            raise ValueError("digest items must be an integer")
        return DigestPolicy(
            mode=digest.get("mode", "window"),
            window=parse_duration(digest.get("window", "30s")),
            at=parse_wall_time(at) if at is not None else None,
            items=items,
        )
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


@lru_cache(maxsize=256)
def parse_rate(text: str) -> Bucket:
    """A token bucket written ``<count>/<second|minute|hour> burst <n>``."""
    match = _RATE.fullmatch(text) if isinstance(text, str) else None
    if match is None or int(match["count"]) < 1 or int(match["burst"]) < 1:
        raise ValueError(f'rate must read like "10/minute burst 5", not {text!r}')
    per_second = int(match["count"]) / _UNIT_SECONDS[match["unit"]]
    return Bucket(rate=per_second, burst=int(match["burst"]))


@lru_cache(maxsize=256)
def _tenant_caps(texts: tuple[str, ...]) -> tuple[Cap, ...]:
    return parse_caps(texts)


def throttle_settings(
    info: TypeInfo, tenant: TenantLimits | None
) -> tuple[Limits, OverCap]:
    """The caps, bucket and over-cap policy of a type, as its tenant set them.

    A tenant's setting left null keeps the type's; set, it replaces it for
    every type of that tenant.
    """
    if tenant is None:
        return Limits(info.caps, info.bucket), info.over_cap
    caps = info.caps if tenant.caps is None else _tenant_caps(tuple(tenant.caps))
    bucket = info.bucket if tenant.rate is None else parse_rate(tenant.rate)
    over_cap = info.over_cap if tenant.over_cap is None else tenant.over_cap
    return Limits(caps, bucket), over_cap


def _check_type_info(name: str, info: TypeInfo) -> None:
    if not info.channels:
        raise ValueError(f"type {name!r}: needs at least one channel")
    for channel in info.channels:
        if channel not in CHANNELS:
            raise ValueError(
                f"type {name!r}: unknown channel {channel!r}; one of {list(CHANNELS)}"
            )
    if len(set(info.channels)) != len(info.channels):
        raise ValueError(f"type {name!r}: lists a channel twice")
    if not info.category:
        raise ValueError(f"type {name!r}: needs a category")


def resolve_channels(
    request: NotificationRequest, catalogue: TypeCatalogue
) -> list[str]:
    """The channels to try, in order: the request's override, else its type's."""
    # An empty override would send nothing at all. Ingest refuses one; should one
    # get here anyway, the type's defaults beat silently dropping the message.
    chosen = request.channels or catalogue.lookup(request.type).channels
    return list(dict.fromkeys(chosen))


def unreachable_reason(
    channel: str, profile: UserProfile | None, devices: Sequence[DeviceToken]
) -> str | None:
    """Why ``channel`` cannot reach the user (stable code first), None if it can."""
    if channel == "in_app":
        # The inbox is ours: it needs no address, token or consent of a provider.
        return None
    if channel == "push":
        return None if any(device.active for device in devices) else "no_active_device"
    if channel in ("email", "sms"):
        code = "no_email" if channel == "email" else "no_phone"
        if profile is None:
            # Same code, so counts by reason stay simple; the suffix tells the
            # missing profile (a feed lagging) from a user without an address.
            return f"{code}:no_profile"
        address = profile.email if channel == "email" else profile.phone
        return None if address and address.strip() else code
    return f"unknown_channel:{channel}"


@dataclass(frozen=True)
class Verdict:
    """What the preferences stage does with one request on one channel, and why."""

    outcome: Outcome
    # A stable code: expired, global_opt_out, type_opt_out:<type or category>,
    # channel_opt_out:<channel>, marketing_opt_out, scheduled, quiet_hours; and on
    # a delivery, invalid_quiet_hours when malformed quiet hours were ignored.
    reason: str | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}")
        if (self.outcome == "defer") != (self.until is not None):
            raise ValueError("a deferral needs `until`, and only a deferral has one")
        if self.until is not None:
            # One representation per instant, so equal verdicts compare and
            # serialize equally whatever offset the caller's clock used.
            object.__setattr__(self, "until", _aware_utc(self.until, "until"))


def decide(
    request: NotificationRequest,
    channel: str,
    prefs: Preferences | None,
    profile: UserProfile | None,
    catalogue: TypeCatalogue,
    now: datetime,
) -> Verdict:
    """Deliver, suppress, defer or expire one request on one channel at ``now``."""
    instant = _aware_utc(now, "now")
    expiry_at = _request_time(request.expiry_at)
    if expiry_at is not None and expiry_at <= instant:
        # Even critical: a one-time code past its expiry is worse than none.
        return Verdict("expire", "expired")
    critical = request.priority == "critical"
    if prefs is not None and not critical:
        opt_out = _opt_out(request, channel, prefs, catalogue.lookup(request.type))
        if opt_out is not None:
            return Verdict("suppress", opt_out)
    schedule_at = _request_time(request.schedule_at)
    if schedule_at is not None and schedule_at > instant:
        # The caller's own timing, not a preference: critical waits for it too.
        # Quiet hours are judged again when the schedule releases it.
        return Verdict("defer", "scheduled", schedule_at)
    if critical or prefs is None or prefs.quiet_hours is None:
        return Verdict("deliver")
    try:
        start, end = _parse_window(prefs.quiet_hours)
    except ValueError:
        # Bad preferences must not hold a message back forever or crash the
        # stage on every replay; deliver, and leave the cause in the trail.
        return Verdict("deliver", "invalid_quiet_hours")
    zone = _zone_or_utc(quiet_hours_zone(prefs, profile))
    until = _window_end(instant, start, end, zone)
    if until is None:
        return Verdict("deliver")
    return Verdict("defer", "quiet_hours", until)


def _opt_out(
    request: NotificationRequest, channel: str, prefs: Preferences, info: TypeInfo
) -> str | None:
    # Only an explicit false opts out: an absent key means the user never chose.
    if not prefs.enabled:
        return "global_opt_out"
    for key in (request.type, info.category):
        if prefs.types.get(key) is False:
            return f"type_opt_out:{key}"
    if prefs.channels.get(channel) is False:  # type: ignore[call-overload]
        return f"channel_opt_out:{channel}"
    marketing = info.marketing or request.priority not in _NON_MARKETING_PRIORITIES
    if marketing and not prefs.marketing:
        return "marketing_opt_out"
    return None


def user_zone(prefs: Preferences | None, profile: UserProfile | None) -> tzinfo:
    """The user's time zone, as quiet hours and cap periods read it."""
    return _zone_or_utc(quiet_hours_zone(prefs, profile))


def quiet_hours_zone(prefs: Preferences | None, profile: UserProfile | None) -> str:
    """The zone quiet hours are read in: the first valid of prefs', profile's, UTC."""
    candidates = (
        prefs.timezone if prefs is not None else None,
        profile.timezone if profile is not None else None,
    )
    for name in candidates:
        if name and _load_zone(name) is not None:
            return name
    return "UTC"


def parse_wall_time(text: str) -> time:
    """A strict 24-hour "HH:MM" wall-clock time; ValueError for anything else."""
    match = _WALL_TIME.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not an HH:MM wall-clock time: {text!r}")
    return time(int(match[1]), int(match[2]))


# The window is a daily range of local wall-clock times [start, end): an instant
# is quiet when the user's clock then reads a time in it. start == end means no
# quiet hours at all (never "all day"), and an end before the start spans
# midnight. Around DST transitions:
# - an end time that does not exist (spring-forward gap) ends the window at the
#   transition, the first instant after it; should the clock land inside the
#   window again (the gap swallowed every non-quiet minute of that day), the
#   window runs on to the next night's end, as the user's clock never left it;
# - an end time that occurs twice (fall-back) ends the window at its first
#   occurrence after `now`; if the clock later falls back into the window it is
#   quiet again and a new deferral follows;
# - a fall-back that carries the clock back before a same-day window's start
#   ends the window at the transition, since the clock then reads a time
#   outside it; so every instant in [now, end) is quiet and `end` itself is not.
def quiet_window_end(now: datetime, quiet: QuietHours, zone: str) -> datetime | None:
    """The UTC instant the quiet window holding ``now`` ends; None outside it."""
    start, end = _parse_window(quiet)
    return _window_end(_aware_utc(now, "now"), start, end, _zone_or_utc(zone))


def _parse_window(quiet: QuietHours) -> tuple[time, time]:
    return parse_wall_time(quiet.start), parse_wall_time(quiet.end)


def _window_end(now: datetime, start: time, end: time, zone: tzinfo) -> datetime | None:
    if start == end:
        return None
    cursor = now
    for hop in range(_MAX_HOPS):
        local = _wall(cursor, zone)
        if not _in_window(local.time(), start, end):
            return None if hop == 0 else cursor
        end_day = local.date()
        if start > end and local.time() >= start:
            end_day += timedelta(days=1)
        bound = _next_reading(cursor, datetime.combine(end_day, end), zone)
        # Until the next offset change the wall clock runs straight on to `end`;
        # a change on the way may skip past it or fall back out of the window,
        # so walk on from the change and look again.
        shift = _first_offset_change(cursor, bound, zone)
        if shift is None:
            return bound
        cursor = shift
    return cursor


def _in_window(wall: time, start: time, end: time) -> bool:
    if start < end:
        return start <= wall < end
    return wall >= start or wall < end


def _next_reading(after: datetime, wall: datetime, zone: tzinfo) -> datetime:
    # Both folds of a local time: equal for an ordinary time, a jump apart for a
    # repeated one, and neither shown by the clock for a time in a gap.
    readings = [wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)]
    shown = [reading for reading in readings if _wall(reading, zone) == wall]
    later = [reading for reading in shown if reading > after]
    if later:
        return min(later)
    # In a gap the later reading lies past the jump: a bound for the search of
    # the transition, which is the first instant after the missing time.
    return max(readings)


def _first_offset_change(
    start: datetime, stop: datetime, zone: tzinfo
) -> datetime | None:
    before = start.astimezone(zone).utcoffset()
    if stop.astimezone(zone).utcoffset() == before:
        return None
    # Zone transitions fall on whole seconds, so bisecting whole seconds finds
    # the exact instant in about 17 steps, with no access to the zone's table.
    low, high = math.floor(start.timestamp()), math.ceil(stop.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


def _wall(instant: datetime, zone: tzinfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


@lru_cache(maxsize=1024)
def _load_zone(name: str) -> tzinfo | None:
    # Cached because a bad name is looked up again for every message of that
    # user; ZoneInfo caches only the zones it finds.
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):
        # ZoneInfoNotFoundError is a KeyError; malformed keys ("", "../x") raise
        # ValueError and a directory such as "America" raises OSError.
        return None


def _zone_or_utc(name: str) -> tzinfo:
    return _load_zone(name) or UTC


def _aware_utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return moment.astimezone(UTC)


def _request_time(moment: datetime | None) -> datetime | None:
    # Ingest refuses times without an offset; a record from another producer
    # that slipped one through is read as UTC, the pipeline's one clock.
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
