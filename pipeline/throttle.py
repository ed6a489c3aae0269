"""Pure decisions of the throttle: frequency caps and per-channel token buckets.

A **cap** bounds how many notifications of a kind one user gets per period:
``marketing/day 5`` (marketing notifications), ``promotional/minute 1``
(promotional priority, across channels), ``sms/month 50`` (SMS sends). A
period is read on the user's own clock: a day ends at the user's local
midnight, a month at the end of the user's local month, whatever the
offset (daylight saving included). A **bucket** bounds the rate per
(user, channel): ``rate`` tokens a second up to ``burst``, one per send.

Critical notifications bypass both. What each user has used lives in one
`ThrottleState` per user, on the user's partition (``tables.throttle``),
read and written by fanout in the same step that decides the request, so one
budget holds however many workers run. Each cap window and bucket remembers
the notifications it counted: a redelivered request is admitted again
without being counted twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Literal

from schemas.records import BucketState, ThrottleState

Period = Literal["minute", "hour", "day", "week", "month"]
PERIODS: tuple[Period, ...] = ("minute", "hour", "day", "week", "month")
#: What a cap counts: notifications judged marketing (the type says so, or a
#: promotional priority), of promotional priority, or sends on one channel.
Scope = Literal["marketing", "promotional", "push", "email", "sms", "in_app"]
SCOPES: tuple[Scope, ...] = (
    "marketing",
    "promotional",
    "push",
    "email",
    "sms",
    "in_app",
)
CHANNEL_SCOPES = frozenset({"push", "email", "sms", "in_app"})

_CAP = re.compile(r"^(?P<scope>[a-z_]+)/(?P<period>[a-z]+) (?P<limit>[0-9]+)$")


@dataclass(frozen=True)
class Cap:
    """At most ``limit`` notifications of ``scope`` per user per ``period``."""

    scope: Scope
    period: Period
    limit: int

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"unknown cap scope {self.scope!r}; one of {list(SCOPES)}")
        if self.period not in PERIODS:
            raise ValueError(
                f"unknown cap period {self.period!r}; one of {list(PERIODS)}"
            )
        if self.limit < 0:
            raise ValueError("a cap's limit is 0 or more")

    @classmethod
    def parse(cls, text: str) -> Cap:
        """A cap written as ``<scope>/<period> <limit>``, e.g. ``sms/month 50``."""
        match = _CAP.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValueError(
                f"not a cap (scope/period limit, e.g. 'sms/month 50'): {text!r}"
            )
        return cls(match["scope"], match["period"], int(match["limit"]))  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        """``scope/period``: the cap's key in a user's state."""
        return f"{self.scope}/{self.period}"

    def __str__(self) -> str:
        return f"{self.scope}/{self.period} {self.limit}"

    def per_channel(self) -> bool:
        """True if the cap counts sends on its channel, not notifications."""
        return self.scope in CHANNEL_SCOPES


#: Seed 003's defaults.
DEFAULT_CAPS: tuple[Cap, ...] = (
    Cap("marketing", "day", 5),
    Cap("promotional", "minute", 1),
    Cap("sms", "month", 50),
)


@dataclass(frozen=True)
class Bucket:
    """``rate`` sends a second per (user, channel), bursts of up to ``burst``."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a bucket needs a positive rate and a burst of 1 or more")


#: Per channel: ten sends a minute, five at once.
DEFAULT_BUCKET = Bucket(rate=10 / 60, burst=5)


#: Every zone's offset, and every daylight-saving change, is a whole number
#: of quarter hours from UTC (India +5:30, Nepal +5:45, Lord Howe's 30-minute
#: change): a user's hour can only begin on a UTC quarter hour.
QUARTER = timedelta(minutes=15)


def _quarter(instant: datetime) -> datetime:
    """The UTC quarter hour ``instant`` falls in."""
    utc = instant.astimezone(UTC)
    return utc.replace(minute=utc.minute - utc.minute % 15, second=0, microsecond=0)


def _hour_begins(moment: datetime, zone: tzinfo) -> bool:
    """True if a user's hour begins at ``moment`` (a UTC quarter hour): their
    clock reads a whole hour, or its offset changes there (after a
    30-minute change back the clock reads :30, and a new hour begins)."""
    local = moment.astimezone(zone)
    if local.minute == 0:
        return True
    before = (moment - timedelta(microseconds=1)).astimezone(zone)
    return local.utcoffset() != before.utcoffset()


