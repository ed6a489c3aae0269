"""The v1 HTTP API: notifications, user state, schemas, API keys, OpenAPI."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import orjson
from faust.exceptions import SameNode
from faust.web import Request, Response, View
from faust.web.exceptions import ServiceUnavailable
from yarl import URL

from agents.ingest import body_hash, lane_for
from pipeline.api import auth
from pipeline.api.accepted import accepted_keys
from pipeline.api.errors import ApiError, forbidden, not_found
from pipeline.api.openapi import openapi_document
from pipeline.app import app
from pipeline.errors import InvalidMessage
from pipeline.ids import notification_id, parse_notification_id
from pipeline.partitioning import partition_for
from pipeline.topology import user_key
from pipeline.web import recovered
from schemas import jsonschema
from schemas.records import NotificationRequest, Preferences
from schemas.requests import validate_request
from schemas.updates import validate_device, validate_preferences, validate_profile
from tables.api_keys import api_keys
from tables.idempotency import idempotency, live_entry, seen_key
from tables.preferences import preferences
from tables.profiles import profiles
from tables.status import status

log = logging.getLogger(__name__)

FORWARDED = "X-Notify-Forwarded"
#: Set on a request sent to another lane's workers, so it is never sent on again.
LANE_FORWARDED = "X-Notify-Lane-Forwarded"


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
        """Run the handler; ApiError and invalid bodies become JSON errors."""
        try:
            if not recovered(app) or app.should_stop:
                raise not_ready()
            return await super().dispatch(request)
        except ApiError as exc:
            return self.json(exc.body(), status=exc.status, headers=exc.headers)
        except InvalidMessage as exc:
            error = ApiError(422, exc.code, exc.reason, field=exc.field)
            return self.json(error.body(), status=422)
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

    def principal(self, request: Request) -> auth.Principal:
        """The caller, authenticated by its bearer key (401 otherwise)."""
        token = auth.bearer_token(request.headers.get("Authorization"))
        return auth.authenticate(token, app.settings, api_keys.get)

    async def body(self, request: Request) -> Any:
        """The request's JSON body, or 400 naming the problem."""
        raw = await request.read()
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(
                400, "invalid_json", f"body is not valid JSON: {exc}"
            ) from None

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

    async def routed(self, table: str, key: str, request: Request) -> Response | None:
        """The owner's answer if another worker holds ``key``; None if we do."""
        if request.headers.get(FORWARDED):
            return None  # already forwarded once: answer here, never loop
        try:
            return await app.router.route_req(table, key, self.web, request)
        except SameNode:
            return None


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


def tenant_of(principal: auth.Principal, request: Request) -> str:
    """The tenant a call acts for: the key's, or an admin's ``?tenant=``."""
    return principal.tenant_for(request.query.get("tenant"))


async def produce(
    topic: Any, key: str, value: Any, partition: int | None = None
) -> None:
    """Send and wait for the broker's acknowledgement: 202 means durable."""
    pending = await topic.send(key=key, value=value, partition=partition)
    await pending


@app.page("/v1/notifications")
class Notifications(ApiView):
    """Accept notifications."""

    async def post(self, request: Request) -> Response:
        """202 with the notification id; the same key again changes nothing."""
        principal = self.principal(request)
        principal.require(auth.NOTIFY_SCOPE)
        raw = await request.read()  # kept as is to forward to the owning worker
        body = await self.body(request)
        if isinstance(body, dict):
            body = {**body, "tenant": principal.tenant_for(body.get("tenant"))}
        parsed = validate_request(body)
        lane = lane_for(parsed.priority)
        ukey = user_key(parsed.tenant, parsed.recipient.user_id)
        nid = notification_id(
            parsed.tenant, parsed.idempotency_key, parsed.recipient.user_id, lane
        )
        table_key, digest = self.table_key(parsed), body_hash(parsed)
        if lane in app.settings.worker_lanes:
            owner = await self.forward_to_owner(ukey, request, raw)
            if owner is not None:
                return owner
            replay = self.seen_before(parsed, table_key, digest)
            if replay:
                return self.json(
                    {"notification_id": nid, "status": "duplicate"},
                    status=202,
                    headers={"Idempotent-Replayed": "true"},
                )
            # Held before the produce, so a retry racing this one is caught.
            accepted_keys.remember(table_key, digest)
        try:
            # Keyed tenant/user_id with Kafka's default partitioner: on the
            # user's partition, so ingest decides it in place (no
            # notify.accepted hop).
            await produce(app.topology.requests[lane], ukey, orjson.dumps(body))
        except BaseException:
            accepted_keys.forget(table_key)
            raise
        return self.json({"notification_id": nid, "status": "accepted"}, status=202)

    @staticmethod
    def table_key(parsed: NotificationRequest) -> str:
        """The idempotency table's key of ``parsed``'s idempotency key."""
        return seen_key(parsed.tenant, parsed.recipient.user_id, parsed.idempotency_key)

    async def forward_to_owner(
        self, ukey: str, request: Request, raw: bytes
    ) -> Response | None:
        """Let the worker that owns the user's idempotency entries answer."""
        if request.headers.get(FORWARDED):
            return None
        try:
            owner = app.router.key_store(idempotency.name, ukey)
        except KeyError:
            raise ServiceUnavailable() from None
        if is_this_worker(owner):
            return None
        return await self.forward(owner, request, raw)

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


