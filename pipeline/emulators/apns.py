"""APNs provider API on loopback: HTTP/2 over verified TLS, token auth, APNs errors.

``POST /3/device/<token>`` is checked the way APNs checks it and refused with
APNs's status and ``{"reason": ...}`` body: a provider JWT (ES256, ``kid`` = the
key id, ``iss`` = the team id, ``iat`` younger than one hour; a connection may
not switch to a new token more than once every 20 minutes), ``apns-topic`` =
the bundle id, ``apns-push-type`` alert|background (required here: a sender
that leaves it out is relying on a default), ``apns-priority`` 10|5|1 (10 for a
background push is BadPriority), ``apns-id`` a UUID, ``apns-expiration`` epoch
seconds, ``apns-collapse-id`` at most 64 bytes, a JSON body with an ``aps``
dictionary and at most 4096 bytes. APNs documents no reason for a body that is
not such JSON; this emulator answers it as 400 PayloadEmpty. A request not on
HTTP/2 gets 505: APNs speaks nothing else.

Fault names (``Faults.error``, ``Faults.fail_targets``), answered as APNs does:

- ``BadDeviceToken`` 400, ``DeviceTokenNotForTopic`` 400
- ``Unregistered`` 410 with ``timestamp`` (ms since the epoch)
- ``TooManyRequests`` 429 (APNs sends no Retry-After, so neither does this)
- ``InternalServerError`` 500, ``ServiceUnavailable`` 503
- ``timeout``: hold the call ``Faults.timeout_hold`` seconds, then 503
  ServiceUnavailable

Faults apply to requests that pass validation. A delivered call is recorded
with message id = ``apns-id`` and target = the device token.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import ssl
import string
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.typing import ASGIFramework
from hypercorn.utils import wrap_app

from pipeline.emulators.ca import server_ssl_context
from pipeline.emulators.faults import CallLog, Faults

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: Status of every APNs reason this emulator can answer.
APNS_STATUS: dict[str, int] = {
    "BadCollapseId": 400,
    "BadDeviceToken": 400,
    "BadExpirationDate": 400,
    "BadMessageId": 400,
    "BadPriority": 400,
    "DeviceTokenNotForTopic": 400,
    "DuplicateHeaders": 400,
    "InvalidPushType": 400,
    "MissingDeviceToken": 400,
    "MissingTopic": 400,
    "PayloadEmpty": 400,
    "ExpiredProviderToken": 403,
    "InvalidProviderToken": 403,
    "MissingProviderToken": 403,
    "BadPath": 404,
    "MethodNotAllowed": 405,
    "Unregistered": 410,
    "PayloadTooLarge": 413,
    "TooManyProviderTokenUpdates": 429,
    "TooManyRequests": 429,
    "InternalServerError": 500,
    "ServiceUnavailable": 503,
}

#: The fault names this emulator understands.
FAULT_NAMES = frozenset(
    {
        "BadDeviceToken",
        "DeviceTokenNotForTopic",
        "Unregistered",
        "TooManyRequests",
        "InternalServerError",
        "ServiceUnavailable",
        "timeout",
    }
)

MAX_PAYLOAD_BYTES = 4096
MAX_COLLAPSE_ID_BYTES = 64
#: APNs rejects provider tokens older than this.
TOKEN_MAX_AGE = timedelta(hours=1)
#: A connection may present a new provider token at most this often.
TOKEN_UPDATE_INTERVAL = timedelta(minutes=20)
#: How far in the future an ``iat`` may be before the token is refused.
_CLOCK_SKEW = timedelta(minutes=1)

#: How long stop() lets calls under way, then aborted connections, wind down.
_STOP_GRACE = 2.0

_PATH = re.compile(r"^/3/device/(?P<token>[^/]*)$")
_DEVICE_TOKEN = re.compile(r"^(?:[0-9a-fA-F]{2}){32,100}$")
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_PUSH_TYPES = frozenset({"alert", "background"})
_PRIORITIES = frozenset({"10", "5", "1"})
#: Headers APNs reads; each may appear once.
_SINGLE_HEADERS = frozenset(
    {
        "authorization",
        "apns-id",
        "apns-topic",
        "apns-push-type",
        "apns-priority",
        "apns-expiration",
        "apns-collapse-id",
    }
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProviderKey:
    """An APNs token-signing key as Apple hands it out: a P-256 key and its ids."""

    team_id: str
    key_id: str
    private_key_pem: str  # the contents of AuthKey_<key id>.p8
    public_key_pem: str

    @classmethod
    def generate(cls, team_id: str | None = None) -> ProviderKey:
        """A fresh EC P-256 signing key with a random 10-character key id."""
        key = ec.generate_private_key(ec.SECP256R1())
        private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")
        public_pem = (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
            .decode("ascii")
        )
        return cls(
            team_id=team_id or _apple_id(),
            key_id=_apple_id(),
            private_key_pem=private_pem,
            public_key_pem=public_pem,
        )


def _apple_id() -> str:
    """A 10-character id in the alphabet Apple uses for team and key ids."""
    alphabet = string.ascii_uppercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(10))


class _Refusal(Exception):
    """A request APNs would refuse with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _ClientGone(Exception):
    """The client left (or the emulator is stopping) while its call was held."""


