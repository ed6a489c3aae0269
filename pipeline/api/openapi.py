"""The OpenAPI 3.1 document of the v1 API, built from the published JSON Schemas."""

from __future__ import annotations

from typing import Any

from pipeline.ids import NOTIFICATION_ID_PATTERN
from schemas import jsonschema
from schemas.records import CHANNELS, PLATFORMS, NotificationRequest

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    """Error answers of an operation; every one may answer 503 (not ready)."""
    text = {
        400: "The body is not JSON.",
        401: "No valid API key.",
        403: "The key may not act for this tenant or lacks the scope.",
        404: "Nothing under this id.",
        409: "The idempotency key was used for a different request.",
        422: "A field is missing or wrong; `error.field` names it.",
        503: "Not ready: the worker is starting or stopping, or its partitions "
        "are being reassigned; retry after `Retry-After` seconds.",
    }
    return {
        str(code): _json(_ref("Error"), text[code]) for code in sorted({*statuses, 503})
    }


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": schema}}}


USER_ID = {
    "name": "user_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}
TENANT = {
    "name": "tenant",
    "in": "query",
    "required": False,
    "description": "Admin keys: the tenant to act for. Tenant keys: their own only.",
    "schema": {"type": "string"},
}
FLAGS = {"type": "object", "additionalProperties": {"type": "boolean"}}

PREFERENCES_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "enabled": {"type": "boolean", "description": "false: only critical traffic"},
        "channels": {
            "type": "object",
            "additionalProperties": False,
            "properties": {channel: {"type": "boolean"} for channel in CHANNELS},
        },
        "types": {**FLAGS, "description": "Opt-outs by type or category name."},
        "marketing": {"type": "boolean"},
        "quiet_hours": {
            "type": "object",
            "additionalProperties": False,
            "required": ["start", "end"],
            "properties": {
                "start": {
                    "type": "string",
                    "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$",
                },
                "end": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
            },
        },
        "timezone": {"type": "string", "description": "IANA zone, e.g. Europe/Paris"},
        "locale": {"type": "string"},
    },
}
PROFILE_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "email": {"type": "string"},
        "phone": {"type": "string", "pattern": r"^\+[1-9][0-9]{6,14}$"},
        "locale": {"type": "string"},
        "timezone": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}
DEVICE_BODY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["token", "platform"],
    "properties": {
        "token": {"type": "string", "maxLength": 4096},
        "platform": {"enum": list(PLATFORMS)},
        "active": {"type": "boolean"},
    },
}
ACCEPTED = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"const": "accepted"}},
    "additionalProperties": True,
}


