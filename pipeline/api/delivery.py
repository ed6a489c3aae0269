"""HTTP endpoints of delivery: in-app inbox and its live stream, provider
webhooks (receipts), and the signed email tracking links.

Webhooks and tracking links are called by providers and mail clients, which
hold no API key: each is authenticated by its own signature instead (the
provider's scheme, or ours for tracking tokens), and a bad one changes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl

import orjson
from aiohttp import web as aioweb
from faust.exceptions import SameNode
from faust.web import Request, Response

from agents.send import tracking_signer
from pipeline.api.accepted import freshest, written_preferences
from pipeline.api.contract import Link, operation, route
from pipeline.api.errors import ApiError, not_found
from pipeline.api.views import USER_ID, ApiView, native, produce, tenant_of, user_route
from pipeline.app import app
from pipeline.ids import event_id, parse_notification_id
from pipeline.inbox import inbox_hub
from pipeline.partitioning import partition_for
from pipeline.providers import sendgrid, twilio
from pipeline.providers.base import Receipt, ReceiptKind
from pipeline.topology import SUPPRESSIONS, user_key
from pipeline.tracking import ExpiredTrackingToken, InvalidTrackingToken, TrackingClaim
from schemas.api import (
    InboxPage,
    InboxQuery,
    ReadAccepted,
    ReceiptsApplied,
    TenantQuery,
    Unsubscribed,
    WebhookQuery,
)
from schemas.records import InboxRead, NotificationEvent, Preferences, Suppression
from schemas.types import PathSegment
from tables.inbox import inbox
from tables.preferences import preferences
from tables.suppressions import ANY_TENANT, suppression_key

#: Seconds an idle live stream waits before a keep-alive comment line.
KEEPALIVE_EVERY = 15.0

log = logging.getLogger(__name__)

#: Receipt kind → the event it becomes.
RECEIPT_EVENTS = {
    ReceiptKind.DELIVERED: "delivered",
    ReceiptKind.OPENED: "opened",
    ReceiptKind.CLICKED: "clicked",
    ReceiptKind.BOUNCED: "bounced",
    ReceiptKind.FAILED: "failed",
}
#: A generic webhook older than this (seconds) is refused: no replays.
GENERIC_MAX_AGE = 300
#: The 1×1 transparent GIF an open pixel answers with.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


@route(user_route("inbox"))
class InboxView(ApiView):
    """A user's in-app messages."""

    @operation(
        operation_id="getInbox",
        summary="A user's in-app messages, newest first",
        status=200,
        answer=InboxPage,
        path=USER_ID,
        query=InboxQuery,
    )
    async def get(self, request: Request, user_id: str) -> Response:
        """The inbox, newest first (``?unread=true`` for unread only)."""
        query = self.query(request, InboxQuery)
        tenant = self.principal(request).tenant_for(query.tenant)
        ukey = user_key(tenant, user_id)
        forwarded = await self.routed(inbox.name, ukey, request)
        if forwarded is not None:
            return forwarded
        current = inbox.get(ukey)
        items = list(reversed(current.items)) if current else []
        if query.unread == "true":
            items = [item for item in items if item.read_at is None]
        return self.answer(
            InboxPage(
                user_id=user_id,
                unread=sum(1 for item in items if item.read_at is None),
                items=items,
            )
        )


@route(user_route("inbox") + "/{notification_id}/read")
class InboxReadView(ApiView):
    """Mark one in-app message read."""

    @operation(
        operation_id="markRead",
        summary="Mark one in-app message read (applied asynchronously)",
        status=202,
        answer=ReadAccepted,
        path={**USER_ID, "notification_id": PathSegment},
        query=TenantQuery,
        links={
            "inbox": Link(
                "getInbox",
                {
                    "user_id": "$request.path.user_id",
                    "tenant": "$response.body#/read/tenant",
                },
                "The inbox the mark applies to.",
            )
        },
    )
    async def post(
        self, request: Request, user_id: str, notification_id: str
    ) -> Response:
        """Accepted: the inbox shows it read once its worker applies the mark."""
        tenant = tenant_of(self.principal(request), request)
        ukey = user_key(tenant, user_id)
        mark = InboxRead(
            tenant=tenant,
            user_id=user_id,
            notification_id=notification_id,
            read_at=app.clock.now(),
        )
        partition = partition_for(ukey.encode(), app.settings.topic_partitions)
        await produce(app.topology.inbox_reads, ukey, mark, partition)
        return self.answer(ReadAccepted(status="accepted", read=mark), status=202)


