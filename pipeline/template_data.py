"""Refuse at the door a request whose data its templates cannot render.

Each template declares the data it needs (`pipeline.rendering`); a request
lacking a required field would be accepted and then fail at send time with a
render error. Checked on the API (422) and in ingest (dead-lettered), against
every template that could render the request on its channels.
"""

from __future__ import annotations

import functools

from pipeline.errors import InvalidMessage
from pipeline.policy import TypeCatalogue, resolve_channels
from pipeline.rendering import TemplateStore
from pipeline.settings import get_settings
from schemas.records import NotificationRequest


@functools.cache
def _templates() -> TemplateStore:
    return TemplateStore.load()


@functools.cache
def _catalogue() -> TypeCatalogue:
    return TypeCatalogue.load(get_settings().types_file or None)


def check_template_data(request: NotificationRequest) -> None:
    """Raise `InvalidMessage` (``missing_data``) naming the first data field the
    request's templates need and its ``data`` lacks."""
    channels = resolve_channels(request, _catalogue())
    missing = _templates().missing_data(request.type, channels, request.data)
    if missing:
        field = f"data.{missing[0]}"
        listed = ", ".join(missing)
        raise InvalidMessage(
            f"{field}: required by the {request.type!r} templates (missing: {listed})",
            field=field,
            code="missing_data",
        )