def _paths() -> dict[str, Any]:
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "/health": {
            "get": {
                "summary": "Liveness and readiness of this worker",
                "security": [],
                "responses": {
                    "200": _json({"type": "object"}, "Running."),
                    "503": _json({"type": "object"}, "Failing: stopping."),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
            }
        },
        "/v1/notifications": {
            "post": {
                "summary": "Accept a notification (202: queued, not yet delivered)",
                "security": secured,
                "requestBody": _body(_ref("NotificationRequest")),
                "responses": {
                    "202": _json(
                        {
                            "type": "object",
                            "required": ["notification_id", "status"],
                            "properties": {
                                "notification_id": {"type": "string"},
                                "status": {"enum": ["accepted", "duplicate"]},
                            },
                        },
                        "Accepted; `duplicate` when the key was already used "
                        "for this same request (nothing is enqueued).",
                    ),
                    **_errors(400, 401, 403, 409, 422),
                },
            }
        },
        "/v1/notifications/{notification_id}": {
            "get": {
                "summary": "A notification's per-channel status and decision trail",
                "security": secured,
                "parameters": [
                    {
                        "name": "notification_id",
                        "in": "path",
                        "required": True,
                        "description": "As POST returned it: n_, the lane's letter, "
                        "the user's partitioner hash and a digest (pipeline/ids.py).",
                        "schema": {
                            "type": "string",
                            "pattern": NOTIFICATION_ID_PATTERN,
                        },
                    }
                ],
                "responses": {
                    "200": _json(_ref("NotificationStatus"), "The status."),
                    **_errors(401, 403, 404),
                },
            }
        },
        "/v1/users/{user_id}": {
            "get": {
                "summary": "A user's profile",
                "security": secured,
                "parameters": [USER_ID, TENANT],
                "responses": {
                    "200": _json(_ref("UserProfile"), "The profile."),
                    **_errors(401, 403, 404),
                },
            },
            "put": {
                "summary": "Replace a user's profile (applied asynchronously)",
                "security": secured,
                "parameters": [USER_ID, TENANT],
                "requestBody": _body(PROFILE_BODY),
                "responses": {
                    "202": _json(ACCEPTED, "Accepted."),
                    **_errors(400, 401, 403, 422),
                },
            },
        },
        "/v1/users/{user_id}/preferences": {
            "get": {
                "summary": "A user's preferences (defaults if never set)",
                "security": secured,
                "parameters": [USER_ID, TENANT],
                "responses": {
                    "200": _json(_ref("Preferences"), "The preferences."),
                    **_errors(401, 403),
                },
            },
            "put": {
                "summary": "Replace a user's preferences (applied asynchronously)",
                "security": secured,
                "parameters": [USER_ID, TENANT],
                "requestBody": _body(PREFERENCES_BODY),
                "responses": {
                    "202": _json(ACCEPTED, "Accepted."),
                    **_errors(400, 401, 403, 422),
                },
            },
        },
        "/v1/users/{user_id}/devices": {
            "post": {
                "summary": "Register or refresh a push token",
                "security": secured,
                "parameters": [USER_ID, TENANT],
                "requestBody": _body(DEVICE_BODY),
                "responses": {
                    "202": _json(ACCEPTED, "Accepted."),
                    **_errors(400, 401, 403, 422),
                },
            }
        },
        "/v1/users/{user_id}/devices/{token}": {
            "delete": {
                "summary": "Deactivate a push token",
                "security": secured,
                "parameters": [
                    USER_ID,
                    {
                        "name": "token",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "platform",
                        "in": "query",
                        "required": False,
                        "schema": {"enum": list(PLATFORMS)},
                    },
                    TENANT,
                ],
                "responses": {
                    "202": _json(ACCEPTED, "Accepted."),
                    **_errors(401, 403, 422),
                },
            }
        },
        "/v1/schemas": {
            "get": {
                "summary": "The published JSON Schemas",
                "security": secured,
                "responses": {
                    "200": _json({"type": "object"}, "Name → path."),
                    **_errors(401),
                },
            }
        },
        "/v1/schemas/{name}": {
            "get": {
                "summary": "One published JSON Schema",
                "security": secured,
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": _json({"type": "object"}, "The JSON Schema."),
                    **_errors(401, 404),
                },
            }
        },
        "/v1/admin/keys": {
            "get": {
                "summary": "List API keys (admin scope; secrets never shown)",
                "security": secured,
                "parameters": [TENANT],
                "responses": {
                    "200": _json({"type": "object"}, "The keys."),
                    **_errors(401, 403),
                },
            },
            "post": {
                "summary": "Create a tenant API key (admin scope)",
                "security": secured,
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["tenant"],
                        "properties": {
                            "tenant": {"type": "string", "minLength": 1},
                            "scopes": {
                                "type": "array",
                                "items": {"enum": ["notify", "admin"]},
                                "minItems": 1,
                            },
                        },
                    }
                ),
                "responses": {
                    "201": _json(
                        {
                            "type": "object",
                            "required": ["key_id", "tenant", "api_key"],
                            "properties": {
                                "key_id": {"type": "string"},
                                "tenant": {"type": "string"},
                                "scopes": {"type": "array"},
                                "api_key": {
                                    "type": "string",
                                    "description": "Shown once; only its hash is kept.",
                                },
                            },
                        },
                        "Created.",
                    ),
                    **_errors(400, 401, 403, 422),
                },
            },
        },
        "/v1/admin/keys/{key_id}": {
            "delete": {
                "summary": "Revoke an API key (admin scope)",
                "security": secured,
                "parameters": [
                    {
                        "name": "key_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": _json({"type": "object"}, "Revoked."),
                    **_errors(401, 403, 404),
                },
            }
        },
    }


