"""The served OpenAPI document against a real worker: schemathesis fuzzes the API.

Every operation of ``GET /openapi.json`` is called with data generated from the
document, positive and negative, and every built-in check of schemathesis
judges the answer; a stateful run follows the document's OpenAPI links; and
every ``$ref`` of the document must resolve inside it. A failure prints the
check, the answer and the ``curl`` that reproduces it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.schemas import OpenApiSchema

from tests.conftest import WorkerFactory
from tests.support import (
    ADMIN_KEY,
    BrokerUnderTest,
    SinkProcess,
    Topics,
    WorkerProcess,
    call,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration

#: Generated cases per operation in the fuzzing phase, positive and negative
#: together; the coverage phase adds its own boundary cases on top.
EXAMPLES_PER_OPERATION = 20
#: Scenarios of the stateful run, and the calls each may chain through links.
STATEFUL_SCENARIOS = 15
STATEFUL_STEPS = 6
#: Fixed so CI replays the same cases; hypothesis keeps no example database.
SEED = 20240611

#: An event stream answers until the client leaves: each call reads it this
#: long, so the stream gets fewer cases than the other operations.
STREAM_SECONDS = 0.3
STREAM_EXAMPLES = 5

#: The OpenAPI links the stateful run needs, as (source operation, status,
#: target operation, the parameters the link must fill and from where).
WANTED_LINKS: list[tuple[str, str, str, dict[str, str]]] = [
    (
        "POST /v1/notifications",
        "202",
        "GET /v1/notifications/{notification_id}",
        {"notification_id": "$response.body#/notification_id"},
    ),
    (
        "PUT /v1/users/{user_id}",
        "202",
        "GET /v1/users/{user_id}",
        {
            "user_id": "$request.path.user_id",
            "tenant": "$response.body#/profile/tenant",
        },
    ),
    (
        "PUT /v1/users/{user_id}/preferences",
        "202",
        "GET /v1/users/{user_id}/preferences",
        {
            "user_id": "$request.path.user_id",
            "tenant": "$response.body#/preferences/tenant",
        },
    ),
    (
        "POST /v1/users/{user_id}/devices",
        "202",
        "DELETE /v1/users/{user_id}/devices/{token}",
        {
            "user_id": "$request.path.user_id",
            "token": "$response.body#/device/token",
            "platform": "$response.body#/device/platform",
            "tenant": "$response.body#/device/tenant",
        },
    ),
    (
        "POST /v1/admin/keys",
        "201",
        "DELETE /v1/admin/keys/{key_id}",
        {"key_id": "$response.body#/key_id"},
    ),
]

HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})


@pytest.fixture
def worker(
    broker: BrokerUnderTest,
    topics: Topics,
    start_worker: WorkerFactory,
    tmp_path: Path,
) -> Iterator[WorkerProcess]:
    """One ready worker running both lanes, on this test's own topics, and
    the sink that owns the analytics store its /v1/analytics calls reach."""
    topics.create(broker.url)
    sink = SinkProcess.reading(broker.url, topics, tmp_path, unique("contract")).start()
    try:
        started = start_worker(notify_sink_url=sink.url)
        sink.wait_ready(timeout=90)
        started.wait_ready(timeout=90)
        yield started
    finally:
        sink.stop()


@pytest.fixture
def api_key(worker: WorkerProcess) -> str:
    """A fresh tenant's key with both scopes, usable once the worker knows it.

    It acts for its own tenant without ``?tenant=`` and may manage keys, so
    every operation can answer 2xx to it.
    """
    created = call(
        worker.web_port,
        "POST",
        "/v1/admin/keys",
        {"tenant": unique("tenant"), "scopes": ["notify", "admin"]},
        key=ADMIN_KEY,
    )
    assert created.status == 201, created
    key: str = created.body["api_key"]

    def known() -> bool:
        worker.assert_alive()
        return call(worker.web_port, "GET", "/v1/schemas", key=key).status == 200

    wait_for(known, timeout=30)
    return key


@pytest.fixture
def document(worker: WorkerProcess) -> dict[str, Any]:
    """The OpenAPI document exactly as the worker serves it."""
    reply = call(worker.web_port, "GET", "/openapi.json", key=None)
    assert reply.status == 200, reply
    assert isinstance(reply.body, dict)
    return reply.body


def contract_config(
    base_url: str, document: dict[str, Any], key: str
) -> schemathesis.Config:
    """Schemathesis settings: every check, both modes, bounded, reproducible."""
    schemes = document.get("components", {}).get("securitySchemes", {})
    # The key goes wherever each declared scheme says (a bearer header
    # today); the ignored_auth check then tries each call without it.
    auth = {name: auth_for(scheme, key) for name, scheme in schemes.items()}
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": base_url,
            "request-timeout": 15,
            "auth": {"openapi": auth} if auth else {},
            "generation": {
                "mode": "all",
                "max-examples": EXAMPLES_PER_OPERATION,
                "deterministic": True,
                "database": "none",
            },
            "checks": {"enabled": True},
            "phases": {
                "stateful": {
                    "max-steps": STATEFUL_STEPS,
                    # Only the links the document declares, none guessed.
                    "inference": {"algorithms": []},
                }
            },
            "operations": [
                {
                    "include-path-regex": "/stream$",
                    "request-timeout": STREAM_SECONDS,
                    "generation": {"max-examples": STREAM_EXAMPLES},
                },
                {
                    # Whether a string is a query is ClickHouse's to judge: a
                    # schema-valid body may be refused, 422 with its message.
                    "include-operation-id": "analyticsSql",
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": ["2XX", "401", "403", "422", "503"]
                        }
                    },
                },
            ],
        }
    )


def auth_for(scheme: dict[str, Any], key: str) -> dict[str, Any]:
    """The schemathesis auth entry that sends ``key`` as ``scheme`` declares."""
    if scheme.get("type") == "http" and scheme.get("scheme", "").lower() == "bearer":
        return {"bearer": key}
    if scheme.get("type") == "apiKey":
        return {"api_key": key}
    raise AssertionError(f"no way to send an API key through {scheme!r}")


@pytest.fixture
def api_schema(
    request: pytest.FixtureRequest,
    worker: WorkerProcess,
    api_key: str,
    document: dict[str, Any],
) -> OpenApiSchema:
    """The served document loaded by schemathesis, aimed at this worker."""
    # schemathesis 4.32's from_fixture() reads and rewrites the node's
    # `_nodeid`, which pytest 9.2 no longer has (it keeps `nodeid` only).
    setattr(request.node, "_nodeid", request.node.nodeid)  # noqa: B010
    base_url = f"http://127.0.0.1:{worker.web_port}"
    schema = schemathesis.openapi.from_dict(
        document, config=contract_config(base_url, document, api_key)
    )
    load_all_checks()
    disabled = [
        name
        for name in CHECKS.get_all_names()
        if not schema.config.checks_config_for().get_by_name(name=name).enabled
    ]
    # max_response_time runs only with a limit; the document promises none.
    assert disabled in ([], ["max_response_time"]), disabled
    return schema


contract = schemathesis.pytest.from_fixture("api_schema")


@contract.parametrize()
@hypothesis.settings(
    # The number of cases comes from contract_config(), per operation.
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_keeps_the_contract(case: schemathesis.Case) -> None:
    """Each operation, positive and negative data, answers as the document says."""
    within_cross_field_rules(case)
    case.call_and_validate()


def within_cross_field_rules(case: schemathesis.Case) -> None:
    """Keep a generated body inside the one rule JSON Schema cannot state,
    which the document says in words: ``expiry_at`` later than
    ``schedule_at`` (a notification's, a campaign's). A body breaking it is
    given no expiry; the rule itself is tested where the door is."""
    body = case.body
    if not isinstance(body, dict):
        return
    try:
        start = datetime.fromisoformat(str(body["schedule_at"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(body["expiry_at"]).replace("Z", "+00:00"))
        late = end <= start
    except (KeyError, TypeError, ValueError):
        return
    if late:
        body["expiry_at"] = None


def test_stateful_runs_follow_the_documents_links(api_schema: OpenApiSchema) -> None:
    """Chains of calls joined by the document's links keep the contract too.

    Skipped only while the document declares no link at all, which
    ``test_document_declares_the_links_between_resources`` reports.
    """
    if not declared_links(api_schema.raw_schema):
        pytest.skip("the served document declares no OpenAPI links yet")
    machine = api_schema.as_state_machine()
    try:
        machine.run(
            settings=hypothesis.settings(
                max_examples=STATEFUL_SCENARIOS,
                stateful_step_count=STATEFUL_STEPS,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
        )
    except FailureGroup as failures:
        # The group's message holds each failure with its curl; as an
        # AssertionError pytest shows it in full rather than as a traceback.
        raise AssertionError(failures.message) from None


def test_document_declares_the_links_between_resources(
    document: dict[str, Any],
) -> None:
    """Each resource a call creates links to the calls that read or remove it."""
    declared = declared_links(document)
    missing = [
        f"{source} -> {status} -> {target} with {params}"
        for source, status, target, params in WANTED_LINKS
        if not any(
            link_source == source
            and link_status == status
            and link_target == target
            and params.items() <= link_params.items()
            for link_source, link_status, link_target, link_params in declared
        )
    ]
    if missing:
        pytest.fail(
            "links missing from the served document:\n" + "\n".join(missing),
            pytrace=False,
        )


def test_every_ref_resolves_inside_the_served_document(
    document: dict[str, Any],
) -> None:
    """A client given only this document can follow every ``$ref`` in it."""
    broken = [
        f"{where}: {ref}"
        for where, ref in refs_in(document, "#")
        if resolve_pointer(document, ref) is None
    ]
    if broken:
        pytest.fail(
            "unresolvable $ref in the served document:\n" + "\n".join(broken),
            pytrace=False,
        )


def refs_in(node: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every ``$ref`` under ``node`` with the JSON pointer of the object holding it."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield where, ref
        for key, value in node.items():
            yield from refs_in(value, f"{where}/{escape(str(key))}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from refs_in(value, f"{where}/{index}")


def escape(token: str) -> str:
    """A JSON pointer reference token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


