"""The strict door: JSON from outside into a record, or a field-naming refusal.

Everything that arrives from outside the app (an API body, a topic value a
producer wrote) goes through `decode`: pydantic parses the bytes straight into
the record in strict mode (a string is not a number, ``"true"`` is not a
boolean, a time is RFC 3339 text) and refuses unknown fields. A refusal is an
`InvalidMessage` whose ``field`` is the dotted path of the first fault
(``recipient.user_id``, ``channels.fax``) and whose ``code`` is one of
``invalid_json``, ``not_an_object``, ``required``, ``unknown_field``,
``invalid_type``, ``too_long`` and ``invalid_value``: the API answers it as
422 and ingest dead-letters it with that reason.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from pipeline.errors import InvalidMessage
from schemas.records import FieldError
from schemas.types import PATTERN_HINTS, UnknownZone

M = TypeVar("M", bound=BaseModel)

#: pydantic error types → our codes; any other type is ``invalid_value``.
_CODES = {
    "missing": "required",
    "extra_forbidden": "unknown_field",
    "string_too_long": "too_long",
    "too_long": "too_long",
}
_ROOT_CODES = {"json_invalid": "invalid_json", "json_type": "invalid_json"}
#: The parts of an error's location that are not field names: union members
#: and the marker of a bad mapping key.
_NOT_FIELDS = frozenset({"str", "int", "bool", "float", "none", "[key]"})


def decode(model: type[M], raw: bytes | str, **context: Any) -> M:
    """``raw`` JSON as a ``model``, or `InvalidMessage` naming the first fault."""
    try:
        return model.model_validate_json(raw, strict=True, context=context or None)
    except ValidationError as exc:
        raise invalid_message(exc) from None


def decode_object(model: type[M], value: Any) -> M:
    """A value already decoded from JSON (a query string's fields) as ``model``."""
    try:
        return model.model_validate(value, strict=True)
    except ValidationError as exc:
        raise invalid_message(exc) from None


def invalid_message(exc: ValidationError, name: str = "") -> InvalidMessage:
    """The first fault of ``exc`` as an `InvalidMessage`; ``name`` names a
    lone value that was validated (a path parameter), else the body's
    fields name themselves."""
    errors = exc.errors(include_url=False)
    union = _union_fault(errors)
    if union is not None:
        return union
    # A union (a campaign's target) reports each member's faults; the member
    # the body meant is the one whose fault is not a missing field.
    first = next(
        (e for e in errors if e["type"] not in ("missing", "extra_forbidden")),
        errors[0],
    )
    kind = first["type"]
    if kind in _ROOT_CODES:
        return InvalidMessage(f"not valid JSON: {first['msg']}", code=_ROOT_CODES[kind])
    field = _field(first) or name
    if not field:
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            return InvalidMessage(
                "the body must be a JSON object", code="not_an_object"
            )
        return InvalidMessage(_message(first), code="invalid_value")
    same_field = [error for error in errors if (_field(error) or name) == field]
    if len(same_field) > 1 and all(e["type"].endswith("_type") for e in same_field):
        # A union (a string or an integer) whose every member refused the value.
        kinds = " or ".join(_expected(e) for e in same_field)
        return InvalidMessage(
            f"{field}: must be {kinds}", field=field, code="invalid_type"
        )
    code = _CODES.get(kind) or (
        "invalid_type" if kind.endswith("_type") else "invalid_value"
    )
    return InvalidMessage(f"{field}: {_message(first)}", field=field, code=code)


def _model_names() -> set[str]:
    """The class names of every model (how pydantic names a union's member)."""
    names: set[str] = set()
    pending: list[type] = [BaseModel]
    while pending:
        sub: type
        for sub in pending.pop().__subclasses__():
            names.add(sub.__name__)
            pending.append(sub)
    return names


def _union_fault(errors: list[ErrorDetails]) -> InvalidMessage | None:
    """A body that fits no member of a union by its fields alone (none, or
    two of them given): which fields it may hold, one of."""
    members = _model_names()
    if not all(e["type"] in ("missing", "extra_forbidden") for e in errors):
        return None
    tagged = [e for e in errors if any(str(p) in members for p in e["loc"])]
    if len(tagged) < 2:
        return None
    field = _field(tagged[0]).rpartition(".")[0]
    options = sorted({str(e["loc"][-1]) for e in tagged if e["type"] == "missing"})
    return InvalidMessage(
        f"{field}: give exactly one of {', '.join(options)}",
        field=field or None,
        code="invalid_value",
    )


def _field(error: ErrorDetails) -> str:
    error_context = error.get("ctx") or {}
    cause = error_context.get("error")
    if isinstance(cause, FieldError):
        return cause.field
    members = _model_names()
    parts = [
        str(part)
        for part in error["loc"]
        # a union's member is named by its class: not a field of the body
        if str(part) not in _NOT_FIELDS and str(part) not in members
    ]
    return ".".join(
        part for part in parts if not part.startswith(("function-", "constrained-"))
    )


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    error_context = error.get("ctx") or {}
    cause = error_context.get("error")
    if isinstance(cause, FieldError | UnknownZone):
        return str(cause)
    if kind == "value_error" and cause is not None:
        return str(cause)  # without pydantic's "Value error, " in front
    if kind == "missing":
        return "required"
    if kind == "timezone_aware":
        return "needs a time zone offset (e.g. Z)"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "string_pattern_mismatch":
        return PATTERN_HINTS.get(error_context.get("pattern", ""), str(error["msg"]))
    if kind == "string_too_short" and error_context.get("min_length") == 1:
        return PATTERN_HINTS[r"\S"]
    if kind == "literal_error":
        expected = str(error_context.get("expected", ""))
        return f"must be one of {expected}" if len(expected) < 200 else "not allowed"
    if kind == "value_error" and cause is not None:
        return str(cause)
    return str(error["msg"]).lower()


def _expected(error: ErrorDetails) -> str:
    noun = error["type"].removesuffix("_type")
    return {"string": "a string", "int": "an integer", "bool": "true or false"}.get(
        noun, f"a {noun}"
    )
