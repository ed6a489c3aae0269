"""fanout: idempotency, enrichment and preferences, then one job per channel.

The three stages are pure functions composed in one agent rather than three
agents joined by topics: they share the key (tenant/user) and the lane, so a
Kafka hop between them would buy no isolation or repartitioning and would cost
~0.3 ms of a core per event. Each stage still reports its own decisions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from faust.types import EventT, StreamT

from agents.held import held_timer
from pipeline.app import app
from pipeline.cancel import cancel_event, said_cancelled, stopped
from pipeline.deadletter import source_of
from pipeline.digest import (
    DigestPolicy,
    base_type,
    collect,
    digest_data,
    digest_idempotency_key,
    digest_type,
    state_key,
)
from pipeline.due import due_key, due_ms, ms_at, time_at
from pipeline.ids import event_id, notification_id
from pipeline.policy import (
    TypeCatalogue,
    Verdict,
    decide,
    resolve_channels,
    throttle_settings,
    unreachable_reason,
    user_zone,
)
from pipeline.status import batch as status_batch
from pipeline.status import current as status_now
from pipeline.status import record
from pipeline.streams import BATCH_WINDOW, acting_for, batches, send_effect, state_first
from pipeline.throttle import Send, admit, counted, scopes_of
from pipeline.topology import user_key
from schemas.records import (
    AcceptedRequest,
    DeliveryJob,
    DeviceSet,
    DigestState,
    NotificationEvent,
    NotificationRequest,
    NotificationStatus,
    Preferences,
    TenantLimits,
    ThrottleState,
    UserProfile,
)
from tables.campaigns import campaign_cancelled
from tables.devices import devices
from tables.digests import digests
from tables.held import held
from tables.idempotency import SeenRequest, idempotency, live_entry, seen_key
from tables.preferences import preferences
from tables.profiles import profiles
from tables.tenant_limits import tenant_limits
from tables.throttle import throttles


@dataclass(frozen=True)
class UserState:
    """What the tables know about the recipient."""

    profile: UserProfile | None = None
    preferences: Preferences | None = None
    devices: DeviceSet | None = None
    seen: SeenRequest | None = None  # the live first use of the request's key
    throttle: ThrottleState | None = None  # what the user used of the caps
    tenant_limits: TenantLimits | None = None  # the tenant's throttle settings
    digest: DigestState | None = None  # the user's digest for the request's key

    def knows_user(self) -> bool:
        """True if any table holds the user's profile, preferences or devices."""
        return bool(self.profile or self.preferences or self.devices)


@dataclass
class Fanout:
    """Everything one accepted request turns into."""

    events: list[NotificationEvent] = field(default_factory=list)
    jobs: list[DeliveryJob] = field(default_factory=list)
    seen: SeenRequest | None = None  # the key's first use, to store (new only)
    held: AcceptedRequest | None = None  # channels held while the user is unknown
    #: Channels deferred (schedule_at, quiet hours), held until they are due.
    scheduled: AcceptedRequest | None = None
    #: The user's throttle state after this request counted, to store.
    throttle: ThrottleState | None = None
    #: The user's digest after this request joined or opened it, to store.
    digest: DigestState | None = None
    #: A digest window just opened: the schedule entry that closes it.
    digest_release: AcceptedRequest | None = None


def event(
    accepted: AcceptedRequest,
    request: NotificationRequest,
    event_type: str,
    stage: str,
    now: datetime,
    *,
    channel: str | None = None,
    reason: str | None = None,
    error: str | None = None,
    until: datetime | None = None,
    discriminator: str = "",
) -> NotificationEvent:
    """An event about ``accepted``; its id is stable across redeliveries."""
    return NotificationEvent(
        event_id=event_id(
            accepted.notification_id, event_type, stage, channel, discriminator
        ),
        event_type=event_type,
        ts=now,
        stage=stage,
        notification_id=accepted.notification_id,
        tenant=request.tenant,
        user_id=request.recipient.user_id,
        campaign_id=request.campaign_id,
        type=request.type,
        priority=request.priority,
        lane=accepted.lane,
        channel=channel,
        locale=request.locale,
        reason=reason,
        error=error,
        until=until,
    )


