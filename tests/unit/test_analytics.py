"""The sink's rows, the store's schema and deduplication (chDB in-process),
and the funnel's query and its reading."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from pipeline.analytics import funnel
from pipeline.analytics.rows import Batch
from pipeline.analytics.store import (
    COLUMNS,
    Reader,
    connect,
    ddl_files,
    insert_events,
    migrate,
    statements,
)
from pipeline.settings import Settings


def event(n: int, **fields: Any) -> bytes:
    """An event as the stages write it onto notify.events."""
    return orjson.dumps(
        {
            "event_id": f"e_{n}",
            "event_type": "sent",
            "ts": "2026-12-05T03:00:00.250000Z",
            "stage": "send.email",
            "notification_id": f"n_{n}",
            "tenant": "acme",
            "user_id": f"u_{n}",
            "campaign_id": "1042",
            "channel": "email",
            "attempt": 1,
            **fields,
        }
    )


def test_a_batch_is_built_column_by_column_and_refuses_what_is_no_event() -> None:
    """Absent fields are '', times are epoch milliseconds, the digest is read
    from a digested event's reason; a message that is not an event is kept
    aside with why, its offset still counted."""
    batch = Batch()
    batch.add(0, 7, b"k", event(1))
    batch.add(
        0,
        8,
        b"k",
        event(
            2,
            event_type="digested",
            reason="digest n_9",
            until="2026-12-05T04:00:00+00:00",
        ),
    )
    batch.add(1, 3, b"k", b"{not json")
    batch.add(1, 4, b"k", orjson.dumps({"event_id": "e_3", "event_type": "sent"}))
    batch.add(1, 5, b"k", event(4, ts="2026-12-05T03:00:00"))  # no offset
    batch.add(1, 6, b"k", event(5, attempt=70_000))  # UInt16 holds no such
    assert batch.rows == 2 and len(batch) == 6
    assert batch.offsets == {0: (7, 8), 1: (3, 6)}
    columns = dict(zip(COLUMNS, batch.in_order(), strict=True))
    assert columns["event_id"] == ["e_1", "e_2"]
    assert columns["provider"] == ["", ""]
    assert columns["ts"] == [1796439600250, 1796439600250]
    assert columns["until"] == [None, 1796443200000]
    assert columns["digest"] == ["", "n_9"]
    assert columns["kafka_offset"] == [7, 8]
    reasons = [reason for *_, reason in batch.rejected]
    assert reasons[0].startswith("not an event")
    assert reasons[1] == "no ts"
    assert "no UTC offset" in reasons[2]
    assert reasons[3].startswith("attempt 70000 is not a number")


def test_the_token_names_the_offsets_and_the_events() -> None:
    """The same messages give the same token; the same offsets holding other
    events (a topic made anew) another."""
    one, same, other = Batch(), Batch(), Batch()
    for batch, n in ((one, 1), (same, 1), (other, 2)):
        batch.add(0, 10, None, event(n))
    assert one.token("t") == same.token("t") != other.token("t")


def test_ddl_files_are_numbered_and_split_into_statements() -> None:
    """Every file has a version; comments go, statements split on ';'."""
    versions = [version for version, _ in ddl_files()]
    assert versions == sorted(set(versions)) and versions[0] == 1
    text = "-- a comment; not a statement\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\nSELECT 1;\n"
    assert list(statements(text)) == [
        "CREATE TABLE a (x UInt8) ENGINE = Memory",
        "SELECT 1",
    ]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, Reader]]:
    """chDB in-process (one directory per test process: chDB allows one): a
    writer, and a reader as the sink's queries use."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("analytics"))
    client = connect(settings)
    migrate(client)
    reader = Reader.open(settings)
    yield client, reader
    reader.close()
    client.close()


def read_only(reader: Reader, sql: str, fmt: str = "PrettyCompact") -> bytes:
    """The reader's answer."""
    return reader.query(sql, fmt)


