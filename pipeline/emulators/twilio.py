"""A loopback Twilio Messages API (aiohttp), with signed status callbacks.

``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` checks what Twilio
checks, answering Twilio's error JSON (``code``, ``message``, ``more_info``,
``status``): HTTP basic auth with the account sid and auth token (401, 20003),
the account in the path (404, 20404), ``To`` present (21604) and E.164
(21211), ``From`` (a number, short code or alphanumeric sender id, 21212) or
``MessagingServiceSid`` (``MG`` + 32 hex, 21705), one of them at least
(21603), ``Body`` present (21602) and at most 1600 characters (21617), a
``StatusCallback`` that is an http(s) URL (21609). It answers 201 with the
Message resource (sid ``SM`` + 32 hex, status ``queued``, or ``accepted``
when sent through a Messaging Service, ``num_segments``).

An accepted message is recorded under the ``attempt_key`` of its
StatusCallback query (else a hash of its body), target ``To``. With a
StatusCallback the final status (``delivered`` or ``undelivered``) is posted
there as a background task, form-encoded and signed with X-Twilio-Signature.

Fault names (``faults.error`` / ``faults.fail_targets`` by ``To`` number):
``21211`` (not a valid number), ``21614`` (not a mobile number), ``21610``
(the recipient replied STOP): 400 with that code; ``20429``: 429 with
Retry-After (``faults.retry_after``); ``500``, ``503``: that status;
``timeout``: the answer is held ``faults.timeout_hold`` seconds, then 503;
``30007``: accepted (201), then the callback says ``undelivered`` with
ErrorCode 30007 (carrier filtering), and the call is not recorded as delivered.
Any other name raises ValueError when it is picked.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import re
import secrets
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import orjson
import yarl
from aiohttp import web

from pipeline import sms
from pipeline.emulators.faults import CallLog, Faults
from pipeline.emulators.http import AppServer
from pipeline.providers.twilio import SIGNATURE_HEADER, compute_signature

log = logging.getLogger(__name__)

FAULTS = frozenset(
    {"21211", "21614", "21610", "20429", "500", "503", "timeout", "30007"}
)
MAX_BODY_CHARS = 1600

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_SHORT_CODE = re.compile(r"^\d{5,6}$")
_ALPHANUMERIC_ID = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
_SERVICE_SID = re.compile(r"^MG[0-9a-f]{32}$")

_FAULT_ERRORS = {
    "21211": (400, 21211, "The 'To' number {to} is not a valid phone number."),
    "21614": (400, 21614, "'To' number {to} is not a valid mobile number"),
    "21610": (400, 21610, "Attempt to send to unsubscribed recipient"),
    "20429": (429, 20429, "Too Many Requests"),
    "500": (500, 20500, "An internal server error has occurred"),
    "503": (503, 20503, "Service is unavailable. Please try again"),
}


def _error(status: int, code: int, message: str) -> web.Response:
    """An answer in Twilio's error format."""
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json"
    )


def _is_sender(value: str) -> bool:
    return bool(
        _E164.match(value) or _SHORT_CODE.match(value) or _ALPHANUMERIC_ID.match(value)
    )


def _is_callback_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


