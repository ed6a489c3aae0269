"""Pure decisions of the digest: which notifications a user gets as one.

A type marked digestible in ``notification_types.toml`` has its
notifications collected per (user, digest key) for a window, then sent as one
notification of type ``<type>.digest`` whose templates get ``count``, the
first ``items`` members' data as ``items``, and the first member's as
``first`` ("Alice and 49 others liked your photo"). The digest key is the
request's ``digest_key``, else its type. Modes:

- ``window``: the first notification opens a window of ``window``; it and
  every one until the window closes go out together when it closes;
- ``lookback``: the first goes out at once, alone, and opens the window;
  the rest of the window goes out together when it closes (nothing if none
  came);
- ``daily``: collected until the next ``at`` on the user's own clock.

A window closes on wall-clock time, through the schedule (``held_requests``)
like any deferral, whether or not another notification ever arrives. Each
member keeps its id; its status says which digest carried it. Critical
notifications are never digested.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo
from typing import Any, Literal

import orjson

from pipeline.throttle import next_wall_time
from schemas.records import DigestMember, DigestState

Mode = Literal["window", "lookback", "daily"]
MODES: tuple[Mode, ...] = ("window", "lookback", "daily")
#: The suffix of a digest notification's type: its templates' directory.
DIGEST_SUFFIX = ".digest"
_DURATION = re.compile(r"^(?P<amount>[1-9][0-9]{0,5})(?P<unit>s|m|h)$")
_UNITS = {"s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True)
class DigestPolicy:
    """How one type's notifications are collected."""

    mode: Mode = "window"
    window: timedelta = timedelta(seconds=30)
    #: ``daily``: the local time of day the digest goes out.
    at: time | None = None
    #: How many members' data the templates get in ``items``.
    items: int = 5

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown digest mode {self.mode!r}; one of {list(MODES)}")
        if self.mode == "daily" and self.at is None:
            raise ValueError("a daily digest needs `at`, a local HH:MM")
        if self.window <= timedelta(0) or self.items < 1:
            raise ValueError("a digest needs a positive window and items")


def parse_duration(text: str) -> timedelta:
    """``30s``, ``5m``, ``2h``."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not a duration like 30s, 5m or 2h: {text!r}")
    return timedelta(seconds=int(match["amount"]) * _UNITS[match["unit"]])


def digest_type(type_name: str) -> str:
    """The type of the digest notification of ``type_name``'s members."""
    return type_name + DIGEST_SUFFIX


def base_type(type_name: str) -> str:
    """The members' type of a digest type; any other type is its own."""
    return type_name.removesuffix(DIGEST_SUFFIX)


def state_key(tenant: str, user_id: str, key: str) -> str:
    """The digests table's key of one (user, digest key): unambiguous JSON."""
    return orjson.dumps([tenant, user_id, key]).decode()


def closes_at(policy: DigestPolicy, now: datetime, zone: tzinfo) -> datetime:
    """When a window opened at ``now`` closes."""
    if policy.mode != "daily":
        return now + policy.window
    assert policy.at is not None  # noqa: S101 - checked in __post_init__
    return next_wall_time(now, policy.at, zone, strictly=True)


@dataclass(frozen=True)
class Collected:
    """What the digest does with one notification."""

    #: The user's digest after it (to store); None if unchanged.
    state: DigestState | None
    #: True: the notification goes out now, alone (a look-back window's first).
    alone: bool
    #: True: a window was opened and its close must be scheduled.
    opened: bool


def collect(
    current: DigestState | None,
    notification_id: str,
    data: dict[str, Any],
    policy: DigestPolicy,
    now: datetime,
    zone: tzinfo,
    opener: dict[str, Any],
) -> Collected:
    """Add a notification to the user's open digest, or open one.

    ``opener`` holds the fields of a new digest (tenant, user, key, type,
    priority, lane, channels, locale). A notification already a member (a
    redelivery) changes nothing; one that opened a look-back window goes out
    alone again.
    """
    member = DigestMember(notification_id=notification_id, data=data, at=now)
    if current is not None and not current.released:
        if notification_id == current.lead or any(
            known.notification_id == notification_id for known in current.members
        ):
            return Collected(None, notification_id == current.lead, False)
        joined = current.model_copy(update={"members": [*current.members, member]})
        return Collected(joined, False, False)
    if current is not None and current.lead == notification_id:
        return Collected(None, True, False)  # a redelivered look-back lead
    lookback = policy.mode == "lookback"
    state = DigestState(
        **opener,
        opened_at=now,
        closes_at=closes_at(policy, now, zone),
        members=[] if lookback else [member],
        lead=notification_id if lookback else None,
    )
    return Collected(state, lookback, True)


def digest_data(state: DigestState, items: int) -> dict[str, Any]:
    """What the digest's templates get."""
    datas = [member.data for member in state.members]
    return {
        "count": len(datas),
        "items": datas[:items],
        "first": datas[0] if datas else {},
    }


def digest_idempotency_key(state: DigestState) -> str:
    """The digest notification's own key: one per window."""
    return f"digest:{state.key}:{int(state.opened_at.timestamp() * 1000)}"
