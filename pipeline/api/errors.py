"""API errors: a status, a stable code, a message naming the field at fault."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error the API answers with ``{"error": {"code", "message", "field"}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        channels: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.channels = channels

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        if self.channels is not None:
            error["channels"] = self.channels
        return {"error": error}


def unauthorized(message: str) -> ApiError:
    """401: no key, or one that is not valid."""
    return ApiError(
        401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"}
    )


def forbidden(message: str) -> ApiError:
    """403: a valid key that may not do this."""
    return ApiError(403, "forbidden", message)


def not_found(message: str) -> ApiError:
    """404: nothing known under this id."""
    return ApiError(404, "not_found", message)