@app.page("/v1/notifications/{notification_id}")
class NotificationStatusView(ApiView):
    """One notification: per-channel status and decision trail."""

    async def get(self, request: Request, notification_id: str) -> Response:
        """The status, answered by the worker holding it.

        The id names the notification's lane and its user's partition: the
        status lives there, in that lane's consumer group (see pipeline.status).
        """
        principal = self.principal(request)
        ref = parse_notification_id(notification_id)
        if ref is None:
            raise not_found(f"{notification_id!r} is not a notification id")
        if ref.lane not in app.settings.worker_lanes:
            return await self.other_lane(ref.lane, notification_id, request)
        if not request.headers.get(FORWARDED):
            partition = ref.partition(app.settings.topic_partitions)
            owner = partition_owner(status.name, partition)
            if not is_this_worker(owner):
                return await self.forward(owner, request)
        current = status.get(notification_id)
        if current is None:
            raise not_found(f"no notification {notification_id!r} (yet)")
        if not principal.is_admin and current.tenant != principal.tenant:
            raise forbidden(f"notification {notification_id!r} is another tenant's")
        return self.json(current.asdict())

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


def user_route(kind: str) -> str:
    """The path of one user's sub-resource."""
    return "/v1/users/{user_id}" + (f"/{kind}" if kind else "")


@app.page(user_route("preferences"))
class PreferencesView(ApiView):
    """A user's preferences."""

    async def get(self, request: Request, user_id: str) -> Response:
        """The stored preferences (defaults if none were ever set)."""
        tenant = tenant_of(self.principal(request), request)
        ukey = user_key(tenant, user_id)
        forwarded = await self.routed(preferences.name, ukey, request)
        if forwarded is not None:
            return forwarded
        current = preferences.get(ukey)
        if current is None:
            current = Preferences(user_id=user_id, tenant=tenant)
        return self.json(current.asdict())

    async def put(self, request: Request, user_id: str) -> Response:
        """Replace the preferences; applied once the worker reads the update."""
        tenant = tenant_of(self.principal(request), request)
        prefs = validate_preferences(
            await self.body(request),
            tenant=tenant,
            user_id=user_id,
            now=app.clock.now(),
        )
        await produce(app.topology.preferences, user_key(tenant, user_id), prefs)
        return self.json(
            {"status": "accepted", "preferences": prefs.asdict()}, status=202
        )


@app.page(user_route(""))
class ProfileView(ApiView):
    """A user's profile."""

    async def get(self, request: Request, user_id: str) -> Response:
        """The stored profile, 404 if none."""
        tenant = tenant_of(self.principal(request), request)
        ukey = user_key(tenant, user_id)
        forwarded = await self.routed(profiles.name, ukey, request)
        if forwarded is not None:
            return forwarded
        current = profiles.get(ukey)
        if current is None:
            raise not_found(f"no profile for user {user_id!r}")
        return self.json(current.asdict())

    async def put(self, request: Request, user_id: str) -> Response:
        """Replace the profile."""
        tenant = tenant_of(self.principal(request), request)
        profile = validate_profile(
            await self.body(request),
            tenant=tenant,
            user_id=user_id,
            now=app.clock.now(),
        )
        await produce(app.topology.profiles, user_key(tenant, user_id), profile)
        return self.json(
            {"status": "accepted", "profile": profile.asdict()}, status=202
        )


async def produce_device(device: Any) -> None:
    """Devices are keyed per token (compaction keeps each) but partitioned by user."""
    ukey = user_key(device.tenant, device.user_id)
    topic = app.topology.devices
    partition = partition_for(ukey.encode(), app.settings.topic_partitions)
    await produce(topic, f"{ukey}#{device.token}", device, partition)


