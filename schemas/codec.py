"""The orjson codec, registered once with Faust under the name ``orjson``."""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs

CODEC_NAME = "orjson"


class OrjsonCodec(codecs.Codec):
    """Faust codec that (de)serializes with orjson: fast, strict UTF-8 JSON."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj, default=_default)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


def _default(obj: Any) -> Any:
    # Faust records reach the codec already as dicts; anything else that orjson
    # cannot encode natively (Decimal, set) gets its plain JSON form.
    if hasattr(obj, "asdict"):
        return obj.asdict()
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    return str(obj)


def dumps(obj: Any, *, sort_keys: bool = False) -> bytes:
    """orjson encoding that also handles (nested) Faust records."""
    option = orjson.OPT_SORT_KEYS if sort_keys else 0
    return orjson.dumps(obj, default=_default, option=option)


def register() -> None:
    """Register the codec; safe to call more than once."""
    if CODEC_NAME not in codecs.codecs:
        codecs.register(CODEC_NAME, OrjsonCodec())


register()
