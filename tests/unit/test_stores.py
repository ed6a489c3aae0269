"""The RocksDB store collects garbage only after dropping a database, and
keeps no write-ahead log of its own."""

from __future__ import annotations

import asyncio
import gc
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from faust.types import TP

import pipeline.stores
from pipeline.stores import RocksStore
from pipeline.streams import acting_for
from schemas.records import LedgerEntry
from tables.ledger import ledger


def store_at(tmp_path: Path) -> RocksStore:
    """The ledger's store as a worker makes it, under ``tmp_path``."""
    url = f"rocksdb://{tmp_path}"
    store = ledger._new_store_by_url(url)  # type: ignore[attr-defined]
    assert isinstance(store, RocksStore), type(store)
    return store


def counting_collections(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one per full collection asked for."""
    collected: list[int] = []

    def collect(*_: object) -> int:
        collected.append(1)
        return 0

    monkeypatch.setattr(gc, "collect", collect)
    return collected


def test_a_rocksdb_table_gets_the_project_store(tmp_path: Path) -> None:
    """An empty store is falsy (a mapping): it is still the one chosen."""
    store = store_at(tmp_path)
    assert not store
    memory = ledger._new_store_by_url("memory://")  # type: ignore[attr-defined]
    assert type(memory).__module__ == "faust.stores.memory"


@pytest.fixture
def changelog() -> str:
    """The ledger table's changelog topic."""
    return str(ledger.changelog_topic.get_topic_name())


def test_nothing_revoked_collects_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changelog: str
) -> None:
    collected, store = counting_collections(monkeypatch), store_at(tmp_path)
    store.revoke_partitions(ledger, set())
    store.revoke_partitions(ledger, {TP(changelog, 3)})  # never opened
    assert collected == []


def test_a_dropped_database_is_collected_once_per_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changelog: str
) -> None:
    collected, store = counting_collections(monkeypatch), store_at(tmp_path)
    store._dbs[0] = object()
    store._dbs[1] = object()

    async def rebalance() -> list[int]:
        store.revoke_partitions(ledger, {TP(changelog, 0)})
        store.revoke_partitions(ledger, {TP(changelog, 1)})
        assert collected == [] and pipeline.stores._scheduled
        await asyncio.sleep(0)
        return list(collected)

    assert asyncio.run(rebalance()) == [1]
    assert store._dbs == {}


def test_a_partition_database_keeps_no_write_ahead_log(tmp_path: Path) -> None:
    """The changelog is the log: RocksDB's own stays empty."""
    store = store_at(tmp_path)
    db = store._db_for_partition(1)
    for n in range(200):
        db.put(b"key%d" % n, b"v" * 100)
    logs = list(Path(store.partition_path(1)).glob("*.log"))
    assert logs and all(log.stat().st_size == 0 for log in logs)
    assert db.get(b"key7") == b"v" * 100
    db.close()


class Event:
    """Stands for a stream's event: tables take the partition from it."""

    def __init__(self, message: object) -> None:
        self.message = message


def test_a_table_get_reads_the_store_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changelog: str
) -> None:
    """Faust's ``get`` asked whether the key was there, then for its value,
    raising and catching a KeyError for a missing one; here one read each."""
    store = store_at(tmp_path)
    monkeypatch.setattr(ledger, "_data", store)
    entry = LedgerEntry(
        state="sent", attempt=0, redrive=0, updated_at=datetime(2026, 12, 5, tzinfo=UTC)
    )
    reads: list[bytes] = []
    read = store._get

    def counted(key: bytes) -> bytes | None:
        reads.append(key)
        return read(key)

    event = Event(SimpleNamespace(partition=2, topic=changelog))
    with acting_for(event):  # type: ignore[arg-type]
        store["n_1:email:a@example.com"] = entry
        monkeypatch.setattr(store, "_get", counted)
        monkeypatch.setattr(store, "_contains", lambda key: pytest.fail("asked twice"))
        assert ledger.get("n_1:email:a@example.com") == entry
        assert ledger.get("n_2:email:b@example.com") is None
        assert ledger.get("n_2:email:b@example.com", "none") == "none"
    assert reads == [
        b"n_1:email:a@example.com",
        b"n_2:email:b@example.com",
        b"n_2:email:b@example.com",
    ]
    for db in store._dbs.values():
        db.close()
