"""What a delivery job asks for, and what the ledger allows: pure functions.

A job becomes one provider call per target (each active device for push, the
address for email, the number for SMS, the inbox for in-app). Each target has
an attempt key, the ledger's key, and a provider idempotency id derived from
it. Whether a target may be called again is the ledger's decision (``gate``);
what a result writes back is ``entry_after``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from pipeline.due import due_key
from pipeline.providers.base import Content, Outgoing, message_id_for
from schemas.records import DeliveryJob, DeviceToken, LedgerEntry


@dataclass(frozen=True, slots=True)
class Target:
    """One place a job's message goes: ``to`` is what the provider is given."""

    id: str  # stable and short: the attempt key's last part
    to: str
    platform: str | None = None  # apns | fcm, for push


def token_id(token: str) -> str:
    """A short stable id for a push token (tokens run to hundreds of bytes)."""
    return "d" + hashlib.blake2b(token.encode(), digest_size=8).hexdigest()


def targets(job: DeliveryJob) -> list[Target]:
    """Every target of the job; empty when the job names none for its channel."""
    if job.channel == "push":
        return [
            Target(token_id(device.token), device.token, device.platform)
            for device in job.devices
            if device.active
        ]
    if job.channel == "email":
        return [Target(job.email.lower(), job.email)] if job.email else []
    if job.channel == "sms":
        return [Target(job.phone, job.phone)] if job.phone else []
    if job.channel == "in_app":
        return [Target("inbox", f"{job.tenant}/{job.user_id}")]
    return []


def attempt_key(job: DeliveryJob, target: Target) -> str:
    """The ledger key of one target of one notification's channel."""
    return f"{job.notification_id}:{job.channel}:{target.id}"


def gate(entry: LedgerEntry | None, job: DeliveryJob) -> str | None:
    """Why this job must not call the provider for the target, or None to go on.

    - ``already_sent``: an earlier attempt succeeded (redelivery, replay).
    - ``already_failed``: it failed for good and no operator re-drove it.
    - ``stale``: a later attempt was already decided (an old retry copy).
    A ``sending`` entry of the same attempt means the worker stopped between
    the call and its result: the call is made again with the same provider
    idempotency id (at-least-once; the note in the README says why).
    """
    if entry is None:
        return None
    if entry.state == "sent":
        return "already_sent"
    if job.redrive > entry.redrive:
        return None
    if entry.state == "failed":
        return "already_failed"
    if entry.attempt > job.attempt:
        return "stale"
    return None


def outgoing(
    job: DeliveryJob, target: Target, content: Content, collapse_id: str | None
) -> Outgoing:
    """The provider call for one target."""
    key = attempt_key(job, target)
    return Outgoing(
        attempt_key=key,
        message_id=message_id_for(key),
        notification_id=job.notification_id,
        tenant=job.tenant,
        user_id=job.user_id,
        type=job.type,
        priority=job.priority,
        channel=job.channel,
        to=target.to,
        content=content,
        platform=target.platform,
        collapse_id=collapse_id,
        expires_at=job.expiry_at,
        attempt=job.attempt,
        campaign_id=job.campaign_id,
    )


def entry(
    state: str,
    job: DeliveryJob,
    now: datetime,
    *,
    attempt: int | None = None,
    provider: str | None = None,
    provider_message_id: str | None = None,
    error: str | None = None,
) -> LedgerEntry:
    """A ledger entry for ``job`` (its attempt unless another is given)."""
    return LedgerEntry(
        state=state,
        attempt=job.attempt if attempt is None else attempt,
        redrive=job.redrive,
        updated_at=now,
        provider=provider,
        provider_message_id=provider_message_id,
        error=error,
    )


def narrowed(job: DeliveryJob, kept: list[Target]) -> DeliveryJob:
    """The job for only some of its targets (push devices); others as they are."""
    if job.channel != "push":
        return job
    ids = {target.id for target in kept}
    devices: list[DeviceToken] = [
        device for device in job.devices if token_id(device.token) in ids
    ]
    return job.model_copy(update={"devices": devices})


def retry_job(job: DeliveryJob, kept: list[Target], due: datetime) -> DeliveryJob:
    """The next attempt of ``job`` for the targets that will be tried again."""
    base = narrowed(job, kept)
    return base.model_copy(update={"attempt": job.attempt + 1, "not_before": due})


def schedule_key(job: DeliveryJob) -> str:
    """The retry schedule's key of a retried job: due time first."""
    assert job.not_before is not None  # noqa: S101 - only retried jobs have one
    due_ms = int(job.not_before.timestamp() * 1000)
    return due_key(due_ms, f"{job.notification_id}:{job.channel}:{job.attempt}")


def expired(job: DeliveryJob, now: datetime) -> bool:
    """True when the job's expiry has passed: it is not sent any more."""
    return job.expiry_at is not None and now >= job.expiry_at


def with_delay(now: datetime, seconds: float) -> datetime:
    """``now`` plus a delay in seconds."""
    return now + timedelta(seconds=seconds)


def collapse_id(job: DeliveryJob) -> str | None:
    """What a newer message of the same kind replaces on the device."""
    return job.digest_key or None
