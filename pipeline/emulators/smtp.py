"""A loopback SMTP server (aiosmtpd) that accepts, refuses and stalls mail on cue.

It runs in the caller's event loop. Every MAIL transaction counts as one call;
each accepted message is parsed and kept (``messages``), and recorded in the
call log once per recipient under the id of its ``Message-ID``
(``<id@domain>``), so a message sent twice is a duplicate.

Like a receiving server it refuses what a real one would: a recipient without
a domain (553 5.1.3), a message over ``max_message_size`` (552, at MAIL when
the client declares SIZE, else after DATA), a message without a valid
Message-ID, From or Date header (550 5.7.1); with ``credentials`` it requires
AUTH (530 5.7.0, wrong ones 535 5.7.8), with ``tls_context`` STARTTLS first.

Fault names (``faults.error`` / ``faults.fail_targets`` by recipient address):

* ``hard_bounce``: RCPT gets ``550 5.1.1`` (no such user).
* ``soft_bounce``: RCPT gets ``452 4.2.2`` (mailbox full).
* ``unavailable``: the message is answered ``421 4.3.2`` after DATA and the
  connection closed.
* ``timeout``: the answer to DATA is held ``faults.timeout_hold`` seconds, then
  it is ``421 4.4.2`` and the connection closed.

Any other name raises ValueError when it is picked (the client sees a 500).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from pipeline.emulators.faults import CallLog, Faults

log = logging.getLogger(__name__)

FAULTS = frozenset({"hard_bounce", "soft_bounce", "unavailable", "timeout"})

_MESSAGE_ID = re.compile(r"^\s*<([^<>@\s]+)@([^<>@\s]+)>\s*$")


class _Envelope(Envelope):
    """An envelope that remembers the fault its DATA is to get."""

    def __init__(self) -> None:
        super().__init__()
        self.fault: str | None = None


class _Protocol(SMTP):
    """aiosmtpd's SMTP, with envelopes that carry a fault and a connection registry."""

    def __init__(self, emulator: SmtpEmulator, **kwargs: Any) -> None:
        super().__init__(emulator, **kwargs)
        self._emulator = emulator

    def _create_envelope(self) -> Envelope:
        return _Envelope()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self not in self._emulator._connections:  # not the STARTTLS re-entry
            self._emulator._connections.add(self)
            self._emulator.connections_opened += 1
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._emulator._connections.discard(self)
        super().connection_lost(error)


