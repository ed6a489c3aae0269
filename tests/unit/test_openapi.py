"""The OpenAPI document matches the routes the server really serves."""

from __future__ import annotations

import importlib

import pytest
from jsonschema import Draft202012Validator

from pipeline.api.openapi import openapi_document
from pipeline.app import DISCOVER, app

for _module in DISCOVER:
    importlib.import_module(_module)


def served() -> dict[str, set[str]]:
    """Path → HTTP methods of every view registered on the app's web server."""
    routes: dict[str, set[str]] = {}
    for path, view in app.web.views.items():
        routes[path] = {m.lower() for m in view.get_methods()} - {"head"}
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
    """Every operation requires the bearer key but /health, /openapi.json, and
    those that providers and mail clients call, which check their own signature."""
    document = openapi_document()
    public = {
        (path, method)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if operation.get("security") == []
    }
    assert public == {
        ("/health", "get"),
        ("/openapi.json", "get"),
        ("/v1/webhooks/{provider}", "post"),
        ("/t/o/{token}", "get"),
        ("/t/c/{token}", "get"),
    }


def test_component_schemas_are_valid_json_schema() -> None:
    """The request and record schemas the document embeds are valid 2020-12."""
    for name, schema in openapi_document()["components"]["schemas"].items():
        try:
            Draft202012Validator.check_schema(schema)
        except Exception as exc:  # noqa: BLE001 - report which one
            pytest.fail(f"{name}: {exc}")