@app.page(user_route("devices"))
class DevicesView(ApiView):
    """Register a user's push tokens."""

    async def post(self, request: Request, user_id: str) -> Response:
        """Register or refresh one token."""
        tenant = tenant_of(self.principal(request), request)
        device = validate_device(
            await self.body(request),
            tenant=tenant,
            user_id=user_id,
            now=app.clock.now(),
        )
        await produce_device(device)
        return self.json({"status": "accepted", "device": device.asdict()}, status=202)


@app.page(user_route("devices") + "/{token}")
class DeviceView(ApiView):
    """Remove one push token."""

    async def delete(self, request: Request, user_id: str, token: str) -> Response:
        """Deactivate the token: it receives no further pushes."""
        tenant = tenant_of(self.principal(request), request)
        device = validate_device(
            {
                "token": token,
                "platform": request.query.get("platform", "fcm"),
                "active": False,
            },
            tenant=tenant,
            user_id=user_id,
            now=app.clock.now(),
        )
        await produce_device(device)
        return self.json({"status": "accepted", "device": device.asdict()}, status=202)


@app.page("/v1/schemas/{name}")
class SchemaView(ApiView):
    """The published JSON Schemas."""

    async def get(self, request: Request, name: str) -> Response:
        """One schema by name (with or without ``.json``)."""
        self.principal(request)
        record = jsonschema.PUBLISHED.get(name.removesuffix(".json"))
        if record is None:
            raise not_found(f"no schema {name!r}; see /v1/schemas")
        return self.json(jsonschema.schema_for(record))


@app.page("/v1/schemas")
class SchemaIndex(ApiView):
    """The list of published JSON Schemas."""

    async def get(self, request: Request) -> Response:
        """Names and paths of every published schema."""
        self.principal(request)
        return self.json(
            {name: f"/v1/schemas/{name}.json" for name in sorted(jsonschema.PUBLISHED)}
        )


@app.page("/v1/admin/keys")
class ApiKeysView(ApiView):
    """Tenant API keys (admin scope)."""

    async def post(self, request: Request) -> Response:
        """Create a key for a tenant; its secret is shown in this answer only."""
        self.principal(request).require(auth.ADMIN_SCOPE)
        body = await self.body(request)
        if not isinstance(body, Mapping):
            raise ApiError(422, "not_an_object", "the body must be a JSON object")
        tenant = body.get("tenant")
        if not isinstance(tenant, str) or not tenant.strip():
            raise ApiError(
                422, "required", "tenant: required non-empty string", field="tenant"
            )
        scopes = body.get("scopes", [auth.NOTIFY_SCOPE])
        if not isinstance(scopes, list) or not set(scopes) <= auth.SCOPES or not scopes:
            raise ApiError(
                422,
                "invalid_value",
                f"scopes: a non-empty subset of {sorted(auth.SCOPES)}",
                field="scopes",
            )
        plaintext, record = auth.new_key(tenant, scopes, app.clock.now())
        await produce(app.topology.api_keys, record.key_id, record)
        return self.json(
            {
                "key_id": record.key_id,
                "tenant": tenant,
                "scopes": record.scopes,
                "api_key": plaintext,
            },
            status=201,
        )

    async def get(self, request: Request) -> Response:
        """Every key (never its secret), optionally of one ``?tenant=``."""
        self.principal(request).require(auth.ADMIN_SCOPE)
        tenant = request.query.get("tenant")
        keys = [
            {k: v for k, v in key.asdict().items() if k != "secret_sha256"}
            for key in api_keys.values()
            if tenant is None or key.tenant == tenant
        ]
        return self.json({"keys": sorted(keys, key=lambda k: k["key_id"])})


@app.page("/v1/admin/keys/{key_id}")
class ApiKeyView(ApiView):
    """Revoke one key (admin scope)."""

    async def delete(self, request: Request, key_id: str) -> Response:
        """Mark the key revoked on every worker."""
        self.principal(request).require(auth.ADMIN_SCOPE)
        record = api_keys.get(key_id)
        if record is None:
            raise not_found(f"no key {key_id!r}")
        revoked = type(record)(**{**record.asdict(), "revoked": True})
        await produce(app.topology.api_keys, key_id, revoked)
        return self.json({"key_id": key_id, "revoked": True})


@app.page("/openapi.json")
class OpenApiView(View):
    """The OpenAPI 3 document of this API (no key needed)."""

    async def get(self, request: Request) -> Response:
        """The document."""
        return self.json(openapi_document())
