"""The RocksDB table store, without a full garbage collection per table on
every rebalance, and without RocksDB's own write-ahead log.

Faust's store runs ``gc.collect()`` each time a table hears of a rebalance,
whether or not it gave up a partition (the collection closes the dropped
databases, whose handles it does not close itself). With twenty tables that
is twenty full collections, about a second of a worker's event loop, inside
the group's assignment callback: and the client sends no heartbeat while
that callback runs. On a busy host the callback outlasted the session
timeout, the broker expired the worker, and every rejoin began it again (a
worker that never got past its first minute). Here a collection runs only
when a database was really dropped, and once for all the tables that
dropped one in the same turn of the event loop.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import rocksdict
from faust.stores.rocksdb import Store
from faust.types import TP, CollectionT


class RocksStore(Store):
    """Faust's RocksDB store; collects garbage only after dropping a database."""

    def _open_for_partition(self, partition: int) -> rocksdict.Rdict:
        """A partition's database, written without RocksDB's write-ahead log.

        The changelog is the log: a crash loses the writes since the last
        memtable flush, the persisted changelog offset (a key of the same
        database, written after its record was acknowledged) with them, and
        recovery reads the changelog from that older offset, as Kafka
        Streams does. The log cost about 2 µs of a core per write, several
        writes per notification.
        """
        db = super()._open_for_partition(partition)
        unlogged = rocksdict.WriteOptions()
        # A property at runtime; the type stubs call it a method.
        unlogged.disable_wal = True  # type: ignore[method-assign, assignment]
        db.set_write_options(unlogged)
        return db

    def revoke_partitions(self, table: CollectionT, tps: set[TP]) -> None:
        dropped = False
        for tp in tps:
            if tp.topic in table.changelog_topic.topics:
                if self._dbs.pop(tp.partition, None) is not None:
                    self.logger.info(
                        "closing db %s partition %s", tp.topic, tp.partition
                    )
                    dropped = True
        if dropped:
            _collect_soon()


#: Whether a collection is already scheduled.
_scheduled = False


def _collect_soon() -> None:
    """One full collection, at the event loop's next turn, however many
    stores ask before it runs (outside a loop: now)."""
    global _scheduled
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        gc.collect()
        return
    if not _scheduled:
        _scheduled = True
        loop.call_soon(_collect)


def _collect() -> None:
    global _scheduled
    _scheduled = False
    gc.collect()


def active_dbs(table: Any) -> list[tuple[int, Any]] | None:
    """(partition, its RocksDB database) for each partition of ``table`` this
    worker actively owns, as Faust's own ``_dbs_for_actives`` picks them but
    with the partition; None for a store without a database per partition
    (the memory store of tests)."""
    dbs = getattr(getattr(table, "data", None), "_dbs", None)
    if dbs is None:
        return None
    actives = table.app.assignor.assigned_actives()
    changelog = table.changelog_topic_name
    return [(p, db) for p, db in list(dbs.items()) if TP(changelog, p) in actives]
