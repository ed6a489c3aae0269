"""FCM HTTP v1 on loopback: Google's OAuth2 token endpoint and ``messages:send``.

``POST /token`` takes the service-account grant (``grant_type`` jwt-bearer and
an RS256 ``assertion`` signed with the service account's key, ``iss`` = its
client_email, ``aud`` = this token URL, ``exp`` at most an hour after ``iat``)
and answers ``{"access_token", "expires_in", "token_type": "Bearer"}``, or
Google's ``{"error", "error_description"}``. A token whose ``scope`` lacks
firebase.messaging is issued, as Google does, and then refused by send with
403 PERMISSION_DENIED.

``POST /v1/projects/{project_id}/messages:send`` wants a live bearer token this
emulator issued (else 401 UNAUTHENTICATED) and a body ``{"message": {...}}``
with exactly one of token/topic/condition, only fields the v1 API knows,
string data values, an AndroidMessagePriority, a Duration ``ttl`` and at most
4096 bytes of data plus notification text; it answers ``{"name":
"projects/<p>/messages/<id>"}`` or the v1 error shape (``google.rpc.BadRequest``
field violations for a malformed request, ``FcmError`` with an ``errorCode``
otherwise).

Fault names (``Faults.error``, ``Faults.fail_targets`` by registration token):

- ``UNREGISTERED`` 404 NOT_FOUND
- ``INVALID_ARGUMENT`` 400 (the invalid registration token answer)
- ``SENDER_ID_MISMATCH`` 403 PERMISSION_DENIED
- ``QUOTA_EXCEEDED`` 429 RESOURCE_EXHAUSTED with Retry-After = ``Faults.retry_after``
- ``UNAVAILABLE`` 503, ``INTERNAL`` 500
- ``THIRD_PARTY_AUTH_ERROR`` 401 UNAUTHENTICATED
- ``timeout``: hold the call ``Faults.timeout_hold`` seconds, then 503

Faults apply to requests that pass validation. A delivered call is recorded
with message id = ``message.data["message_id"]`` and target = the token.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pipeline.emulators.faults import CallLog, Faults

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
MAX_PAYLOAD_BYTES = 4096
#: Google's assertions may live at most an hour.
MAX_ASSERTION_LIFETIME = timedelta(hours=1)
_CLOCK_SKEW = timedelta(minutes=5)

#: Fault name -> (HTTP status, google.rpc status, message), as FCM answers them.
FAULTS: dict[str, tuple[int, str, str]] = {
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "INVALID_ARGUMENT": (
        400,
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
    ),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "QUOTA_EXCEEDED": (
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for quota metric 'Send messages'.",
    ),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
    "THIRD_PARTY_AUTH_ERROR": (
        401,
        "UNAUTHENTICATED",
        "Auth error from APNS or Web Push Service",
    ),
}
FAULT_NAMES = frozenset({*FAULTS, "timeout"})

# Fields of the v1 Message the emulator accepts; JSON names may be camelCase
# or snake_case, as the proto JSON mapping allows.
_MESSAGE_FIELDS = frozenset(
    {
        "name",
        "data",
        "notification",
        "android",
        "webpush",
        "apns",
        "fcm_options",
        "fcmOptions",
        "token",
        "topic",
        "condition",
    }
)
_NOTIFICATION_FIELDS = frozenset({"title", "body", "image"})
_ANDROID_FIELDS = frozenset(
    {
        "collapse_key",
        "collapseKey",
        "priority",
        "ttl",
        "restricted_package_name",
        "restrictedPackageName",
        "data",
        "notification",
        "fcm_options",
        "fcmOptions",
        "direct_boot_ok",
        "directBootOk",
    }
)
_ANDROID_PRIORITIES = frozenset({"NORMAL", "HIGH"})
_DURATION = re.compile(r"^\d{1,12}(\.\d{1,9})?s$")
_REGISTRATION_TOKEN = re.compile(r"^[A-Za-z0-9_:\-]{32,4096}$")
_PROJECT_PATH = re.compile(r"^/v1/projects/(?P<project>[^/]+)/messages:send$")


@dataclass(frozen=True)
class ServiceAccountKey:
    """A Google service account's key, as the JSON file Google hands out holds it."""

    project_id: str
    client_email: str
    private_key_id: str
    private_key_pem: str
    public_key_pem: str

    @classmethod
    def generate(cls, project_id: str = "notify-dev") -> ServiceAccountKey:
        """A fresh 2048-bit RSA service-account key for ``project_id``."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(
            project_id=project_id,
            client_email=f"firebase-adminsdk@{project_id}.iam.gserviceaccount.com",
            private_key_id=secrets.token_hex(20),
            private_key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode("ascii"),
            public_key_pem=key.public_key()
            .public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
            .decode("ascii"),
        )

    def info(self, token_uri: str) -> dict[str, str]:
        """The service-account JSON document, with its token URL at ``token_uri``."""
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": self.private_key_pem,
            "client_email": self.client_email,
            "token_uri": token_uri,
        }

    def write(self, path: Path, token_uri: str) -> Path:
        """Write the service-account JSON to ``path`` (owner-readable only)."""
        path.touch(mode=0o600)
        path.write_text(json.dumps(self.info(token_uri), indent=2))
        return path


@dataclass
class _AccessToken:
    """An access token this emulator issued: when it dies, what it may do."""

    expires_at: datetime
    scopes: frozenset[str]


class FcmEmulator:
    """FCM HTTP v1 and its OAuth2 token endpoint for one project and service account."""

    name = "fcm"

    def __init__(
        self,
        *,
        project_id: str,
        client_email: str,
        public_key_pem: str,
        private_key_id: str | None = None,
        token_lifetime: timedelta = timedelta(hours=1),
        clock: Callable[[], datetime] | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.faults = faults or Faults()
        self.calls = CallLog()
        self.url = ""
        self.project_id = project_id
        self.client_email = client_email
        self.tokens_issued = 0
        self._public_key = serialization.load_pem_public_key(public_key_pem.encode())
        self._private_key_id = private_key_id
        self._token_lifetime = token_lifetime
        self._clock = clock or (lambda: datetime.now(UTC))
        self._tokens: dict[str, _AccessToken] = {}
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @classmethod
    def for_key(cls, key: ServiceAccountKey, **kwargs: Any) -> FcmEmulator:
        """An emulator that trusts ``key``'s service account for its project."""
        return cls(
            project_id=key.project_id,
            client_email=key.client_email,
            public_key_pem=key.public_key_pem,
            private_key_id=key.private_key_id,
            **kwargs,
        )

    @property
    def token_uri(self) -> str:
        """The OAuth2 token URL to put in the service-account JSON."""
        return f"{self.url}/token"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve plain HTTP on ``host:port`` (port 0: the OS picks)."""
        if self._runner is not None:
            raise RuntimeError("the FCM emulator is already running")
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._stopping.clear()
        self._runner = runner
        bound_port = runner.addresses[0][1]
        self.url = f"http://{host}:{bound_port}"

    async def stop(self) -> None:
        """Release held calls and stop serving."""
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        self._stopping.set()
        await runner.cleanup()
        self._tokens.clear()

    def revoke_tokens(self) -> None:
        """Forget every access token issued, as if Google had revoked them."""
        self._tokens.clear()

    def pick_fault(self, token: str) -> str | None:
        """The fault this call gets; an unknown fault name is a ValueError."""
        fault = self.faults.pick(token)
        if fault is not None and fault not in FAULT_NAMES:
            raise ValueError(
                f"unknown FCM fault {fault!r}; known: {', '.join(sorted(FAULT_NAMES))}"
            )
        return fault

    async def _token(self, request: web.Request) -> web.Response:
        """Google's OAuth2 token endpoint, service-account (JWT bearer) grant only."""
        form = await request.post()
        grant_type = form.get("grant_type")
        if grant_type != JWT_BEARER_GRANT:
            shown = grant_type if isinstance(grant_type, str) else ""
            return _oauth_error(
                "unsupported_grant_type", f"Invalid grant_type: {shown}"
            )
        assertion = form.get("assertion")
        if not isinstance(assertion, str) or not assertion:
            return _oauth_error(
                "invalid_request", "Missing required parameter: assertion"
            )
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                self._public_key,  # type: ignore[arg-type]
                algorithms=["RS256"],
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_aud": False,
                    "require": ["iss", "aud", "iat", "exp"],
                },
            )
        except jwt.PyJWTError:
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        if self._private_key_id and header.get("kid") not in (
            None,
            self._private_key_id,
        ):
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        if claims["iss"] != self.client_email:
            return _oauth_error("invalid_grant", "Invalid email or User ID")
        if claims["aud"] != self.token_uri:
            return _oauth_error(
                "invalid_grant",
                "Invalid JWT: Failed audience check. The expected audience is "
                f"{self.token_uri}.",
            )
        now = self._clock()
        if not _short_lived(claims["iat"], claims["exp"], now):
            return _oauth_error(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in "
                "a reasonable timeframe. Check your iat and exp values in the JWT "
                "claim.",
            )
        scopes = frozenset(str(claims.get("scope", "")).split())
        if not scopes:
            return _oauth_error(
                "invalid_scope", "Invalid OAuth scope or ID token audience provided."
            )
        access_token = "ya29." + secrets.token_urlsafe(48)
        self._tokens[access_token] = _AccessToken(now + self._token_lifetime, scopes)
        self.tokens_issued += 1
        return _json(
            200,
            {
                # Google rounds down by a second, so a client that trusts the
                # number never holds a token past its life.
                "access_token": access_token,
                "expires_in": int(self._token_lifetime.total_seconds()) - 1,
                "token_type": "Bearer",
            },
        )

    async def _send(self, request: web.Request) -> web.Response:
        """``projects.messages.send``."""
        self.calls.attempted()
        await self.faults.delay()
        refusal = self._check_auth(request)
        if refusal is not None:
            return refusal
        try:
            document = orjson.loads(await request.read())
        except orjson.JSONDecodeError as error:
            return _bad_request(f"Invalid JSON payload received. {error}", "")
        invalid = _check_request(document)
        if invalid is not None:
            return invalid
        message = document["message"]
        target = (
            message.get("token") or message.get("topic") or message.get("condition")
        )
        if document.get("validate_only") or document.get("validateOnly"):
            return _json(
                200, {"name": f"projects/{self.project_id}/messages/fake_message_id"}
            )

        fault = self.pick_fault(target)
        if fault == "timeout":
            try:
                await asyncio.wait_for(self._stopping.wait(), self.faults.timeout_hold)
            except TimeoutError:
                pass
            return _fcm_error("UNAVAILABLE")
        if fault is not None:
            retry_after = self.faults.retry_after if fault == "QUOTA_EXCEEDED" else None
            return _fcm_error(fault, retry_after=retry_after)

        sent_id = f"0:{int(self._clock().timestamp() * 1e6)}%{secrets.token_hex(8)}"
        data = message.get("data") or {}
        self.calls.accept(data.get("message_id", sent_id), target, message)
        return _json(200, {"name": f"projects/{self.project_id}/messages/{sent_id}"})

    def _check_auth(self, request: web.Request) -> web.Response | None:
        """401/403 unless the call carries a live token for this project."""
        project = _PROJECT_PATH.match(request.path)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _rpc_error(
                401,
                "UNAUTHENTICATED",
                "Request is missing required authentication credential. Expected "
                "OAuth 2 access token, login cookie or other valid authentication "
                "credential.",
            )
        issued = self._tokens.get(token)
        if issued is None or issued.expires_at <= self._clock():
            return _rpc_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 "
                "access token, login cookie or other valid authentication "
                "credential.",
            )
        if FCM_SCOPE not in issued.scopes:
            return _rpc_error(
                403,
                "PERMISSION_DENIED",
                "Request had insufficient authentication scopes.",
            )
        if project is None or project["project"] != self.project_id:
            requested = project["project"] if project else ""
            return _rpc_error(
                403,
                "PERMISSION_DENIED",
                "Permission 'cloudmessaging.messages.create' denied on resource "
                f"'//cloudresourcemanager.googleapis.com/projects/{requested}' "
                "(or it may not exist).",
            )
        return None