def check_idempotency(
    accepted: AcceptedRequest,
    request: NotificationRequest,
    previous: SeenRequest | None,
    now: datetime,
) -> tuple[NotificationEvent | None, SeenRequest | None]:
    """A ``deduplicated`` event if the key's live first use was another request;
    and the entry to store if this is the first use."""
    key = request.idempotency_key
    if previous is not None and previous.source != accepted.source:
        conflict = previous.body_hash != accepted.body_hash
        duplicate = event(
            accepted,
            request,
            "deduplicated",
            "idempotency",
            now,
            reason="idempotency_conflict" if conflict else "idempotency_key",
            error=(
                f"idempotency key {key!r} was used for a different request"
                if conflict
                else None
            ),
            discriminator=accepted.source,
        )
        return duplicate, None
    # A first use, or a redelivery of the very request that claimed the key
    # (same source): that one is processed again in full, its outputs carry
    # the same ids, and downstream dedup by (notification, channel) holds.
    if previous is not None:
        return None, None
    first = SeenRequest(
        notification_id=accepted.notification_id,
        body_hash=accepted.body_hash,
        first_seen=now,
        source=accepted.source,
    )
    return None, first


def delivery_job(
    accepted: AcceptedRequest,
    request: NotificationRequest,
    channel: str,
    state: UserState,
    now: datetime,
) -> DeliveryJob:
    """The job for one channel, carrying the contacts the sender needs."""
    profile, prefs = state.profile, state.preferences
    locale = request.locale or (prefs and prefs.locale) or (profile and profile.locale)
    return DeliveryJob(
        notification_id=accepted.notification_id,
        tenant=request.tenant,
        user_id=request.recipient.user_id,
        type=request.type,
        priority=request.priority,
        lane=accepted.lane,
        channel=channel,
        data=dict(request.data),
        created_at=now,
        ready_at=ready_at(accepted),
        locale=locale or None,
        timezone=(prefs and prefs.timezone) or (profile and profile.timezone) or None,
        campaign_id=request.campaign_id,
        digest_key=request.digest_key,
        expiry_at=request.expiry_at,
        email=profile.email if profile and channel == "email" else None,
        phone=profile.phone if profile and channel == "sms" else None,
        devices=state.devices.active() if state.devices and channel == "push" else [],
    )


def ready_at(accepted: AcceptedRequest) -> datetime:
    """When ``accepted`` could first be sent: accepted, or released when due."""
    if accepted.held_key is None:
        return accepted.accepted_at
    return max(accepted.accepted_at, time_at(due_ms(accepted.held_key)))


