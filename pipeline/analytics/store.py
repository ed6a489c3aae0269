"""The analytics store: ClickHouse through clickhouse-connect.

The same code talks to a ClickHouse server in production
(``NOTIFY_CLICKHOUSE_DSN=http://...``) and, on one machine, to the chDB
engine in-process under the data directory (the DSN empty: ``chdb://<data
dir>/clickhouse``). chDB lets one process at a time open a directory, so
with chDB exactly one process owns the store: ``notify sink``, which also
answers the queries the workers pass on (``pipeline.analytics.service``).

Schema changes are versioned DDL files (``ddl/NNNN_name.sql``) applied in
order at start, each once: ``schema_versions`` remembers which.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import clickhouse_connect
import pyarrow as pa
from clickhouse_connect.driver.client import Client

from pipeline.settings import Settings

log = logging.getLogger(__name__)

DDL = Path(__file__).resolve().parent / "ddl"
#: The table the sink inserts into; queries read the view ``notif_events``.
EVENTS_TABLE = "notif_events_log"
#: Its columns, in insert order (``pipeline.analytics.rows`` builds them).
COLUMNS: tuple[str, ...] = (
    "event_id",
    "notification_id",
    "tenant",
    "user_id",
    "campaign_id",
    "type",
    "priority",
    "lane",
    "channel",
    "provider",
    "event_type",
    "stage",
    "template",
    "variant",
    "locale",
    "reason",
    "error",
    "attempt",
    "digest",
    "until",
    "ts",
    "kafka_partition",
    "kafka_offset",
)


def connect(settings: Settings) -> Client:
    """A client of the configured store (chDB under the data dir if no DSN)."""
    dsn = settings.resolved_clickhouse_dsn
    if dsn.startswith("chdb://"):
        Path(dsn.removeprefix("chdb://")).mkdir(parents=True, exist_ok=True)
    return clickhouse_connect.get_client(dsn=dsn)


def statements(text: str) -> Iterator[str]:
    """The statements of a DDL file: ``--`` comments dropped, split on ``;``."""
    kept = "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("--")
    )
    for statement in kept.split(";"):
        if statement.strip():
            yield statement.strip()


def ddl_files() -> list[tuple[int, Path]]:
    """(version, file) of every DDL file, in version order."""
    found = []
    for path in DDL.glob("*.sql"):
        number, _, _ = path.name.partition("_")
        found.append((int(number), path))
    return sorted(found)


def migrate(client: Client) -> list[str]:
    """Apply every DDL file not applied yet, in order; the names applied."""
    client.command(
        "CREATE TABLE IF NOT EXISTS schema_versions "
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC')) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    applied = {
        row[0]
        for row in client.query("SELECT version FROM schema_versions").result_rows
    }
    done = []
    for version, path in ddl_files():
        if version in applied:
            continue
        for statement in statements(path.read_text()):
            client.command(statement)
        client.insert(
            "schema_versions",
            [[version], [path.name], [datetime.now(UTC)]],
            column_names=["version", "name", "applied_at"],
            column_oriented=True,
        )
        log.info("analytics schema: applied %s", path.name)
        done.append(path.name)
    return done


#: The Arrow type of each column: a batch goes to ClickHouse as one Arrow
#: block (built from the Python lists in C, a third faster than
#: clickhouse-connect's own column serialisation here).
ARROW_TYPES = {
    **{name: pa.string() for name in COLUMNS},
    "attempt": pa.uint16(),
    "until": pa.timestamp("ms", tz="UTC"),
    "ts": pa.timestamp("ms", tz="UTC"),
    "kafka_partition": pa.uint16(),
    "kafka_offset": pa.uint64(),
}
ARROW_SCHEMA = pa.schema([(name, ARROW_TYPES[name]) for name in COLUMNS])


def insert_events(client: Client, columns: Sequence[list[Any]], token: str) -> None:
    """Insert one batch of rows, column by column. ``token`` names the
    offsets it holds: the same batch inserted again is dropped by ClickHouse
    (``insert_deduplication_token``), and any copy that still gets in is
    folded by the table's engine."""
    block = pa.Table.from_arrays(
        [
            pa.array(column, type=ARROW_SCHEMA.field(i).type)
            for i, column in enumerate(columns)
        ],
        schema=ARROW_SCHEMA,
    )
    client.insert_arrow(
        EVENTS_TABLE, block, settings={"insert_deduplication_token": token}
    )


#: Output formats that are one document whatever the rows (never empty).
WHOLE_DOCUMENTS = frozenset({"JSON", "JSONCompact"})


def media_type(fmt: str) -> str:
    """The HTTP media type of an answer in output format ``fmt``."""
    if fmt in WHOLE_DOCUMENTS:
        return "application/json"
    if fmt == "JSONEachRow":
        return "application/x-ndjson"
    return "text/plain"


def embedded(settings: Settings) -> bool:
    """True when the store is in-process chDB (owned by ``notify sink``)."""
    return settings.resolved_clickhouse_dsn.startswith("chdb://")


@dataclass
class Reader:
    """A client for read-only queries: a write is refused by ClickHouse
    itself (``readonly=1``). A server takes the setting with each query; a
    chDB handle is made read-only once when opened (a per-query setting
    would be SET on the handle and could not be undone there, read-only)."""

    client: Client
    per_query: bool

    @classmethod
    def open(cls, settings: Settings) -> Reader:
        """A reader of the configured store."""
        client = connect(settings)
        if embedded(settings):
            client.command("SET readonly = 1")
            return cls(client, per_query=False)
        return cls(client, per_query=True)

    def query(self, sql: str, fmt: str = "PrettyCompact") -> bytes:
        """The answer in a ClickHouse output format."""
        settings = {"readonly": 1} if self.per_query else None
        answer = self.client.raw_query(sql, fmt=fmt, settings=settings)
        if fmt in WHOLE_DOCUMENTS and not answer.strip():
            # ClickHouse always writes these, rows or none; chDB answers some
            # strings that are no query with nothing at all.
            raise ValueError("ClickHouse answered nothing: is this a query?")
        return answer

    def close(self) -> None:
        """Close its client."""
        self.client.close()
