"""send: per-channel delivery of jobs: ledger, render, provider call, outcome.

One agent per (channel, lane). It takes jobs in batches: for every target of
every job it asks the ledger whether a call may be made, renders the message,
records ``sending`` in the ledger and waits until those records are durable,
makes the batch's provider calls concurrently, then records each result:
``sent``; a retry scheduled in the retry table (never a sleep: the partition
keeps flowing, and the schedule survives a restart); or a permanent failure
(dead-letter entry with the job, token removal, suppression). A worker killed
mid-batch redelivers the batch; the ledger stops every target whose result was
recorded, and only calls whose result was not yet recorded are made again,
with the same provider idempotency id.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache

from faust.types import EventT, StreamT
from mode import Service

from agents.retry import retry_timer
from pipeline import metrics
from pipeline.app import app
from pipeline.cancel import cancel_event, said_cancelled, stopped
from pipeline.deadletter import Rejection, dead_letter, source_of
from pipeline.delivery import plan
from pipeline.delivery.backoff import LANE_POLICIES, next_delay
from pipeline.delivery.classify import Effect, classify
from pipeline.errors import InvalidMessage, PermanentError
from pipeline.ids import event_id
from pipeline.inbox import inbox_hub
from pipeline.partitioning import check_user_partition, partition_for
from pipeline.policy import TypeCatalogue
from pipeline.providers.base import (
    Content,
    FailureKind,
    Outgoing,
    ProviderFailure,
    Sent,
)
from pipeline.providers.registry import Providers, Route
from pipeline.status import batch as status_batch
from pipeline.status import current as status_now
from pipeline.status import record as record_event
from pipeline.streams import (
    BATCH_WINDOW,
    acting_for,
    flush_durably,
    overlapped_batches,
)
from pipeline.topology import (
    DLQ_ATTEMPT,
    DLQ_CODE,
    DLQ_PROVIDER,
    DLQ_REASON,
    DLQ_SOURCE,
    DLQ_STAGE,
    SUPPRESSIONS,
    user_key,
)
from pipeline.tracking import TrackingSigner
from schemas.decode import decode
from schemas.records import (
    CHANNELS,
    DeliveryJob,
    DeviceToken,
    Inbox,
    InboxItem,
    NotificationEvent,
    ScheduledJob,
    Suppression,
)
from tables.campaigns import campaign_cancelled
from tables.failed_jobs import failed_jobs, failed_key
from tables.inbox import MAX_INBOX, inbox
from tables.ledger import ledger
from tables.retries import retries
from tables.suppressions import ANY_TENANT, suppression_key, suppressions

log = logging.getLogger(__name__)

_rng = random.Random()  # noqa: S311 - jitter, not security

providers = Providers(app.settings)


@app.service
class ProviderSessions(Service):
    """Opens every provider's client session with the worker, closes it at stop."""

    async def on_start(self) -> None:
        """Build and start the providers."""
        await providers.start()

    async def on_stop(self) -> None:
        """Close their sessions."""
        await providers.stop()


@dataclass
class Call:
    """One provider call planned for one target of one job."""

    event: EventT
    job: DeliveryJob
    target: plan.Target
    outgoing: Outgoing
    content: Content
    result: Sent | ProviderFailure | None = None
    provider: str | None = None


@dataclass
class JobOutcome:
    """What the targets of one job came to, to write back per job."""

    event: EventT
    job: DeliveryJob
    retry: list[plan.Target] = field(default_factory=list)
    retry_delay: float = 0.0
    failed: list[tuple[plan.Target, ProviderFailure]] = field(default_factory=list)


def job_event(
    job: DeliveryJob,
    event_type: str,
    now: datetime,
    target: str,
    *,
    provider: str | None = None,
    reason: str | None = None,
    error: str | None = None,
    until: datetime | None = None,
    content: Content | None = None,
) -> NotificationEvent:
    """An event about one target of ``job``; the same attempt gives the same id."""
    return NotificationEvent(
        # An operator's retry (redrive) starts the attempts over: its events
        # get ids of their own.
        event_id=event_id(
            job.notification_id,
            event_type,
            "send",
            job.channel,
            target,
            job.attempt,
            *([job.redrive] if job.redrive else []),
        ),
        event_type=event_type,
        ts=now,
        stage=f"send.{job.channel}",
        notification_id=job.notification_id,
        tenant=job.tenant,
        user_id=job.user_id,
        campaign_id=job.campaign_id,
        type=job.type,
        priority=job.priority,
        lane=job.lane,
        channel=job.channel,
        provider=provider,
        template=content.template if content else None,
        variant=content.variant if content else None,
        locale=(content.locale if content else None) or job.locale,
        reason=reason,
        error=error,
        attempt=job.attempt,
        until=until,
    )


