"""JSON Schemas (draft 2020-12) of the records that leave the app, made from them."""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import faust

from schemas.records import (
    CHANNELS,
    EVENT_TYPES,
    PLATFORMS,
    PRIORITIES,
    DeliveryJob,
    DeviceToken,
    InboxItem,
    NotificationEvent,
    NotificationRequest,
    Preferences,
    QuietHours,
    Recipient,
    Suppression,
    UserProfile,
)
from schemas.requests import MAX_KEY_LENGTH, TYPE_PATTERN
from schemas.updates import CLOCK, E164, EMAIL, LOCALE, MAX_TOKEN_LENGTH, NAME

Schema = dict[str, Any]
RecordType = type[faust.Record]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: Where ``python -m schemas.jsonschema`` writes, shipped as package data.
SCHEMA_DIR = Path(__file__).parent / "json"

# The validator refuses strings that are empty once stripped. Python's ``re`` and
# ``str.strip`` share one notion of whitespace, so ``\S`` says the same thing.
# ECMA-262 engines differ on a few rare characters: \x1c-\x1f and \x85 are
# whitespace only to Python, \ufeff only to ECMA-262.
_NOT_BLANK = r"\S"
_NOT_BLANK_STRING: Schema = {"minLength": 1, "pattern": _NOT_BLANK}
# The validator's own pattern, so the two cannot drift apart.
_NOTIFICATION_TYPE: Schema = {"pattern": TYPE_PATTERN.pattern}
_PRIORITY: Schema = {"enum": list(PRIORITIES)}
_CHANNEL: Schema = {"enum": list(CHANNELS)}
# The user-state validator's own pattern and limit, so they cannot drift apart:
# a locale tag, and the longest push token.
_LOCALE_TAG: Schema = {"pattern": LOCALE.pattern}
_MAX_TOKEN_LENGTH = MAX_TOKEN_LENGTH

# Where a reader of a record is stricter than its field types: merged into the
# field's schema before ``null`` is allowed for optional fields.
_REFINEMENTS: dict[RecordType, dict[str, Schema]] = {
    NotificationRequest: {
        "idempotency_key": {**_NOT_BLANK_STRING, "maxLength": MAX_KEY_LENGTH},
        "type": _NOTIFICATION_TYPE,
        "priority": _PRIORITY,
        # An explicit null tenant means the default one.
        "tenant": {"type": ["string", "null"], "pattern": _NOT_BLANK},
        "channels": {"items": _CHANNEL, "minItems": 1, "uniqueItems": True},
        # Seed 001's funnel filters on campaign_id = 1042: integers are accepted.
        "campaign_id": {"type": ["string", "integer"], "minLength": 1},
        "digest_key": {"pattern": _NOT_BLANK},
        "locale": {"pattern": _NOT_BLANK},
    },
    Recipient: {"user_id": _NOT_BLANK_STRING},
    NotificationEvent: {
        "event_type": {"enum": list(EVENT_TYPES)},
        "type": _NOTIFICATION_TYPE,
        "priority": _PRIORITY,
        "channel": _CHANNEL,
    },
    DeliveryJob: {
        "type": _NOTIFICATION_TYPE,
        "priority": _PRIORITY,
        "channel": _CHANNEL,
    },
    # The user-state records, as schemas.updates admits them from the API. The
    # validator also wants a time zone the machine's IANA database knows.
    Preferences: {
        "channels": {"propertyNames": _CHANNEL},
        "types": {"propertyNames": {"pattern": NAME.pattern}},
        "timezone": {"pattern": _NOT_BLANK},
        "locale": _LOCALE_TAG,
    },
    QuietHours: {
        "start": {"pattern": CLOCK.pattern},
        "end": {"pattern": CLOCK.pattern},
    },
    UserProfile: {
        "email": {"pattern": EMAIL.pattern},
        "phone": {"pattern": E164.pattern},
        "timezone": {"pattern": _NOT_BLANK},
        "locale": _LOCALE_TAG,
        "tags": {"items": {"minLength": 1}},
    },
    DeviceToken: {
        "token": {**_NOT_BLANK_STRING, "maxLength": _MAX_TOKEN_LENGTH},
        "platform": {"enum": list(PLATFORMS)},
    },
}

# The request validator reads recipient.user_id and ignores the recipient's other
# keys, so the schema must not refuse them.
_OPEN_RECORDS: frozenset[RecordType] = frozenset({Recipient})

_COMMENTS: dict[RecordType, str] = {
    NotificationRequest: (
        "Validate with format assertion on: times are RFC 3339 date-times with "
        "an offset. The API also refuses an expiry_at that is not later than "
        "schedule_at, which JSON Schema cannot express."
    ),
}


def schema_name(record_cls: RecordType) -> str:
    """The published name of a record: its class name in kebab case."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", record_cls.__name__).lower()


PUBLISHED: dict[str, RecordType] = {
    schema_name(record): record
    for record in (
        NotificationRequest,
        Preferences,
        UserProfile,
        DeviceToken,
        NotificationEvent,
        DeliveryJob,
        Suppression,
        InboxItem,
    )
}


def schema_for(record_cls: RecordType) -> Schema:
    """The JSON Schema document of one record, nested records under ``$defs``."""
    defs = _Defs()
    document: Schema = {
        "$schema": DIALECT,
        "$id": f"{schema_name(record_cls)}.json",
        **_record_schema(record_cls, defs),
    }
    if record_cls in _COMMENTS:
        document["$comment"] = _COMMENTS[record_cls]
    if defs.schemas:
        document["$defs"] = defs.schemas
    return document


def render(record_cls: RecordType) -> str:
    """The text of a record's schema file: sorted keys, two-space indent."""
    text = json.dumps(schema_for(record_cls), indent=2, sort_keys=True)
    return text + "\n"


