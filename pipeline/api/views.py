"""The v1 HTTP API: notifications, user state, schemas, API keys, OpenAPI."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated, Any, TypeVar, cast

import aiohttp
import orjson
from aiohttp import web as aioweb
from faust.exceptions import SameNode
from faust.web import Request, Response, View
from faust.web.exceptions import ServiceUnavailable
from pydantic import BaseModel, StringConstraints, ValidationError
from yarl import URL

from agents.ingest import body_hash, lane_for
from pipeline import actions
from pipeline.api import auth
from pipeline.api.accepted import (
    Recent,
    accepted_keys,
    accepted_statuses,
    created_keys,
    freshest,
    written_limits,
    written_preferences,
    written_profiles,
)
from pipeline.api.contract import Link, contract_of, operation, route
from pipeline.api.errors import ApiError, forbidden, not_found
from pipeline.api.openapi import JSON, openapi_document
from pipeline.app import app
from pipeline.errors import InvalidMessage
from pipeline.ids import NOTIFICATION_ID_PATTERN, notification_id, parse_notification_id
from pipeline.partitioning import partition_for
from pipeline.streams import flush_durably
from pipeline.template_data import check_template_data
from pipeline.topology import user_key
from pipeline.web import recovered
from schemas import jsonschema
from schemas.api import (
    DeviceAccepted,
    DeviceQuery,
    KeyCreated,
    KeyInfo,
    KeyList,
    KeyRequest,
    KeyRevoked,
    LimitsAccepted,
    NotificationAccepted,
    NotificationCancelled,
    PreferencesAccepted,
    ProfileAccepted,
    SchemaList,
    TenantQuery,
)
from schemas.decode import decode, decode_object, invalid_message
from schemas.records import (
    DeviceRegistration,
    DeviceToken,
    LimitsUpdate,
    NotificationRequest,
    NotificationStatus,
    Preferences,
    PreferencesUpdate,
    ProfileUpdate,
    TenantLimits,
    UserOwned,
    UserProfile,
)
from schemas.types import SEGMENT_PATTERN, PathSegment, PushToken
from tables.api_keys import api_keys
from tables.idempotency import idempotency, live_entry, seen_key
from tables.preferences import preferences
from tables.profiles import profiles
from tables.status import status
from tables.tenant_limits import tenant_limits

M = TypeVar("M", bound=BaseModel)
JSON_SCHEMA = "application/schema+json"
log = logging.getLogger(__name__)

FORWARDED = "X-Notify-Forwarded"
#: Set on a request sent to another lane's workers, so it is never sent on again.
LANE_FORWARDED = "X-Notify-Lane-Forwarded"


def native(request: Request) -> aioweb.Request:
    """The aiohttp request Faust's aiohttp driver hands its views."""
    return cast(aioweb.Request, request)


def not_ready() -> ApiError:
    """503 while the worker starts or stops: its tables are not whole.

    The web server answers before the tables are recovered from their
    changelogs and before the producer knows the topics' partitions; a
    request then would read a partial table or fail inside the router.
    """
    return ApiError(
        503,
        "not_ready",
        "this worker is starting (recovering its tables) or stopping; retry shortly",
        headers={"Retry-After": "2"},
    )