def render(job: DeliveryJob) -> Content:
    """The job's message, rendered for its channel, locale and the user's variant."""
    return providers.templates.render(
        job.type,
        job.channel,
        job.locale,
        user_key(job.tenant, job.user_id),
        job.data,
        user={"locale": job.locale, "timezone": job.timezone, "id": job.user_id},
        notification={
            "id": job.notification_id,
            "type": job.type,
            "created_at": job.created_at,
            "campaign_id": job.campaign_id,
        },
    )


def suppressed_reason(job: DeliveryJob, target: plan.Target) -> str | None:
    """Why the address or number is on the suppression list, if it is."""
    if job.channel not in ("email", "sms"):
        return None
    for tenant in (job.tenant, ANY_TENANT):
        entry = suppressions.get(suppression_key(tenant, job.channel, target.to))
        if entry is not None and entry.active:
            return entry.reason
    return None


async def prepare(
    event: EventT, job: DeliveryJob, now: datetime, planned: set[str]
) -> list[Call]:
    """The calls ``job`` still needs; every target it needs none for is settled.

    ``planned`` holds the attempt keys whose calls are in flight (this batch's
    and the previous one's): a job twice in them is called for once.
    """
    if job.not_before is not None:
        retry_timer.done(plan.schedule_key(job))
    current = status_now(job.notification_id)
    if current is not None and stopped(current):
        # Cancelled while queued or waiting for its retry: checked before
        # any ledger entry is written, with no await in between.
        if not said_cancelled(current, job.channel):
            record_event(cancel_event(current, now, job.channel, locale=job.locale))
        return []
    if campaign_cancelled(job.campaign_id):
        # The campaign was cancelled after this recipient was decided.
        record_event(job_event(job, "cancelled", now, "-", reason="campaign_cancelled"))
        return []
    found = plan.targets(job)
    if not found:
        record_event(job_event(job, "failed", now, "-", reason="no_target"))
        return []
    calls: list[Call] = []
    content: Content | None = None
    for target in found:
        key = plan.attempt_key(job, target)
        entry = None if key in planned else ledger.get(key)
        skip = "in_flight" if key in planned else plan.gate(entry, job)
        if skip is not None:
            log.debug("not calling again for %s: %s", key, skip)
            if (
                skip == "already_sent"
                and entry is not None
                and (entry.attempt, entry.redrive) == (job.attempt, job.redrive)
            ):
                # A worker stopped after the ledger said sent and before its
                # event was out: say it again (the same event id, so status
                # and analytics keep one).
                record_event(
                    job_event(
                        job,
                        "sent",
                        now,
                        target.id,
                        provider=entry.provider,
                        reason="already_sent",
                    )
                )
            continue
        if plan.expired(job, now):
            ledger[key] = plan.entry("failed", job, now, error="expired")
            record_event(job_event(job, "expired", now, target.id, reason="expiry_at"))
            continue
        reason = suppressed_reason(job, target)
        if reason is not None:
            ledger[key] = plan.entry("failed", job, now, error=f"suppressed:{reason}")
            record_event(
                job_event(
                    job, "suppressed", now, target.id, reason=f"suppressed:{reason}"
                )
            )
            continue
        unsubscribe = unsubscribe_url(job, key)
        if content is None:
            try:
                content = render(
                    job
                    if unsubscribe is None
                    else job.model_copy(
                        update={"data": {**job.data, "unsubscribe_url": unsubscribe}}
                    )
                )
            except PermanentError as exc:
                await fail_render(event, job, found, now, str(exc))
                return []
        if job.channel == "in_app":
            deliver_in_app(job, target, content, now)
            continue
        ledger[key] = plan.entry("sending", job, now)
        planned.add(key)
        sent_content = tracked(content, key)
        outgoing = plan.outgoing(job, target, sent_content, plan.collapse_id(job))
        if unsubscribe is not None:
            outgoing = replace(outgoing, list_unsubscribe=unsubscribe)
        calls.append(Call(event, job, target, outgoing, sent_content))
    return calls


def tracked(content: Content, key: str) -> Content:
    """Email HTML with signed click links and the open pixel of this attempt."""
    if not content.html:
        return content
    return replace(content, html=tracking_signer().instrument_html(content.html, key))


#: The catalogue of notification types (which are marketing, their category).
TYPES = TypeCatalogue.load(app.settings.types_file or None)


