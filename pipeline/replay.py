"""``notify replay``: a range of a topic, again.

- ``--into clickhouse`` (``notify.events``): the range's events are inserted
  into ``notif_events`` again. The table keeps each event id once, so a
  replay rebuilds what is missing and changes no count otherwise.
- ``--into pipeline`` (a topic the agents read: requests, accepted requests,
  delivery jobs): each record is produced again onto its topic and
  partition, byte for byte, with a ``notify.replayed_from`` header. Ids are
  deterministic: fanout takes a request it has seen as a duplicate and the
  send ledger stops every target already sent, so nobody who received a
  notification receives it again.
- ``--dry-run``: nothing is produced or written. For requests, each one is
  decided as fanout would decide it now (preferences, reachability,
  expiry, caps as the range itself counts them, the templates rendered) from
  the user state on the compacted topics, and the report says who would get
  what, per channel and reason. For events, how many of the range's events
  ``notif_events`` lacks.

A range is ``--from`` and ``--to``: an offset (every partition) or a time
(ISO 8601; each partition's first record at or after it); ``--to`` is
exclusive and defaults to each partition's end when the replay starts.
Progress is kept in a file under the data dir after each chunk: the same
command run again resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from pipeline.settings import Settings

#: Header of a replayed record: ``topic[partition]@offset`` it was read at.
REPLAYED_FROM = "notify.replayed_from"
#: Records read per chunk (a checkpoint after each).
CHUNK = 10_000
#: Records fetched per call while reading a range.
READ_BATCH = 5_000


class ReplayError(Exception):
    """A replay that cannot be done: its message is printed."""


Bound = int | datetime


def parse_bound(text: str | None) -> Bound | None:
    """An offset (digits) or an ISO 8601 time with an offset or ``Z``."""
    if text is None or text == "":
        return None
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ReplayError(
            f"{text!r} is neither an offset nor an ISO 8601 time"
        ) from None
    if moment.tzinfo is None:
        raise ReplayError(f"the time {text!r} needs a UTC offset (e.g. Z)")
    return moment


@dataclass(frozen=True)
class Span:
    """One partition's range: ``start`` up to ``end`` (exclusive)."""

    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        """Offsets in the range."""
        return max(0, self.end - self.start)


def consumer_for(settings: Settings) -> Consumer:
    """A reader that joins no group and commits nothing."""
    return Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"notify-replay-{time.time_ns()}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50,
            "log_level": 2,
        }
    )


def _at(consumer: Consumer, topic: str, partition: int, bound: Bound, end: int) -> int:
    """The offset a bound names on one partition (``end`` past the last)."""
    if isinstance(bound, int):
        return bound
    ms = int(bound.timestamp() * 1000)
    [found] = consumer.offsets_for_times(
        [TopicPartition(topic, partition, ms)], timeout=10
    )
    return end if found.offset < 0 else int(found.offset)


def spans(
    consumer: Consumer, topic: str, start: Bound | None, stop: Bound | None
) -> list[Span]:
    """Each partition's range of the topic between the bounds, as it is now."""
    metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise ReplayError(f"no topic {topic!r} on the broker")
    found = []
    for partition in sorted(metadata.partitions):
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=10
        )
        first = (
            low
            if start is None
            else max(low, _at(consumer, topic, partition, start, high))
        )
        last = (
            high
            if stop is None
            else min(high, _at(consumer, topic, partition, stop, high))
        )
        found.append(Span(partition, first, max(first, last)))
    return found


def read(
    consumer: Consumer, topic: str, span: Span, timeout: float = 60.0
) -> Iterator[Message]:
    """Every record of ``span``, in offset order (gaps of compaction
    skipped), fetched in batches."""
    if span.size == 0:
        return
    consumer.assign([TopicPartition(topic, span.partition, span.start)])
    deadline = time.monotonic() + timeout
    try:
        while True:
            messages = consumer.consume(num_messages=READ_BATCH, timeout=0.2)
            if not messages:
                if time.monotonic() > deadline:
                    raise ReplayError(f"{topic}[{span.partition}] stalled at a read")
                continue
            deadline = time.monotonic() + timeout
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return
                    raise ReplayError(f"reading {topic}[{span.partition}]: {error}")
                offset = int(message.offset() or 0)
                if offset >= span.end:
                    return
                yield message
                if offset + 1 >= span.end:
                    return
    finally:
        consumer.unassign()


