"""The project's Faust table classes: str keys stored as UTF-8, like the topics.

Faust encodes a ``str`` table key as JSON (``"n_1"`` with its quotes), while
our topics carry raw UTF-8 keys. Routing a web request to the worker that holds
a key hashes the changelog key, so with JSON keys it hashed other bytes than
the topic the table was built from and asked the wrong worker.

A ``rocksdb://`` table's store is `pipeline.stores.RocksStore`.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.stores.base import SerializedStore
from faust.tables.globaltable import GlobalTable as FaustGlobalTable
from faust.types import StoreT
from yarl import URL

from pipeline.stores import RocksStore


def _store(table: Any, url: str | URL) -> StoreT | None:
    """A ``rocksdb://`` table's store (`pipeline.stores`); None for others."""
    if URL(str(url)).scheme != "rocksdb":
        return None
    return RocksStore(
        url,
        table.app,
        table,
        table_name=table.name,
        key_type=table.key_type,
        key_serializer=table.key_serializer,
        value_serializer=table.value_serializer,
        value_type=table.value_type,
        loop=table.loop,
        options=table.options,
    )


class _Ours:
    """What both table classes change in Faust's: raw str keys, our store."""

    def _serializer_from_type(self, typ: Any) -> Any:
        fallback = super()._serializer_from_type(typ)  # type: ignore[misc]
        return "raw" if typ is str else fallback

    def _new_store_by_url(self, url: str | URL) -> StoreT:
        store = _store(self, url)  # a store is a mapping: an empty one is falsy
        if store is None:
            return super()._new_store_by_url(url)  # type: ignore[misc]
        return store


class Table(_Ours, faust.Table):
    """A Faust table whose str keys are raw UTF-8 bytes, and whose changelog
    records take the worker's batch produce path (`pipeline.outbox`)."""

    def get(self, key: Any, default: Any = None) -> Any:
        """The value at ``key``, else ``default``: one store lookup.

        Faust's ``get`` asks the store whether the key is there, then for
        its value (two RocksDB reads), and for a missing key raises and
        catches a KeyError: about 80 µs of a core per notification on the
        hot path. A table with a ``default`` factory keeps Faust's way.
        """
        data = self.data
        if self.default is not None or not isinstance(data, SerializedStore):
            return super().get(key, default)
        raw = data._get(data._encode_key(key))
        if raw is None:
            return default
        self.on_key_get(key)
        return data._decode_value(raw)

    def on_key_set(self, key: Any, value: Any) -> None:
        partition = self.partition_for_key(key)
        if partition is None:  # Faust's partitioner decides: its own path
            super().on_key_set(key, value)
            return
        self._emit_changelog(partition, key, value, self.value_serializer)
        self._maybe_set_key_ttl(key, partition)
        self._sensor_on_set(self, key, value)

    def on_key_del(self, key: Any) -> None:
        partition = self.partition_for_key(key)
        if partition is None:
            super().on_key_del(key)
            return
        self._emit_changelog(partition, key, None, "raw")
        self._maybe_del_key_ttl(key, partition)
        self._sensor_on_del(self, key)

    def _emit_changelog(
        self, partition: int, key: Any, value: Any, value_serializer: Any
    ) -> None:
        # What Faust's `_on_changelog_sent` does per record, once per batch:
        # recovery reads the changelog from past the persisted offset.
        self.app.producer.emit(  # type: ignore[attr-defined]
            self.changelog_topic,
            key,
            value,
            partition=partition,
            key_serializer=self.key_serializer,
            value_serializer=value_serializer,
            on_acked=self._persisted,
        )

    def _persisted(self, tp: Any, offset: int) -> None:
        self.data.set_persisted_offset(tp, offset)


class GlobalTable(_Ours, FaustGlobalTable):
    """A Faust global table whose str keys are raw UTF-8 bytes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Faust counts every partition of a global table among recovery's
        # active ones, for good: after recovery, what another worker writes
        # to a partition it owns reaches this worker as a changelog event that
        # waits in a buffer of ``recovery_buffer_size`` events (1,000 by
        # default) before it is applied, so a key created, a limit set or an
        # address suppressed on one worker was not seen by the others for
        # that many writes. One event at a time, each applies as it comes.
        kwargs["recovery_buffer_size"] = 1
        super().__init__(*args, **kwargs)