@route(user_route("inbox") + "/stream")
class InboxStreamView(ApiView):
    """New in-app messages as server-sent events, from the worker holding them."""

    @operation(
        operation_id="streamInbox",
        summary="New in-app messages as server-sent events (`event: message`, "
        "data = InboxItem)",
        status=200,
        media={
            "text/event-stream": "An event stream until the client leaves or the "
            "partition moves (then reconnect)."
        },
        other={307: "This worker does not hold the inbox: reconnect at `Location`."},
        path=USER_ID,
        query=TenantQuery,
    )
    async def get(self, request: Request, user_id: str) -> Any:
        """An event stream; a worker not holding the inbox redirects to the one that does."""
        tenant = tenant_of(self.principal(request), request)
        ukey = user_key(tenant, user_id)
        try:
            owner = app.router.key_store(inbox.name, ukey)
        except SameNode:
            owner = None
        if owner is not None and str(owner).rstrip("/") != str(
            app.conf.canonical_url
        ).rstrip("/"):
            location = str(owner).rstrip("/") + native(request).path_qs
            raise ApiError(
                307,
                "not_owner",
                "this user's inbox is held by another worker",
                headers={"Location": location},
            )
        response = aioweb.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(native(request))
        queue = inbox_hub.subscribe(ukey)
        try:
            await response.write(b": connected\n\n")
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), KEEPALIVE_EVERY)
                except TimeoutError:
                    # A comment line: keeps proxies from closing an idle
                    # stream, and finds out when the client has gone.
                    await response.write(b": keep-alive\n\n")
                    continue
                if item is None:  # partition moved, or too slow: reconnect
                    break
                data = item.dumps()
                await response.write(
                    b"event: message\nid: "
                    + item.notification_id.encode()
                    + b"\ndata: "
                    + data
                    + b"\n\n"
                )
        except ConnectionResetError:  # aiohttp's own subclasses it
            pass
        finally:
            inbox_hub.unsubscribe(ukey, queue)
        return response


def receipt_event(receipt: Receipt, now: datetime) -> NotificationEvent | None:
    """The analytics event of a receipt, or None if its attempt key is not ours."""
    parts = receipt.attempt_key.split(":")
    if len(parts) != 3 or parse_notification_id(parts[0]) is None:
        return None
    notification, channel, target = parts
    kind = RECEIPT_EVENTS[receipt.kind]
    return NotificationEvent(
        event_id=event_id(
            notification,
            kind,
            "receipt",
            channel,
            target,
            receipt.provider_event_id or receipt.occurred_at.isoformat(),
        ),
        event_type=kind,
        ts=receipt.occurred_at or now,
        stage=f"receipt.{receipt.provider}",
        notification_id=notification,
        channel=channel,
        provider=receipt.provider,
        reason=receipt.code or None,
        error=receipt.detail or None,
    )


async def apply_receipts(receipts: list[Receipt], tenant_hint: str | None) -> int:
    """Events for every receipt, suppression for every bounce; how many applied."""
    now = app.clock.now()
    applied = 0
    for receipt in receipts:
        event = receipt_event(receipt, now)
        if event is None:
            log.warning("receipt for an unknown attempt %r", receipt.attempt_key)
            continue
        # To the lane's receipts agent on the user's partition, where the
        # notification's status lives; it folds the receipt and emits the event.
        nid = event.notification_id or ""
        ref = parse_notification_id(nid)
        assert ref is not None  # noqa: S101 - receipt_event checked the id
        partition = ref.partition(app.settings.topic_partitions)
        await produce(app.topology.receipts[ref.lane], nid, event, partition)
        applied += 1
        if receipt.kind is ReceiptKind.BOUNCED and event.channel in ("email", "sms"):
            # A receipt does not say which tenant sent the message: the bounce
            # is the mailbox's, so it holds for every tenant ("*").
            tenant = tenant_hint or ANY_TENANT
            record = Suppression(
                tenant=tenant,
                channel=event.channel,
                address=receipt.target,
                reason="hard_bounce",
                code=receipt.code or None,
                created_at=now,
            )
            key = suppression_key(tenant, event.channel, receipt.target)
            await produce(
                app.topology.state_inputs[SUPPRESSIONS.name],
                key,
                record.dumps(),
            )
    return applied