class ApiView(View):
    """A view whose errors are JSON with a stable code, never a bare 500 page."""

    async def dispatch(self, request: Any) -> Any:
        """Run the handler; ApiError and invalid input become JSON errors."""
        try:
            if not recovered(app) or app.should_stop:
                raise not_ready()
            self.check_path(request)
            return await super().dispatch(request)
        except ApiError as exc:
            return self.json(exc.body(), status=exc.status, headers=exc.headers)
        except InvalidMessage as exc:
            status = 400 if exc.code == "invalid_json" else 422
            error = ApiError(status, exc.code, exc.reason, field=exc.field)
            return self.json(error.body(), status=status)
        except ServiceUnavailable:
            error = ApiError(
                503,
                "rebalancing",
                "partition owners are being reassigned; retry shortly",
                headers={"Retry-After": "1"},
            )
            return self.json(error.body(), status=503, headers=error.headers)
        except Exception:
            # A bug, not a bad request: log it, and still answer in JSON.
            log.exception("%s %s failed", request.method, request.path)
            error = ApiError(500, "internal", "internal error; see the worker log")
            return self.json(error.body(), status=500)

    def check_path(self, request: Any) -> None:
        """422 for a path parameter its operation's declared type refuses."""
        contract = contract_of(getattr(self, request.method.lower(), None))
        if contract is None:
            return
        for name, adapter in contract.adapters().items():
            value = request.match_info.get(name)
            try:
                adapter.validate_python(value, strict=True)
            except ValidationError as exc:
                problem = invalid_message(exc, name)
                raise ApiError(
                    422, problem.code, problem.reason, field=problem.field
                ) from None

    def answer(self, record: BaseModel, status: int = 200, **kwargs: Any) -> Response:
        """A record as the JSON answer."""
        return self.bytes(
            record.__pydantic_serializer__.to_json(record),
            content_type="application/json",
            status=status,
            **kwargs,
        )

    def principal(self, request: Request) -> auth.Principal:
        """The caller, authenticated by its bearer key (401 otherwise)."""
        token = auth.bearer_token(request.headers.get("Authorization"))
        return auth.authenticate(token, app.settings, api_keys.get)

    async def parse(self, request: Request, model: type[M]) -> M:
        """The request's JSON body as ``model``: 400 if not JSON, 422 if wrong."""
        return decode(model, await request.read())

    @staticmethod
    def query(request: Request, model: type[M]) -> M:
        """The query string as ``model`` (422 naming a wrong parameter)."""
        return decode_object(model, dict(request.query))

    async def forward(
        self,
        base: URL | str,
        request: Request,
        body: bytes | None = None,
        marker: str = FORWARDED,
    ) -> Response:
        """The answer of the worker at ``base`` to this request, passed through."""
        headers = {
            "Authorization": request.headers.get("Authorization", ""),
            marker: "1",
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        url = URL(str(base)).with_path(request.url.path).with_query(request.url.query)
        try:
            async with app.http_client.request(
                request.method, url, data=body, headers=headers
            ) as response:
                return self.bytes(
                    await response.read(),
                    content_type=response.content_type,
                    status=response.status,
                    headers={
                        k: v
                        for k, v in response.headers.items()
                        if k in ("Idempotent-Replayed", "Retry-After")
                    },
                )
        except (aiohttp.ClientError, TimeoutError):
            # The owner died or is restarting: its partitions move to another
            # worker within the session timeout. A retry with the same
            # idempotency key is safe whether or not the owner accepted it.
            log.warning(
                "%s %s: owner %s did not answer", request.method, url.path, base
            )
            raise ServiceUnavailable() from None

    async def forward_to_owner(
        self, table: str, key: str, request: Request, raw: bytes
    ) -> Response | None:
        """The answer of the worker owning ``key`` of ``table`` (body and all),
        or None if that is this worker."""
        if request.headers.get(FORWARDED):
            return None
        try:
            owner = app.router.key_store(table, key)
        except KeyError:
            raise ServiceUnavailable() from None
        if is_this_worker(owner):
            return None
        return await self.forward(owner, request, raw)

    async def routed(self, table: str, key: str, request: Request) -> Response | None:
        """The owner's answer if another worker holds ``key``; None if we do."""
        if request.headers.get(FORWARDED):
            return None  # already forwarded once: answer here, never loop
        try:
            return await app.router.route_req(table, key, self.web, request)
        except SameNode:
            return None
        except (aiohttp.ClientError, TimeoutError):
            log.warning(
                "%s %s: its owner did not answer", request.method, request.url.path
            )
            raise ServiceUnavailable() from None


def is_this_worker(url: URL | str) -> bool:
    """True if ``url`` is this worker's own web server."""
    return URL(str(url)).origin() == URL(str(app.conf.canonical_url)).origin()


def partition_owner(table_name: str, partition: int) -> URL:
    """The web server of the worker holding ``partition`` of a table."""
    topic = app.tables[table_name].changelog_topic.get_topic_name()
    for host, topics in app.router.table_metadata(table_name).items():
        if partition in topics.get(topic, ()):
            return URL(str(host))
    raise ServiceUnavailable()


def tenant_of(
    principal: auth.Principal, request: Request, query: type[TenantQuery] = TenantQuery
) -> str:
    """The tenant a call acts for: the key's, or an admin's ``?tenant=``."""
    return principal.tenant_for(ApiView.query(request, query).tenant)


async def produce(
    topic: Any, key: str, value: Any, partition: int | None = None
) -> None:
    """Send and wait for the broker's acknowledgement: 202 means durable."""
    pending = await topic.send(key=key, value=value, partition=partition)
    await pending


#: Path parameter types, shared by the operations that take them.
USER_ID = {"user_id": PathSegment}
NOTIFICATION_ID = {
    "notification_id": Annotated[
        str, StringConstraints(pattern=NOTIFICATION_ID_PATTERN)
    ]
}
STATUS_LINK = Link(
    "getNotification",
    {"notification_id": "$response.body#/notification_id"},
    "The notification's status and trail.",
)


@route("/v1/notifications")
class Notifications(ApiView):
    """Accept notifications."""

    @operation(
        operation_id="createNotification",
        summary="Accept a notification (202: queued, not yet delivered)",
        status=202,
        answer=NotificationAccepted,
        body=NotificationRequest,
        errors=(409,),
        links={"status": STATUS_LINK},
    )
    async def post(self, request: Request) -> Response:
        """202 with the notification id; the same key again changes nothing.

        A key used before for another request (whatever its priority) is 409
        at once; a request whose data lacks a field its type's templates need
        is 422 naming it (`data.<field>`).
        """
        principal = self.principal(request)
        principal.require(auth.NOTIFY_SCOPE)
        raw = await request.read()  # kept as is to forward to the owning worker
        parsed = decode(NotificationRequest, raw)
        explicit = parsed.tenant if "tenant" in parsed.model_fields_set else None
        tenant = principal.tenant_for(explicit)
        if tenant != parsed.tenant:
            parsed = parsed.model_copy(update={"tenant": tenant})
        check_template_data(parsed)
        lane = lane_for(parsed.priority)
        ukey = user_key(parsed.tenant, parsed.recipient.user_id)
        nid = notification_id(
            parsed.tenant, parsed.idempotency_key, parsed.recipient.user_id, lane
        )
        table_key, digest = self.table_key(parsed), body_hash(parsed)
        # Whichever lane the request rides, the key is checked here: this
        # worker's idempotency table holds both lanes' keys (shared when both
        # lanes run here, copied from the other lane's changelog when not).
        owner = await self.forward_to_owner(idempotency.name, ukey, request, raw)
        if owner is not None:
            return owner
        replay = self.seen_before(parsed, table_key, digest)
        if replay:
            return self.answer(
                NotificationAccepted(notification_id=nid, status="duplicate"),
                status=202,
                headers={"Idempotent-Replayed": "true"},
            )
        # Held before the produce, so a retry racing this one is caught.
        accepted_keys.remember(table_key, digest)
        try:
            # Keyed tenant/user_id with Kafka's default partitioner: on the
            # user's partition, so ingest decides it in place (no
            # notify.accepted hop).
            await produce(app.topology.requests[lane], ukey, parsed.dumps())
        except BaseException:
            accepted_keys.forget(table_key)
            raise
        if lane in app.settings.worker_lanes:
            # Its status lives on this worker (the user's partition, this
            # lane's group): a GET right away finds it accepted.
            accepted_statuses.remember(
                nid,
                NotificationStatus(
                    notification_id=nid,
                    tenant=parsed.tenant,
                    user_id=parsed.recipient.user_id,
                    type=parsed.type,
                    priority=parsed.priority,
                    lane=lane,
                    campaign_id=parsed.campaign_id,
                ),
            )
        return self.answer(
            NotificationAccepted(notification_id=nid, status="accepted"), status=202
        )

    @staticmethod
    def table_key(parsed: NotificationRequest) -> str:
        """The idempotency table's key of ``parsed``'s idempotency key."""
        return seen_key(parsed.tenant, parsed.recipient.user_id, parsed.idempotency_key)

    def seen_before(
        self, parsed: NotificationRequest, table_key: str, digest: str
    ) -> bool:
        """True if the key was used for this body; 409 if for another one."""
        key = parsed.idempotency_key
        window = timedelta(hours=app.settings.idempotency_window)
        entry = live_entry(idempotency.get(table_key), app.clock.now(), window)
        if entry is not None:
            accepted_keys.forget(table_key)  # the table has it from here on
            seen = entry.body_hash
        else:
            remembered = accepted_keys.digest(table_key)
            if remembered is None:
                return False
            seen = remembered
        if seen != digest:
            raise ApiError(
                409,
                "idempotency_conflict",
                f"idempotency_key {key!r} was already used for a different request",
                field="idempotency_key",
            )
        return True


class NotificationView(ApiView):
    """A view of one notification, answered where its status lives."""

    async def at_holder(self, request: Request, nid: str) -> Response | None:
        """The answer of the worker holding ``nid``'s status, or None if this
        worker holds it (404 for what is no notification id)."""
        ref = parse_notification_id(nid)
        if ref is None:
            raise not_found(f"{nid!r} is not a notification id")
        if ref.lane not in app.settings.worker_lanes:
            return await self.other_lane(ref.lane, nid, request)
        if request.headers.get(FORWARDED):
            return None
        partition = ref.partition(app.settings.topic_partitions)
        owner = partition_owner(status.name, partition)
        if is_this_worker(owner):
            return None
        return await self.forward(owner, request)

    @staticmethod
    def visible(principal: auth.Principal, nid: str) -> NotificationStatus:
        """``nid``'s freshest status on this worker, if the caller may see it."""
        current = freshest(actions.stored_status(nid), accepted_statuses, nid)
        if current is None:
            raise not_found(f"no notification {nid!r} (yet)")
        if not principal.is_admin and current.tenant != principal.tenant:
            raise forbidden(f"notification {nid!r} is another tenant's")
        return current

    async def other_lane(self, lane: str, nid: str, request: Request) -> Response:
        """Ask the workers of ``lane`` (NOTIFY_LANE_URLS), which hold its status."""
        base = app.settings.lane_url(lane)
        if base is None or request.headers.get(LANE_FORWARDED):
            raise ApiError(
                503,
                "lane_not_served",
                f"notification {nid!r} is on the {lane} lane, which this worker "
                f"does not run and cannot reach: set NOTIFY_LANE_URLS "
                f"({lane}=URL of its workers)",
            )
        return await self.forward(base, request, marker=LANE_FORWARDED)


@route(
    "/v1/notifications/{notification_id}",
    # Not /v1/notifications/bulk: that is the campaigns' own resource.
    served="/v1/notifications/{notification_id:(?!bulk$)[^/]+}",
)
class NotificationStatusView(NotificationView):
    """One notification: per-channel status and decision trail."""

    @operation(
        operation_id="getNotification",
        summary="A notification's per-channel status and decision trail",
        status=200,
        answer=NotificationStatus,
        path=NOTIFICATION_ID,
        errors=(404,),
    )
    async def get(self, request: Request, notification_id: str) -> Response:
        """The status, answered by the worker holding it.

        The id (as POST returned it) names the notification's lane and its
        user's partition: the status lives there, in that lane's consumer
        group. 404 until the worker has recorded its first decision.
        """
        principal = self.principal(request)
        elsewhere = await self.at_holder(request, notification_id)
        if elsewhere is not None:
            return elsewhere
        return self.answer(self.visible(principal, notification_id))

    @operation(
        operation_id="cancelNotification",
        summary="Cancel what of a notification has not been sent yet",
        status=200,
        answer=NotificationCancelled,
        path=NOTIFICATION_ID,
        errors=(404, 409),
    )
    async def delete(self, request: Request, notification_id: str) -> Response:
        """Cancels the channels still waiting: scheduled or deferred, in an
        open digest, waiting for a retry, or queued with no send begun; a
        notification not decided yet is stopped whole. Its status and
        ``notify.events`` say ``cancelled``. Once a channel was sent (or its
        send began), 409 `already_sent` naming those channels in
        `error.channels`; the others are cancelled all the same. Nothing
        left to cancel is 409 `not_cancellable`. Cancelling twice is the
        same answer.
        """
        principal = self.principal(request)
        principal.require(auth.NOTIFY_SCOPE)
        elsewhere = await self.at_holder(request, notification_id)
        if elsewhere is not None:
            return elsewhere
        current = self.visible(principal, notification_id)
        decided = actions.cancel_here(current, app.clock.now())
        await flush_durably(app)
        if decided.refused:
            raise ApiError(
                409,
                "already_sent" if decided.sent else "not_cancellable",
                decided.message(),
                channels=dict(decided.sent.items() | decided.settled.items()),
            )
        return self.answer(
            NotificationCancelled(
                notification_id=notification_id,
                status="cancelled",
                cancelled=list(decided.cancelled),
            )
        )


def user_route(kind: str) -> str:
    """The path of one user's sub-resource."""
    return "/v1/users/{user_id}" + (f"/{kind}" if kind else "")


def state_link(operation_id: str, member: str, what: str) -> Link:
    """The link from a user-state write to reading what it stored."""
    return Link(
        operation_id,
        {
            "user_id": "$request.path.user_id",
            "tenant": f"$response.body#/{member}/tenant",
        },
        what,
    )


class UserStateView(ApiView):
    """One kind of user state: read from the table of the worker owning the
    user, replaced whole through its compacted topic."""

    table: Any
    written: Recent[Any]
    update: type[BaseModel]
    record: type[UserOwned]
    topic: str

    async def stored(
        self, request: Request, user_id: str
    ) -> tuple[Response | None, Any, str]:
        """The owner's answer if another worker owns the user; else the record
        (this worker's own latest write if its table lacks it yet) and tenant."""
        tenant = tenant_of(self.principal(request), request)
        ukey = user_key(tenant, user_id)
        forwarded = await self.routed(self.table.name, ukey, request)
        if forwarded is not None:
            return forwarded, None, tenant
        return None, freshest(self.table.get(ukey), self.written, ukey), tenant

    async def replace(self, request: Request, user_id: str) -> Any:
        """The owner's answer if another worker owns the user; else the record
        written (produced, and remembered until the table has it)."""
        tenant = tenant_of(self.principal(request), request)
        ukey = user_key(tenant, user_id)
        raw = await request.read()
        owner = await self.forward_to_owner(self.table.name, ukey, request, raw)
        if owner is not None:
            return owner
        update = decode(self.update, raw)
        record = self.record(
            **dict(update), user_id=user_id, tenant=tenant, updated_at=app.clock.now()
        )
        await produce(getattr(app.topology, self.topic), ukey, record)
        self.written.remember(ukey, record)
        return record


@route(user_route("preferences"))
class PreferencesView(UserStateView):
    """A user's preferences."""

    table = preferences
    written = written_preferences
    update = PreferencesUpdate
    record = Preferences
    topic = "preferences"

    @operation(
        operation_id="getPreferences",
        summary="A user's preferences (defaults if never set)",
        status=200,
        answer=Preferences,
        path=USER_ID,
        query=TenantQuery,
    )
    async def get(self, request: Request, user_id: str) -> Response:
        """The stored preferences (defaults if none were ever set)."""
        forwarded, current, tenant = await self.stored(request, user_id)
        if forwarded is not None:
            return forwarded
        return self.answer(current or Preferences(user_id=user_id, tenant=tenant))

    @operation(
        operation_id="putPreferences",
        summary="Replace a user's preferences (applied asynchronously)",
        status=202,
        answer=PreferencesAccepted,
        body=PreferencesUpdate,
        path=USER_ID,
        query=TenantQuery,
        links={
            "preferences": state_link(
                "getPreferences", "preferences", "The preferences as now stored."
            )
        },
    )
    async def put(self, request: Request, user_id: str) -> Response:
        """Replace the preferences whole; applied once the worker reads the update."""
        written = await self.replace(request, user_id)
        if not isinstance(written, Preferences):
            return written
        return self.answer(
            PreferencesAccepted(status="accepted", preferences=written), status=202
        )


@route(user_route(""))
class ProfileView(UserStateView):
    """A user's profile."""

    table = profiles
    written = written_profiles
    update = ProfileUpdate
    record = UserProfile
    topic = "profiles"

    @operation(
        operation_id="getProfile",
        summary="A user's profile",
        status=200,
        answer=UserProfile,
        path=USER_ID,
        query=TenantQuery,
        errors=(404,),
    )
    async def get(self, request: Request, user_id: str) -> Response:
        """The stored profile, 404 if none (yet)."""
        forwarded, current, _ = await self.stored(request, user_id)
        if forwarded is not None:
            return forwarded
        if current is None:
            raise not_found(f"no profile for user {user_id!r}")
        return self.answer(current)

    @operation(
        operation_id="putProfile",
        summary="Replace a user's profile (applied asynchronously)",
        status=202,
        answer=ProfileAccepted,
        body=ProfileUpdate,
        path=USER_ID,
        query=TenantQuery,
        links={
            "profile": state_link("getProfile", "profile", "The profile as now stored.")
        },
    )
    async def put(self, request: Request, user_id: str) -> Response:
        """Replace the profile whole."""
        written = await self.replace(request, user_id)
        if not isinstance(written, UserProfile):
            return written
        return self.answer(
            ProfileAccepted(status="accepted", profile=written), status=202
        )


async def produce_device(device: DeviceToken) -> None:
    """Devices are keyed per token (compaction keeps each) but partitioned by user."""
    ukey = user_key(device.tenant, device.user_id)
    topic = app.topology.devices
    partition = partition_for(ukey.encode(), app.settings.topic_partitions)
    await produce(topic, f"{ukey}#{device.token}", device, partition)


@route(user_route("devices"))
class DevicesView(ApiView):
    """Register a user's push tokens."""

    @operation(
        operation_id="registerDevice",
        summary="Register or refresh a push token",
        status=202,
        answer=DeviceAccepted,
        body=DeviceRegistration,
        path=USER_ID,
        query=TenantQuery,
        links={
            "remove": Link(
                "removeDevice",
                {
                    "user_id": "$request.path.user_id",
                    "token": "$response.body#/device/token",
                    "platform": "$response.body#/device/platform",
                    "tenant": "$response.body#/device/tenant",
                },
                "Deactivate the token just registered.",
            )
        },
    )
    async def post(self, request: Request, user_id: str) -> Response:
        """Register or refresh one token."""
        tenant = tenant_of(self.principal(request), request)
        registration = await self.parse(request, DeviceRegistration)
        device = DeviceToken(
            **dict(registration),
            user_id=user_id,
            tenant=tenant,
            updated_at=app.clock.now(),
        )
        await produce_device(device)
        return self.answer(DeviceAccepted(status="accepted", device=device), status=202)


@route(user_route("devices") + "/{token}")
class DeviceView(ApiView):
    """Remove one push token."""

    @operation(
        operation_id="removeDevice",
        summary="Deactivate a push token",
        status=202,
        answer=DeviceAccepted,
        path={
            **USER_ID,
            "token": Annotated[PushToken, StringConstraints(pattern=SEGMENT_PATTERN)],
        },
        query=DeviceQuery,
    )
    async def delete(self, request: Request, user_id: str, token: str) -> Response:
        """Deactivate the token: it receives no further pushes."""
        query = self.query(request, DeviceQuery)
        tenant = self.principal(request).tenant_for(query.tenant)
        device = DeviceToken(
            token=token,
            platform=query.platform,
            active=False,
            user_id=user_id,
            tenant=tenant,
            updated_at=app.clock.now(),
        )
        await produce_device(device)
        return self.answer(DeviceAccepted(status="accepted", device=device), status=202)


@route("/v1/tenants/{tenant}/limits")
class TenantLimitsView(ApiView):
    """A tenant's throttle settings (the tenant's own key, or an admin key)."""

    @operation(
        operation_id="getTenantLimits",
        summary="A tenant's throttle settings (null: each type's own)",
        status=200,
        answer=TenantLimits,
        path={"tenant": PathSegment},
    )
    async def get(self, request: Request, tenant: str) -> Response:
        """The settings every worker applies to the tenant's notifications."""
        tenant = self.principal(request).tenant_for(tenant)
        current = freshest(tenant_limits.get(tenant), written_limits, tenant)
        return self.answer(current or TenantLimits(tenant=tenant))

    @operation(
        operation_id="putTenantLimits",
        summary="Replace a tenant's throttle settings (applied asynchronously)",
        status=202,
        answer=LimitsAccepted,
        body=LimitsUpdate,
        path={"tenant": PathSegment},
        links={
            "limits": Link(
                "getTenantLimits",
                {"tenant": "$request.path.tenant"},
                "The settings as now stored.",
            )
        },
    )
    async def put(self, request: Request, tenant: str) -> Response:
        """Replace the settings whole: caps, over_cap and rate (null: the types')."""
        tenant = self.principal(request).tenant_for(tenant)
        update = await self.parse(request, LimitsUpdate)
        limits = TenantLimits(**dict(update), tenant=tenant, updated_at=app.clock.now())
        await produce(app.topology.tenant_limits, tenant, limits)
        written_limits.remember(tenant, limits)
        return self.answer(LimitsAccepted(status="accepted", limits=limits), status=202)


@route("/v1/schemas/{name}")
class SchemaView(ApiView):
    """The published JSON Schemas."""

    @operation(
        operation_id="getSchema",
        summary="One published JSON Schema (draft 2020-12)",
        status=200,
        media={JSON_SCHEMA: "The JSON Schema."},
        path={"name": PathSegment},
        errors=(404,),
    )
    async def get(self, request: Request, name: str) -> Response:
        """One schema by name (with or without ``.json``)."""
        self.principal(request)
        record = jsonschema.PUBLISHED.get(name.removesuffix(".json"))
        if record is None:
            raise not_found(f"no schema {name!r}; see /v1/schemas")
        return self.bytes(
            orjson.dumps(jsonschema.schema_for(record)), content_type=JSON_SCHEMA
        )


@route("/v1/schemas")
class SchemaIndex(ApiView):
    """The list of published JSON Schemas."""

    @operation(
        operation_id="listSchemas",
        summary="The published JSON Schemas, name → path",
        status=200,
        answer=SchemaList,
    )
    async def get(self, request: Request) -> Response:
        """Names and paths of every published schema."""
        self.principal(request)
        return self.answer(
            SchemaList(
                schemas={
                    name: f"/v1/schemas/{name}.json"
                    for name in sorted(jsonschema.PUBLISHED)
                }
            )
        )


@route("/v1/admin/keys")
class ApiKeysView(ApiView):
    """Tenant API keys (admin scope)."""

    @operation(
        operation_id="createKey",
        summary="Create a tenant API key (admin scope)",
        status=201,
        answer=KeyCreated,
        body=KeyRequest,
        links={
            "revoke": Link(
                "revokeKey",
                {"key_id": "$response.body#/key_id"},
                "Revoke the key just created.",
            )
        },
    )
    async def post(self, request: Request) -> Response:
        """Create a key for a tenant; its secret is shown in this answer only."""
        self.principal(request).require(auth.ADMIN_SCOPE)
        wanted = await self.parse(request, KeyRequest)
        plaintext, record = auth.new_key(
            wanted.tenant, list(wanted.scopes), app.clock.now()
        )
        await produce(app.topology.api_keys, record.key_id, record)
        created_keys.remember(record.key_id, record)
        created = KeyCreated(
            key_id=record.key_id,
            tenant=record.tenant,
            scopes=record.scopes,
            api_key=plaintext,
        )
        return self.answer(created, status=201)

    @operation(
        operation_id="listKeys",
        summary="List API keys (admin scope; secrets never shown)",
        status=200,
        answer=KeyList,
        query=TenantQuery,
    )
    async def get(self, request: Request) -> Response:
        """Every key (never its secret), optionally of one ``?tenant=``."""
        self.principal(request).require(auth.ADMIN_SCOPE)
        tenant = self.query(request, TenantQuery).tenant
        keys = [
            KeyInfo(**key.model_dump(exclude={"secret_sha256"}))
            for key in api_keys.values()
            if tenant is None or key.tenant == tenant
        ]
        return self.answer(KeyList(keys=sorted(keys, key=lambda k: k.key_id)))


@route("/v1/admin/keys/{key_id}")
class ApiKeyView(ApiView):
    """Revoke one key (admin scope)."""

    @operation(
        operation_id="revokeKey",
        summary="Revoke an API key (admin scope)",
        status=200,
        answer=KeyRevoked,
        path={"key_id": PathSegment},
        errors=(404,),
    )
    async def delete(self, request: Request, key_id: str) -> Response:
        """Mark the key revoked on every worker."""
        self.principal(request).require(auth.ADMIN_SCOPE)
        record = freshest(api_keys.get(key_id), created_keys, key_id)
        if record is None or record.revoked:
            raise not_found(f"no key {key_id!r}")
        revoked = record.model_copy(update={"revoked": True})
        await produce(app.topology.api_keys, key_id, revoked)
        created_keys.forget(key_id)
        return self.answer(KeyRevoked(key_id=key_id, revoked=True))


@route("/openapi.json")
class OpenApiView(View):
    """The OpenAPI 3.1 document of this API (no key needed)."""

    @operation(
        operation_id="getOpenApi",
        summary="This document",
        status=200,
        media={JSON: "OpenAPI 3.1."},
        public=True,
    )
    async def get(self, request: Request) -> Response:
        """The document, generated from the records and the routes."""
        return self.json(openapi_document())
