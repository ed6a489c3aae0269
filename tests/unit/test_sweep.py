"""Retention sweeps: slices from a cursor, owned partitions only, deletes on the
entry's own partition; expiry tests of the ledger and idempotency tables."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from faust.streams import current_event
from faust.types import TP
from rocksdict import Options, Rdict

from agents.retention import (
    idempotency_expired,
    ledger_expired,
    status_expired,
    user_partition,
)
from pipeline.app import app
from pipeline.clock import FrozenClock
from pipeline.partitioning import partition_for
from pipeline.scan import prefixed
from pipeline.sweep import Sweeper
from schemas.records import LedgerEntry, NotificationStatus, TrailEntry
from tables.idempotency import SeenRequest, seen_key

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
CHANGELOG = "test-things-changelog"


class MemoryStore(dict[str, bytes]):
    """The memory store's shape: a mapping, no per-partition databases."""


class RocksStore:
    """The RocksDB store's shape: one database per partition, raw bytes."""

    offset_key = b"__faust\x00offset__"

    def __init__(self, root: Path, partitions: int) -> None:
        # Raw mode, as Faust opens its stores: bytes in, bytes out, bytes order.
        self._dbs = {
            p: Rdict(str(root / f"p{p}"), Options(raw_mode=True))
            for p in range(partitions)
        }

    def _encode_key(self, key: str) -> bytes:
        return key.encode()

    def _decode_key(self, raw: bytes) -> str:
        return raw.decode()

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()


class Table:
    """A table over ``store``; deletes record the partition they were made for."""

    changelog_topic_name = CHANGELOG

    def __init__(self, store: Any) -> None:
        self.data = store
        self.deleted: list[tuple[str, int]] = []

    def get(self, key: str) -> bytes | None:
        if isinstance(self.data, dict):
            return self.data.get(key)
        found = (db.get(key.encode()) for db in self.data._dbs.values())
        return next((raw for raw in found if raw is not None), None)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __delitem__(self, key: str) -> None:
        event = current_event()
        assert event is not None, "a table write outside any event"
        partition = event.message.partition
        self.deleted.append((key, partition))
        if isinstance(self.data, dict):
            del self.data[key]
        else:
            self.data._dbs[partition].delete(key.encode())


class Assignor:
    def __init__(self, partitions: set[int]) -> None:
        self.partitions = partitions

    def assigned_actives(self) -> set[TP]:
        return {TP(CHANGELOG, p) for p in self.partitions} | {TP("other", 0)}


class App:
    def __init__(self, owned: set[int]) -> None:
        self.rebalancing = False
        self.clock = FrozenClock(NOW)
        self.assignor = Assignor(owned)


def partition_of(key: str) -> int:
    """Keys look like ``p<partition>-<n>``."""
    return int(key[1 : key.index("-")])


def old(raw: bytes, now: datetime) -> bool:
    """Values under 100 are expired."""
    return int(raw) < 100


@pytest.fixture
def rocks(tmp_path: Path) -> Iterator[RocksStore]:
    store = RocksStore(tmp_path, 2)
    yield store
    store.close()


def fill(store: Any, rows: dict[str, int]) -> None:
    for key, value in rows.items():
        if isinstance(store, dict):
            store[key] = str(value).encode()
        else:
            store._dbs[partition_of(key)][key.encode()] = str(value).encode()


ROWS = {
    **{f"p0-{n:02d}": (5 if n % 2 else 500) for n in range(10)},
    **{f"p1-{n:02d}": 5 for n in range(10)},
}


@pytest.mark.parametrize("kind", ["memory", "rocksdb"])
async def test_a_sweep_deletes_expired_entries_of_owned_partitions_in_slices(
    kind: str, rocks: RocksStore
) -> None:
    store: Any = MemoryStore() if kind == "memory" else rocks
    fill(store, ROWS)
    if kind == "rocksdb":
        rocks._dbs[0][RocksStore.offset_key] = b"not a value"
    table = Table(store)
    sweeper = Sweeper(App({0}), table, old, partition_of, "things", per_tick=4, rest=0)  # type: ignore[arg-type]
    counts = [await sweeper.tick() for _ in range(4)]
    # Partition 0 only (1 is another worker's); four entries looked at a tick:
    # 00-03, 04-07, 08-09 (the walk ends), then from the start again.
    assert counts == [2, 2, 1, 0]
    assert table.deleted == [(f"p0-{n:02d}", 0) for n in range(1, 10, 2)]
    assert "p1-00" in table and "p0-00" in table


async def test_no_sweep_while_rebalancing() -> None:
    store = MemoryStore()
    fill(store, ROWS)
    owner = App({0, 1})
    owner.rebalancing = True
    sweeper = Sweeper(owner, Table(store), old, partition_of, "things")  # type: ignore[arg-type]
    assert await sweeper.tick() == 0


def entry(updated_at: datetime) -> bytes:
    """A ledger entry as the table stores it."""
    return bytes(
        LedgerEntry(state="sent", attempt=0, redrive=0, updated_at=updated_at).dumps()
    )


def test_a_ledger_entry_expires_after_its_retention() -> None:
    retention = timedelta(hours=app.settings.ledger_retention)
    assert not ledger_expired(entry(NOW - retention + timedelta(minutes=1)), NOW)
    assert ledger_expired(entry(NOW - retention - timedelta(minutes=1)), NOW)


