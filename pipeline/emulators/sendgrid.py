"""A loopback SendGrid v3 Mail Send API (aiohttp), with a signed Event Webhook.

``POST /v3/mail/send`` checks the Bearer key (401) and the body as SendGrid
does (400 with ``{"errors": [{"message", "field", "help"}]}``: personalizations
with a valid ``to``, ``from``, a subject, content blocks with text/plain first,
string-valued headers and custom args, no reserved header), refuses a body over
``max_body_bytes`` (413), and answers 202 with an ``X-Message-Id``. Each
recipient of an accepted request is recorded in the call log under its
``custom_args.message_id``.

With a ``webhook_url`` it posts, as a background task, a JSON array of events
the way SendGrid's Signed Event Webhook does: custom args as top-level keys,
signed with the emulator's own ECDSA P-256 key (``public_key``, base64 DER as
SendGrid's console shows it) in ``X-Twilio-Email-Event-Webhook-Signature`` over
``X-Twilio-Email-Event-Webhook-Timestamp`` + body. A delivered event for each
recipient accepted, a bounce event for each one that bounced.

Fault names (``faults.error`` / ``faults.fail_targets`` by recipient address):
``400``, ``401``, ``413``, ``500``, ``503``: that status, in SendGrid's error
format; ``429``: 429 with Retry-After and X-RateLimit-* headers
(``faults.retry_after`` seconds); ``timeout``: the answer is held
``faults.timeout_hold`` seconds, then 503; ``bounce``: accepted (202), then a
bounce event for that recipient instead of a delivered one. Any other name
raises ValueError when it is picked.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import secrets
import time
from typing import Any

import aiohttp
import orjson
import yarl
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.emulators.faults import CallLog, Faults
from pipeline.emulators.http import AppServer
from pipeline.providers.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER

log = logging.getLogger(__name__)

FAULTS = frozenset({"400", "401", "413", "429", "500", "503", "timeout", "bounce"})

_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_RESERVED_HEADERS = frozenset(
    {
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "content-type",
        "content-transfer-encoding",
        "to",
        "from",
        "subject",
        "reply-to",
        "cc",
        "bcc",
    }
)
_AUTH_MESSAGE = "The provided authorization grant is invalid, expired, or revoked"
_FAULT_ANSWERS = {
    "400": (400, "Bad Request"),
    "401": (401, _AUTH_MESSAGE),
    "413": (413, "Payload Too Large"),
    "429": (429, "too many requests"),
    "500": (500, "internal error"),
    "503": (503, "service unavailable"),
}
_WEBHOOK_ATTEMPTS = 3


def _error(message: str, field: str | None) -> dict[str, Any]:
    anchor = f"#message.{field.split('.')[0]}" if field else ""
    return {"message": message, "field": field, "help": _HELP + anchor}


def _errors_body(*errors: dict[str, Any]) -> bytes:
    return orjson.dumps({"errors": list(errors)})


def _type_name(value: Any) -> str:
    names = {str: "string", bool: "boolean", int: "integer", float: "number"}
    names |= {list: "array", dict: "object", type(None): "null"}
    return names.get(type(value), "unknown")


def _string_map(value: Any, field: str) -> list[dict[str, Any]]:
    """Errors of an object whose values must all be strings (headers, args)."""
    if not isinstance(value, dict):
        given = _type_name(value)
        return [_error(f"Invalid type. Expected: object, given: {given}.", field)]
    return [
        _error(f"Invalid type. Expected: string, given: {_type_name(item)}.", key)
        for key, item in ((f"{field}.{name}", item) for name, item in value.items())
        if not isinstance(item, str)
    ]


def validate_mail(body: Any) -> list[dict[str, Any]]:
    """SendGrid's 400 errors for a v3 Mail Send body (empty when it is valid)."""
    if not isinstance(body, dict):
        return [_error("Bad Request", None)]
    errors: list[dict[str, Any]] = []
    personalizations = body.get("personalizations")
    all_have_subject = False
    if not isinstance(personalizations, list) or not personalizations:
        errors.append(
            _error(
                "The personalizations field is required and must have at least "
                "one personalization.",
                "personalizations",
            )
        )
    elif len(personalizations) > 1000:
        errors.append(
            _error(
                "The personalization block is limited to 1000 personalizations "
                "per API request.",
                "personalizations",
            )
        )
    else:
        all_have_subject = all(
            isinstance(item, dict) and isinstance(item.get("subject"), str)
            for item in personalizations
        )
        for index, item in enumerate(personalizations):
            errors += _personalization_errors(item, f"personalizations.{index}")
    sender = body.get("from")
    if not isinstance(sender, dict) or not _is_email(sender.get("email")):
        errors.append(
            _error(
                "The from object must be provided for every email send. It is an "
                "object that requires the email parameter, but may also contain a "
                'name parameter.  e.g. {"email" : "example@example.com"}  or '
                '{"email" : "example@example.com", "name" : "Example Recipient"}.',
                "from.email",
            )
        )
    has_template = isinstance(body.get("template_id"), str)
    subject = body.get("subject")
    if not (isinstance(subject, str) and subject) and not (
        all_have_subject or has_template
    ):
        errors.append(
            _error(
                "The subject is required. You can get around this requirement if "
                "you use a template with a subject defined or if every "
                "personalization has a subject defined.",
                "subject",
            )
        )
    if not has_template or "content" in body:
        errors += _content_errors(body.get("content"))
    if "headers" in body:
        errors += _string_map(body["headers"], "headers")
        if isinstance(body["headers"], dict):
            errors += [
                _error(f"The header {name} is reserved and cannot be set.", "headers")
                for name in body["headers"]
                if name.lower() in _RESERVED_HEADERS
            ]
    if "custom_args" in body:
        errors += _string_map(body["custom_args"], "custom_args")
    tracking = body.get("tracking_settings", {})
    if not isinstance(tracking, dict):
        errors.append(
            _error(
                f"Invalid type. Expected: object, given: {_type_name(tracking)}.",
                "tracking_settings",
            )
        )
    return errors


