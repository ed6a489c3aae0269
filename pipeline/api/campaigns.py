"""The bulk API: campaigns and the segments they target.

Campaigns and segments are records written onto every partition of their
compacted topics, so every worker holds a copy of each; a campaign's state
and counts are the sum of every partition's checkpoint and outcome counts,
which the workers ask each other for. An uploaded list is not copied: each
partition gets only its own users.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from faust.web import Request, Response
from faust.web.exceptions import ServiceUnavailable
from yarl import URL

from agents.campaigns import campaigns_on, on_partition, owned
from agents.ingest import body_hash
from pipeline.api import auth
from pipeline.api.accepted import Recent, freshest
from pipeline.api.contract import Link, operation, route
from pipeline.api.errors import ApiError, forbidden, not_found
from pipeline.api.views import FORWARDED, ApiView, is_this_worker, native
from pipeline.app import app
from pipeline.campaigns import (
    UploadedIds,
    audience_size,
    by_partition,
    recipient_request,
    shown_state,
    summed,
    walked_share,
)
from pipeline.ids import campaign_id
from pipeline.streams import acting_for
from pipeline.template_data import check_template_data
from schemas.api import TenantQuery
from schemas.campaigns import (
    MAX_UPLOADED_USERS,
    UPLOAD_CHUNK,
    Audience,
    AudienceBody,
    Campaign,
    CampaignAccepted,
    CampaignList,
    CampaignPart,
    CampaignParts,
    CampaignRequest,
    CampaignStatus,
    MemberChunk,
    Segment,
    Uploaded,
)
from schemas.types import LISTED_ID_PATTERN, PathSegment
from tables.campaigns import (
    campaign_counts,
    campaign_progress,
    campaigns,
    member_key,
    segment_key,
    segments,
)

#: Campaigns and segments this worker wrote, until its tables have them.
written_campaigns: Recent[Campaign] = Recent(limit=10_000)
written_segments: Recent[Segment] = Recent(limit=10_000)

CAMPAIGN_ID = {"campaign_id": PathSegment}
#: What an uploaded list of user ids is sent as, and its largest size.
UPLOAD_MEDIA = "text/plain"
MAX_UPLOAD_BYTES = 256 * 2**20
CAMPAIGN_LINK = Link(
    "getCampaign",
    {"campaign_id": "$response.body#/campaign_id"},
    "The campaign's state and counts.",
)


def stored_campaigns() -> list[Campaign]:
    """Every campaign this worker knows: one owned partition's copies, and
    those it wrote itself that the table lacks yet."""
    found = {}
    for partition in owned(campaigns)[:1]:
        found = {c.campaign_id: c for c in campaigns_on(partition)}
    for campaign in written_campaigns.values():
        found.setdefault(campaign.campaign_id, campaign)
    return list(found.values())


def broadcast_copy(table: Any, key: str) -> Any:
    """``key``'s entry of a table written onto every partition (campaigns,
    segments): the copy of any one partition this worker owns."""
    for partition in owned(table)[:1]:
        with acting_for(on_partition(table, partition)):  # type: ignore[arg-type]
            return table.get(key)
    return None


def stored_campaign(cid: str) -> Campaign | None:
    """The freshest campaign under ``cid`` this worker knows."""
    return freshest(broadcast_copy(campaigns, cid), written_campaigns, cid)


def local_parts(cid: str) -> dict[int, CampaignPart]:
    """The progress and counts of ``cid`` on the partitions this worker holds."""
    parts = {}
    for partition in owned(campaign_progress):
        with acting_for(on_partition(campaign_progress, partition)):  # type: ignore[arg-type]
            progress = campaign_progress.get(cid)
            counts = campaign_counts.get(cid)
        parts[partition] = CampaignPart(
            progress=progress, counts=counts.counts if counts else {}
        )
    return parts


def recent_counts(
    limit: int = 20, within: timedelta = timedelta(days=1)
) -> list[tuple[str, dict[str, int]]]:
    """The newest campaigns' counts on this worker's partitions (for
    ``/metrics``: at most ``limit``, created ``within`` that long)."""
    now = app.clock.now()
    newest = sorted(
        (c for c in stored_campaigns() if now - c.created_at <= within),
        key=lambda c: c.created_at,
        reverse=True,
    )[:limit]
    return [(c.campaign_id, counts_of(local_parts(c.campaign_id))) for c in newest]


async def all_parts(cid: str, request: Request) -> dict[int, CampaignPart]:
    """Every partition's part of ``cid``: this worker's, and each other
    worker's asked with the caller's key. 503 while a partition has no owner."""
    parts = local_parts(cid)
    if not request.headers.get(FORWARDED):
        for host in app.router.table_metadata(campaign_progress.name):
            if is_this_worker(host):
                continue
            url = URL(str(host)).with_path(f"/v1/campaigns/{cid}/partitions")
            headers = {
                "Authorization": request.headers.get("Authorization", ""),
                FORWARDED: "1",
            }
            async with app.http_client.get(url, headers=headers) as answer:
                if answer.status != 200:
                    continue
                theirs = CampaignParts.model_validate_json(await answer.read())
            parts.update({int(p): part for p, part in theirs.parts.items()})
        if len(parts) < app.settings.topic_partitions:
            raise ServiceUnavailable()
    return parts


def counts_of(parts: dict[int, CampaignPart]) -> dict[str, int]:
    """The outcome counts of ``parts`` summed, with how many were targeted
    and expanded."""
    progress = [part.progress for part in parts.values() if part.progress]
    counts = summed(part.counts for part in parts.values())
    counts["targeted"] = sum(p.targeted for p in progress)
    counts["expanded"] = sum(p.expanded for p in progress)
    return counts


def status_of(campaign: Campaign, parts: dict[int, CampaignPart]) -> CampaignStatus:
    """The campaign's state and counts, summed over every partition's part."""
    partitions = app.settings.topic_partitions
    progress = [part.progress for part in parts.values() if part.progress]
    asked = campaign.request
    return CampaignStatus(
        campaign_id=campaign.campaign_id,
        campaign_name=asked.campaign_name,
        tenant=campaign.tenant,
        state=shown_state(campaign, progress, partitions, app.clock.now()),
        created_at=campaign.created_at,
        schedule_at=asked.schedule_at,
        expiry_at=asked.expiry_at,
        partitions_done=sum(1 for p in progress if p.done),
        partitions=partitions,
        expanded_by=dict(Counter(p.by for p in progress if p.by)),
        audience=audience_size(target_audience(campaign)),
        walked=walked_share(progress, partitions),
        counts=counts_of(parts),
    )


def target_audience(campaign: Campaign) -> Audience | None:
    """The campaign's audience: its own, or its segment's as saved now."""
    inline = campaign.request.target.audience()
    if inline is not None:
        return inline
    segment_id = getattr(campaign.request.target, "segment_id", "")
    key = segment_key(campaign.tenant, segment_id)
    saved = freshest(broadcast_copy(segments, key), written_segments, key)
    return None if saved is None or saved.deleted else saved.audience


async def broadcast(topic: Any, key: str, value: Any) -> None:
    """Write ``value`` onto every partition of ``topic`` (each partition's
    owner reads it from its own); return once the broker has every copy."""
    pending = [
        await topic.send(key=key, value=value, partition=partition)
        for partition in range(app.settings.topic_partitions)
    ]
    await asyncio.gather(*pending)


@route("/v1/notifications/bulk")
class BulkNotifications(ApiView):
    """Campaigns: one request for many users."""

    @operation(
        operation_id="createCampaign",
        summary="Accept a campaign (expanded asynchronously, bulk lane only)",
        status=202,
        answer=CampaignAccepted,
        body=CampaignRequest,
        errors=(409,),
        links={"campaign": CAMPAIGN_LINK},
    )
    async def post(self, request: Request) -> Response:
        """Seed 002's body (``type`` ``promotional`` with a ``message``), or a
        notification type with its ``data``. Every worker expands the users
        of the partitions it owns, ``rate`` recipients a second in all, in
        chunks of ``chunk``. The same ``idempotency_key`` again: the same
        campaign; with another body, 409.
        """
        principal = self.principal(request)
        principal.require(auth.NOTIFY_SCOPE)
        parsed = await self.parse(request, CampaignRequest)
        explicit = parsed.tenant if "tenant" in parsed.model_fields_set else None
        tenant = principal.tenant_for(explicit)
        parsed = parsed.model_copy(update={"tenant": tenant})
        cid = campaign_id(tenant, parsed.idempotency_key)
        now = app.clock.now()
        digest = body_hash(parsed)  # type: ignore[arg-type]
        existing = stored_campaign(cid)
        if existing is not None:
            if existing.body_hash != digest:
                raise ApiError(
                    409,
                    "idempotency_conflict",
                    f"idempotency_key {parsed.idempotency_key!r} was already used "
                    "for a different campaign",
                    field="idempotency_key",
                )
            return self.answer(
                CampaignAccepted(status="accepted", campaign_id=cid), status=202
            )
        campaign = Campaign(
            campaign_id=cid,
            tenant=tenant,
            request=parsed,
            body_hash=digest,
            state="active",
            created_at=now,
            updated_at=now,
        )
        # Each recipient's request must pass the door a single one would.
        check_template_data(recipient_request(campaign, "-"))
        await broadcast(app.topology.campaigns, cid, campaign)
        written_campaigns.remember(cid, campaign)
        return self.answer(
            CampaignAccepted(status="accepted", campaign_id=cid), status=202
        )


@route("/v1/campaigns")
class CampaignIndex(ApiView):
    """A tenant's campaigns."""

    @operation(
        operation_id="listCampaigns",
        summary="A tenant's campaigns, newest first, with their state and counts",
        status=200,
        answer=CampaignList,
        query=TenantQuery,
    )
    async def get(self, request: Request) -> Response:
        """Every campaign of the key's tenant (an admin names ``?tenant=``)."""
        principal = self.principal(request)
        tenant = principal.tenant_for(self.query(request, TenantQuery).tenant)
        found = [c for c in stored_campaigns() if c.tenant == tenant]
        found.sort(key=lambda c: c.created_at, reverse=True)
        items = [status_of(c, await all_parts(c.campaign_id, request)) for c in found]
        return self.answer(CampaignList(items=items))