def _short_lived(iat: Any, exp: Any, now: datetime) -> bool:
    """Google's rule: exp at most an hour after iat, and ``now`` inside the window."""
    if not isinstance(iat, int) or not isinstance(exp, int):
        return False
    issued = datetime.fromtimestamp(iat, UTC)
    expires = datetime.fromtimestamp(exp, UTC)
    return (
        issued < expires
        and expires - issued <= MAX_ASSERTION_LIFETIME
        and issued - _CLOCK_SKEW <= now < expires
    )


def _check_request(document: Any) -> web.Response | None:
    """400 for a request body the v1 API would not accept, else None."""
    if not isinstance(document, dict) or not isinstance(document.get("message"), dict):
        return _bad_request("Request contains an invalid argument.", "message")
    unknown = set(document) - {"message", "validate_only", "validateOnly"}
    if unknown:
        return _unknown_field(sorted(unknown)[0], "")
    message: dict[str, Any] = document["message"]
    for fields, where, known in (
        (message, "message", _MESSAGE_FIELDS),
        (message.get("notification"), "message.notification", _NOTIFICATION_FIELDS),
        (message.get("android"), "message.android", _ANDROID_FIELDS),
    ):
        if fields is None:
            continue
        if not isinstance(fields, dict):
            return _bad_request(f"Invalid value at '{where}'", where)
        unknown = set(fields) - known
        if unknown:
            return _unknown_field(sorted(unknown)[0], where)
    targets = [name for name in ("token", "topic", "condition") if message.get(name)]
    if len(targets) != 1:
        return _bad_request(
            "Exactly one of message.token, message.topic or message.condition must "
            "be set.",
            "message",
        )
    for where, data in (
        ("message.data", message.get("data")),
        ("message.android.data", (message.get("android") or {}).get("data")),
    ):
        invalid = _check_data(where, data)
        if invalid is not None:
            return invalid
    android = message.get("android") or {}
    priority = android.get("priority")
    if priority is not None and priority not in _ANDROID_PRIORITIES:
        return _bad_request(
            "Invalid value at 'message.android.priority' "
            f"(type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), "
            f"{json.dumps(priority)}",
            "message.android.priority",
        )
    ttl = android.get("ttl")
    if ttl is not None and not (isinstance(ttl, str) and _DURATION.match(ttl)):
        return _bad_request(
            "Invalid value at 'message.android.ttl' "
            f"(type.googleapis.com/google.protobuf.Duration), {json.dumps(ttl)}",
            "message.android.ttl",
        )
    token = message.get("token")
    if token is not None and not (
        isinstance(token, str) and _REGISTRATION_TOKEN.match(token)
    ):
        return _fcm_error("INVALID_ARGUMENT")
    if _payload_bytes(message) > MAX_PAYLOAD_BYTES:
        status, rpc_status, _ = FAULTS["INVALID_ARGUMENT"]
        return _rpc_error(
            status,
            rpc_status,
            "Android message is too big",
            details=[{"@type": FCM_ERROR_TYPE, "errorCode": "INVALID_ARGUMENT"}],
        )
    return None


