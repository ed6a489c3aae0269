"""The project's error hierarchy: retryable or permanent, nothing else is caught."""

from __future__ import annotations


class NotifyError(Exception):
    """Base of every error the pipeline decides about."""


class RetryableError(NotifyError):
    """Worth another attempt, optionally not before ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(NotifyError):
    """Will fail the same way every time: dead-letter it with its reason."""


class InvalidMessage(PermanentError):
    """A message that does not parse or validate; ``field`` names the culprit."""

    def __init__(self, reason: str, *, field: str | None = None, code: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.code = code