def verify_generic(secret: bytes, body: bytes, headers: Mapping[str, str]) -> bool:
    """Our HMAC scheme: ``X-Notify-Signature: sha256=<hex of ts.body>``, fresh ts."""
    signature = headers.get("X-Notify-Signature", "")
    stamp = headers.get("X-Notify-Timestamp", "")
    if not signature.startswith("sha256=") or not stamp.isdigit():
        return False
    age = abs(datetime.now(UTC).timestamp() - int(stamp))
    if age > GENERIC_MAX_AGE:
        return False
    expected = hmac.new(secret, stamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(signature.removeprefix("sha256="), expected.hexdigest())


def sign_generic(secret: bytes, body: bytes, stamp: int) -> dict[str, str]:
    """The headers a generic webhook sender puts on ``body`` (emulators, tests)."""
    digest = hmac.new(secret, str(stamp).encode() + b"." + body, hashlib.sha256)
    return {
        "X-Notify-Signature": "sha256=" + digest.hexdigest(),
        "X-Notify-Timestamp": str(stamp),
    }


def parse_generic(body: bytes) -> list[Receipt]:
    """``{"events": [{kind, attempt_key, target, occurred_at, code, detail, id}]}``."""
    try:
        payload = orjson.loads(body)
        events = payload["events"]
        return [
            Receipt(
                provider=str(item.get("provider", "generic")),
                kind=ReceiptKind(item["kind"]),
                attempt_key=str(item["attempt_key"]),
                target=str(item.get("target", "")),
                occurred_at=datetime.fromisoformat(
                    str(item["occurred_at"]).replace("Z", "+00:00")
                ),
                code=str(item.get("code", "")),
                detail=str(item.get("detail", "")),
                provider_event_id=str(item.get("id", "")),
            )
            for item in events
        ]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ApiError(
            422, "invalid_webhook", f"not a generic webhook body: {exc}"
        ) from None


@route("/v1/webhooks/{provider}")
class WebhookView(ApiView):
    """Delivery receipts from providers, each checked with its signature scheme."""

    @operation(
        operation_id="receiveWebhook",
        summary="Delivery receipts from a provider (twilio, sendgrid, generic), "
        "authenticated by the provider's signature, not a key",
        status=200,
        answer=ReceiptsApplied,
        path={"provider": Literal["twilio", "sendgrid", "generic"]},
        query=WebhookQuery,
        errors=(401, 404, 422),
        public=True,
    )
    async def post(self, request: Request, provider: str) -> Response:
        """200 with how many receipts were applied; 401 if the signature is bad."""
        query = self.query(request, WebhookQuery)
        body = await request.read()
        headers = request.headers
        settings = app.settings
        receipts: list[Receipt]
        if provider == "twilio":
            params = dict(
                parse_qsl(body.decode(errors="replace"), keep_blank_values=True)
            )
            url = settings.public_base + native(request).path_qs
            token = settings.twilio_auth_token.get_secret_value()
            if not token or not twilio.validate_signature(
                token, url, params, headers.get("X-Twilio-Signature", "")
            ):
                raise unsigned(provider)
            receipt = twilio.parse_status_callback(params, url)
            receipts = [receipt] if receipt is not None else []
        elif provider == "sendgrid":
            key = settings.sendgrid_webhook_key
            if not key or not sendgrid.verify_event_signature(
                key,
                body,
                headers.get("X-Twilio-Email-Event-Webhook-Signature", ""),
                headers.get("X-Twilio-Email-Event-Webhook-Timestamp", ""),
            ):
                raise unsigned(provider)
            receipts = sendgrid.parse_events(body)
        elif provider == "generic":
            secret = settings.webhook_secret.get_secret_value().encode()
            if not verify_generic(secret, body, headers):
                raise unsigned(provider)
            receipts = parse_generic(body)
        else:
            raise not_found(f"no webhook for provider {provider!r}")
        applied = await apply_receipts(receipts, query.tenant)
        return self.answer(ReceiptsApplied(received=len(receipts), applied=applied))


def unsigned(provider: str) -> ApiError:
    """The answer to a webhook whose signature does not verify."""
    return ApiError(
        401, "bad_signature", f"the {provider} webhook signature does not verify"
    )


async def tracked(token: str, kind: str) -> TrackingClaim | None:
    """Verify a tracking token and record its event; the claim.

    An expired click link still redirects (its target is signed) but counts
    nothing: None with the claim's URL kept by the caller.
    """
    try:
        claim = tracking_signer().verify(token, kind)  # type: ignore[arg-type]
    except ExpiredTrackingToken as exc:
        if kind == "click" and exc.claim is not None:
            return TrackingClaim(
                kind=exc.claim.kind,
                attempt_key="",
                url=exc.claim.url,
                expires_at=exc.claim.expires_at,
            )
        raise ApiError(404, "invalid_link", "this tracking link has expired") from None
    except InvalidTrackingToken as exc:
        raise ApiError(
            404, "invalid_link", f"not a valid tracking link: {exc}"
        ) from None
    receipt = Receipt(
        provider="tracking",
        kind=ReceiptKind.OPENED if kind == "open" else ReceiptKind.CLICKED,
        attempt_key=claim.attempt_key,
        target="",
        occurred_at=app.clock.now(),
        detail=claim.url or "",
        provider_event_id=token[-16:] if kind == "open" else "",
    )
    if claim.attempt_key:
        await apply_receipts([receipt], None)
    return claim


@route("/t/o/{token}")
class OpenPixelView(ApiView):
    """The email open pixel."""

    @operation(
        operation_id="openPixel",
        summary="Email open pixel (signed token, no key)",
        status=200,
        media={"image/gif": "A 1×1 GIF."},
        path={"token": PathSegment},
        errors=(404,),
        public=True,
    )
    async def get(self, request: Request, token: str) -> Response:
        """A 1×1 GIF; the open is recorded once per message."""
        await tracked(token, "open")
        return self.bytes(
            PIXEL,
            content_type="image/gif",
            headers={"Cache-Control": "no-store"},
        )


@route("/t/c/{token}")
class ClickView(ApiView):
    """The email click redirect: only to the URL signed into the link."""

    @operation(
        operation_id="clickRedirect",
        summary="Email click redirect, only to the URL signed into the token (no key)",
        status=302,
        path={"token": PathSegment},
        errors=(404,),
        public=True,
    )
    async def get(self, request: Request, token: str) -> Response:
        """302 to the signed target."""
        claim = await tracked(token, "click")
        assert claim is not None and claim.url  # noqa: S101 - click claims carry one
        return self.bytes(b"", status=302, headers={"Location": claim.url})


def unsubscribe_claim(token: str) -> TrackingClaim:
    """The claim of a genuine unsubscribe token (404 otherwise)."""
    try:
        claim = tracking_signer().verify(token, "unsubscribe")
    except InvalidTrackingToken as exc:  # expired ones too
        raise ApiError(
            404, "invalid_link", f"not a valid unsubscribe link: {exc}"
        ) from None
    assert claim.scope is not None  # noqa: S101 - checked by verify
    return claim


UNSUBSCRIBE_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Unsubscribe</title></head>
<body style="font-family: Arial, Helvetica, sans-serif;">
<p>{message}</p>
{form}
</body></html>
"""


@route("/t/u/{token}")
class UnsubscribeView(ApiView):
    """One-click unsubscribe (RFC 8058) from a promotional email, no login."""

    @operation(
        operation_id="unsubscribePage",
        summary="The unsubscribe page of a promotional email (signed token, no key)",
        status=200,
        media={"text/html": "A page with the unsubscribe button."},
        path={"token": PathSegment},
        errors=(404,),
        public=True,
    )
    async def get(self, request: Request, token: str) -> Response:
        """A page whose button POSTs here; opening it changes nothing (mail
        scanners open links)."""
        claim = unsubscribe_claim(token)
        assert claim.scope is not None  # noqa: S101 - unsubscribe claims carry one
        category = html.escape(claim.scope[2])
        page = UNSUBSCRIBE_PAGE.format(
            message=f"Stop receiving {category} emails?",
            form='<form method="post"><input type="hidden" name="List-Unsubscribe" '
            'value="One-Click"><button type="submit">Unsubscribe</button></form>',
        )
        return self.bytes(page.encode(), content_type="text/html")

    @operation(
        operation_id="unsubscribe",
        summary="One-click unsubscribe: opt the user out of the email's category",
        status=200,
        answer=Unsubscribed,
        path={"token": PathSegment},
        errors=(404,),
        public=True,
    )
    async def post(self, request: Request, token: str) -> Response:
        """The mailbox provider's POST (``List-Unsubscribe=One-Click``) or the
        page's button: the user's preferences opt out of the category (a
        preference write, as ``PUT .../preferences`` makes), on the worker
        owning the user. Twice is the same as once."""
        claim = unsubscribe_claim(token)
        assert claim.scope is not None  # noqa: S101 - unsubscribe claims carry one
        tenant, user_id, category = claim.scope
        ukey = user_key(tenant, user_id)
        raw = await request.read()
        owner = await self.forward_to_owner(preferences.name, ukey, request, raw)
        if owner is not None:
            return owner
        current = freshest(preferences.get(ukey), written_preferences, ukey)
        current = current or Preferences(user_id=user_id, tenant=tenant)
        if current.types.get(category) is not False:
            current = current.model_copy(
                update={
                    "types": {**current.types, category: False},
                    "updated_at": app.clock.now(),
                }
            )
            await produce(app.topology.preferences, ukey, current)
            written_preferences.remember(ukey, current)
        answer = Unsubscribed(status="unsubscribed", category=category)
        if "form" in (request.headers.get("Content-Type") or ""):
            page = UNSUBSCRIBE_PAGE.format(
                message=f"You will not receive {html.escape(category)} emails any more.",
                form="",
            )
            return self.bytes(page.encode(), content_type="text/html")
        return self.answer(answer)