def chunks(span: Span, size: int = CHUNK) -> Iterator[Span]:
    """The span in pieces of ``size`` offsets."""
    at = span.start
    while at < span.end:
        yield Span(span.partition, at, min(span.end, at + size))
        at += size


@dataclass
class Checkpoint:
    """A replay's ranges as they were when it began and how far it got, kept
    in a file after each chunk: run again, it resumes with the same ranges."""

    path: Path
    spans: list[Span] = field(default_factory=list)
    done: dict[int, int] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path, job: str) -> Checkpoint:
        """The checkpoint of ``job`` (an id of its arguments); empty if new."""
        path = directory / f"{job}.json"
        if not path.exists():
            return cls(path)
        stored = orjson.loads(path.read_bytes())
        return cls(
            path,
            [Span(*span) for span in stored["spans"]],
            {int(p): int(o) for p, o in stored["done"].items()},
        )

    def remaining(self, span: Span) -> Span:
        """What is left of ``span``."""
        start = max(span.start, self.done.get(span.partition, span.start))
        return Span(span.partition, start, span.end)

    def save(self, partition: int | None = None, next_offset: int = 0) -> None:
        """``partition`` is done up to ``next_offset`` (None: the ranges only)."""
        if partition is not None:
            self.done[partition] = next_offset
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_suffix(".tmp")
        body = {
            "spans": [[s.partition, s.start, s.end] for s in self.spans],
            "done": {str(p): o for p, o in self.done.items()},
        }
        scratch.write_bytes(orjson.dumps(body))
        scratch.replace(self.path)

    def finish(self) -> None:
        """The replay ended: forget it (the same command runs anew)."""
        self.path.unlink(missing_ok=True)


def job_id(*parts: object) -> str:
    """A stable id of a replay's arguments."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


@dataclass
class Progress:
    """A progress line with the rate and the time left."""

    total: int
    say: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic
    done: int = 0
    started: float = field(default=0.0)
    shown: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.started = self.shown = self.clock()

    def add(self, count: int, *, force: bool = False) -> None:
        """``count`` more done; a line at most every second (or ``force``)."""
        self.done += count
        now = self.clock()
        if not force and now - self.shown < 1.0:
            return
        self.shown = now
        self.say(self.line(now))

    def line(self, now: float) -> str:
        """The progress line."""
        elapsed = max(1e-9, now - self.started)
        rate = self.done / elapsed
        share = self.done / self.total if self.total else 1.0
        left = (self.total - self.done) / rate if rate > 0 else None
        eta = "--" if left is None else f"{left:.0f}s"
        filled = int(share * 30)
        return (
            f"[{'#' * filled}{'.' * (30 - filled)}] {share:5.1%} "
            f"{self.done:,}/{self.total:,} at {rate:,.0f}/s, ETA {eta}"
        )


def produce_again(producer: Producer, topic: str, messages: list[Message]) -> None:
    """Produce each record again onto its topic and partition, byte for byte,
    with where it was read; return once the broker acknowledged them all."""
    failed: list[str] = []

    def report(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failed.append(str(error))

    for message in messages:
        source = f"{topic}[{message.partition()}]@{message.offset()}"
        kept: list[Any] = list(message.headers() or [])
        headers: list[tuple[str, str | bytes | None]] = [
            (str(h[0]), h[1]) for h in kept if h[0] != REPLAYED_FROM
        ]
        headers.append((REPLAYED_FROM, source.encode()))
        producer.produce(
            topic,
            key=message.key(),
            value=message.value(),
            partition=message.partition() or 0,
            headers=headers,
            on_delivery=report,
        )
        producer.poll(0)
    left = producer.flush(60)
    if left or failed:
        raise ReplayError(f"the broker did not take every record: {failed[:3] or left}")


def summary(counts: Counter[tuple[str, ...]]) -> list[str]:
    """Report lines, most frequent first."""
    return [f"{n:>8,}  {' '.join(key)}" for key, n in counts.most_common()]


def decoded(message: Message) -> Any:
    """A record's JSON value, or None."""
    try:
        return orjson.loads(message.value() or b"")
    except orjson.JSONDecodeError:
        return None