def _check_data(where: str, data: Any) -> web.Response | None:
    """400 unless ``data`` is a map of strings to strings, as the proto wants."""
    if data is None:
        return None
    if not isinstance(data, dict):
        return _bad_request(f"Invalid value at '{where}'", where)
    for index, value in enumerate(data.values()):
        if not isinstance(value, str):
            field = f"{where}[{index}].value"
            return _bad_request(
                f"Invalid value at '{field}' (TYPE_STRING), {json.dumps(value)}",
                field,
            )
    return None


def _payload_bytes(message: Mapping[str, Any]) -> int:
    """What FCM counts against its 4096 bytes: data keys and values, and text."""
    data = message.get("data") or {}
    notification = message.get("notification") or {}
    texts = [*data.keys(), *data.values(), *notification.values()]
    return sum(len(str(text).encode("utf-8")) for text in texts)


def _json(
    status: int, body: Any, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response."""
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def _oauth_error(error: str, description: str) -> web.Response:
    """Google's OAuth2 error answer."""
    status = 401 if error == "invalid_client" else 400
    return _json(status, {"error": error, "error_description": description})


def _rpc_error(
    status: int,
    rpc_status: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An error in the Google API shape FCM v1 answers with."""
    error: dict[str, Any] = {"code": status, "message": message, "status": rpc_status}
    if details:
        error["details"] = details
    return _json(status, {"error": error}, headers)


def _fcm_error(name: str, *, retry_after: int | None = None) -> web.Response:
    """The FCM error ``name`` with its FcmError detail."""
    status, rpc_status, message = FAULTS[name]
    return _rpc_error(
        status,
        rpc_status,
        message,
        details=[{"@type": FCM_ERROR_TYPE, "errorCode": name}],
        headers={"Retry-After": str(retry_after)} if retry_after is not None else None,
    )


def _bad_request(description: str, field: str) -> web.Response:
    """400 INVALID_ARGUMENT naming the offending field, as google.rpc.BadRequest."""
    return _rpc_error(
        400,
        "INVALID_ARGUMENT",
        description,
        details=[
            {
                "@type": BAD_REQUEST_TYPE,
                "fieldViolations": [{"field": field, "description": description}],
            }
        ],
    )


def _unknown_field(name: str, where: str) -> web.Response:
    """400 for a field the v1 API does not know (a client bug, never ignored)."""
    at = f" at '{where}'" if where else ""
    return _bad_request(
        f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.',
        where or name,
    )