def resolve_pointer(document: dict[str, Any], ref: str) -> Any:
    """What ``ref`` points at inside ``document``; None if not there or not local."""
    if not ref.startswith("#"):
        return None  # the served document must stand alone
    node: Any = document
    for raw in ref[1:].split("/")[1:] if ref != "#" else []:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node


def declared_links(
    document: dict[str, Any],
) -> list[tuple[str, str, str, dict[str, str]]]:
    """The document's links as (source, status, target, parameters).

    Operations are named ``METHOD /path`` whether a link targets them by
    ``operationId`` or ``operationRef``; parameter names lose their
    ``path.``/``query.`` qualifier.
    """
    by_id: dict[str, str] = {}
    operations: list[tuple[str, dict[str, Any]]] = []
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method in HTTP_METHODS and isinstance(operation, dict):
                label = f"{method.upper()} {path}"
                operations.append((label, operation))
                if "operationId" in operation:
                    by_id[operation["operationId"]] = label
    links = []
    for label, operation in operations:
        for status, response in operation.get("responses", {}).items():
            response = follow(document, response)
            for link in (response or {}).get("links", {}).values():
                link = follow(document, link) or {}
                target = by_id.get(link.get("operationId", "")) or ref_label(
                    link.get("operationRef", "")
                )
                params = {
                    name.split(".", 1)[-1]: value
                    for name, value in link.get("parameters", {}).items()
                }
                links.append((label, str(status), target or "?", params))
    return links


def follow(document: dict[str, Any], node: Any) -> Any:
    """``node``, or what its ``$ref`` points at."""
    if isinstance(node, dict) and isinstance(node.get("$ref"), str):
        return resolve_pointer(document, node["$ref"])
    return node


def ref_label(operation_ref: str) -> str | None:
    """``METHOD /path`` of an ``operationRef`` like ``#/paths/~1v1~1x/get``."""
    parts = operation_ref.removeprefix("#/").split("/")
    if len(parts) != 3 or parts[0] != "paths":
        return None
    path = parts[1].replace("~1", "/").replace("~0", "~")
    return f"{parts[2].upper()} {path}"