def test_the_schema_is_applied_once_and_each_event_kept_once(
    stores: tuple[Client, Reader],
) -> None:
    """The DDL went in at the first start only; a batch inserted twice
    (same token) and an event said again in another batch are one row each
    in notif_events; the reader refuses a write."""
    store, reader = stores
    applied = orjson.loads(reader.query("SELECT name FROM schema_versions", "JSON"))
    assert [row["name"] for row in applied["data"]] == [p.name for _, p in ddl_files()]
    assert migrate(store) == []
    batch = Batch()
    for n in range(3):
        batch.add(0, n, None, event(n))
    insert_events(store, batch.in_order(), batch.token("t"))
    insert_events(store, batch.in_order(), batch.token("t"))
    again = Batch()
    again.add(0, 99, None, event(1))  # e_1 once more, at another offset
    insert_events(store, again.in_order(), again.token("t"))
    rows = orjson.loads(
        read_only(reader, "SELECT count() AS n FROM notif_events", "JSON")
    )
    assert rows["data"] == [{"n": 3}]
    raw = orjson.loads(
        read_only(reader, "SELECT count() AS n FROM notif_events_log", "JSON")
    )
    assert raw["data"][0]["n"] <= 4  # the repeated block never went in
    with pytest.raises(Exception, match="readonly"):
        read_only(reader, "INSERT INTO notif_events_log (event_id) VALUES ('x')")


def test_the_funnel_query_runs_and_reads_per_recipient_channel(
    stores: tuple[Client, Reader],
) -> None:
    """Two recipients sent, one delivered and opened twice (one open), by
    variant: the counts, the rates and the latency from accepted."""
    store, reader = stores
    batch = Batch()
    rows = [
        ("a1", "n_a", "accepted", None, None, "2026-12-05T03:00:00Z"),
        ("a2", "n_a", "sent", "email", "B", "2026-12-05T03:00:00.400Z"),
        ("a3", "n_a", "delivered", "email", None, "2026-12-05T03:00:01Z"),
        ("a4", "n_a", "opened", "email", None, "2026-12-05T03:00:02Z"),
        ("a5", "n_a", "opened", "email", None, "2026-12-05T03:00:03Z"),
        ("b1", "n_b", "accepted", None, None, "2026-12-05T03:00:00Z"),
        ("b2", "n_b", "sent", "email", "A", "2026-12-05T03:00:00.200Z"),
    ]
    for offset, (eid, nid, kind, channel, variant, ts) in enumerate(rows):
        batch.add(
            0,
            offset,
            None,
            orjson.dumps(
                {
                    "event_id": eid,
                    "notification_id": nid,
                    "event_type": kind,
                    "channel": channel,
                    "variant": variant,
                    "ts": ts,
                    "tenant": "t1",
                    "campaign_id": "c_f",
                    "stage": "x",
                }
            ),
        )
    insert_events(store, batch.in_order(), batch.token("t"))
    # The window is counted back from now: these events are old.
    sql = funnel.funnel_sql("t1", "c_f", "52w", "variant").replace(
        "now64(3)", "toDateTime64('2026-12-06 00:00:00', 3, 'UTC')"
    )
    found = funnel.funnel_rows(orjson.loads(read_only(reader, sql, "JSON")))
    assert [(r["key"], r["sent"], r["delivered"], r["opened"]) for r in found] == [
        ("A", 1, 0, 0),
        ("B", 1, 1, 1),
    ]
    assert found[1]["open_rate"] == 100.0 and found[0]["open_rate"] is None
    assert found[1]["latency_ms"]["p50"] == 400.0


def test_a_duration_is_checked_and_a_literal_quoted() -> None:
    assert funnel.seconds("7d") == 604_800 and funnel.seconds("90s") == 90
    with pytest.raises(ValueError, match="duration"):
        funnel.seconds("7 days")
    assert funnel.literal("it's \\ odd") == "'it\\'s \\\\ odd'"


