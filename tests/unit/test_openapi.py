"""The OpenAPI document matches the routes the server really serves."""

from __future__ import annotations

import importlib
import re

import pytest
from jsonschema import Draft202012Validator

from pipeline.api import dashboard, docs
from pipeline.api.openapi import openapi_document
from pipeline.app import DISCOVER, app

for _module in DISCOVER:
    importlib.import_module(_module)


def served() -> dict[str, set[str]]:
    """Path → HTTP methods of every view registered on the app's web server,
    but the pages (the interactive docs, the dashboard), which show the API
    rather than being part of it."""
    routes: dict[str, set[str]] = {}
    for path, view in app.web.views.items():
        if path in docs.ROUTES or path in dashboard.ROUTES:
            continue
        # A parameter's pattern is the router's business, not the document's.
        template = re.sub(r"\{(\w+):[^{}]*\}", r"{\1}", path)
        routes[template] = {m.lower() for m in view.get_methods()} - {"head"}
    return routes


def test_every_route_is_documented_and_nothing_else() -> None:
    """Each served path and method is in the document, and each documented one served."""
    document = openapi_document()["paths"]
    documented = {path: set(ops) for path, ops in document.items()}
    assert served() == documented


def test_no_faust_builtin_pages_are_served() -> None:
    """Faust's unauthenticated debug pages (stats, graph, tables) are not mounted."""
    assert app.web.blueprints._enabled == []


def test_only_health_the_document_and_signed_calls_are_public() -> None:
    """Every operation requires the bearer key but /health, /metrics (no
    label names a user or a tenant), /openapi.json, and those that providers
    and mail clients call, which check their own signature."""
    document = openapi_document()
    public = {
        (path, method)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if operation.get("security") == []
    }
    assert public == {
        ("/health", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/v1/webhooks/{provider}", "post"),
        ("/t/o/{token}", "get"),
        ("/t/c/{token}", "get"),
        ("/t/u/{token}", "get"),
        ("/t/u/{token}", "post"),
    }


def test_component_schemas_are_valid_json_schema() -> None:
    """The request and record schemas the document embeds are valid 2020-12."""
    for name, schema in openapi_document()["components"]["schemas"].items():
        try:
            Draft202012Validator.check_schema(schema)
        except Exception as exc:  # noqa: BLE001 - report which one
            pytest.fail(f"{name}: {exc}")


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_every_reference_resolves_inside_the_document() -> None:
    """No `$ref` points outside the served document or at nothing."""
    document = openapi_document()
    broken = []
    for ref in sorted(set(_refs(document))):
        node: object = document
        if not ref.startswith("#/"):
            broken.append(ref)
            continue
        for part in ref[2:].split("/"):
            if not isinstance(node, dict) or part not in node:
                broken.append(ref)
                break
            node = node[part]
    assert broken == []


def test_operation_ids_are_unique_and_links_name_real_parameters() -> None:
    """Links (what stateful fuzzing follows) lead to operations and their parameters."""
    document = openapi_document()
    operations = {
        operation["operationId"]: operation
        for methods in document["paths"].values()
        for operation in methods.values()
    }
    count = sum(len(methods) for methods in document["paths"].values())
    assert len(operations) == count
    links = [
        link
        for operation in operations.values()
        for response in operation["responses"].values()
        for link in response.get("links", {}).values()
    ]
    assert links, "the document declares no links"
    for link in links:
        target = operations[link["operationId"]]
        names = {parameter["name"] for parameter in target.get("parameters", [])}
        assert set(link["parameters"]) <= names, link


def test_query_parameters_never_take_null() -> None:
    """A query string has no null: `?unread=null` is refused, and the document
    says so (only "true" or "false")."""
    inbox = openapi_document()["paths"]["/v1/users/{user_id}/inbox"]["get"]
    unread = next(p for p in inbox["parameters"] if p["name"] == "unread")
    assert unread["schema"] == {"enum": ["true", "false"], "type": "string"}
    for methods in openapi_document()["paths"].values():
        for operation in methods.values():
            for parameter in operation.get("parameters", []):
                assert "null" not in str(parameter["schema"]), parameter
