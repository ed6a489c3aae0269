"""What each API operation takes and answers, declared on its handler.

A view class is registered with `route` (which is ``app.page`` plus a record
of the path) and each handler method carries an `operation`: the records of
its body, query string, path parameters and answers. `pipeline.api.openapi`
builds the OpenAPI document from these declarations and the records, and
`pipeline.api.views.ApiView` checks path parameters against the same types,
so what the document says is what the server does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter

F = TypeVar("F", bound=Callable[..., Any])
V = TypeVar("V", bound=type)

#: Path → view class, in registration order.
ROUTES: dict[str, type] = {}


@dataclass(frozen=True)
class Link:
    """An OpenAPI link: a value of this answer feeds another operation."""

    operation_id: str
    parameters: Mapping[str, str]
    description: str = ""


@dataclass(frozen=True)
class Operation:
    """One HTTP operation's contract."""

    operation_id: str
    summary: str
    status: int
    #: The JSON answer of ``status``; None for an answer without a JSON body.
    answer: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    #: Path parameter → its type (an annotation pydantic can validate).
    path: Mapping[str, Any] = field(default_factory=dict)
    #: Error statuses besides 503 (every operation may answer 503).
    errors: tuple[int, ...] = ()
    #: True: no API key (a provider's signature or a signed token instead).
    public: bool = False
    #: A success answer that is not JSON: media type → description.
    media: Mapping[str, str] = field(default_factory=dict)
    #: Other statuses answered with the same record: status → description.
    same_answer: Mapping[int, str] = field(default_factory=dict)
    #: More answers without a body: status → description (redirects).
    other: Mapping[int, str] = field(default_factory=dict)
    #: Request media types besides JSON (a provider's form posts).
    body_media: tuple[str, ...] = ()
    #: A body that is text, not JSON (an upload): media type → its schema.
    body_text: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    links: Mapping[str, Link] = field(default_factory=dict)

    def adapters(self) -> dict[str, TypeAdapter[Any]]:
        """A validator per path parameter."""
        return {name: _adapter(tp) for name, tp in self.path.items()}


_ADAPTERS: dict[int, TypeAdapter[Any]] = {}


def _adapter(tp: Any) -> TypeAdapter[Any]:
    key = id(tp)
    if key not in _ADAPTERS:
        _ADAPTERS[key] = TypeAdapter(tp)
    return _ADAPTERS[key]


def operation(**declared: Any) -> Callable[[F], F]:
    """Attach an `Operation` to a handler method."""
    contract = Operation(**declared)

    def attach(handler: F) -> F:
        handler.__operation__ = contract  # type: ignore[attr-defined]
        return handler

    return attach


def contract_of(handler: Any) -> Operation | None:
    """The operation declared on a handler, if any."""
    return getattr(handler, "__operation__", None)


def route(path: str, on: Any = None, served: str | None = None) -> Callable[[V], V]:
    """``app.page(path)``, remembering the path for the OpenAPI document.

    ``on`` is the app (default: the project's), for views registered while
    the app module itself is still loading. ``served`` is the path as the
    router matches it, when it must say more than the documented template
    (a parameter that must not take a sibling's fixed name).
    """

    def register(view: V) -> V:
        if on is None:
            from pipeline.app import app
        ROUTES[path] = view
        (on or app).page(served or path)(view)
        return view

    return register