class SmtpEmulator:
    """An SMTP server on loopback with fault knobs, keeping what it accepted."""

    name = "smtp"

    def __init__(
        self,
        faults: Faults | None = None,
        *,
        credentials: Mapping[str, str] | None = None,
        tls_context: ssl.SSLContext | None = None,
        max_message_size: int = 10 * 1024 * 1024,
        hostname: str = "mx.emulator.test",
    ) -> None:
        self.faults = faults or Faults()
        self.calls = CallLog()
        self.messages: list[EmailMessage] = []
        self.url = ""
        self.credentials = dict(credentials) if credentials else None
        self.tls_context = tls_context
        self.max_message_size = max_message_size
        self.hostname = hostname
        self.connections_opened = 0  # how many SMTP sessions clients opened
        self._server: asyncio.Server | None = None
        self._connections: set[_Protocol] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (port 0: the OS picks) in the running loop."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host, port)
        bound = self._server.sockets[0].getsockname()
        self.url = f"smtp://{bound[0]}:{bound[1]}"

    def _protocol(self) -> _Protocol:
        return _Protocol(
            self,
            hostname=self.hostname,
            data_size_limit=self.max_message_size,
            tls_context=self.tls_context,
            require_starttls=self.tls_context is not None,
            auth_required=self.credentials is not None,
            auth_require_tls=self.tls_context is not None,
            authenticator=self._authenticate if self.credentials else None,
            loop=asyncio.get_running_loop(),
        )

    async def stop(self) -> None:
        """Stop listening and drop every open connection (held answers too)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        self.drop_connections()
        await server.wait_closed()

    def drop_connections(self) -> None:
        """Close every open client connection, as a server timing out idle ones."""
        for connection in list(self._connections):
            if connection.transport is not None:
                connection.transport.close()

    def message(self, message_id: str) -> EmailMessage | None:
        """The last accepted message whose Message-ID carries ``message_id``."""
        for email in reversed(self.messages):
            match = _MESSAGE_ID.match(str(email.get("Message-ID", "")))
            if match and match.group(1) == message_id:
                return email
        return None

    def _pick(self, target: str) -> str | None:
        fault = self.faults.pick(target)
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown SMTP fault {fault!r}; known: {sorted(FAULTS)}")
        return fault

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword) or self.credentials is None:
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        if self.credentials.get(login) != password:
            # handled=False: aiosmtpd answers 535 5.7.8 itself.
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=auth_data)

    # aiosmtpd handler hooks: a hook that answers must also do the default work.

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        """A new transaction: one call."""
        self.calls.attempted()
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept or bounce one recipient, or mark the transaction for a fault."""
        local, _, domain = address.rpartition("@")
        if not local or "." not in domain:
            return "553 5.1.3 Error: malformed address"
        fault = self._pick(address)
        if fault == "hard_bounce":
            return (
                f"550 5.1.1 <{address}>: Recipient address rejected: "
                "User unknown in virtual mailbox table"
            )
        if fault == "soft_bounce":
            return f"452 4.2.2 <{address}>: Recipient address rejected: Mailbox full"
        if fault is not None and isinstance(envelope, _Envelope):
            envelope.fault = fault
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Accept the message (parse, record, keep) or answer its fault."""
        await self.faults.delay()
        fault = envelope.fault if isinstance(envelope, _Envelope) else None
        if fault == "timeout":
            await asyncio.sleep(self.faults.timeout_hold)
            _close_after_reply(server)
            return f"421 4.4.2 {self.hostname} Error: timeout exceeded"
        if fault == "unavailable":
            _close_after_reply(server)
            return "421 4.3.2 Service not available, closing transmission channel"
        email = BytesParser(EmailMessage, policy=default_policy).parsebytes(
            envelope.original_content or b""
        )
        match = _MESSAGE_ID.match(str(email.get("Message-ID", "")))
        if match is None:
            return (
                "550 5.7.1 Messages missing a valid Message-ID header are not accepted"
            )
        if not email.get("From") or not email.get("Date"):
            return "550 5.7.1 Messages missing a From or Date header are not accepted"
        message_id = match.group(1)
        payload = _payload(email, envelope)
        self.messages.append(email)
        for recipient in envelope.rcpt_tos:
            self.calls.accept(message_id, recipient, payload)
        return f"250 2.0.0 Ok: queued as {message_id}"


def _close_after_reply(server: SMTP) -> None:
    """Close the connection once the reply being written has gone out (a 421)."""
    transport = server.transport
    if transport is not None:
        # call_soon runs after aiosmtpd has written the reply this hook returns.
        asyncio.get_running_loop().call_soon(transport.close)


def _payload(email: EmailMessage, envelope: Envelope) -> dict[str, Any]:
    """What a test reads back about an accepted message."""
    return {
        "mail_from": envelope.mail_from,
        "rcpt_to": list(envelope.rcpt_tos),
        "subject": str(email.get("Subject", "")),
        "from": str(email.get("From", "")),
        "to": str(email.get("To", "")),
        "message_id": str(email.get("Message-ID", "")),
        "attempt_key": str(email.get("X-Notify-Attempt", "")),
        "list_unsubscribe": str(email.get("List-Unsubscribe", "")),
        "list_unsubscribe_post": str(email.get("List-Unsubscribe-Post", "")),
        "content_type": email.get_content_type(),
        "text": _part_text(email, "plain"),
        "html": _part_text(email, "html"),
    }


def _part_text(email: EmailMessage, subtype: str) -> str | None:
    """The text of the message's text/<subtype> body part, with newlines as read."""
    part = email.get_body(preferencelist=(subtype,))
    if not isinstance(part, EmailMessage):
        return None
    return str(part.get_content()).replace("\r\n", "\n")