def test_an_idempotency_entry_expires_with_the_window() -> None:
    window = timedelta(hours=app.settings.idempotency_window)
    raw = SeenRequest("n_x", "h", NOW - window + timedelta(minutes=5), "api").dumps()
    assert not idempotency_expired(raw, NOW)
    assert idempotency_expired(raw, NOW + timedelta(minutes=10))


def test_an_idempotency_entry_is_swept_on_its_users_partition() -> None:
    key = seen_key("acme", "u_991", "order-1/shipped")
    expected = partition_for(b"acme/u_991", app.settings.topic_partitions)
    assert user_partition(key) == expected


def trail(*entries: tuple[datetime, datetime | None]) -> bytes:
    """A status with these (ts, until) trail entries, as the table stores it."""
    return bytes(
        NotificationStatus(
            notification_id="n_x",
            trail=[
                TrailEntry(
                    event_id=f"e{n}",
                    event_type="sent" if until is None else "deferred",
                    stage="s",
                    ts=ts,
                    until=until,
                )
                for n, (ts, until) in enumerate(entries)
            ],
        ).dumps()
    )


def test_a_status_expires_after_its_last_change_and_what_it_waits_for() -> None:
    retention = timedelta(hours=app.settings.status_retention)
    long_ago = NOW - retention - timedelta(hours=1)
    assert status_expired(
        trail((long_ago - timedelta(days=1), None), (long_ago, None)), NOW
    )
    recent = NOW - retention + timedelta(hours=1)
    assert not status_expired(trail((long_ago, None), (recent, None)), NOW)
    # Deferred a month ahead: kept until that is due, and the retention after.
    deferred = trail((long_ago, NOW + timedelta(days=30)))
    assert not status_expired(deferred, NOW)
    assert status_expired(deferred, NOW + timedelta(days=30) + retention * 2)
    assert not status_expired(trail(), NOW)


async def test_an_entry_the_test_cannot_judge_is_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    fill(store, {"p0-00": 5, "p0-01": 5})

    def fussy(raw: bytes, now: datetime) -> bool:
        if raw == b"5" and not fussy.raised:  # type: ignore[attr-defined]
            fussy.raised = True  # type: ignore[attr-defined]
            raise TypeError("can't compare offset-naive and offset-aware datetimes")
        return True

    fussy.raised = False  # type: ignore[attr-defined]
    table = Table(store)
    sweeper = Sweeper(App({0}), table, fussy, partition_of, "things")  # type: ignore[arg-type]
    assert await sweeper.tick() == 1
    assert table.deleted == [("p0-01", 0)] and "p0-00" in table
    assert "cannot tell its age" in caplog.text


async def test_a_walked_partition_rests_before_the_next_walk() -> None:
    """Retentions are hours or days: a partition walked to its end is not
    walked again at once (a small table would be re-read every tick)."""
    store = MemoryStore()
    fill(store, {"p0-00": 500})
    clock = [0.0]
    sweeper = Sweeper(
        App({0}),  # type: ignore[arg-type]
        Table(store),
        old,
        partition_of,
        "things",
        rest=600,
        clock=lambda: clock[0],
    )
    await sweeper.tick()
    store["p0-01"] = b"5"
    clock[0] = 599.0
    assert await sweeper.tick() == 0  # resting
    clock[0] = 601.0
    assert await sweeper.tick() == 1


async def test_an_entry_written_again_meanwhile_is_kept() -> None:
    """Judged expired, then rewritten by an agent before the delete: kept."""
    store = MemoryStore()
    fill(store, {"p0-00": 5})

    def old_then_rewritten(raw: bytes, now: datetime) -> bool:
        expired = int(raw) < 100
        store["p0-00"] = b"500"  # an agent's write lands while the sweep yields
        return expired

    table = Table(store)
    sweeper = Sweeper(App({0}), table, old_then_rewritten, partition_of, "things")  # type: ignore[arg-type]
    assert await sweeper.tick() == 0
    assert table.get("p0-00") == b"500"


async def test_what_goes_with_a_deleted_entry_goes_on_its_partition(
    rocks: RocksStore,
) -> None:
    """``on_delete`` hears each deleted key with its partition, inside that
    partition's event (a status takes its kept failed jobs along)."""
    fill(rocks, ROWS)
    heard: list[tuple[str, int, int]] = []

    def along(key: str, partition: int) -> None:
        event = current_event()
        assert event is not None
        heard.append((key, partition, event.message.partition))

    sweeper = Sweeper(
        App({1}),  # type: ignore[arg-type]
        Table(rocks),
        old,
        partition_of,
        "things",
        rest=0,
        on_delete=along,
    )
    assert await sweeper.tick() == 10
    assert heard == [(f"p1-{n:02d}", 1, 1) for n in range(10)]


def test_a_prefix_scan_reads_one_run_of_keys_in_order(rocks: RocksStore) -> None:
    """``pipeline.scan.prefixed`` seeks to the prefix and stops past it."""
    fill(rocks, {"p0-1:a": 1, "p0-1:b": 2, "p0-10": 3, "p0-2:a": 4})
    rocks._dbs[0][RocksStore.offset_key] = b"0"
    found = list(prefixed(Table(rocks), 0, "p0-1:"))
    assert found == [("p0-1:a", b"1"), ("p0-1:b", b"2")]
    assert list(prefixed(Table(rocks), 1, "p0-1:")) == []
    memory = {"n_1:email": b"1", "n_1:sms": b"2", "n_12:email": b"3"}
    assert [k for k, _ in prefixed(memory, 0, "n_1:")] == ["n_1:email", "n_1:sms"]
