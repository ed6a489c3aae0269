"""The project's Faust table classes: str keys stored as UTF-8, like the topics.

Faust encodes a ``str`` table key as JSON (``"n_1"`` with its quotes), while
our topics carry raw UTF-8 keys. Routing a web request to the worker that holds
a key hashes the changelog key, so with JSON keys it hashed other bytes than
the topic the table was built from and asked the wrong worker.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.tables.globaltable import GlobalTable as FaustGlobalTable


def _serializer(typ: Any, fallback: Any) -> Any:
    return "raw" if typ is str else fallback


class Table(faust.Table):
    """A Faust table whose str keys are raw UTF-8 bytes."""

    def _serializer_from_type(self, typ: Any) -> Any:
        return _serializer(typ, super()._serializer_from_type(typ))


class GlobalTable(FaustGlobalTable):
    """A Faust global table whose str keys are raw UTF-8 bytes."""

    def _serializer_from_type(self, typ: Any) -> Any:
        return _serializer(typ, super()._serializer_from_type(typ))