class CampaignView(ApiView):
    """One campaign, looked up for the caller."""

    def visible(self, request: Request, cid: str) -> Campaign:
        """The campaign, if the caller's tenant owns it (404, 403)."""
        principal = self.principal(request)
        campaign = stored_campaign(cid)
        if campaign is None:
            raise not_found(f"no campaign {cid!r}")
        if not principal.is_admin and campaign.tenant != principal.tenant:
            raise forbidden(f"campaign {cid!r} is another tenant's")
        return campaign

    async def change(
        self, request: Request, cid: str, state: str, allowed: tuple[str, ...]
    ) -> Response:
        """Ask for ``state`` if the campaign's shown state is one of ``allowed``."""
        campaign = self.visible(request, cid)
        self.principal(request).require(auth.NOTIFY_SCOPE)
        parts = await all_parts(cid, request)
        shown = status_of(campaign, parts).state
        if shown not in allowed:
            raise ApiError(
                409,
                "campaign_state",
                f"campaign {cid!r} is {shown}: only a campaign "
                f"{' or '.join(allowed)} can become {state}",
            )
        changed = campaign.model_copy(
            update={"state": state, "updated_at": app.clock.now()}
        )
        await broadcast(app.topology.campaigns, cid, changed)
        written_campaigns.remember(cid, changed)
        return self.answer(status_of(changed, parts), status=202)