def write_all(directory: Path) -> list[Path]:
    """Write every published schema as ``<name>.json`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, record_cls in PUBLISHED.items():
        path = directory / f"{name}.json"
        path.write_text(render(record_cls), encoding="utf-8", newline="\n")
        written.append(path)
    return written


def main() -> None:
    """Regenerate the committed schema files from the records."""
    for path in write_all(SCHEMA_DIR):
        sys.stdout.write(f"wrote {path}\n")


class _Defs:
    """The ``$defs`` of one document, and which record each name stands for."""

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {}
        self.records: dict[str, RecordType] = {}


def _record_schema(record_cls: RecordType, defs: _Defs) -> Schema:
    options = record_cls._options
    if options.include_metadata:
        raise ValueError(
            f"{record_cls.__name__} carries Faust metadata: a published record "
            "needs include_metadata=False"
        )
    doc = record_cls.__dict__.get("__doc__")
    if not doc:
        raise ValueError(f"{record_cls.__name__} needs a docstring (its description)")
    refinements = _REFINEMENTS.get(record_cls, {})
    unknown = sorted(set(refinements) - set(options.fields))
    if unknown:
        raise ValueError(
            f"refinements name no field of {record_cls.__name__}: {unknown}"
        )
    properties: Schema = {}
    required: list[str] = []
    for name, field_type in options.fields.items():
        descriptor = options.descriptors[name]
        where = f"{record_cls.__name__}.{name}"
        members, nullable = _split_optional(field_type)
        field_schema = _merge(
            _union_schema(members, defs, where), refinements.get(name)
        )
        if nullable:
            field_schema = _nullable(field_schema)
        if descriptor.required:
            required.append(descriptor.output_name)
        elif _is_json(descriptor.default):
            field_schema["default"] = descriptor.default
        properties[descriptor.output_name] = field_schema
    schema: Schema = {
        "title": record_cls.__name__,
        "description": " ".join(doc.split()),
        "type": "object",
        "properties": properties,
        "additionalProperties": record_cls in _OPEN_RECORDS,
    }
    if required:
        schema["required"] = required
    return schema


_SIMPLE_TYPES: dict[Any, Schema] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    datetime: {"type": "string", "format": "date-time"},
    type(None): {"type": "null"},
    Any: {},
}


def _type_schema(tp: Any, defs: _Defs, where: str) -> Schema:
    if isinstance(tp, type) and issubclass(tp, faust.Record):
        return _ref(tp, defs)
    if tp in _SIMPLE_TYPES:
        return dict(_SIMPLE_TYPES[tp])
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (Union, types.UnionType):
        members, nullable = _split_optional(tp)
        schema = _union_schema(members, defs, where)
        return _nullable(schema) if nullable else schema
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (list, Sequence) and len(args) == 1:
        return {"type": "array", "items": _type_schema(args[0], defs, where)}
    if origin in (dict, Mapping) and len(args) == 2 and args[0] is str:
        values = _type_schema(args[1], defs, where)
        return {
            "type": "object",
            **({"additionalProperties": values} if values else {}),
        }
    raise TypeError(
        f"no JSON Schema for {tp!r} (field {where}): teach schemas/jsonschema.py"
    )


def _split_optional(tp: Any) -> tuple[list[Any], bool]:
    """The members of a union other than ``None``, and whether ``None`` was one."""
    if get_origin(tp) not in (Union, types.UnionType):
        return [tp], False
    members = [arg for arg in get_args(tp) if arg is not type(None)]
    return members, len(members) < len(get_args(tp))


def _union_schema(members: list[Any], defs: _Defs, where: str) -> Schema:
    if len(members) == 1:
        return _type_schema(members[0], defs, where)
    return {"anyOf": [_type_schema(member, defs, where) for member in members]}


def _ref(record_cls: RecordType, defs: _Defs) -> Schema:
    name = record_cls.__name__
    known = defs.records.setdefault(name, record_cls)
    if known is not record_cls:
        raise ValueError(f"two records named {name} in one schema's $defs")
    if name not in defs.schemas:
        defs.schemas[name] = {}  # reserved first: a record nesting itself terminates
        defs.schemas[name] = _record_schema(record_cls, defs)
    return {"$ref": f"#/$defs/{name}"}


def _nullable(schema: Schema) -> Schema:
    kind = schema.get("type")
    if kind is None:
        return {"anyOf": [schema, {"type": "null"}]}
    kinds = [kind] if isinstance(kind, str) else list(kind)
    nullable = {**schema, "type": kinds if "null" in kinds else [*kinds, "null"]}
    if "enum" in schema and None not in schema["enum"]:
        nullable["enum"] = [*schema["enum"], None]
    return nullable


def _merge(base: Schema, extra: Schema | None) -> Schema:
    merged = dict(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


if __name__ == "__main__":
    main()