def fan_out(
    accepted: AcceptedRequest,
    state: UserState,
    catalogue: TypeCatalogue,
    now: datetime,
    request: NotificationRequest | None = None,
    wait: timedelta = timedelta(0),
    cancelled: NotificationStatus | None = None,
    campaign_cancelled: bool = False,
    prior: NotificationStatus | None = None,
) -> Fanout:
    """Decide one accepted request: dedup, reachability, preferences, per channel.

    ``request`` is ``accepted.notification()`` when the caller has it already.
    A user known to no table has the channels that need its state held, for up
    to ``wait`` in all (``hold_until``). ``cancelled`` is the status of a
    notification cancelled before this look: every channel ends ``cancelled``;
    so does every channel of a request whose campaign was cancelled.
    ``prior`` is the notification's status before this look: a channel it
    shows decided keeps that decision (`redo`).
    """
    request = request or accepted.notification()
    duplicate, seen = check_idempotency(accepted, request, state.seen, now)
    result = Fanout(seen=seen)
    if duplicate is not None:
        result.events.append(duplicate)
        return result
    result.events.append(event(accepted, request, "accepted", "ingest", now))
    if cancelled is not None:
        for channel in resolve_channels(request, catalogue):
            if not said_cancelled(cancelled, channel):
                result.events.append(
                    cancel_event(cancelled, now, channel, locale=request.locale)
                )
        return result
    if campaign_cancelled:
        for channel in resolve_channels(request, catalogue):
            result.events.append(
                event(
                    accepted,
                    request,
                    "cancelled",
                    "campaign",
                    now,
                    channel=channel,
                    reason="campaign_cancelled",
                )
            )
        return result
    channels = resolve_channels(request, catalogue)
    done = [c for c in channels if decided(prior, c)]
    if done:
        for channel in done:
            redo(accepted, request, channel, prior, state, now, result)
        channels = [c for c in channels if c not in done]
        if not channels:
            return result
    elif collected(accepted, request, state, catalogue, now, result):
        return result
    # For a user no table knows: the channels that need its state (not in-app).
    waiting = (
        []
        if state.knows_user()
        else [c for c in channels if unreachable_reason(c, None, []) is not None]
    )
    look = looked_at(accepted, state.seen, now)
    until = hold_until(accepted, request, waiting, look, wait)
    if until is not None:
        result.held = held_request(accepted, waiting, look, until)
        for channel in waiting:
            result.events.append(
                event(
                    accepted,
                    request,
                    "deferred",
                    "enrich",
                    now,
                    channel=channel,
                    reason="unknown_user",
                    until=until,
                    discriminator=until.isoformat(),
                )
            )
        channels = [c for c in channels if c not in waiting]
    deferred: dict[str, Verdict] = {}
    devices = state.devices.active() if state.devices else []
    for channel in channels:
        unreachable = unreachable_reason(channel, state.profile, devices)
        verdict = decide(
            request, channel, state.preferences, state.profile, catalogue, now
        )
        stage = "preferences"
        # Expiry ends every channel alike; otherwise a channel the user cannot
        # be reached on is suppressed whatever the preferences would say.
        if unreachable is not None and verdict.outcome != "expire":
            verdict, stage = Verdict(outcome="suppress", reason=unreachable), "enrich"
        if verdict.outcome == "deliver" and request.priority != "critical":
            refused = throttled(
                accepted, request, channel, state, result, catalogue, look
            )
            if refused is not None and refused.outcome == "defer":
                verdict, stage = refused, "throttle"
            elif refused is not None:
                result.events.append(
                    event(
                        accepted,
                        request,
                        "throttled",
                        "throttle",
                        now,
                        channel=channel,
                        reason=refused.reason,
                    )
                )
                continue
        if verdict.outcome == "deliver":
            result.jobs.append(delivery_job(accepted, request, channel, state, now))
            result.events.append(
                event(
                    accepted,
                    request,
                    "queued",
                    stage,
                    now,
                    channel=channel,
                    reason=verdict.reason,
                )
            )
            continue
        if verdict.outcome == "defer":
            deferred[channel] = verdict
        kind = {"defer": "deferred", "expire": "expired"}.get(
            verdict.outcome, "suppressed"
        )
        result.events.append(
            event(
                accepted,
                request,
                kind,
                stage,
                now,
                channel=channel,
                reason=verdict.reason,
                until=verdict.until,
            )
        )
    if deferred:
        result.scheduled = scheduled_request(accepted, deferred)
    return result


#: What fanout says of a channel; a look taken again says it again.
DECISIONS = frozenset({"queued", "suppressed", "throttled", "expired", "digested"})


def decided(prior: NotificationStatus | None, channel: str) -> bool:
    """True if an earlier look decided ``channel`` (anything but held)."""
    if prior is None:
        return False
    return prior.channels.get(channel, "deferred") != "deferred"  # type: ignore[call-overload]


def redo(
    accepted: AcceptedRequest,
    request: NotificationRequest,
    channel: str,
    prior: NotificationStatus | None,
    state: UserState,
    now: datetime,
    result: Fanout,
) -> None:
    """Say again what an earlier look decided for ``channel``, instead of
    deciding it anew.

    A look is taken again when a worker dies after the batch's table writes
    and before its offsets were committed, or when a rebalance hands the
    batch to another worker; by then a user's profile or devices may have
    arrived, a cap window may have filled, a day may have ended, and a new
    decision could contradict the first (``suppressed`` then ``sent``). The
    status, written before any effect of the first look left
    (`pipeline.streams.state_first`), holds that decision: its event goes
    out again (same id, the same content), and a job still only queued is
    queued again (the send ledger keeps it to one send per target).
    """
    assert prior is not None  # noqa: S101 - decided() said so
    entries = [
        e for e in prior.trail if e.channel == channel and e.event_type in DECISIONS
    ]
    if entries:
        last = entries[-1]
        said = event(
            accepted,
            request,
            last.event_type,
            last.stage,
            last.ts,
            channel=channel,
            reason=last.reason,
            error=last.error,
            until=last.until,
        ).model_copy(update={"event_id": last.event_id})
        result.events.append(said)
    if prior.channels.get(channel) == "queued":  # type: ignore[call-overload]
        result.jobs.append(delivery_job(accepted, request, channel, state, now))