@route("/v1/campaigns/{campaign_id}")
class CampaignItem(CampaignView):
    """A campaign's state and counts; cancel."""

    @operation(
        operation_id="getCampaign",
        summary="A campaign's state and counts, summed over every partition",
        status=200,
        answer=CampaignStatus,
        path=CAMPAIGN_ID,
        errors=(404,),
    )
    async def get(self, request: Request, campaign_id: str) -> Response:
        """Scheduled, expanding, completed, paused, cancelled or expired, and
        its counts: targeted, expanded, then each recipient-channel's outcome."""
        campaign = self.visible(request, campaign_id)
        parts = await all_parts(campaign_id, request)
        return self.answer(status_of(campaign, parts))

    @operation(
        operation_id="cancelCampaign",
        summary="Cancel a campaign still scheduled, expanding or paused",
        status=202,
        answer=CampaignStatus,
        path=CAMPAIGN_ID,
        errors=(404, 409),
    )
    async def delete(self, request: Request, campaign_id: str) -> Response:
        """Expansion stops within a chunk on every worker, and requests
        already expanded but not sent yet are cancelled where fanout or the
        send stage meets them (their channels end ``cancelled``)."""
        return await self.change(
            request, campaign_id, "cancelled", ("scheduled", "expanding", "paused")
        )