def unsubscribe_url(job: DeliveryJob, attempt_key: str) -> str | None:
    """A promotional or marketing email's signed one-click unsubscribe URL
    (RFC 8058; the large mailbox providers' bulk-sender rule): a POST to it
    opts the user out of the type's category. None for any other message."""
    if job.channel != "email":
        return None
    info = TYPES.lookup(job.type)
    if not info.marketing and job.priority != "promotional":
        return None
    scope = (job.tenant, job.user_id, info.category)
    return tracking_signer().unsubscribe_url(attempt_key, scope, UNSUBSCRIBE_TTL)


#: How long an unsubscribe link works (mailbox providers keep mail for years).
UNSUBSCRIBE_TTL = timedelta(days=365 * 2)


@lru_cache(maxsize=1)
def tracking_signer() -> TrackingSigner:
    """The signer of tracking links; the web endpoints verify with the same secret."""
    settings = app.settings
    return TrackingSigner(
        settings.tracking_secret.get_secret_value().encode(),
        settings.public_base,
        lambda: app.clock.now(),
    )


async def fail_render(
    event: EventT,
    job: DeliveryJob,
    found: list[plan.Target],
    now: datetime,
    reason: str,
) -> None:
    """A template that cannot render fails the job for good, with its reason."""
    failure = ProviderFailure(
        FailureKind.REJECTED, "render_error", reason, provider="templates"
    )
    for target in found:
        ledger[plan.attempt_key(job, target)] = plan.entry(
            "failed", job, now, error=f"render_error: {reason}"
        )
    await settle_failed(event, job, [(t, failure) for t in found], now)


def deliver_in_app(
    job: DeliveryJob, target: plan.Target, content: Content, now: datetime
) -> None:
    """Put the message in the user's inbox (the in-app channel's 'provider')."""
    ukey = target.to
    current = inbox.get(ukey) or Inbox()
    item = InboxItem(
        notification_id=job.notification_id,
        type=job.type,
        title=content.title,
        body=content.body,
        created_at=job.created_at,
        data=dict(content.data),
    )
    kept = [i for i in current.items if i.notification_id != job.notification_id]
    inbox[ukey] = Inbox(items=[*kept, item][-MAX_INBOX:])
    ledger[plan.attempt_key(job, target)] = plan.entry(
        "sent", job, now, provider="inbox"
    )
    inbox_hub.publish(ukey, item)
    record_event(
        job_event(job, "sent", now, target.id, provider="inbox", content=content)
    )
    metrics.sent(job, now)


async def dispatch(call: Call, route: Route) -> None:
    """Make one provider call through the first provider whose breaker allows it."""
    started = time.monotonic()
    outcome: Sent | ProviderFailure | None = None
    for provider in route.candidates(call.target.platform):
        if not provider.breaker.allow():
            continue
        call.provider = provider.sender.name
        started = time.monotonic()
        try:
            async with provider.slots:
                outcome = await provider.sender.send(call.outgoing)
        except ProviderFailure as failure:
            outcome = failure
        except Exception as exc:  # noqa: BLE001 - a client bug must not stop a batch
            log.exception("provider %s raised", provider.sender.name)
            outcome = ProviderFailure(
                FailureKind.UNAVAILABLE,
                type(exc).__name__,
                str(exc),
                provider=provider.sender.name,
            )
        provider.record(outcome, time.monotonic() - started)
        break
    if outcome is None:
        outcome = route.all_open(call.target.platform)
    call.result = outcome


async def record(calls: list[Call], lane: str, now: datetime) -> None:
    """Write every call's result back: ledger, events, retries, dead letters."""
    outcomes: dict[int, JobOutcome] = {}
    for call in calls:
        with acting_for(call.event):
            result = call.result
            job, target = call.job, call.target
            key = plan.attempt_key(job, target)
            if isinstance(result, Sent):
                ledger[key] = plan.entry(
                    "sent",
                    job,
                    now,
                    provider=result.provider,
                    provider_message_id=result.provider_message_id,
                )
                record_event(
                    job_event(
                        job,
                        "sent",
                        now,
                        target.id,
                        provider=result.provider,
                        reason=result.detail or None,
                        content=call.content,
                    )
                )
                metrics.sent(job, now)
                continue
            assert result is not None  # noqa: S101 - dispatch always sets one
            outcome = outcomes.setdefault(id(call.event), JobOutcome(call.event, job))
            action = classify(result)
            await apply_effect(action.effect, job, target, result, now)
            delay = None
            if action.retry:
                exhausted = (
                    action.max_retries is not None and job.attempt >= action.max_retries
                )
                floor = max(action.delay_floor or 0.0, result.retry_after or 0.0)
                delay = (
                    None
                    if exhausted
                    else next_delay(
                        LANE_POLICIES[lane], job.attempt, _rng, floor=floor or None
                    )
                )
            if delay is None:
                ledger[key] = plan.entry(
                    "failed", job, now, provider=result.provider, error=str(result)
                )
                outcome.failed.append((target, result))
                continue
            ledger[key] = plan.entry(
                "retrying",
                job,
                now,
                attempt=job.attempt + 1,
                provider=result.provider,
                error=str(result),
            )
            outcome.retry.append(target)
            outcome.retry_delay = max(outcome.retry_delay, delay)
            record_event(
                job_event(
                    job,
                    "retried",
                    now,
                    target.id,
                    provider=result.provider,
                    reason=result.kind.value,
                    error=str(result),
                    until=plan.with_delay(now, delay),
                    content=call.content,
                )
            )
    for outcome in outcomes.values():
        with acting_for(outcome.event):
            if outcome.retry:
                schedule_retry(outcome.job, outcome.retry, outcome.retry_delay, now)
            if outcome.failed:
                await settle_failed(outcome.event, outcome.job, outcome.failed, now)