def _is_email(value: Any) -> bool:
    return isinstance(value, str) and _EMAIL.match(value) is not None


def _personalization_errors(item: Any, field: str) -> list[dict[str, Any]]:
    if not isinstance(item, dict):
        given = _type_name(item)
        return [_error(f"Invalid type. Expected: object, given: {given}.", field)]
    errors = []
    recipients = item.get("to")
    if not isinstance(recipients, list) or not recipients:
        errors.append(
            _error(
                "The to array is required for all personalization objects, and "
                "must have at least one email object with a valid email address.",
                f"{field}.to",
            )
        )
    else:
        for index, recipient in enumerate(recipients):
            if not isinstance(recipient, dict) or not _is_email(recipient.get("email")):
                errors.append(
                    _error(
                        "Does not contain a valid address.",
                        f"{field}.to.{index}.email",
                    )
                )
    if "custom_args" in item:
        errors += _string_map(item["custom_args"], f"{field}.custom_args")
    if "headers" in item:
        errors += _string_map(item["headers"], f"{field}.headers")
    return errors


def _content_errors(content: Any) -> list[dict[str, Any]]:
    if not isinstance(content, list) or not content:
        return [
            _error(
                "Unless a valid template_id is provided, the content parameter is "
                "required. There must be at least one defined content block. We "
                "typically suggest both text/plain and text/html blocks are "
                "included, but only one block is required.",
                "content",
            )
        ]
    errors = []
    types = []
    for index, block in enumerate(content):
        block = block if isinstance(block, dict) else {}
        kind, value = block.get("type"), block.get("value")
        if not (isinstance(kind, str) and kind):
            errors.append(
                _error(
                    "The content type must be a string at least one character in "
                    "length.",
                    f"content.{index}.type",
                )
            )
        else:
            types.append(kind)
        if not (isinstance(value, str) and value):
            errors.append(
                _error(
                    "The content value must be a string at least one character in "
                    "length.",
                    f"content.{index}.value",
                )
            )
    if types.count("text/plain") > 1 or types.count("text/html") > 1:
        errors.append(
            _error(
                "If present, text/plain and text/html may only be provided once.",
                "content",
            )
        )
    expected = [kind for kind in ("text/plain", "text/html") if kind in types]
    if types[: len(expected)] != expected:
        errors.append(
            _error(
                "If present, text/plain must be first, followed by text/html, "
                "followed by any other content.",
                "content",
            )
        )
    return errors