def collected(
    accepted: AcceptedRequest,
    request: NotificationRequest,
    state: UserState,
    catalogue: TypeCatalogue,
    now: datetime,
    result: Fanout,
) -> bool:
    """True if the request joined a digest (its channels say ``digested``);
    False if it goes on alone (not digestible, critical, or a look-back
    window's first). A window it opens is scheduled to close in ``result``."""
    policy = catalogue.lookup(request.type).digest
    if policy is None or request.priority == "critical" or accepted.digest:
        return False
    opener = {
        "tenant": request.tenant,
        "user_id": request.recipient.user_id,
        "key": request.digest_key or request.type,
        "type": request.type,
        "priority": request.priority,
        "lane": accepted.lane,
        "channels": request.channels,
        "locale": request.locale,
    }
    zone = user_zone(state.preferences, state.profile)
    outcome = collect(
        state.digest,
        accepted.notification_id,
        dict(request.data),
        policy,
        now,
        zone,
        opener,
    )
    window = outcome.state or state.digest
    if outcome.state is not None:
        result.digest = outcome.state
    if outcome.opened and outcome.state is not None:
        result.digest_release = digest_release(outcome.state)
    if outcome.alone or window is None:
        return False
    carrier = digest_release(window).notification_id
    for channel in resolve_channels(request, catalogue):
        result.events.append(
            event(
                accepted,
                request,
                "digested",
                "digest",
                now,
                channel=channel,
                reason=f"digest {carrier}",
            )
        )
    return True


def digest_release(window: DigestState) -> AcceptedRequest:
    """The schedule entry that sends ``window``'s digest when it closes."""
    key = digest_idempotency_key(window)
    nid = notification_id(window.tenant, key, window.user_id, window.lane)
    request = {
        "idempotency_key": key,
        "recipient": {"user_id": window.user_id},
        "type": digest_type(window.type),
        "priority": window.priority,
        "tenant": window.tenant,
        "channels": window.channels,
        "locale": window.locale,
    }
    return AcceptedRequest(
        notification_id=nid,
        lane=window.lane,
        request=request,
        body_hash=key,
        accepted_at=window.opened_at,
        source=key,
        held_key=due_key(ms_at(window.closes_at), nid + DIGEST_RELEASE),
        digest=state_key(window.tenant, window.user_id, window.key),
    )


def released_digest(
    accepted: AcceptedRequest, window: DigestState | None, items: int
) -> AcceptedRequest | None:
    """A closing window's digest as a request with its data; None if there is
    nothing to send (no member came, or the entry is stale)."""
    if window is None or not window.members:
        return None
    if digest_idempotency_key(window) != accepted.request.get("idempotency_key"):
        return None
    return accepted.model_copy(
        update={"request": {**accepted.request, "data": digest_data(window, items)}}
    )


def may_count(
    request: NotificationRequest,
    catalogue: TypeCatalogue,
    tenant: TenantLimits | None,
) -> bool:
    """True if the throttle may count a send of ``request`` on any channel."""
    if request.priority == "critical":
        return False
    info = catalogue.lookup(request.type)
    limits, _ = throttle_settings(info, tenant)
    return any(
        limits.count(scopes_of(request.priority, info.marketing, channel))
        for channel in resolve_channels(request, catalogue)
    )


def throttled(
    accepted: AcceptedRequest,
    request: NotificationRequest,
    channel: str,
    state: UserState,
    result: Fanout,
    catalogue: TypeCatalogue,
    now: datetime,
) -> Verdict | None:
    """None if the caps and the bucket let the channel go (and count it in
    ``result.throttle``); else the refusal: a suppression naming the cap, or
    a deferral to when it frees, as the type's ``over_cap`` says."""
    info = catalogue.lookup(request.type)
    limits, over_cap = throttle_settings(info, state.tenant_limits)
    scopes = scopes_of(request.priority, info.marketing, channel)
    if not limits.count(scopes):
        return None  # nothing counts this send: no state to read or write
    current = result.throttle or state.throttle or ThrottleState()
    send = Send(
        accepted.notification_id,
        channel,
        scopes,
        now,
        user_zone(state.preferences, state.profile),
    )
    admission = admit(current, send, limits)
    if not admission.allowed:
        if over_cap == "defer" and admission.until is not None:
            return Verdict("defer", admission.reason, admission.until)
        return Verdict("suppress", admission.reason)
    result.throttle = counted(current, send, limits)
    return None