def period_start(instant: datetime, period: Period, zone: tzinfo) -> datetime:
    """The UTC instant the user's current ``period`` began, on the user's clock.

    A day begins at local midnight, a week on local Monday at midnight, a
    month on the local first at midnight; a local midnight that a
    daylight-saving change skips begins the day at the end of the gap. An
    hour begins when the clock reads a whole hour (a :30 zone's hours at :30
    UTC, the repeated hour of a change back again) or its offset changes.
    """
    if period == "minute":
        return instant.astimezone(UTC).replace(second=0, microsecond=0)
    local = instant.astimezone(zone)
    if period == "hour":
        moment = _quarter(instant)
        while not _hour_begins(moment, zone):
            moment -= QUARTER
        return moment
    day = local.replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        day -= timedelta(days=day.weekday())
    elif period == "month":
        day = day.replace(day=1)
    return local_to_utc(day, zone)


def period_end(instant: datetime, period: Period, zone: tzinfo) -> datetime:
    """The UTC instant the user's current ``period`` ends (the next begins)."""
    start = period_start(instant, period, zone)
    if period == "minute":
        return start + timedelta(minutes=1)
    if period == "hour":
        moment = _quarter(instant) + QUARTER
        while not _hour_begins(moment, zone):
            moment += QUARTER
        return moment
    day = instant.astimezone(zone).replace(
        tzinfo=None, hour=0, minute=0, second=0, microsecond=0
    )
    if period == "day":
        following = day + timedelta(days=1)
    elif period == "week":
        following = day - timedelta(days=day.weekday()) + timedelta(days=7)
    else:
        following = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return local_to_utc(following, zone)


def next_wall_time(
    after: datetime, at: time, zone: tzinfo, *, strictly: bool = False
) -> datetime:
    """The first UTC instant at or after ``after`` (``strictly`` after it)
    at which the user's wall clock reads ``at`` (a gap's end when a
    daylight-saving change skips it)."""
    local = after.astimezone(zone).replace(tzinfo=None)
    today = local.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    moment = local_to_utc(today, zone)
    if moment < after or (strictly and moment == after):
        moment = local_to_utc(today + timedelta(days=1), zone)
    return moment


def local_to_utc(naive: datetime, zone: tzinfo) -> datetime:
    """The first UTC instant at which the user's wall clock reads ``naive`` or later.

    An ambiguous reading (the hour repeated when clocks go back) is its first
    occurrence; a reading in a gap (clocks jump forward) is the gap's end.
    """
    early = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    late = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    first = min(early, late)
    if _reads(first, zone) == naive:
        return first
    # A gap: the clock reads before ``naive`` at one instant, after it at the
    # other; the change lies between, found to the microsecond.
    low, high = first, max(early, late)
    while high - low > timedelta(microseconds=1):
        middle = low + (high - low) / 2
        if _reads(middle, zone) >= naive:
            high = middle
        else:
            low = middle
    return high


