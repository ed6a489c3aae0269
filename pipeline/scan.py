"""Prefix scans of a table partition's local store.

A table's keys that share a prefix (a notification's ledger entries
``<id>:<channel>:...``, a user's idempotency keys ``["tenant","user",...``)
sit next to each other in a partition's RocksDB store, which keeps keys in
byte order: a scan seeks to the prefix and stops at the first key past it.
The memory store (tests) has no order and no partitions: its keys are
filtered whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipeline.sweep import stored_form


def prefixed(
    table: Any, partition: int, prefix: str, after: str | None = None
) -> Iterator[tuple[str, bytes]]:
    """``(key, stored JSON)`` of ``table``'s entries on ``partition`` whose key
    starts with ``prefix`` (and sorts after ``after``), in key order."""
    store = getattr(table, "data", table)  # a plain dict stands in for tests
    dbs = getattr(store, "_dbs", None)
    if dbs is None:
        keys = sorted(
            k
            for k in store
            if str(k).startswith(prefix) and (after is None or str(k) > after)
        )
        for key in keys:
            yield key, stored_form(store[key])
        return
    db = dbs.get(partition)
    if db is None:
        return
    start = store._encode_key(prefix)
    skip = None if after is None else store._encode_key(after)
    for raw_key, raw_value in db.items(from_key=skip or start):
        if raw_key == store.offset_key or raw_key == skip:
            continue
        if not raw_key.startswith(start):
            return
        yield store._decode_key(raw_key), raw_value


def estimated_size(table: Any, partition: int) -> int | None:
    """About how many entries ``table`` holds on ``partition`` (RocksDB's
    own estimate, memtables included; exact for the memory store)."""
    store = getattr(table, "data", table)
    dbs = getattr(store, "_dbs", None)
    if dbs is None:
        return len(store)
    db = dbs.get(partition)
    if db is None:
        return None
    return int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