@route("/v1/campaigns/{campaign_id}/partitions")
class CampaignPartitions(CampaignView):
    """The part of a campaign this worker holds."""

    @operation(
        operation_id="getCampaignPartitions",
        summary="A campaign's progress and counts on this worker's partitions",
        status=200,
        answer=CampaignParts,
        path=CAMPAIGN_ID,
        errors=(404,),
    )
    async def get(self, request: Request, campaign_id: str) -> Response:
        """What ``GET /v1/campaigns/{id}`` adds up: the workers ask each
        other for it. Partitions whose owner is another worker are absent."""
        self.visible(request, campaign_id)
        parts = local_parts(campaign_id)
        return self.answer(
            CampaignParts(parts={str(p): part for p, part in parts.items()})
        )


@route("/v1/campaigns/{campaign_id}/pause")
class CampaignPause(CampaignView):
    """Hold a campaign's expansion."""

    @operation(
        operation_id="pauseCampaign",
        summary="Pause a campaign's expansion (resume carries on from there)",
        status=202,
        answer=CampaignStatus,
        path=CAMPAIGN_ID,
        errors=(404, 409),
    )
    async def post(self, request: Request, campaign_id: str) -> Response:
        """Every worker stops expanding it within a chunk."""
        return await self.change(
            request, campaign_id, "paused", ("scheduled", "expanding")
        )


@route("/v1/campaigns/{campaign_id}/resume")
class CampaignResume(CampaignView):
    """Carry on a paused campaign."""

    @operation(
        operation_id="resumeCampaign",
        summary="Resume a paused campaign from each partition's checkpoint",
        status=202,
        answer=CampaignStatus,
        path=CAMPAIGN_ID,
        errors=(404, 409),
    )
    async def post(self, request: Request, campaign_id: str) -> Response:
        """Expansion goes on where each partition stopped."""
        return await self.change(request, campaign_id, "active", ("paused",))


class SegmentStore(ApiView):
    """Segments as this worker knows them, and their writes."""

    def tenant(self, request: Request) -> str:
        """The tenant acted for: the key's, or an admin's ``?tenant=``."""
        principal = self.principal(request)
        return principal.tenant_for(self.query(request, TenantQuery).tenant)

    def saved(self, request: Request, segment_id: str) -> Segment | None:
        """The tenant's segment as this worker knows it."""
        key = segment_key(self.tenant(request), segment_id)
        return freshest(broadcast_copy(segments, key), written_segments, key)

    async def save(
        self, request: Request, segment_id: str, audience: Audience, *, deleted: bool
    ) -> Response:
        """Produce the segment and remember it until the table has it; an
        uploaded list it no longer names (replaced, or the segment deleted)
        is dropped from every partition after."""
        self.principal(request).require(auth.NOTIFY_SCOPE)
        tenant = self.tenant(request)
        key = segment_key(tenant, segment_id)
        before = self.saved(request, segment_id)
        segment = Segment(
            segment_id=segment_id,
            tenant=tenant,
            audience=audience,
            updated_at=app.clock.now(),
            deleted=deleted,
        )
        await broadcast(app.topology.segments, key, segment)
        written_segments.remember(key, segment)
        old = before.audience.uploaded if before is not None else None
        if old is not None and (deleted or audience.uploaded != old):
            await drop_list(tenant, old)
        return self.answer(segment, status=202)


@route("/v1/segments/{segment_id}/users")
class SegmentUsers(SegmentStore):
    """A segment's audience as an uploaded list of user ids."""

    @operation(
        operation_id="uploadSegmentUsers",
        summary="Save a segment as an uploaded list of user ids (one per line)",
        status=202,
        answer=Segment,
        path={"segment_id": PathSegment},
        query=TenantQuery,
        body_text={UPLOAD_MEDIA: {"type": "string", "pattern": LISTED_ID_PATTERN}},
    )
    async def put(self, request: Request, segment_id: str) -> Response:
        """A list too large to send inline: ``text/plain``, one user id per
        line. Up to 2,000,000 distinct ids; blank lines are skipped and
        repeats kept once; any bad line (a ``/``, ``{`` or ``}``) refuses the
        whole list (422 naming the first lines). The list replaces the
        segment's audience; each partition's users are stored on that
        partition, where campaigns expand them."""
        self.principal(request).require(auth.NOTIFY_SCOPE)
        tenant = self.tenant(request)
        media = native(request).content_type
        if media != UPLOAD_MEDIA:
            raise ApiError(
                415,
                "unsupported_media_type",
                f"send the list as {UPLOAD_MEDIA}, one user id per line, not {media!r}",
            )
        ids = await read_upload(request)
        uploaded = await store_list(tenant, ids.users)
        return await self.save(
            request, segment_id, Audience(uploaded=uploaded), deleted=False
        )


