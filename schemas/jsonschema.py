"""The published JSON Schemas (draft 2020-12), generated from the records.

``python -m schemas.jsonschema`` writes them under ``schemas/json/``; a test
keeps the committed files equal to what the records generate. Each document
is self-contained: nested records sit under its own ``$defs``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema

from schemas.campaigns import Campaign, CampaignRequest, Segment
from schemas.records import (
    DeliveryJob,
    DeviceToken,
    InboxItem,
    NotificationEvent,
    NotificationRequest,
    Preferences,
    Suppression,
    UserProfile,
)

Schema = dict[str, Any]
DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: Where ``python -m schemas.jsonschema`` writes, shipped as package data.
SCHEMA_DIR = Path(__file__).parent / "json"


class PublishedSchema(GenerateJsonSchema):
    """pydantic's generator, without a title on every property."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def schema_name(model: type[BaseModel]) -> str:
    """The published name of a record: its class name in kebab case."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", model.__name__).lower()


PUBLISHED: dict[str, type[BaseModel]] = {
    schema_name(model): model
    for model in (
        NotificationRequest,
        Preferences,
        UserProfile,
        DeviceToken,
        NotificationEvent,
        DeliveryJob,
        Suppression,
        InboxItem,
        CampaignRequest,
        Campaign,
        Segment,
    )
}


def schema_for(model: type[BaseModel]) -> Schema:
    """The JSON Schema document of one record, nested records under ``$defs``."""
    body = model.model_json_schema(
        ref_template="#/$defs/{model}", schema_generator=PublishedSchema
    )
    return {"$schema": DIALECT, "$id": f"{schema_name(model)}.json", **body}


def components(
    models: list[tuple[type[BaseModel], JsonSchemaMode]], ref_template: str
) -> dict[str, Schema]:
    """Schemas of ``models`` and every record they nest, by name, for OpenAPI."""
    _, top = models_json_schema(
        models, ref_template=ref_template, schema_generator=PublishedSchema
    )
    schemas: dict[str, Schema] = top.get("$defs", {})
    return schemas


def render(model: type[BaseModel]) -> str:
    """The text of a record's schema file: sorted keys, two-space indent."""
    return json.dumps(schema_for(model), indent=2, sort_keys=True) + "\n"


def write_all(directory: Path) -> list[Path]:
    """Write every published schema as ``<name>.json`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in PUBLISHED.items():
        path = directory / f"{name}.json"
        path.write_text(render(model), encoding="utf-8", newline="\n")
        written.append(path)
    return written


def main() -> None:
    """Regenerate the committed schema files from the records."""
    for path in write_all(SCHEMA_DIR):
        sys.stdout.write(f"wrote {path}\n")


if __name__ == "__main__":
    main()