def test_reconcile_sorts_done_pending_missing_and_doubled() -> None:
    """Each channel needs one outcome; waiting for a due time is pending;
    a failure then a send (an operator's retry) is one outcome."""
    from datetime import UTC, datetime

    from pipeline.analytics.reconcile import classify, report

    def row(
        nid: str, channel: str, kinds: list[str], last: str, until: str = ""
    ) -> dict[str, Any]:
        return {
            "notification_id": nid,
            "channel": channel,
            "kinds": kinds,
            "last_kind": last,
            "waits_until": until or None,
        }

    rows = [
        row("n_ok", "", ["accepted"], "accepted"),
        row("n_ok", "email", ["queued", "sent", "delivered"], "delivered"),
        row("n_ok", "push", ["suppressed"], "suppressed"),
        row("n_wait", "sms", ["deferred"], "deferred", "2026-12-05 09:00:00.000"),
        row("n_lost", "email", ["queued"], "queued"),
        row("n_two", "email", ["sent", "suppressed"], "sent"),
        row("n_retry", "email", ["failed", "dead_lettered", "sent"], "sent"),
        row("n_none", "", ["accepted"], "accepted"),
        row("n_dup", "", ["accepted", "deduplicated"], "deduplicated"),
    ]
    found = classify(rows, datetime(2026, 12, 5, 3, tzinfo=UTC))
    assert found.notifications == 7 and found.channels == 6
    assert found.done == 3
    assert [(f.notification_id, f.channel) for f in found.pending] == [
        ("n_wait", "sms")
    ]
    assert found.pending[0].due == datetime(2026, 12, 5, 9, tzinfo=UTC)
    assert [(f.notification_id, f.channel) for f in found.missing] == [
        ("n_lost", "email"),
        ("n_none", "-"),
    ]
    assert [f.notification_id for f in found.doubled] == ["n_two"]
    assert not found.ok
    assert report(found)[0] == (
        "7 notifications, 6 channels: 3 done, 1 pending, 2 missing, 1 doubled"
    )


class FlakyStore:
    """A ClickHouse that refuses the first ``failures`` inserts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.inserted: list[int] = []

    def insert_arrow(self, table: str, block: Any, **_: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("ClickHouse is down")
        self.inserted.append(block.num_rows)


class RecordingConsumer:
    """What the sink asks of its consumer while it waits and after."""

    def assignment(self) -> list[str]:
        return ["notify.events[0]"]

    def pause(self, partitions: list[str]) -> None:
        self.calls.append("pause")

    def resume(self, partitions: list[str]) -> None:
        self.calls.append("resume")

    def __init__(self, late: list[Any] | None = None) -> None:
        self.calls: list[str] = []
        self.committed: list[tuple[int, int]] = []
        self.late = late or []  # fetched before the pause, handed over after

    def poll(self, timeout: float) -> Any:
        self.calls.append("poll")
        return self.late.pop(0) if self.late else None

    def commit(self, *, offsets: list[Any], asynchronous: bool) -> None:
        self.committed.extend((o.partition, o.offset) for o in offsets)


def test_an_outage_pauses_reading_retries_and_commits_only_after_the_insert() -> None:
    """Two failed inserts: the partitions are paused (the topic backs up, not
    memory), the consumer is polled to keep its group, the insert is tried
    again with growing waits, and the offsets are committed once it went."""
    from pipeline.analytics.sink import Sink

    store = FlakyStore(failures=2)
    waits: list[float] = []
    sink = Sink(Settings(), store, topic="notify.events", sleep=waits.append)  # type: ignore[arg-type]

    class Late:
        """A message the paused consumer still hands over."""

        def error(self) -> None:
            return None

        def partition(self) -> int:
            return 0

        def offset(self) -> int:
            return 3

        def key(self) -> None:
            return None

        def value(self) -> bytes:
            return event(3)

    consumer = RecordingConsumer(late=[Late()])
    sink.consumer = consumer  # type: ignore[assignment]
    for offset in range(3):
        sink.batch.add(0, offset, None, event(offset))
    sink.flush()
    assert store.inserted == [3]
    assert sink.stats.failures == 2 and sink.stats.rows == 3
    assert consumer.calls[0] == "pause" and consumer.calls[-1] == "resume"
    assert "poll" in consumer.calls
    assert consumer.committed == [(0, 3)]
    # The message handed over during the wait is in the next batch, not lost.
    assert sink.batch.offsets == {0: (3, 3)} and sink.batch.rows == 1
    assert sum(waits) == pytest.approx(0.5 + 1.0)  # 0.5 s, then 1 s