async def read_upload(request: Request) -> UploadedIds:
    """The user ids of an upload, read line by line as they arrive (413 past
    the limits, 422 naming bad lines)."""
    ids = UploadedIds()
    size = 0
    too_large = ApiError(
        413,
        "too_large",
        f"an upload takes at most {MAX_UPLOADED_USERS:,} user ids "
        f"and {MAX_UPLOAD_BYTES // 2**20} MiB",
    )
    try:
        async for line in native(request).content:
            size += len(line)
            if size > MAX_UPLOAD_BYTES:
                raise too_large
            ids.add(line)
            if len(ids.users) > MAX_UPLOADED_USERS:
                raise too_large
    except ValueError as exc:  # a line past the reader's limit
        raise ApiError(
            422, "invalid_upload", f"line {ids.lines + 1}: {exc}", field="body"
        ) from exc
    problem = ids.problem()
    if problem is not None:
        raise ApiError(422, "invalid_upload", problem, field="body")
    return ids


async def store_list(tenant: str, users: set[str]) -> Uploaded:
    """Write the users onto their partitions in chunks; once the broker has
    every chunk, what the segment says of them."""
    upload_id = "l_" + uuid.uuid4().hex
    split = by_partition(tenant, users, app.settings.topic_partitions, UPLOAD_CHUNK)
    await write_chunks(
        MemberChunk(
            tenant=tenant,
            upload_id=upload_id,
            partition=partition,
            chunk=number,
            users=chunk,
        )
        for partition, chunks in split.items()
        for number, chunk in enumerate(chunks)
    )
    return Uploaded(
        upload_id=upload_id,
        count=len(users),
        chunks={str(p): len(chunks) for p, chunks in split.items()},
        uploaded_at=app.clock.now(),
    )


async def drop_list(tenant: str, uploaded: Uploaded) -> None:
    """Drop every chunk of an uploaded list from its partition."""
    await write_chunks(
        MemberChunk(
            tenant=tenant,
            upload_id=uploaded.upload_id,
            partition=int(part),
            chunk=number,
            deleted=True,
        )
        for part, count in uploaded.chunks.items()
        for number in range(count)
    )


async def write_chunks(records: Iterable[MemberChunk]) -> None:
    """Each chunk onto its own partition of ``notify.segments.members``;
    return once the broker has them all."""
    topic = app.topology.segment_members
    pending = []
    for record in records:
        key = member_key(
            record.tenant, record.upload_id, record.partition, record.chunk
        )
        pending.append(
            await topic.send(key=key, value=record, partition=record.partition)
        )
    await asyncio.gather(*pending)


@route("/v1/segments/{segment_id}")
class SegmentView(SegmentStore):
    """A saved audience of a tenant's campaigns."""

    @operation(
        operation_id="getSegment",
        summary="A saved segment",
        status=200,
        answer=Segment,
        path={"segment_id": PathSegment},
        query=TenantQuery,
        errors=(404,),
    )
    async def get(self, request: Request, segment_id: str) -> Response:
        """The audience as saved (evaluated when a campaign expands)."""
        found = self.saved(request, segment_id)
        if found is None or found.deleted:
            raise not_found(f"no segment {segment_id!r}")
        return self.answer(found)

    @operation(
        operation_id="putSegment",
        summary="Save a segment: user_ids, tags or all",
        status=202,
        answer=Segment,
        body=AudienceBody,
        path={"segment_id": PathSegment},
        query=TenantQuery,
    )
    async def put(self, request: Request, segment_id: str) -> Response:
        """Replace the segment whole; campaigns read it when they expand."""
        body = await self.parse(request, AudienceBody)
        audience = body.root.audience()
        return await self.save(request, segment_id, audience, deleted=False)

    @operation(
        operation_id="deleteSegment",
        summary="Delete a segment",
        status=202,
        answer=Segment,
        path={"segment_id": PathSegment},
        query=TenantQuery,
        errors=(404,),
    )
    async def delete(self, request: Request, segment_id: str) -> Response:
        """A campaign targeting it expands nobody more."""
        found = self.saved(request, segment_id)
        if found is None or found.deleted:
            raise not_found(f"no segment {segment_id!r}")
        return await self.save(request, segment_id, found.audience, deleted=True)
