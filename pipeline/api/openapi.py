"""The OpenAPI 3.1 document, generated from the routes' declared operations.

Nothing here describes a shape by hand: every body, answer and parameter
schema comes from a record (`schemas.records`, `schemas.api`) through
pydantic, and every path and operation from the `route` and `operation`
declarations on the views (`pipeline.api.contract`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, TypeAdapter

from pipeline.api.contract import ROUTES, Operation, contract_of
from schemas.api import Error
from schemas.jsonschema import PublishedSchema, components

JSON = "application/json"
METHODS = ("get", "put", "post", "delete", "patch")
REF = "#/components/schemas/{model}"

#: What each error status means, for every operation that may answer it.
ERRORS = {
    400: "The body is not JSON.",
    401: "No valid API key.",
    403: "The key may not act for this tenant or lacks the scope.",
    404: "Nothing under this id.",
    409: "The idempotency key was used for a different request.",
    413: "The body is larger than this operation takes.",
    415: "The body's media type is not one this operation takes.",
    422: "A field is missing or wrong; `error.field` names it.",
    503: "Not ready: the worker is starting or stopping, or its partitions "
    "are being reassigned; retry after `Retry-After` seconds.",
}


def operations() -> Iterator[tuple[str, str, Operation]]:
    """Every declared (path, method, operation), in registration order."""
    for path, view in ROUTES.items():
        for method in METHODS:
            contract = contract_of(getattr(view, method, None))
            if contract is not None:
                yield path, method, contract


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref(model)}}}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: a query string has no null."""
    members = schema.get("anyOf")
    if members is None:
        return schema
    kept = [member for member in members if member != {"type": "null"}]
    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    if len(kept) == 1:
        return {**rest, **kept[0]}
    return {**rest, "anyOf": kept}


def _parameters(contract: Operation) -> list[dict[str, Any]]:
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": TypeAdapter(tp).json_schema(
                ref_template=REF, schema_generator=PublishedSchema
            ),
        }
        for name, tp in contract.path.items()
    ]
    if contract.query is not None:
        schema = contract.query.model_json_schema(
            ref_template=REF, schema_generator=PublishedSchema
        )
        required = set(schema.get("required", ()))
        for name, field_schema in schema["properties"].items():
            info = contract.query.model_fields[name]
            parameter = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": _without_null(field_schema),
            }
            if info.description:
                parameter["description"] = info.description
            parameters.append(parameter)
    return parameters


def _errors(contract: Operation) -> list[int]:
    statuses = set(contract.errors) | {503}
    if not contract.public:
        statuses |= {401, 403}
    if contract.body is not None:
        statuses |= {400, 422}
    if contract.body_text:
        statuses |= {413, 415, 422}
    if contract.path or contract.query is not None:
        statuses.add(422)
    return sorted(statuses)


def _media_schema(media: str) -> dict[str, Any]:
    """A non-record answer: a JSON document is an object, anything else text."""
    if media.endswith("json"):
        return {"type": "object"}
    return {"type": "string"}


def _operation(contract: Operation, doc: str | None) -> dict[str, Any]:
    ok: dict[str, Any]
    if contract.answer is not None:
        ok = _json(contract.answer, (contract.answer.__doc__ or "").strip())
    else:
        ok = {
            "description": "; ".join(contract.media.values()) or "Done.",
            "content": {
                media: {"schema": _media_schema(media)} for media in contract.media
            },
        }
        if not contract.media:
            del ok["content"]
    if contract.links:
        ok["links"] = {
            name: {
                "operationId": link.operation_id,
                "parameters": dict(link.parameters),
                **({"description": link.description} if link.description else {}),
            }
            for name, link in contract.links.items()
        }
    responses: dict[str, Any] = {str(contract.status): ok}
    for status, description in contract.same_answer.items():
        assert contract.answer is not None  # noqa: S101 - a declaration error
        responses[str(status)] = _json(contract.answer, description)
    for status, description in contract.other.items():
        responses[str(status)] = {"description": description}
    for status in _errors(contract):
        responses.setdefault(str(status), _json(Error, ERRORS[status]))
    document: dict[str, Any] = {
        "operationId": contract.operation_id,
        "summary": contract.summary,
        "security": [] if contract.public else [{"bearer": []}],
        "responses": responses,
    }
    if doc:
        document["description"] = " ".join(doc.split())
    parameters = _parameters(contract)
    if parameters:
        document["parameters"] = parameters
    if contract.body is not None:
        schema = _ref(contract.body)
        content = {JSON: {"schema": schema}}
        for media in contract.body_media:
            content[media] = {"schema": {"type": "object"}}
        document["requestBody"] = {"required": True, "content": content}
    elif contract.body_text:
        document["requestBody"] = {
            "required": True,
            "content": {
                media: {"schema": dict(schema)}
                for media, schema in contract.body_text.items()
            },
        }
    return document


def _models() -> list[type[BaseModel]]:
    seen: dict[str, type[BaseModel]] = {"Error": Error}
    for _, _, contract in operations():
        for model in (contract.answer, contract.body):
            if model is not None:
                seen.setdefault(model.__name__, model)
    return list(seen.values())


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The whole document (built once: routes are fixed once the app is loaded)."""
    paths: dict[str, dict[str, Any]] = {}
    for path, method, contract in operations():
        handler = getattr(ROUTES[path], method)
        paths.setdefault(path, {})[method] = _operation(contract, handler.__doc__)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "notify-pipeline",
            "version": "1",
            "description": "Accept notifications, manage user state, read status. "
            "Every shape here is generated from the records the worker uses.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": components([(m, "validation") for m in _models()], REF),
        },
    }