class SendGridEmulator:
    """SendGrid's Mail Send endpoint on loopback, with fault knobs and webhooks."""

    name = "sendgrid"

    def __init__(
        self,
        api_key: str,
        *,
        webhook_url: str | None = None,
        faults: Faults | None = None,
        max_body_bytes: int = 30 * 1024 * 1024,
    ) -> None:
        self.api_key = api_key
        self.webhook_url = webhook_url
        self.faults = faults or Faults()
        self.calls = CallLog()
        self.max_body_bytes = max_body_bytes
        self.url = ""
        self._signing_key = ec.generate_private_key(ec.SECP256R1())
        der = self._signing_key.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        #: The Event Webhook verification key, as SendGrid's console shows it.
        self.public_key = base64.b64encode(der).decode("ascii")
        self._server = AppServer()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on ``host:port`` (port 0: the OS picks) in the running loop."""
        app = web.Application(client_max_size=self.max_body_bytes + 1)
        app.router.add_post("/v3/mail/send", self._mail_send)
        self.url = await self._server.serve(app, host, port)

    async def stop(self) -> None:
        """Stop serving, cancel webhook posts still under way."""
        await self._server.close()

    async def wait_webhooks(self) -> None:
        """Wait until every webhook post started so far has finished."""
        await self._server.settle()

    def sign(self, payload: bytes, timestamp: str) -> str:
        """The Event Webhook signature of ``payload`` sent at ``timestamp``."""
        signature = self._signing_key.sign(
            timestamp.encode("utf-8") + payload, ec.ECDSA(hashes.SHA256())
        )
        return base64.b64encode(signature).decode("ascii")

    def _pick(self, target: str) -> str | None:
        fault = self.faults.pick(target)
        if fault is not None and fault not in FAULTS:
            raise ValueError(
                f"unknown SendGrid fault {fault!r}; known: {sorted(FAULTS)}"
            )
        return fault

    async def _mail_send(self, request: web.Request) -> web.Response:
        self.calls.attempted()
        await self.faults.delay()
        if request.headers.get("Authorization", "") != f"Bearer {self.api_key}":
            return _json(401, _errors_body(_error(_AUTH_MESSAGE, None)))
        too_large = _json(413, _errors_body(_error("Payload Too Large", None)))
        if (request.content_length or 0) > self.max_body_bytes:
            return too_large
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:  # chunked, so no length up front
            return too_large
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _json(400, _errors_body(_error("Bad Request", None)))
        errors = validate_mail(body)
        if errors:
            return _json(400, _errors_body(*errors))
        recipients = [
            (personalization, recipient["email"])
            for personalization in body["personalizations"]
            for recipient in personalization["to"]
        ]
        bounced: set[str] = set()
        for _, address in recipients:
            fault = self._pick(address)
            if fault == "bounce":
                bounced.add(address)
            elif fault is not None:
                return await self._fault_answer(fault)
        message_id = secrets.token_urlsafe(16)[:22]
        events = []
        for index, (personalization, address) in enumerate(recipients):
            args = {**body.get("custom_args", {})}
            args.update(personalization.get("custom_args", {}))
            if address not in bounced:
                self.calls.accept(
                    args.get("message_id", message_id),
                    address,
                    {"x_message_id": message_id, "body": body, "custom_args": args},
                )
            events.append(_event(address, message_id, index, args, address in bounced))
        webhook = self.webhook_url
        if webhook:
            self._server.spawn(
                lambda client: self._post_events(client, webhook, events)
            )
        return web.Response(status=202, headers={"X-Message-Id": message_id})

    async def _fault_answer(self, fault: str) -> web.Response:
        if fault == "timeout":
            await asyncio.sleep(self.faults.timeout_hold)
            fault = "503"
        status, message = _FAULT_ANSWERS[fault]
        headers = {}
        if status == 429:
            wait = self.faults.retry_after
            headers = {
                "Retry-After": str(wait),
                "X-RateLimit-Limit": "600",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(time.time()) + wait),
            }
        return _json(status, _errors_body(_error(message, None)), headers)

    async def _post_events(
        self, client: aiohttp.ClientSession, url: str, events: list[dict[str, Any]]
    ) -> None:
        """Post one signed webhook batch; SendGrid retries when it is not 2xx."""
        payload = orjson.dumps(events) + b"\r\n"
        for attempt in range(_WEBHOOK_ATTEMPTS):
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: self.sign(payload, timestamp),
                TIMESTAMP_HEADER: timestamp,
            }
            try:
                async with client.post(
                    yarl.URL(url, encoded=True), data=payload, headers=headers
                ) as response:
                    if response.status < 300:
                        return
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as error:
                problem = str(error) or type(error).__name__
            log.warning("sendgrid emulator: event webhook failed: %s", problem)
            await asyncio.sleep(0.2 * (attempt + 1))


def _json(
    status: int, body: bytes, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=body, content_type="application/json", headers=headers
    )


def _event(
    address: str, message_id: str, index: int, args: dict[str, str], bounced: bool
) -> dict[str, Any]:
    """One Event Webhook event, custom args as top-level keys like SendGrid's."""
    event: dict[str, Any] = {
        **args,
        "email": address,
        "timestamp": int(time.time()),
        "sg_event_id": secrets.token_urlsafe(16),
        "sg_message_id": f"{message_id}.emulator-{index}-0",
        "smtp-id": f"<{message_id}@emulator.sendgrid.test>",
    }
    if bounced:
        event |= {
            "event": "bounce",
            "type": "bounce",
            "status": "5.1.1",
            "reason": "550 5.1.1 The email account that you tried to reach does "
            "not exist.",
            "bounce_classification": "Invalid Address",
        }
    else:
        event |= {"event": "delivered", "response": "250 2.0.0 OK"}
    return event