def _reads(instant: datetime, zone: tzinfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


@dataclass(frozen=True)
class Admission:
    """The throttle's word on one notification on one channel."""

    allowed: bool
    #: The cap or bucket that refused it: "cap marketing/day 5", "rate sms".
    reason: str | None = None
    #: When it would be allowed (the cap's period end, the bucket's refill).
    until: datetime | None = None


def scopes_of(priority: str, marketing: bool, channel: str) -> frozenset[str]:
    """The scopes one notification on one channel counts toward."""
    scopes = {channel}
    if priority == "promotional":
        scopes.add("promotional")
    if marketing or priority not in ("critical", "transactional"):
        scopes.add("marketing")
    return frozenset(scopes)


def window_key(cap: Cap, start: datetime) -> str:
    """A user's state key for one cap's current window."""
    return f"{cap.name}@{start.strftime('%Y-%m-%dT%H:%MZ')}"


@dataclass(frozen=True)
class Send:
    """One notification going out on one channel, at ``now``, to a user in ``zone``."""

    notification_id: str
    channel: str
    #: What it counts toward (`scopes_of`).
    scopes: frozenset[str]
    now: datetime
    zone: tzinfo

    def windows(self, caps: Sequence[Cap]) -> Iterator[tuple[Cap, str, str]]:
        """(cap, window key, member) of each cap this send counts toward."""
        for cap in caps:
            if cap.scope in self.scopes:
                start = period_start(self.now, cap.period, self.zone)
                member = (
                    f"{self.notification_id}:{self.channel}"
                    if cap.per_channel()
                    else self.notification_id
                )
                yield cap, window_key(cap, start), member


@dataclass(frozen=True)
class Limits:
    """The caps and the bucket a type's notifications are held to."""

    caps: Sequence[Cap]
    bucket: Bucket | None = None

    def count(self, scopes: frozenset[str]) -> bool:
        """True if a send counting toward ``scopes`` is held to these limits."""
        return self.bucket is not None or any(cap.scope in scopes for cap in self.caps)


def admit(state: ThrottleState, send: Send, limits: Limits) -> Admission:
    """Whether the send may go out now (no change made).

    A notification already counted in a window (a redelivery, or another of
    its channels for a per-notification cap) is admitted by that window.
    """
    for cap, key, member in send.windows(limits.caps):
        used = state.caps.get(key, [])
        if member not in used and len(used) >= cap.limit:
            until = period_end(send.now, cap.period, send.zone)
            return Admission(False, f"cap {cap}", until)
    bucket = limits.bucket
    current = state.buckets.get(send.channel)
    if bucket is not None and current is not None:
        if send.notification_id not in current.recent:
            tokens = refilled(current, bucket, send.now)
            if tokens < 1:
                wait = timedelta(seconds=(1 - tokens) / bucket.rate)
                return Admission(False, f"rate {send.channel}", send.now + wait)
    return Admission(True)


def refilled(current: BucketState, bucket: Bucket, now: datetime) -> float:
    """The tokens of a bucket at ``now``."""
    elapsed = max(0.0, (now - current.at).total_seconds())
    return min(float(bucket.burst), current.tokens + elapsed * bucket.rate)


#: How long a cap window is kept once it ended. A look taken again late (a
#: second copy of a request from a redone ingest, after the user's next
#: window opened) still finds the window it was judged in, and the same
#: answer, instead of an empty window that admits it.
KEEP_ENDED = timedelta(minutes=15)


def kept_windows(
    state: ThrottleState, caps: Sequence[Cap], now: datetime, zone: tzinfo
) -> dict[str, list[str]]:
    """The state's windows of ``caps`` that are current at ``now`` or ended
    less than `KEEP_ENDED` before; the others are dropped, so the state stays
    as small as the caps' limits allow."""
    oldest = {
        cap.name: period_start(now - KEEP_ENDED, cap.period, zone) for cap in caps
    }
    windows: dict[str, list[str]] = {}
    for key, ids in state.caps.items():
        name, _, start = key.partition("@")
        if name not in oldest:
            continue
        try:
            began = datetime.strptime(start, "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC)
        except ValueError:
            continue  # not a key `window_key` writes
        if began >= oldest[name]:
            windows[key] = list(ids)
    return windows


def counted(state: ThrottleState, send: Send, limits: Limits) -> ThrottleState:
    """The state once the send went out (idempotent)."""
    windows = kept_windows(state, limits.caps, send.now, send.zone)
    for _, key, member in send.windows(limits.caps):
        used = windows.setdefault(key, [])
        if member not in used:
            used.append(member)
    buckets = dict(state.buckets)
    bucket, current = limits.bucket, buckets.get(send.channel)
    if bucket is not None and (
        current is None or send.notification_id not in current.recent
    ):
        tokens = (
            float(bucket.burst)
            if current is None
            else refilled(current, bucket, send.now)
        )
        recent = [*(current.recent if current else []), send.notification_id]
        buckets[send.channel] = BucketState(
            tokens=tokens - 1, at=send.now, recent=recent[-bucket.burst :]
        )
    return ThrottleState(caps=windows, buckets=buckets)


def parse_caps(values: Iterable[str]) -> tuple[Cap, ...]:
    """Caps from their text form; ValueError naming the first bad one."""
    return tuple(Cap.parse(value) for value in values)
