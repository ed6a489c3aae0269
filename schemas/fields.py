"""Field checks shared by the validators: each fault names its field and a code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.errors import InvalidMessage


def invalid(field: str, message: str, code: str) -> InvalidMessage:
    """The error for one faulty field, its message starting with the field name."""
    return InvalidMessage(f"{field}: {message}", field=field, code=code)


def require_object(body: Any, allowed: frozenset[str]) -> Mapping[str, Any]:
    """``body`` as a mapping with no field outside ``allowed``."""
    if not isinstance(body, Mapping):
        raise InvalidMessage("the body must be a JSON object", code="not_an_object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise invalid(unknown[0], f"unknown field {unknown[0]!r}", "unknown_field")
    return body


def required_string(body: Mapping[str, Any], name: str) -> str:
    """A present, non-blank string field."""
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise invalid(name, "required non-empty string", "required")
    return value


def optional_string(body: Mapping[str, Any], name: str) -> str | None:
    """An absent field, or a non-blank string."""
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise invalid(name, "must be a non-empty string", "invalid_type")
    return value


def optional_bool(body: Mapping[str, Any], name: str, default: bool) -> bool:
    """An absent field (``default``), or a JSON boolean."""
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise invalid(name, "must be true or false", "invalid_type")
    return value