class ApnsEmulator:
    """The APNs provider API on loopback, for one team, key and bundle id."""

    name = "apns"

    def __init__(
        self,
        *,
        public_key_pem: str,
        team_id: str,
        key_id: str,
        bundle_id: str,
        certfile: Path,
        keyfile: Path,
        clock: Callable[[], datetime] | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.faults = faults or Faults()
        self.calls = CallLog()
        self.url = ""
        self.team_id = team_id
        self.key_id = key_id
        self.bundle_id = bundle_id
        self._public_key = serialization.load_pem_public_key(public_key_pem.encode())
        self._certfile = certfile
        self._keyfile = keyfile
        self._clock = clock or (lambda: datetime.now(UTC))
        # Per connection: the provider token last accepted and when it was new.
        self._connection_tokens: dict[Any, tuple[str, datetime]] = {}
        self._stopping = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._config = Config()
        self._config.accesslog = None
        self._config.errorlog = log
        self._wrapped_app = wrap_app(
            cast("ASGIFramework", self._app),
            self._config.wsgi_max_body_size,
            mode="asgi",
        )
        self._worker = WorkerContext(None)
        self._connections: set[asyncio.StreamWriter] = set()
        self._connection_tasks: set[asyncio.Task[Any]] = set()
        self._calls: set[asyncio.Task[Any]] = set()

    @classmethod
    def for_key(
        cls,
        key: ProviderKey,
        bundle_id: str,
        certfile: Path,
        keyfile: Path,
        **kwargs: Any,
    ) -> ApnsEmulator:
        """An emulator that trusts ``key`` for its team."""
        return cls(
            public_key_pem=key.public_key_pem,
            team_id=key.team_id,
            key_id=key.key_id,
            bundle_id=bundle_id,
            certfile=certfile,
            keyfile=keyfile,
            **kwargs,
        )

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve HTTP/2 over TLS on ``host:port`` (port 0: the OS picks)."""
        if self._server is not None:
            raise RuntimeError("the APNs emulator is already running")
        self._stopping.clear()
        self._worker = WorkerContext(None)
        self._server = await asyncio.start_server(
            self._serve_connection,
            host,
            port,
            ssl=server_ssl_context(self._certfile, self._keyfile, alpn=("h2",)),
        )
        bound_port = self._server.sockets[0].getsockname()[1]
        self.url = f"https://{host}:{bound_port}"

    async def stop(self) -> None:
        """Release held calls, drop every connection and stop serving."""
        if self._server is None:
            return
        server, self._server = self._server, None
        self._stopping.set()
        server.close()
        # No more requests are read, and the calls under way give up once
        # _stopping is set: they end before the transports go, because a write
        # to an aborted TLS transport fails inside hypercorn and the connection
        # ends in a logged traceback.
        for writer in list(self._connections):
            if isinstance(writer.transport, asyncio.ReadTransport):
                writer.transport.pause_reading()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STOP_GRACE
        while self._calls and loop.time() < deadline:
            await asyncio.wait(set(self._calls), timeout=deadline - loop.time())
        # Only now: hypercorn resets a request that arrives once terminated is
        # set, then fails on the request's body. Until it is set, a closed
        # connection waits out its keep-alive timeout before it ends.
        await self._worker.terminated.set()
        # Abort rather than close: a graceful TLS shutdown waits for a client
        # that may never read again, and a stopped provider just goes away.
        for writer in list(self._connections):
            writer.transport.abort()
        await server.wait_closed()
        if self._connection_tasks:
            _, stuck = await asyncio.wait(self._connection_tasks, timeout=_STOP_GRACE)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        self._connection_tokens.clear()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Speak HTTP/2 on one accepted connection until it closes.

        hypercorn's per-connection server is driven from this accept loop, not
        from ``hypercorn.asyncio.serve``, so that ``stop`` can reach and drop
        every open connection at once.
        """
        task = asyncio.current_task()
        if task is not None:
            self._connection_tasks.add(task)
        self._connections.add(writer)
        try:
            await TCPServer(
                self._wrapped_app,
                asyncio.get_running_loop(),
                self._config,
                self._worker,
                {},
                reader,
                writer,
            )
        except (TimeoutError, ConnectionError, ssl.SSLError):
            # A client that went away without closing TLS, or that still sent
            # frames after its GOAWAY while hypercorn closed TLS in answer
            # (APPLICATION_DATA_AFTER_CLOSE_NOTIFY): nothing to answer.
            pass
        except asyncio.CancelledError:
            # Only stop() cancels a connection, as a last resort. Ended as
            # cancelled, the task would make Python 3.11's start_server log a
            # CancelledError traceback (CPython gh-113538).
            if not self._stopping.is_set():
                raise
        finally:
            self._connections.discard(writer)
            if task is not None:
                self._connection_tasks.discard(task)

    def pick_fault(self, token: str) -> str | None:
        """The fault this call gets; an unknown fault name is a ValueError."""
        fault = self.faults.pick(token)
        if fault is not None and fault not in FAULT_NAMES:
            raise ValueError(
                f"unknown APNs fault {fault!r}; known: {', '.join(sorted(FAULT_NAMES))}"
            )
        return fault

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI application hypercorn serves."""
        if scope["type"] != "http":
            return
        # hypercorn's handler task, which answers 500 for a call given up on:
        # stop() waits for it before the transports go.
        handler = asyncio.current_task()
        if handler is not None:
            self._calls.add(handler)
        try:
            await _unless(self._call(scope, receive, send), self._stopping.wait())
        finally:
            if handler is not None:
                self._calls.discard(handler)

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read, check and answer one call, unless its client leaves first."""
        body = await _read_body(receive)
        self.calls.attempted()
        if body is None or not await self._linger(self.faults.latency, receive):
            return
        if scope.get("http_version") != "2":
            await _reply(receive, send, 505, b"", {})
            return
        try:
            status, headers = await self._answer(scope, body, receive)
        except _ClientGone:
            return
        except _Refusal as refusal:
            status, headers = APNS_STATUS[refusal.reason], {}
            answer: dict[str, Any] = {"reason": refusal.reason}
            if refusal.reason == "Unregistered":
                answer["timestamp"] = int(self._clock().timestamp() * 1000)
            await _reply(receive, send, status, orjson.dumps(answer), headers)
            return
        await _reply(receive, send, status, b"", headers)

    async def _linger(self, seconds: float, receive: Receive) -> bool:
        """Wait ``seconds``; False when the client leaves first.

        A held call must not answer a client that has gone: hypercorn would
        wait forever to flush a response on a stream that no longer exists.
        (The emulator stopping cancels the whole call: see ``__call__``.)
        """
        if seconds <= 0:
            return True
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            done, _ = await asyncio.wait({gone}, timeout=seconds)
        finally:
            gone.cancel()
        return not done

    async def _answer(
        self, scope: Scope, body: bytes, receive: Receive
    ) -> tuple[int, dict[str, str]]:
        """Validate one request like APNs; 200 with headers, or raise _Refusal."""
        if scope["method"] != "POST":
            raise _Refusal("MethodNotAllowed")
        path = _PATH.match(scope["path"])
        if path is None:
            raise _Refusal("BadPath")
        token = path["token"]
        if not token:
            raise _Refusal("MissingDeviceToken")
        headers = _headers(scope)
        iat = self._check_provider_token(headers.get("authorization"), scope)
        push_type, apns_id = self._check_headers(headers)
        payload = _check_payload(body)
        if not _DEVICE_TOKEN.match(token):
            raise _Refusal("BadDeviceToken")

        fault = self.pick_fault(token)
        if fault == "timeout":
            if not await self._linger(self.faults.timeout_hold, receive):
                raise _ClientGone
            raise _Refusal("ServiceUnavailable")
        if fault is not None:
            raise _Refusal(fault)

        self.calls.accept(
            apns_id,
            token,
            {
                "headers": {k: v for k, v in headers.items() if k != "authorization"},
                "push_type": push_type,
                "payload": payload,
                "token_iat": iat,
            },
        )
        return 200, {"apns-id": apns_id, "apns-unique-id": str(uuid.uuid4())}

    def _check_provider_token(self, authorization: str | None, scope: Scope) -> int:
        """Verify the provider JWT; its ``iat`` if APNs would take it."""
        if not authorization:
            raise _Refusal("MissingProviderToken")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _Refusal("MissingProviderToken")
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                self._public_key,  # type: ignore[arg-type]
                algorithms=["ES256"],
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "require": ["iss", "iat"],
                },
            )
        except jwt.PyJWTError:
            raise _Refusal("InvalidProviderToken") from None
        iat = claims["iat"]
        if (
            header.get("kid") != self.key_id
            or claims["iss"] != self.team_id
            or not isinstance(iat, int)
        ):
            raise _Refusal("InvalidProviderToken")
        now = self._clock()
        issued = datetime.fromtimestamp(iat, UTC)
        if issued > now + _CLOCK_SKEW:
            raise _Refusal("InvalidProviderToken")
        if issued < now - TOKEN_MAX_AGE:
            raise _Refusal("ExpiredProviderToken")
        connection = scope.get("client")
        previous = self._connection_tokens.get(connection)
        if previous is None or previous[0] != token:
            if previous is not None and now - previous[1] < TOKEN_UPDATE_INTERVAL:
                raise _Refusal("TooManyProviderTokenUpdates")
            self._connection_tokens[connection] = (token, now)
        return iat

    def _check_headers(self, headers: Mapping[str, str]) -> tuple[str, str]:
        """Check the apns-* headers; the push type and the apns-id (made if absent)."""
        topic = headers.get("apns-topic")
        if not topic:
            raise _Refusal("MissingTopic")
        if topic != self.bundle_id:
            raise _Refusal("DeviceTokenNotForTopic")
        push_type = headers.get("apns-push-type", "")
        if push_type not in _PUSH_TYPES:
            raise _Refusal("InvalidPushType")
        priority = headers.get("apns-priority", "10")
        if priority not in _PRIORITIES or (
            push_type == "background" and priority == "10"
        ):
            raise _Refusal("BadPriority")
        apns_id = headers.get("apns-id")
        if apns_id is None:
            apns_id = str(uuid.uuid4())
        elif not _UUID.match(apns_id):
            raise _Refusal("BadMessageId")
        expiration = headers.get("apns-expiration")
        if expiration is not None and not (
            expiration.isascii() and expiration.isdigit()
        ):
            raise _Refusal("BadExpirationDate")
        collapse_id = headers.get("apns-collapse-id")
        if collapse_id is not None and (
            not collapse_id or len(collapse_id.encode("utf-8")) > MAX_COLLAPSE_ID_BYTES
        ):
            raise _Refusal("BadCollapseId")
        return push_type, apns_id.lower()