#: The first look again at a request for an unknown user. Each later look
#: waits as long as the request has waited so far: 0.5 s, 1 s, 2 s, 4 s...
FIRST_LOOK = timedelta(milliseconds=500)


def looked_at(
    accepted: AcceptedRequest, seen: SeenRequest | None, now: datetime
) -> datetime:
    """When this look at the request is due, the same however often it is redelivered.

    A look released by the timer is due at its held entry's time; a first
    look, when the request first claimed its idempotency key. Caps and
    buckets are read at this time, so a Kafka redelivery of either (a crash
    before the commit, perhaps in a later minute; a second copy of the
    request from a redone ingest, with an ``accepted_at`` of its own) takes
    the decisions the first look took: the same held key, due at the same
    time, the same cap windows. `pipeline.streams.state_first` makes sure a
    redo finds the first look's idempotency entry. Expiry is read at the
    real time: nothing goes out past it, redo or not.
    """
    if accepted.held_key is not None:
        return time_at(due_ms(accepted.held_key))
    if seen is not None and seen.source == accepted.source:
        return seen.first_seen
    return now


def hold_until(
    accepted: AcceptedRequest,
    request: NotificationRequest,
    waiting: Sequence[str],
    look: datetime,
    wait: timedelta,
) -> datetime | None:
    """When to look again at a request whose user no table knows, else None;
    ``look`` is when this look was due (``looked_at``).

    Such a user was most often created a moment ago: its profile and devices
    are on other topics, in no order with the request, and may not be folded
    yet. Suppressing ``no_email`` then would lose a welcome email. A request
    waits at most ``wait`` in all, never past its expiry, and only if some
    channel needs the user's state (``waiting``: the in-app inbox needs none).
    The time is a whole millisecond, as the held key's is, and always later
    than ``look``.
    """
    if not waiting:
        return None
    since = accepted.held_since or look
    if look - since >= wait:
        return None
    # Rounded up to the key's millisecond: rounded down, the last look would
    # come a fraction of a millisecond before the wait's end and hold the
    # request again under the key it was released from, due at once, forever.
    until = time_at(ms_at(min(look + max(FIRST_LOOK, look - since), since + wait)))
    if request.expiry_at is not None and request.expiry_at <= until:
        return None
    return until


def held_request(
    accepted: AcceptedRequest, channels: list[str], look: datetime, until: datetime
) -> AcceptedRequest:
    """The held table's entry for ``channels`` of ``accepted``, due at ``until``;
    held since this look if it is the first."""
    key = due_key(ms_at(until), accepted.notification_id)
    return accepted.model_copy(
        update={
            "request": {**accepted.request, "channels": channels},
            "held_since": accepted.held_since or look,
            "held_key": key,
        }
    )


#: Ends the key of a deferral's entry, so it never takes the key of an
#: unknown-user hold of the same notification due at the same millisecond.
SCHEDULED = "/scheduled"
#: Ends the key of the entry that closes a digest window.
DIGEST_RELEASE = "/digest"


def scheduled_request(
    accepted: AcceptedRequest, verdicts: dict[str, Verdict]
) -> AcceptedRequest:
    """The held table's entry that brings the deferred channels back when due.

    Quiet hours and ``schedule_at`` are the user's and the request's, so every
    deferred channel has the same ``until``; the latest is kept to be safe.
    The timer releases it no earlier than that (``pipeline.due``), and fanout
    decides it again then, as a new request: preferences may have changed,
    the expiry may have passed.
    """
    until = max(v.until for v in verdicts.values() if v.until is not None)
    key = due_key(ms_at(until), accepted.notification_id + SCHEDULED)
    return accepted.model_copy(
        update={
            "request": {**accepted.request, "channels": sorted(verdicts)},
            "held_key": key,
        }
    )


CATALOGUE = TypeCatalogue.load(app.settings.types_file or None)


