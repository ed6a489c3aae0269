"""The codecs Faust (de)serialises with, registered once by name.

``orjson`` encodes plain values (dicts, lists) the app sends. ``model`` is
the codec of every `schemas.records.Record` (Faust finds it through the
record class's ``_options.serializer``): it hands the bytes it reads to the
record's ``from_data`` untouched, so pydantic parses the JSON straight into
the model in one pass, and writes a record with pydantic's own serialiser.
"""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs
from pydantic import BaseModel

CODEC_NAME = "orjson"
MODEL_CODEC = "model"


class OrjsonCodec(codecs.Codec):
    """Faust codec that (de)serializes with orjson: fast, strict UTF-8 JSON."""

    def _dumps(self, obj: Any) -> bytes:
        return dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


class ModelCodec(codecs.Codec):
    """Records as their JSON; reading leaves the parsing to the record class."""

    def _dumps(self, obj: Any) -> bytes:
        if isinstance(obj, BaseModel):
            return obj.__pydantic_serializer__.to_json(obj)
        return dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return s


def _default(obj: Any) -> Any:
    # Records nested in plain values get their JSON form; anything else orjson
    # cannot encode natively (Decimal, set) gets its plain JSON form.
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    return str(obj)


def dumps(obj: Any, *, sort_keys: bool = False) -> bytes:
    """orjson encoding that also handles (nested) records."""
    option = orjson.OPT_SORT_KEYS if sort_keys else 0
    return orjson.dumps(obj, default=_default, option=option)


def register() -> None:
    """Register the codecs; safe to call more than once."""
    if CODEC_NAME not in codecs.codecs:
        codecs.register(CODEC_NAME, OrjsonCodec())
    if MODEL_CODEC not in codecs.codecs:
        codecs.register(MODEL_CODEC, ModelCodec())


register()
