"""``notify.events`` messages as the columns of ``notif_events_log``.

A batch is built column by column as messages arrive (what clickhouse-connect
inserts without a row-to-column pass), remembering the offsets it holds per
partition. A message that is not an event (not JSON, no event id, type or
time) is kept aside with its reason, to be dead-lettered byte for byte.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import orjson

from pipeline.analytics.store import COLUMNS

#: Columns built from more than the event's own field of that name.
DERIVED = frozenset(
    {"attempt", "digest", "until", "ts", "kafka_partition", "kafka_offset"}
)
#: Text columns filled from the event's field of the same name ('' if absent).
TEXT_FIELDS = tuple(name for name in COLUMNS if name not in DERIVED)
#: Where the digest a notification was collected into is named.
DIGEST_REASON = "digest "


def epoch_ms(text: Any) -> int:
    """Milliseconds since the epoch of an ISO 8601 time with an offset."""
    moment = datetime.fromisoformat(str(text))
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return int(moment.timestamp() * 1000)


#: Largest attempt number the column holds (UInt16).
MAX_ATTEMPT = 65_535


def problem(event: Any) -> str | None:
    """Why a decoded message is not an event, if it is not (a value the
    table's columns cannot hold included: it would fail its whole batch)."""
    if not isinstance(event, dict):
        return "not a JSON object"
    for name in ("event_id", "event_type", "ts"):
        if not isinstance(event.get(name), str) or not event[name]:
            return f"no {name}"
    attempt = event.get("attempt")
    if attempt is not None and (
        not isinstance(attempt, int)
        or isinstance(attempt, bool)
        or not 0 <= attempt <= MAX_ATTEMPT
    ):
        return f"attempt {attempt!r} is not a number from 0 to {MAX_ATTEMPT}"
    return None


@dataclass
class Batch:
    """Rows on their way to ClickHouse, column by column."""

    columns: dict[str, list[Any]] = field(
        default_factory=lambda: {name: [] for name in COLUMNS}
    )
    #: Partition → (first offset, last offset) held.
    offsets: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: Messages that are not events: (partition, offset, key, value, reason).
    rejected: list[tuple[int, int, bytes | None, bytes | None, str]] = field(
        default_factory=list
    )
    rows: int = 0

    def __len__(self) -> int:
        return self.rows + len(self.rejected)

    def add(
        self, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> None:
        """Take one message of ``notify.events``."""
        first, _ = self.offsets.get(partition, (offset, offset))
        self.offsets[partition] = (first, offset)
        event: dict[str, Any] = {}
        try:
            decoded = orjson.loads(value) if value is not None else None
            reason = problem(decoded)
            if reason is None:
                event = cast(dict[str, Any], decoded)
                ts = epoch_ms(event["ts"])
                until = epoch_ms(event["until"]) if event.get("until") else None
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            reason = f"not an event: {exc}"
        if reason is not None:
            self.rejected.append((partition, offset, key, value, reason))
            return
        columns = self.columns
        for name in TEXT_FIELDS:
            found = event.get(name)
            columns[name].append("" if found is None else str(found))
        said = event.get("reason") or ""
        digested = event["event_type"] == "digested" and said.startswith(DIGEST_REASON)
        columns["digest"].append(said[len(DIGEST_REASON) :] if digested else "")
        columns["attempt"].append(event.get("attempt") or 0)
        columns["until"].append(until)
        columns["ts"].append(ts)
        columns["kafka_partition"].append(partition)
        columns["kafka_offset"].append(offset)
        self.rows += 1

    def in_order(self) -> list[list[Any]]:
        """The columns in ``COLUMNS`` order."""
        return [self.columns[name] for name in COLUMNS]

    def token(self, topic: str) -> str:
        """The insert's deduplication token: the offset ranges it holds and
        its event ids (a topic made anew, as the embedded broker's is each
        start, reuses offsets: its batches must not pass for old ones)."""
        ranges = ",".join(
            f"{partition}:{first}-{last}"
            for partition, (first, last) in sorted(self.offsets.items())
        )
        digest = hashlib.sha256(f"{topic}|{ranges}|".encode())
        for event_id in self.columns["event_id"]:
            digest.update(event_id.encode())
        return digest.hexdigest()