class TwilioEmulator:
    """Twilio's Messages API on loopback, with fault knobs and status callbacks."""

    name = "twilio"

    def __init__(
        self, account_sid: str, auth_token: str, *, faults: Faults | None = None
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.faults = faults or Faults()
        self.calls = CallLog()
        self.url = ""
        self.messages: dict[str, dict[str, Any]] = {}  # sid -> Message resource
        self._server = AppServer()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on ``host:port`` (port 0: the OS picks) in the running loop."""
        app = web.Application()
        app.router.add_post(
            "/2010-04-01/Accounts/{account}/Messages.json", self._create_message
        )
        self.url = await self._server.serve(app, host, port)

    async def stop(self) -> None:
        """Stop serving, cancel callbacks still under way."""
        await self._server.close()

    async def wait_callbacks(self) -> None:
        """Wait until every status callback started so far has finished."""
        await self._server.settle()

    def _pick(self, target: str) -> str | None:
        fault = self.faults.pick(target)
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown Twilio fault {fault!r}; known: {sorted(FAULTS)}")
        return fault

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == self.account_sid and secrets.compare_digest(
            password.encode(), self.auth_token.encode()
        )

    async def _create_message(self, request: web.Request) -> web.Response:
        self.calls.attempted()
        await self.faults.delay()
        if not self._authorized(request):
            return _error(401, 20003, "Authenticate")
        if request.match_info["account"] != self.account_sid:
            return _error(
                404, 20404, f"The requested resource {request.path} was not found"
            )
        form = {name: str(value) for name, value in (await request.post()).items()}
        invalid = self._invalid(form)
        if invalid is not None:
            return invalid
        to = form["To"]
        fault = self._pick(to)
        if fault == "timeout":
            await asyncio.sleep(self.faults.timeout_hold)
            fault = "503"
        if fault in _FAULT_ERRORS:
            status, code, message = _FAULT_ERRORS[fault]
            answer = _error(status, code, message.format(to=to))
            if status == 429:
                answer.headers["Retry-After"] = str(self.faults.retry_after)
            return answer
        resource = self._resource(form)
        self.messages[resource["sid"]] = resource
        filtered = fault == "30007"
        if not filtered:
            self.calls.accept(
                _message_id(form), to, {"form": form, "resource": resource}
            )
        callback = form.get("StatusCallback")
        if callback:
            self._schedule_callback(callback, resource, form, filtered=filtered)
        return web.Response(
            status=201, body=orjson.dumps(resource), content_type="application/json"
        )

    def _schedule_callback(
        self,
        url: str,
        resource: dict[str, Any],
        form: dict[str, str],
        *,
        filtered: bool,
    ) -> None:
        """Post the message's final status to ``url`` without delaying the answer."""
        status = "undelivered" if filtered else "delivered"
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "MessageSid": resource["sid"],
            "SmsSid": resource["sid"],
            "MessageStatus": status,
            "SmsStatus": status,
            "To": form["To"],
            "From": form.get("From", ""),
        }
        if form.get("MessagingServiceSid"):
            params["MessagingServiceSid"] = form["MessagingServiceSid"]
        if filtered:
            params["ErrorCode"] = "30007"
        self._server.spawn(lambda client: self._post_callback(client, url, params))

    def _invalid(self, form: dict[str, str]) -> web.Response | None:
        """Twilio's answer to a request it refuses as invalid, or None."""
        to = form.get("To", "")
        sender, service = form.get("From", ""), form.get("MessagingServiceSid", "")
        body = form.get("Body", "")
        callback = form.get("StatusCallback")
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not _E164.match(to):
            return _error(
                400, 21211, f"The 'To' number {to} is not a valid phone number."
            )
        if not sender and not service:
            return _error(
                400,
                21603,
                "A 'From' or 'MessagingServiceSid' parameter is required to send "
                "a message",
            )
        if sender and not _is_sender(sender):
            return _error(
                400,
                21212,
                f"The 'From' number {sender} is not a valid phone number, "
                "shortcode, or alphanumeric sender ID.",
            )
        if service and not _SERVICE_SID.match(service):
            return _error(400, 21705, "The Messaging Service Sid is invalid.")
        if not body:
            return _error(400, 21602, "Message body is required.")
        if len(body) > MAX_BODY_CHARS:
            return _error(
                400,
                21617,
                "The concatenated message body exceeds the 1600 character limit.",
            )
        if callback is not None and not _is_callback_url(callback):
            return _error(
                400, 21609, f"The StatusCallback URL {callback} is not a valid URL."
            )
        return None

    def _resource(self, form: dict[str, str]) -> dict[str, Any]:
        """The Message resource of a newly accepted message."""
        sid = "SM" + secrets.token_hex(16)
        now = format_datetime(datetime.now(UTC))
        service = form.get("MessagingServiceSid")
        base = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": form["Body"],
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From") or None,
            "messaging_service_sid": service or None,
            "num_media": "0",
            "num_segments": str(sms.segments(form["Body"])),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if service and not form.get("From") else "queued",
            "subresource_uris": {"media": f"{base}/Media.json"},
            "to": form["To"],
            "uri": f"{base}.json",
        }

    async def _post_callback(
        self, client: aiohttp.ClientSession, url: str, params: dict[str, str]
    ) -> None:
        """Post one signed status callback (Twilio does not retry them either)."""
        headers = {SIGNATURE_HEADER: compute_signature(self.auth_token, url, params)}
        try:
            # encoded=True: request the URL exactly as given, as Twilio does;
            # the signature covers it byte for byte.
            target = yarl.URL(url, encoded=True)
            async with client.post(target, data=params, headers=headers) as response:
                if response.status < 300:
                    return
                problem = f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as error:
            problem = str(error) or type(error).__name__
        log.warning("twilio emulator: status callback to %s failed: %s", url, problem)


def _message_id(form: dict[str, str]) -> str:
    """The attempt key of the StatusCallback query, else a hash of the body."""
    query = urlsplit(form.get("StatusCallback", "")).query
    attempt_key = parse_qs(query).get("attempt_key", [""])[0]
    return attempt_key or hashlib.sha256(form["Body"].encode()).hexdigest()
