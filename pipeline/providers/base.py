"""What every provider client is: a ``Sender``, the message it sends, its failures.

One provider per module of this package, each speaking its provider's real wire
protocol. A sender either returns ``Sent`` or raises ``ProviderFailure`` whose
``kind`` says what went wrong in provider-neutral terms; what to do about it
(retry, remove the token, suppress the address, ...) is decided elsewhere, by a
pure function of the kind.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from pipeline.errors import NotifyError

#: Namespace of the provider-side message ids derived from attempt keys.
_MESSAGE_ID_NAMESPACE = uuid.UUID("5b0c6f2e-8f0e-4c9a-9a57-6c1d0f1e7a11")


class FailureKind(StrEnum):
    """Provider-neutral names of what a provider call can fail with."""

    INVALID_TOKEN = "invalid_token"  # noqa: S105 - APNs BadDeviceToken, FCM token
    UNREGISTERED = "unregistered"  # APNs 410 Unregistered; FCM UNREGISTERED
    RATE_LIMITED = "rate_limited"  # 429 (retry_after from Retry-After)
    UNAVAILABLE = "unavailable"  # 5xx, connection refused/reset
    TIMEOUT = "timeout"  # no answer within the sender's timeout
    HARD_BOUNCE = "hard_bounce"  # SMTP 5.x.x on the recipient; SendGrid bounce
    SOFT_BOUNCE = "soft_bounce"  # SMTP 4.x.x on the recipient (mailbox full, ...)
    INVALID_NUMBER = "invalid_number"  # Twilio 21211 / 21614 and the like
    CARRIER_FILTERED = "carrier_filtered"  # Twilio 30007
    PAYLOAD_TOO_LARGE = "payload_too_large"  # over the provider's size limit
    AUTH = "auth"  # our credentials were refused (401/403): an ops problem
    REJECTED = "rejected"  # any other request the provider refuses as invalid


class ProviderFailure(NotifyError):
    """A provider call that did not deliver, and why.

    ``code`` is the provider's own error code or status ("BadDeviceToken",
    "UNREGISTERED", "550", "21211", "HTTP 503") so an operator can look it up;
    ``retry_after`` is in seconds, from the provider's Retry-After when it sent
    one.
    """

    def __init__(
        self,
        kind: FailureKind,
        code: str,
        detail: str = "",
        *,
        provider: str,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{provider}: {code}" + (f": {detail}" if detail else ""))
        self.kind = kind
        self.code = code
        self.detail = detail
        self.provider = provider
        self.retry_after = retry_after


def message_id_for(attempt_key: str) -> str:
    """The provider-side idempotency id of one attempt key: a stable UUID.

    The same (notification, channel, target) always gets the same id, so a
    redelivered job that does reach a provider again carries the id it carried
    the first time (APNs ``apns-id`` must be a UUID).
    """
    return str(uuid.uuid5(_MESSAGE_ID_NAMESPACE, attempt_key))


@dataclass(frozen=True, slots=True)
class Content:
    """Rendered content of one message, whatever the channel uses of it."""

    body: str
    title: str | None = None  # push title, in-app title
    subject: str | None = None  # email subject
    html: str | None = None  # email HTML part
    text: str | None = None  # email plain-text part (defaults to body)
    data: Mapping[str, Any] = field(default_factory=dict)  # push custom data
    template: str = ""  # "<type>/<channel>" of the template used
    variant: str = ""  # A/B variant
    locale: str = ""  # locale actually rendered
    version: int = 0  # template version


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One provider call to make: one notification, one channel, one target."""

    attempt_key: str  # "<notification_id>:<channel>:<target id>", the ledger key
    message_id: str  # message_id_for(attempt_key): the provider idempotency id
    notification_id: str
    tenant: str
    user_id: str
    type: str
    priority: str  # critical | transactional | promotional
    channel: str  # push | email | sms | in_app
    to: str  # device token, email address, E.164 number, or user key (in-app)
    content: Content
    platform: str | None = None  # apns | fcm, for push
    collapse_id: str | None = None  # digest key / notification type, if any
    expires_at: datetime | None = None  # after this the provider should drop it
    attempt: int = 0  # 0 for the first try, 1 for the first retry, ...
    campaign_id: str | None = None
    #: A promotional email's one-click unsubscribe URL (RFC 8058).
    list_unsubscribe: str | None = None


@dataclass(frozen=True, slots=True)
class Sent:
    """A provider accepted the message."""

    provider: str
    provider_message_id: str | None = None  # what the provider calls it, if any
    detail: str = ""  # e.g. "fetch notification: payload over 4096 bytes"


@runtime_checkable
class Sender(Protocol):
    """One provider of one channel. ``start``/``stop`` follow the app's lifecycle."""

    name: str  # "apns", "fcm", "smtp", "sendgrid", "twilio", "in_app"
    channel: str  # "push", "email", "sms", "in_app"

    async def start(self) -> None:
        """Open the provider's client session (one per worker)."""

    async def stop(self) -> None:
        """Close it."""

    async def send(self, message: Outgoing) -> Sent:
        """Deliver one message, or raise ``ProviderFailure``."""


class ReceiptKind(StrEnum):
    """What a provider reported about a message after accepting it."""

    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    BOUNCED = "bounced"  # hard bounce: the address goes on the suppression list
    FAILED = "failed"  # undelivered for another reason (carrier filtering, ...)


@dataclass(frozen=True, slots=True)
class Receipt:
    """One provider webhook event, in provider-neutral terms.

    ``attempt_key`` comes back from what we sent the provider (SendGrid custom
    args, the query string of Twilio's StatusCallback URL), so a receipt finds
    its notification without a lookup table.
    """

    provider: str
    kind: ReceiptKind
    attempt_key: str
    target: str  # address / number / token the event is about
    occurred_at: datetime
    code: str = ""  # provider's reason code (bounce type, Twilio ErrorCode)
    detail: str = ""  # provider's reason text, or the clicked URL
    provider_event_id: str = ""  # dedups a webhook the provider sends twice