async def handle(
    accepted: AcceptedRequest,
    lane: str,
    window: timedelta,
    request: NotificationRequest | None = None,
) -> None:
    """Decide one accepted request against the tables and write every outcome.

    ``request`` is ``accepted.notification()`` when the caller has it already:
    building it is a record per request on the hot path.
    """
    topology = app.topology
    request = request or accepted.notification()
    key = user_key(request.tenant, request.recipient.user_id)
    if accepted.digest is not None:
        closing = live_members(digests.get(accepted.digest))
        policy = CATALOGUE.lookup(base_type(request.type)).digest or DigestPolicy()
        built = released_digest(accepted, closing, policy.items)
        if closing is not None and not closing.released:
            digests[accepted.digest] = closing.model_copy(update={"released": True})
        if built is None:
            if accepted.held_key is not None:
                held_timer.done(accepted.held_key)
            return
        accepted, request = built, built.notification()
    info = CATALOGUE.lookup(request.type)
    dkey = (
        state_key(
            request.tenant,
            request.recipient.user_id,
            request.digest_key or request.type,
        )
        if info.digest is not None
        else None
    )
    ikey = seen_key(request.tenant, request.recipient.user_id, request.idempotency_key)
    now = app.clock.now()
    limited = tenant_limits.get(request.tenant)
    state = UserState(
        profile=profiles.get(key),
        preferences=preferences.get(key),
        devices=devices.get(key),
        seen=live_entry(idempotency.get(ikey), now, window),
        # Read only if a cap or a bucket may count one of its sends: most
        # requests (critical, transactional push and email) never need it.
        throttle=throttles.get(key) if may_count(request, CATALOGUE, limited) else None,
        tenant_limits=limited,
        digest=digests.get(dkey) if dkey is not None else None,
    )
    wait = timedelta(seconds=app.settings.unknown_user_wait)
    current = status_now(accepted.notification_id)
    cancelled = current if stopped(current) else None
    result = fan_out(
        accepted,
        state,
        CATALOGUE,
        now,
        request,
        wait,
        cancelled,
        campaign_cancelled(request.campaign_id),
        prior=current,
    )
    # Outputs go through Faust's send buffer, as table updates do: a commit
    # waits until the buffer is flushed, and a failed send trips the commit
    # guard, so nothing is lost and no future is awaited per record.
    if result.seen is not None:
        idempotency[ikey] = result.seen.dumps()
    if result.throttle is not None and result.throttle != state.throttle:
        throttles[key] = result.throttle
    if result.digest is not None and dkey is not None:
        digests[dkey] = result.digest
    for job in result.jobs:
        send_effect(topology.deliveries[(job.channel, lane)], key, job)
    if accepted.held_key is not None:  # released by the timer: this look ends it
        held_timer.done(accepted.held_key)
    for waiting in (result.held, result.scheduled, result.digest_release):
        if waiting is not None:
            held[waiting.held_key] = waiting
    for outcome in result.events:
        record(outcome)


def live_members(window: DigestState | None) -> DigestState | None:
    """``window`` without the members cancelled since they joined it."""
    if window is None:
        return None
    members = [m for m in window.members if not stopped(status_now(m.notification_id))]
    if len(members) == len(window.members):
        return window
    return window.model_copy(update={"members": members})


#: Requests taken at once.
BATCH = 500


async def handle_batch(events: Sequence[EventT], lane: str, window: timedelta) -> None:
    """Decide a batch; each notification's status is written once for it, and
    its jobs and events leave once its table writes are durable."""
    async with state_first(app, events):
        with status_batch():
            for stream_event in events:
                accepted: AcceptedRequest = stream_event.value  # type: ignore[assignment]
                with acting_for(stream_event):
                    await handle(accepted, lane, window)


def _make_agent(lane: str) -> None:
    topology = app.topology

    async def fanout(stream: StreamT[AcceptedRequest]) -> None:
        window = timedelta(hours=app.settings.idempotency_window)
        async for events in batches(stream, BATCH, BATCH_WINDOW[lane]):
            with app.commit_guard.watching(source_of(events[-1])):
                await handle_batch(events, lane, window)

    fanout.__doc__ = (
        f"Dedup, enrich and apply preferences to {lane}-lane requests; one job "
        "per channel."
    )
    app.agent(topology.accepted[lane], name=f"fanout.{lane}")(fanout)


for _lane in app.settings.worker_lanes:
    _make_agent(_lane)
