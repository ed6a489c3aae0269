"""The bulk API: campaigns and the segments they target.

Campaigns and segments are records on compacted topics that every worker
folds into global tables, so any worker answers for any campaign: its state
and counts are the sum of every partition's checkpoint and outcome counts,
which every worker holds too.
"""

from __future__ import annotations

import asyncio
from collections import Counter
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
from pipeline.api.views import FORWARDED, ApiView, is_this_worker
from pipeline.app import app
from pipeline.campaigns import recipient_request, shown_state, summed
from pipeline.ids import campaign_id
from pipeline.streams import acting_for
from pipeline.template_data import check_template_data
from schemas.api import TenantQuery
from schemas.campaigns import (
    Audience,
    AudienceBody,
    Campaign,
    CampaignAccepted,
    CampaignList,
    CampaignPart,
    CampaignParts,
    CampaignRequest,
    CampaignStatus,
    Segment,
)
from schemas.types import PathSegment
from tables.campaigns import (
    campaign_counts,
    campaign_progress,
    campaigns,
    segment_key,
    segments,
)

#: Campaigns and segments this worker wrote, until its tables have them.
written_campaigns: Recent[Campaign] = Recent(limit=10_000)
written_segments: Recent[Segment] = Recent(limit=10_000)

CAMPAIGN_ID = {"campaign_id": PathSegment}
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


def status_of(campaign: Campaign, parts: dict[int, CampaignPart]) -> CampaignStatus:
    """The campaign's state and counts, summed over every partition's part."""
    partitions = app.settings.topic_partitions
    progress = [part.progress for part in parts.values() if part.progress]
    counts = summed(part.counts for part in parts.values())
    counts["targeted"] = sum(p.targeted for p in progress)
    counts["expanded"] = sum(p.expanded for p in progress)
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
        counts=counts,
    )


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
        """Expansion stops within a chunk on every worker; requests already
        expanded go on (cancel one with ``DELETE /v1/notifications/{id}``)."""
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


@route("/v1/segments/{segment_id}")
class SegmentView(ApiView):
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
        """Produce the segment and remember it until the table has it."""
        self.principal(request).require(auth.NOTIFY_SCOPE)
        tenant = self.tenant(request)
        key = segment_key(tenant, segment_id)
        segment = Segment(
            segment_id=segment_id,
            tenant=tenant,
            audience=audience,
            updated_at=app.clock.now(),
            deleted=deleted,
        )
        await broadcast(app.topology.segments, key, segment)
        written_segments.remember(key, segment)
        return self.answer(segment, status=202)