def _headers(scope: Scope) -> dict[str, str]:
    """Request headers by lower-case name; a repeated APNs header is refused."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        if name in headers and name in _SINGLE_HEADERS:
            raise _Refusal("DuplicateHeaders")
        headers[name] = raw_value.decode("utf-8", errors="replace")
    return headers


def _check_payload(body: bytes) -> dict[str, Any]:
    """The JSON payload, if APNs would take it."""
    if not body:
        raise _Refusal("PayloadEmpty")
    if len(body) > MAX_PAYLOAD_BYTES:
        raise _Refusal("PayloadTooLarge")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _Refusal("PayloadEmpty") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
        raise _Refusal("PayloadEmpty")
    return payload


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body; None if the client left before sending it all."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _reply(
    receive: Receive,
    send: Send,
    status: int,
    body: bytes,
    headers: Mapping[str, str],
) -> None:
    """Send one answer, unless the client leaves first.

    hypercorn flushes a stream's last bytes from a task of its connection
    that ends with the connection: an answer sent after its client left
    waits for that flush for ever, and keeps its connection from closing.
    """
    await _unless(_respond(send, status, body, headers), _disconnected(receive))


async def _unless(
    work: Coroutine[Any, Any, None], *stops: Coroutine[Any, Any, Any]
) -> None:
    """Run ``work``, cancelled if one of ``stops`` finishes first; its own
    error propagates."""
    task = asyncio.ensure_future(work)
    others = [asyncio.ensure_future(stop) for stop in stops]
    try:
        await asyncio.wait({task, *others}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, *others):
            pending.cancel()
        await asyncio.wait({task, *others})
    if not task.cancelled():
        task.result()


async def _disconnected(receive: Receive) -> None:
    """Return once the client has gone away."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _respond(
    send: Send, status: int, body: bytes, headers: Mapping[str, str]
) -> None:
    """Send one complete response."""
    raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
    if body:
        raw_headers.append((b"content-type", b"application/json"))
    await send(
        {"type": "http.response.start", "status": status, "headers": raw_headers}
    )
    await send({"type": "http.response.body", "body": body})