def schedule_retry(
    job: DeliveryJob, kept: list[plan.Target], delay: float, now: datetime
) -> None:
    """Put the job's next attempt in the retry table, due after ``delay``."""
    retry = plan.retry_job(job, kept, plan.with_delay(now, delay))
    topic = app.topology.deliveries[(job.channel, job.lane)]
    retries[plan.schedule_key(retry)] = ScheduledJob(
        due_at=retry.not_before,
        topic=topic.get_topic_name(),
        key=user_key(job.tenant, job.user_id),
        job=retry,
    )


async def settle_failed(
    event: EventT,
    job: DeliveryJob,
    failed: list[tuple[plan.Target, ProviderFailure]],
    now: datetime,
) -> None:
    """Failed for good: a ``failed`` event per target, one dead letter per job."""
    for target, failure in failed:
        record_event(
            job_event(
                job,
                "failed",
                now,
                target.id,
                provider=failure.provider,
                reason=failure.kind.value,
                error=str(failure),
            )
        )
    first = failed[0][1]
    dead = plan.narrowed(job, [target for target, _ in failed])
    # Kept for an operator's retry (POST /v1/notifications/{id}/retry).
    failed_jobs[failed_key(job.notification_id, job.channel)] = dead
    headers = [
        (DLQ_REASON, str(first).encode()),
        (DLQ_CODE, first.kind.value.encode()),
        (DLQ_STAGE, f"send.{job.channel}".encode()),
        (DLQ_SOURCE, source_of(event).encode()),
        (DLQ_PROVIDER, first.provider.encode()),
        (DLQ_ATTEMPT, str(job.attempt).encode()),
    ]
    await app.topology.deadletter.send(
        key=user_key(job.tenant, job.user_id).encode(),
        value=dead.dumps(),
        headers=headers,
    )
    metrics.dead_lettered(f"send.{job.channel}", first.kind.value)
    record_event(
        job_event(
            job,
            "dead_lettered",
            now,
            ",".join(target.id for target, _ in failed),
            provider=first.provider,
            reason=first.kind.value,
            error=str(first),
        )
    )


async def apply_effect(
    effect: Effect | None,
    job: DeliveryJob,
    target: plan.Target,
    failure: ProviderFailure,
    now: datetime,
) -> None:
    """What a failure does beyond this job: token removal, suppression, escalation."""
    if effect is None:
        return
    if effect is Effect.REMOVE_TOKEN and target.platform is not None:
        ukey = user_key(job.tenant, job.user_id)
        device = DeviceToken(
            user_id=job.user_id,
            tenant=job.tenant,
            token=target.to,
            platform=target.platform,
            active=False,
            updated_at=now,
        )
        await app.topology.devices.send(
            key=f"{ukey}#{target.to}",
            value=device,
            partition=partition_for(ukey.encode(), app.settings.topic_partitions),
        )
    elif effect in (Effect.SUPPRESS_ADDRESS, Effect.INVALID_CONTACT):
        key = suppression_key(job.tenant, job.channel, target.to)
        await app.topology.state_inputs[SUPPRESSIONS.name].send(
            key=key.encode(),
            value=Suppression(
                tenant=job.tenant,
                channel=job.channel,
                address=target.to,
                reason=failure.kind.value,
                code=failure.code,
                created_at=now,
            ).dumps(),
        )
    elif effect is Effect.ESCALATE:
        log.error(
            "escalation: %s to %s for %s: %s",
            failure.provider,
            target.to,
            job.notification_id,
            failure,
        )


