"""Email over SMTP (aiosmtplib): one reused connection, failures by reply code.

The message is MIME: text/plain alone, or multipart/alternative (text, then
HTML) when the content has HTML. ``Message-ID`` carries the attempt's provider
idempotency id, so a receiving server, or the emulator, can count a message
sent twice; ``X-Notify-Attempt`` carries the attempt key.

Reply codes, by the command that got them (RFC 5321 section 4.2):

* RCPT 5xx (550 5.1.1 user unknown, ...) -> HARD_BOUNCE; 4xx (452 4.2.2
  mailbox full, greylisting) and 552 (a mailbox over quota, RFC 5321
  4.5.3.1.10) -> SOFT_BOUNCE.
* 552 to MAIL (SIZE) or after DATA -> PAYLOAD_TOO_LARGE.
* 421 anywhere, any 4xx to the greeting, MAIL or DATA -> UNAVAILABLE.
* 530/534/535/538 and refused credentials -> AUTH.
* other 5xx to MAIL or DATA (content or sender refused) -> REJECTED.
* connection refused or dropped -> UNAVAILABLE; no reply in time -> TIMEOUT.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from urllib.parse import urlsplit

import aiosmtplib
from aiosmtplib.email import flatten_message

from pipeline.providers.base import FailureKind, Outgoing, ProviderFailure, Sent

NAME = "smtp"
_AUTH_CODES = frozenset({530, 534, 535, 538})


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _one_line(value: str) -> str:
    """A header value without the line breaks that would end the header."""
    return " ".join(value.split())


def build_message(
    message: Outgoing,
    sender_address: str,
    *,
    sender_name: str | None = None,
    domain: str | None = None,
    list_unsubscribe: str | None = None,
    date: datetime | None = None,
) -> EmailMessage:
    """The MIME message of one attempt, ready for SMTP.

    ``domain`` (default: the sender's) is the right-hand side of the
    Message-ID; ``list_unsubscribe`` is a URL (https or mailto), advertised
    for one-click unsubscribe (RFC 8058) when it is https.
    """
    content = message.content
    domain = domain or sender_address.rpartition("@")[2]
    email = EmailMessage()
    email["Subject"] = _one_line(content.subject or content.title or "")
    email["From"] = (
        formataddr((sender_name, sender_address)) if sender_name else sender_address
    )
    email["To"] = message.to
    email["Date"] = format_datetime(date or _utcnow())
    email["Message-ID"] = f"<{message.message_id}@{domain}>"
    email["X-Notify-Attempt"] = _one_line(message.attempt_key)
    if list_unsubscribe:
        link = list_unsubscribe.strip().removeprefix("<").removesuffix(">")
        email["List-Unsubscribe"] = f"<{link}>"
        if link.startswith("https://"):
            email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    email.set_content(content.text or content.body)
    if content.html:
        email.add_alternative(content.html, subtype="html")
    return email


def classify(error: BaseException, stage: str) -> ProviderFailure:
    """The ProviderFailure of an aiosmtplib error raised at ``stage``.

    ``stage`` is the step that failed: "connect" (greeting, EHLO, STARTTLS,
    AUTH), "mail", "rcpt" or "data".
    """
    if isinstance(error, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return ProviderFailure(
            FailureKind.TIMEOUT, "timeout", f"{stage}: {error}", provider=NAME
        )
    if isinstance(error, aiosmtplib.SMTPResponseException):
        code, text = error.code, error.message
        if isinstance(error, aiosmtplib.SMTPAuthenticationError):
            kind = FailureKind.AUTH
        else:
            kind = _kind_of_reply(code, stage)
        return ProviderFailure(kind, str(code), text, provider=NAME)
    if isinstance(error, ssl.SSLError):
        return ProviderFailure(
            FailureKind.UNAVAILABLE, "tls", str(error), provider=NAME
        )
    if isinstance(error, ConnectionError | OSError):
        # aiosmtplib's connect and disconnect errors are ConnectionErrors too.
        where = "connect" if stage == "connect" else "disconnected"
        return ProviderFailure(
            FailureKind.UNAVAILABLE, where, str(error), provider=NAME
        )
    if isinstance(error, aiosmtplib.SMTPException) and stage == "connect":
        # No AUTH or STARTTLS offered where we were told to use it: a
        # misconfigured relay, which a retry will not fix by itself.
        return ProviderFailure(FailureKind.AUTH, "config", str(error), provider=NAME)
    return ProviderFailure(
        FailureKind.UNAVAILABLE, type(error).__name__, str(error), provider=NAME
    )


def _kind_of_reply(code: int, stage: str) -> FailureKind:
    """FailureKind of an SMTP reply code received at ``stage``."""
    if code == 421:
        return FailureKind.UNAVAILABLE
    if code in _AUTH_CODES:
        return FailureKind.AUTH
    if stage == "rcpt":
        if code == 552 or 400 <= code < 500:
            return FailureKind.SOFT_BOUNCE
        return FailureKind.HARD_BOUNCE
    if code == 552:
        return FailureKind.PAYLOAD_TOO_LARGE
    if 400 <= code < 500:
        return FailureKind.UNAVAILABLE
    return FailureKind.REJECTED


class SmtpSender:
    """Sends email through one SMTP relay over one reused connection.

    ``url`` is ``smtp://host[:25]`` (plain, or upgraded with ``starttls``) or
    ``smtps://host[:465]`` (TLS from the start); ``timeout`` bounds each SMTP
    command; ``ca_file`` verifies the relay's certificate. Sends are
    serialized on the one connection.
    """

    name = NAME
    channel = "email"

    def __init__(
        self,
        url: str,
        sender_address: str,
        *,
        sender_name: str | None = None,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 10.0,
        ca_file: str | None = None,
        domain: str | None = None,
        list_unsubscribe: Callable[[Outgoing], str | None] | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"SMTP url must be smtp://host:port or smtps://...: {url}")
        if parts.scheme == "smtps" and starttls:
            raise ValueError("smtps:// is TLS from the start; STARTTLS does not apply")
        self.host = parts.hostname
        self.implicit_tls = parts.scheme == "smtps"
        self.port = parts.port or (465 if self.implicit_tls else 25)
        self.sender_address = sender_address
        self.sender_name = sender_name
        self.domain = domain or sender_address.rpartition("@")[2]
        self.username = username
        self.password = password
        self.starttls = starttls
        self.timeout = timeout
        self.ca_file = ca_file
        self.list_unsubscribe = list_unsubscribe
        self.clock = clock
        self._client: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Prepare the client; it connects on the first send and stays connected."""
        self._client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            local_hostname=self.domain,
            timeout=self.timeout,
            use_tls=self.implicit_tls,
            start_tls=self.starttls,
            cert_bundle=self.ca_file,
        )

    async def stop(self) -> None:
        """Say QUIT if connected, and drop the connection."""
        client, self._client = self._client, None
        if client is None or not client.is_connected:
            return
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()

    async def send(self, message: Outgoing) -> Sent:
        """Deliver one email, or raise ProviderFailure."""
        client = self._client
        if client is None:
            raise RuntimeError("SmtpSender.send before start()")
        unsubscribe = (
            self.list_unsubscribe(message)
            if self.list_unsubscribe
            else message.list_unsubscribe
        )
        try:
            email = build_message(
                message,
                self.sender_address,
                sender_name=self.sender_name,
                domain=self.domain,
                list_unsubscribe=unsubscribe,
                date=self.clock(),
            )
        except ValueError as error:
            raise ProviderFailure(
                FailureKind.REJECTED, "invalid_message", str(error), provider=NAME
            ) from error
        async with self._lock:
            reply = await self._transact(client, email, message.to)
        return Sent(
            provider=NAME, provider_message_id=email["Message-ID"], detail=reply
        )

    async def _transact(
        self, client: aiosmtplib.SMTP, email: EmailMessage, recipient: str
    ) -> str:
        """One MAIL/RCPT/DATA transaction; reconnects if the server dropped us."""
        stage = "connect"
        try:
            reused = client.is_connected
            if not reused:
                await self._connect(client)
            stage = "mail"
            try:
                data = await self._envelope(client, email)
            except (
                aiosmtplib.SMTPServerDisconnected,
                aiosmtplib.SMTPSenderRefused,
            ) as error:
                closing = (
                    isinstance(error, aiosmtplib.SMTPSenderRefused)
                    and error.code == 421
                )
                dropped = isinstance(error, aiosmtplib.SMTPServerDisconnected)
                if not reused or not (dropped or closing):
                    raise
                # The server closed the idle connection (or says it is closing
                # it): nothing of this message reached it, so a new one is safe.
                client.close()
                stage = "connect"
                await self._connect(client)
                stage = "mail"
                data = await self._envelope(client, email)
            stage = "rcpt"
            await client.rcpt(recipient)
            stage = "data"
            response = await client.data(data)
        except ValueError as error:
            # aiosmtplib refuses an address that would break the command line.
            await self._reset(client)
            raise ProviderFailure(
                FailureKind.REJECTED, "invalid_address", str(error), provider=NAME
            ) from error
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            if (
                isinstance(error, aiosmtplib.SMTPResponseException)
                and error.code != 421
            ):
                await self._reset(client)
            else:
                client.close()  # closed by the server, or in an unknown state
            raise classify(error, stage) from error
        except asyncio.CancelledError:
            client.close()  # cancelled mid-exchange: the next reply is not ours
            raise
        return f"{response.code} {response.message}"

    async def _connect(self, client: aiosmtplib.SMTP) -> None:
        """Connect (TLS, AUTH as configured) and learn the server's extensions."""
        await client.connect()
        if client.is_ehlo_or_helo_needed:
            await client.ehlo()

    async def _envelope(self, client: aiosmtplib.SMTP, email: EmailMessage) -> bytes:
        """Send MAIL FROM; return the message bytes as the server takes them."""
        eight_bit = client.supports_extension("8bitmime")
        data = flatten_message(email, cte_type="8bit" if eight_bit else "7bit")
        options = [f"SIZE={len(data)}"] if client.supports_extension("size") else []
        if eight_bit:
            options.append("BODY=8BITMIME")
        await client.mail(self.sender_address, options=options)
        return data

    async def _reset(self, client: aiosmtplib.SMTP) -> None:
        """Abort the transaction so the connection can carry the next message."""
        if not client.is_connected:
            return
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError):
            client.close()