def _delivery_paths() -> dict[str, Any]:
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    token = {
        "name": "token",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    inbox = {
        "type": "object",
        "required": ["user_id", "unread", "items"],
        "properties": {
            "user_id": {"type": "string"},
            "unread": {"type": "integer"},
            "items": {"type": "array", "items": _ref("InboxItem")},
        },
    }
    return {
        "/v1/users/{user_id}/inbox": {
            "get": {
                "summary": "A user's in-app messages, newest first",
                "security": secured,
                "parameters": [
                    USER_ID,
                    TENANT,
                    {
                        "name": "unread",
                        "in": "query",
                        "required": False,
                        "schema": {"enum": ["true", "false"]},
                    },
                ],
                "responses": {
                    "200": _json(inbox, "The inbox."),
                    **_errors(401, 403),
                },
            }
        },
        "/v1/users/{user_id}/inbox/{notification_id}/read": {
            "post": {
                "summary": "Mark one in-app message read (applied asynchronously)",
                "security": secured,
                "parameters": [
                    USER_ID,
                    TENANT,
                    {
                        "name": "notification_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "202": _json(ACCEPTED, "Accepted."),
                    **_errors(401, 403),
                },
            }
        },
        "/v1/users/{user_id}/inbox/stream": {
            "get": {
                "summary": "New in-app messages as server-sent events (`event: "
                "message`, data = InboxItem); a worker not holding the inbox "
                "answers 307 to the one that does",
                "security": secured,
                "parameters": [USER_ID, TENANT],
                "responses": {
                    "200": {
                        "description": "An event stream until the client leaves or "
                        "the partition moves (then reconnect).",
                        "content": {
                            "text/event-stream": {"schema": {"type": "string"}}
                        },
                    },
                    "307": {"description": "Reconnect at the Location given."},
                    **_errors(401, 403),
                },
            }
        },
        "/v1/webhooks/{provider}": {
            "post": {
                "summary": "Delivery receipts from a provider (twilio, sendgrid, "
                "generic), authenticated by the provider's signature, not a key",
                "security": [],
                "parameters": [
                    {
                        "name": "provider",
                        "in": "path",
                        "required": True,
                        "schema": {"enum": ["twilio", "sendgrid", "generic"]},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {"type": "object"}
                        },
                        JSON: {"schema": {"type": "object"}},
                    },
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "received": {"type": "integer"},
                                "applied": {"type": "integer"},
                            },
                        },
                        "Receipts turned into events.",
                    ),
                    "401": _json(_ref("Error"), "The signature does not verify."),
                    **_errors(404, 422),
                },
            }
        },
        "/t/o/{token}": {
            "get": {
                "summary": "Email open pixel (signed token, no key)",
                "security": [],
                "parameters": [token],
                "responses": {
                    "200": {
                        "description": "A 1×1 GIF.",
                        "content": {"image/gif": {"schema": {"type": "string"}}},
                    },
                    "404": _json(_ref("Error"), "Not a valid tracking link."),
                    **_errors(),
                },
            }
        },
        "/t/c/{token}": {
            "get": {
                "summary": "Email click redirect, only to the URL signed into the "
                "token (no key)",
                "security": [],
                "parameters": [token],
                "responses": {
                    "302": {"description": "To the signed target URL."},
                    "404": _json(_ref("Error"), "Not a valid tracking link."),
                    **_errors(),
                },
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    """The whole document; routes and this document are checked against each other."""
    published = {
        name: jsonschema.schema_for(record)
        for name, record in (
            ("NotificationRequest", NotificationRequest),
            *(
                (record.__name__, record)
                for record in jsonschema.PUBLISHED.values()
                if record is not NotificationRequest
            ),
        )
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "notify-pipeline",
            "version": "1",
            "description": "Accept notifications, manage user state, read status.",
        },
        "paths": {**_paths(), **_delivery_paths()},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                **published,
                "NotificationStatus": {"type": "object"},
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "field": {"type": "string"},
                            },
                        }
                    },
                },
            },
        },
    }