def parse_job(
    raw: bytes | None, channel: str, lane: str, partition: int
) -> DeliveryJob:
    """A delivery job from its topic's bytes, checked like any outside input.

    Another producer may write the delivery topics (the job has a published
    schema): a job that does not decode, belongs to another channel or lane,
    or sits off its user's partition (where its ledger entries live) is
    refused with the reason.
    """
    if raw is None:
        raise InvalidMessage("empty message (no value)", code="empty")
    job = decode(DeliveryJob, raw)
    if (job.channel, job.lane) != (channel, lane):
        raise InvalidMessage(
            f"a {job.channel}/{job.lane} job on the {channel}/{lane} topic",
            field="channel",
            code="misrouted",
        )
    check_user_partition(job.tenant, job.user_id, partition, app.settings)
    return job


#: Attempt keys whose call was planned and whose result is not recorded yet,
#: in this worker. The ledger says ``sending`` for each; a job for the same
#: target in a later batch, prepared while that call is in flight, must not
#: call again (a ``sending`` entry otherwise means a call that may have been
#: made by a worker since gone, to be made again with the same id).
in_flight: set[str] = set()


async def handle_batch(events: Sequence[EventT], channel: str, lane: str) -> None:
    """Deliver one batch of jobs (see the module docstring for the order)."""
    await finish_batch(await prepare_batch(events, channel, lane), channel, lane)


async def prepare_batch(
    events: Sequence[EventT], channel: str, lane: str
) -> list[Call]:
    """Plan one batch: the calls it needs, their ``sending`` entries durable."""
    now = app.clock.now()
    calls: list[Call] = []
    try:
        await _plan(events, channel, lane, now, calls)
        if calls:
            # The 'sending' entries must be durable before any call is made:
            # a restart then knows which calls may have reached a provider.
            await flush_durably(app)
    except BaseException:
        forget(calls)
        raise
    return calls


async def _plan(
    events: Sequence[EventT], channel: str, lane: str, now: datetime, calls: list[Call]
) -> None:
    with status_batch():
        for event in events:
            source = source_of(event)
            with acting_for(event), app.commit_guard.watching(source):
                message = event.message
                try:
                    job = parse_job(message.value, channel, lane, message.partition)
                except InvalidMessage as exc:
                    rejection = Rejection(
                        exc.reason, exc.code, source, f"send.{channel}"
                    )
                    await dead_letter(app, event, rejection)
                    continue
                calls.extend(await prepare(event, job, now, in_flight))


async def finish_batch(calls: list[Call], channel: str, lane: str) -> None:
    """Make a planned batch's calls and record their results."""
    if not calls:
        return
    try:
        with status_batch():
            await providers.opened()
            route = providers.route(channel)
            await asyncio.gather(*(dispatch(call, route) for call in calls))
            await record(calls, lane, app.clock.now())
    finally:
        forget(calls)


def forget(calls: list[Call]) -> None:
    """The calls' results are recorded (or never will be here): not in flight."""
    in_flight.difference_update(plan.attempt_key(c.job, c.target) for c in calls)


async def finished(
    calls: list[Call], channel: str, lane: str, source: str, done: asyncio.Future[None]
) -> None:
    """`finish_batch`, then release the batch's acknowledgement."""
    try:
        with app.commit_guard.watching(source):
            await finish_batch(calls, channel, lane)
    except BaseException as exc:
        done.set_exception(exc)
        raise
    done.set_result(None)


def _make_agent(channel: str, lane: str) -> None:
    topic = app.topology.delivery_inputs[(channel, lane)]

    async def send(stream: StreamT[bytes]) -> None:
        # Batches overlap: while one batch's calls are in flight the next is
        # planned and its ledger entries made durable. Its calls wait for the
        # previous batch's results (one batch of calls in flight at a time),
        # and each batch is acknowledged once its results are recorded.
        batch = app.settings.send_batch
        calling: asyncio.Future[None] | None = None
        try:
            async for events, done in overlapped_batches(
                stream, batch, BATCH_WINDOW[lane]
            ):
                source = source_of(events[-1])
                with app.commit_guard.watching(source):
                    calls = await prepare_batch(events, channel, lane)
                    if calling is not None:
                        await calling
                calling = asyncio.ensure_future(
                    finished(calls, channel, lane, source, done)
                )
        finally:
            if calling is not None and not calling.done():
                await calling

    send.__doc__ = (
        f"Send {lane}-lane {channel} jobs: ledger, render, provider, outcome."
    )
    app.agent(topic, name=f"send.{channel}.{lane}")(send)


for _lane in app.settings.worker_lanes:
    for _channel in CHANNELS:
        _make_agent(_channel, _lane)
