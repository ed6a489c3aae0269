"""The dead-letter topic for operators: list, show and replay its entries.

A dead letter is the original key and value, byte for byte, with the reason in
``notify.dlq.*`` headers (``pipeline.deadletter``). Replaying one produces the
same key and value back onto the topic and partition it came from (or the
topic given with ``--to``), with a ``notify.replayed_from`` header naming the
dead letter. A delivery job (stage ``send.*``) gets its ``redrive`` counter
incremented so the send ledger lets it make a new attempt; replaying the
same dead letter twice yields the same counter both times, so a ledger that
lets a job through only for a higher counter than it has seen sends it once.

Under ``NOTIFY_TOPIC_PREFIX`` the dead-letter topic read is the prefixed one.
Source headers already name topics as the broker knows them; a pipeline
topic named with ``--to`` by its own name gets the prefix too.

A read takes each partition's offsets first and stops at the end they gave:
what is listed or replayed is what the topic held when the command started.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from pipeline.settings import Settings
from pipeline.topology import (
    ALL_TOPICS,
    DEADLETTER,
    DLQ_CODE,
    DLQ_REASON,
    DLQ_SOURCE,
    DLQ_STAGE,
    topic_name,
)

#: The dead-letter topic's own name; ``topic_name`` gives a deployment's.
DEADLETTER_TOPIC = DEADLETTER.name
#: Header of a replayed record: ``notify.deadletter[partition]@offset``.
REPLAYED_FROM = "notify.replayed_from"
#: Stages of the channel senders; their values are delivery jobs (JSON objects).
SEND_STAGE_PREFIX = "send."
ACTIONS = ("list", "show", "replay")

_POSITION = re.compile(
    r"(?:(?P<partition>\d+)|(?P<topic>[A-Za-z0-9._-]+)\[(?P<in_brackets>\d+)\])"
    r"@(?P<offset>\d+)"
)
_SOURCE = re.compile(
    r"(?P<topic>[A-Za-z0-9._-]+)\[(?P<partition>\d+)\]@(?P<offset>\d+)"
)


class DlqError(Exception):
    """A dead-letter operation that could not be done; the CLI exits non-zero."""


class DlqUsageError(DlqError):
    """The command line asks for something that does not make sense."""


@dataclass(frozen=True, order=True)
class Position:
    """Where a dead letter sits in the dead-letter topic."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}@{self.offset}"


@dataclass(frozen=True)
class Source:
    """Where a dead letter's original record was: ``topic[partition]@offset``."""

    topic: str
    partition: int
    offset: int


def parse_position(text: str, topic: str = DEADLETTER_TOPIC) -> Position:
    """Parse ``PARTITION@OFFSET`` (or ``notify.deadletter[P]@O``, as in headers)."""
    found = _POSITION.fullmatch(text.strip())
    if found is None:
        raise DlqUsageError(f"{text!r} is not PARTITION@OFFSET (e.g. 2@1042)")
    if found["topic"] is not None:
        if found["topic"] != topic:
            raise DlqUsageError(
                f"{text!r} names topic {found['topic']!r}, not the dead-letter "
                f"topic {topic!r}"
            )
        return Position(int(found["in_brackets"]), int(found["offset"]))
    return Position(int(found["partition"]), int(found["offset"]))


def parse_source(text: str) -> Source:
    """Parse a ``notify.dlq.source`` header value, ``topic[partition]@offset``."""
    found = _SOURCE.fullmatch(text.strip())
    if found is None:
        raise DlqError(f"source {text!r} is not topic[partition]@offset")
    return Source(found["topic"], int(found["partition"]), int(found["offset"]))


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic: original bytes and why it is here."""

    partition: int
    offset: int
    timestamp: datetime | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    topic: str = DEADLETTER_TOPIC  # as the broker names it: prefixed, if set

    @classmethod
    def from_message(cls, message: Message) -> DeadLetter:
        """The dead letter a consumed record is."""
        kind, millis = message.timestamp()
        stamp = None
        if kind != TIMESTAMP_NOT_AVAILABLE and millis >= 0:
            stamp = datetime.fromtimestamp(millis / 1000, tz=UTC)
        raw = message.headers() or []
        pairs = raw.items() if isinstance(raw, dict) else raw
        headers = tuple((name, _as_bytes(value)) for name, value in pairs)
        return cls(
            partition=int(message.partition() or 0),
            offset=int(message.offset() or 0),
            timestamp=stamp,
            key=message.key(),
            value=message.value(),
            headers=headers,
            topic=message.topic() or DEADLETTER_TOPIC,
        )

    @property
    def position(self) -> Position:
        """Its partition and offset in the dead-letter topic."""
        return Position(self.partition, self.offset)

    def header(self, name: str) -> str:
        """The last value of header ``name`` as text, or "" if it is absent."""
        for header, value in reversed(self.headers):
            if header == name:
                return value.decode("utf-8", "replace")
        return ""

    @property
    def reason(self) -> str:
        """Why it was refused, in words."""
        return self.header(DLQ_REASON)

    @property
    def code(self) -> str:
        """The refusal's machine-readable code."""
        return self.header(DLQ_CODE)

    @property
    def stage(self) -> str:
        """The stage that refused it (``ingest``, ``send.push``, ...)."""
        return self.header(DLQ_STAGE)

    @property
    def source(self) -> str:
        """``topic[partition]@offset`` of the original record."""
        return self.header(DLQ_SOURCE)


def _as_bytes(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    return value.encode() if isinstance(value, str) else value


def stage_matches(stage: str, wanted: str) -> bool:
    """``wanted`` names ``stage`` or a parent of it (``send`` covers ``send.sms``)."""
    return stage == wanted or stage.startswith(wanted + ".")


def matches(entry: DeadLetter, *, stage: str | None, code: str | None) -> bool:
    """Whether ``entry`` passes the ``--stage`` and ``--code`` filters given."""
    if stage is not None and not stage_matches(entry.stage, stage):
        return False
    return code is None or entry.code == code


def select(
    entries: Iterable[DeadLetter],
    *,
    stage: str | None = None,
    code: str | None = None,
    limit: int | None = None,
) -> list[DeadLetter]:
    """Entries passing the filters, oldest first, at most ``limit`` of them."""
    chosen = sorted(
        (entry for entry in entries if matches(entry, stage=stage, code=code)),
        key=_age,
    )
    return chosen if limit is None else chosen[:limit]


def at_positions(
    entries: Iterable[DeadLetter],
    positions: Sequence[Position],
    topic: str = DEADLETTER_TOPIC,
) -> list[DeadLetter]:
    """The entries at ``positions``, in that order; a missing one is an error."""
    found = {entry.position: entry for entry in entries}
    missing = [str(position) for position in positions if position not in found]
    if missing:
        raise DlqError(f"no dead letter at {', '.join(missing)} in {topic}")
    return [found[position] for position in dict.fromkeys(positions)]


def _age(entry: DeadLetter) -> tuple[float, int, int]:
    stamp = entry.timestamp.timestamp() if entry.timestamp else 0.0
    return (stamp, entry.partition, entry.offset)


def bump_redrive(value: bytes | None) -> bytes:
    """The delivery job ``value`` with its integer ``redrive`` field plus one.

    A re-driven job starts over: attempt 0, due now, with the lane's whole
    retry budget (it came here after spending it).
    """
    try:
        job = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise DlqError(f"a send-stage value must be a JSON object: {exc}") from exc
    if not isinstance(job, dict):
        raise DlqError("a send-stage value must be a JSON object")
    redrive = job.get("redrive", 0)
    # bool is an int to Python, but true is not a count.
    if isinstance(redrive, bool) or not isinstance(redrive, int) or redrive < 0:
        raise DlqError(f"redrive must be a non-negative integer, got {redrive!r}")
    job["redrive"] = redrive + 1
    if "attempt" in job:
        job["attempt"] = 0
    job.pop("not_before", None)
    return orjson.dumps(job)


def replayed_from(entry: DeadLetter) -> str:
    """The ``notify.replayed_from`` value naming ``entry``: ``topic[p]@o``."""
    return f"{entry.topic}[{entry.partition}]@{entry.offset}"


@dataclass(frozen=True)
class Replay:
    """The record replaying one dead letter produces; partition None: partitioner."""

    entry: DeadLetter
    topic: str
    partition: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def replay_target(settings: Settings, to: str) -> str:
    """The topic ``--to`` means: a pipeline topic gets the prefix, others do not.

    An operator names the pipeline's topics as the docs do (``notify.events``),
    whatever the deployment's prefix; a name the topology does not declare,
    such as one copied from a source header, is used as given.
    """
    if any(spec.name == to for spec in ALL_TOPICS):
        return topic_name(settings, to)
    return to


def plan_replay(entry: DeadLetter, to: str | None = None) -> Replay:
    """What replaying ``entry`` produces, onto its source topic or ``to``.

    ``to`` is a topic as the broker names it (``replay_target``). Back onto
    the source topic it goes to the source partition: keyed topics here are
    partitioned by murmur2 (Faust's partitioner), and a record on the wrong
    partition is refused by the user-state agents.
    """
    source = parse_source(entry.source) if entry.source else None
    topic = to or (source.topic if source else None)
    if topic is None:
        raise DlqError(
            f"{entry.position}: no {DLQ_SOURCE} header; name a topic with --to"
        )
    if topic == entry.topic:
        raise DlqError(f"{entry.position}: will not replay onto {entry.topic}")
    partition = source.partition if source and source.topic == topic else None
    value = entry.value
    if entry.stage.startswith(SEND_STAGE_PREFIX):
        try:
            value = bump_redrive(value)
        except DlqError as exc:
            raise DlqError(f"{entry.position}: {exc}") from exc
    # The dead-letter headers described the refusal; the replay is a fresh try.
    kept = tuple(
        (name, data)
        for name, data in entry.headers
        if not name.startswith("notify.dlq.") and name != REPLAYED_FROM
    )
    headers = (*kept, (REPLAYED_FROM, replayed_from(entry).encode()))
    return Replay(entry, topic, partition, entry.key, value, headers)


def show_bytes(data: bytes | None) -> str:
    """Bytes as one line: the text if it is printable UTF-8, else their repr."""
    if data is None:
        return "(none)"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return repr(data)
    return text if text.isprintable() else repr(data)


def show_time(stamp: datetime | None) -> str:
    """A record timestamp as ISO 8601 UTC to the millisecond, or ``-``."""
    if stamp is None:
        return "-"
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_line(entry: DeadLetter) -> str:
    """One ``notify dlq list`` line: position, time, stage, code, source, reason, key.

    The reason is quoted (it has spaces), so each field is one word.
    """
    fields = (
        str(entry.position),
        show_time(entry.timestamp),
        entry.stage or "-",
        entry.code or "-",
        entry.source or "-",
        orjson.dumps(entry.reason).decode(),
        show_bytes(entry.key),
    )
    return "  ".join(fields)


def entry_document(entry: DeadLetter) -> dict[str, Any]:
    """One entry as a JSON object (``notify dlq list --json``, one per line)."""
    return {
        "position": str(entry.position),
        "partition": entry.partition,
        "offset": entry.offset,
        "time": show_time(entry.timestamp) if entry.timestamp else None,
        "stage": entry.stage,
        "code": entry.code,
        "source": entry.source,
        "reason": entry.reason,
        "key": _text_or_none(entry.key),
        "value": _text_or_none(entry.value),
        "headers": {
            name: value.decode("utf-8", "replace") for name, value in entry.headers
        },
    }


def _text_or_none(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "backslashreplace")


def pretty_value(value: bytes | None) -> str:
    """A value for ``show``: indented JSON when it parses, else the bytes' repr."""
    if value is None:
        return "(none)"
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return repr(value)
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()


def describe(entry: DeadLetter) -> str:
    """The full text of ``notify dlq show``: headers, key, value."""
    lines = [
        f"position: {entry.topic}[{entry.partition}]@{entry.offset}",
        f"time: {show_time(entry.timestamp)}",
        "headers:",
        *(f"  {name}: {show_bytes(value)}" for name, value in entry.headers),
        f"key: {show_bytes(entry.key)}",
        "value:",
        pretty_value(entry.value),
    ]
    return "\n".join(lines)


def describe_replay(replay: Replay, where: str | None = None) -> str:
    """One replay as a line: from, to (``where`` once produced), key, size, redrive."""
    if where is None:
        partition = "by key" if replay.partition is None else replay.partition
        where = f"{replay.topic}[{partition}]"
    size = len(replay.value) if replay.value is not None else 0
    line = (
        f"{replay.entry.position} -> {where}  key={show_bytes(replay.key)}"
        f"  value={size} bytes"
    )
    if replay.entry.stage.startswith(SEND_STAGE_PREFIX):
        redrive = orjson.loads(replay.value or b"{}").get("redrive")
        line += f"  redrive={redrive}"
    return line


def count(entries: int) -> str:
    """``1 dead letter``, ``3 dead letters``."""
    return f"{entries} dead letter{'' if entries == 1 else 's'}"


@dataclass(frozen=True)
class DlqRequest:
    """One checked ``notify dlq`` command line."""

    action: str
    positions: tuple[Position, ...] = ()
    stage: str | None = None
    code: str | None = None
    limit: int | None = None
    as_json: bool = False
    everything: bool = False
    dry_run: bool = False
    to: str | None = None

    @classmethod
    def parse(
        cls,
        action: str,
        positions: Sequence[str] = (),
        *,
        stage: str | None = None,
        code: str | None = None,
        limit: int | None = None,
        as_json: bool = False,
        everything: bool = False,
        dry_run: bool = False,
        to: str | None = None,
        deadletter: str = DEADLETTER_TOPIC,
    ) -> DlqRequest:
        """Check the combination of arguments ``action`` accepts.

        ``deadletter`` is the dead-letter topic as the broker names it, the
        one a position given as ``topic[partition]@offset`` must name.
        """
        if action not in ACTIONS:
            raise DlqUsageError(f"unknown action {action!r}; one of {list(ACTIONS)}")
        parsed = tuple(parse_position(text, deadletter) for text in positions)
        filters = stage is not None or code is not None
        misplaced = {
            "--limit": limit is not None and action != "list",
            "--json": as_json and action != "list",
            "--all": everything and action != "replay",
            "--dry-run": dry_run and action != "replay",
            "--to": to is not None and action != "replay",
            "--stage/--code": filters and action == "show",
        }
        wrong = [name for name, given in misplaced.items() if given]
        if wrong:
            raise DlqUsageError(f"{action} does not take {', '.join(wrong)}")
        if limit is not None and limit < 1:
            raise DlqUsageError("--limit must be at least 1")
        if action == "list" and parsed:
            raise DlqUsageError("list takes no positions; filter with --stage/--code")
        if action == "show" and len(parsed) != 1:
            raise DlqUsageError("show takes exactly one PARTITION@OFFSET")
        if action == "replay":
            chosen = sum((bool(parsed), filters, everything))
            if chosen != 1:
                raise DlqUsageError(
                    "replay takes positions, or --stage/--code, or --all (one of them)"
                )
        return cls(action, parsed, stage, code, limit, as_json, everything, dry_run, to)


def consumer_config(bootstrap: str) -> dict[str, Any]:
    """A reader that joins no group's offsets and commits nothing."""
    return {
        "bootstrap.servers": bootstrap,
        # Unique and never committed: reading the DLQ leaves no trace.
        "group.id": f"notify-dlq-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 50,
        # Failures surface as this tool's own errors, not librdkafka's log.
        "log_level": 2,
    }


def read_entries(
    bootstrap: str,
    *,
    topic: str = DEADLETTER_TOPIC,
    ranges: Mapping[int, tuple[int, int]] | None = None,
    timeout: float = 120.0,
    metadata_timeout: float = 10.0,
) -> list[DeadLetter]:
    """Read the dead-letter topic, from the start to its end unless ``ranges``.

    ``ranges`` limits the read to some partitions, each from a first to a last
    offset (what ``show`` and replay by position need). Each partition is read
    up to the end offset it had when the read began.
    """
    consumer = Consumer(consumer_config(bootstrap))
    try:
        partitions = partitions_of(consumer, topic, metadata_timeout)
        if ranges is None:
            ranges = {p: (OFFSET_BEGINNING, -1) for p in partitions}
        unknown = [str(p) for p in sorted(ranges) if p not in partitions]
        if unknown:
            raise DlqError(f"{topic} has no partition {', '.join(unknown)}")
        stops: dict[int, int] = {}
        for partition, (first, last) in ranges.items():
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=metadata_timeout
            )
            stop = high - 1 if last < 0 else min(last, high - 1)
            if max(first, low) <= stop:
                stops[partition] = stop
        if not stops:
            return []
        consumer.assign([TopicPartition(topic, p, ranges[p][0]) for p in sorted(stops)])
        return _drain(consumer, topic, stops, timeout)
    except KafkaException as exc:
        raise DlqError(f"reading {topic}: {exc}") from exc
    finally:
        consumer.close()


def partitions_of(consumer: Consumer, topic: str, timeout: float) -> list[int]:
    """``topic``'s partitions; none if it does not exist yet."""
    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None:
        return []
    if metadata.error is not None:
        if metadata.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return []  # no dead letter was ever written
        raise DlqError(f"{topic}: {metadata.error}")
    return sorted(metadata.partitions)


def _drain(
    consumer: Consumer, topic: str, stops: Mapping[int, int], timeout: float
) -> list[DeadLetter]:
    """Every record of the assigned partitions up to each one's stop offset."""
    entries: list[DeadLetter] = []
    pending = set(stops)
    started = time.monotonic()
    while pending:
        if time.monotonic() - started >= timeout:
            raise DlqError(f"{topic} still being read after {timeout:.0f}s")
        message = consumer.poll(0.1)
        if message is None:
            continue
        partition = int(message.partition() or 0)
        error = message.error()
        if error is not None:
            raise DlqError(f"reading {topic}[{partition}]: {error}")
        if partition not in pending:
            continue
        offset = int(message.offset() or 0)
        if offset <= stops[partition]:
            entries.append(DeadLetter.from_message(message))
        if offset >= stops[partition]:
            pending.discard(partition)
    return entries


def produce_replays(
    bootstrap: str,
    replays: Sequence[Replay],
    *,
    timeout: float = 30.0,
    on_produced: Callable[[Replay, str], None] | None = None,
) -> list[str]:
    """Produce every replay, acks=all; return ``topic[partition]@offset`` of each.

    Any record not acknowledged (an error report, or still queued when the
    flush times out) raises ``DlqError`` naming what did and did not go.
    """
    if not replays:
        return []
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            # Faust's (Java's) partitioner, for replays onto another topic.
            "partitioner": "murmur2_random",
            "message.timeout.ms": int(timeout * 1000),
            "log_level": 2,
        }
    )
    _check_targets(producer, replays, timeout)
    written: dict[int, str] = {}
    failed: dict[int, str] = {}

    def report(index: int) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                failed[index] = str(error)
                return
            where = f"{message.topic()}[{message.partition()}]@{message.offset()}"
            written[index] = where
            if on_produced is not None:
                on_produced(replays[index], where)

        return on_delivery

    index = 0
    try:
        for index, replay in enumerate(replays):
            producer.produce(
                replay.topic,
                key=replay.key,
                value=replay.value,
                partition=-1 if replay.partition is None else replay.partition,
                headers=list(replay.headers),
                on_delivery=report(index),
            )
            producer.poll(0)
    except (KafkaException, BufferError) as exc:
        # The rest are not even queued; they are reported as not produced.
        failed[index] = f"produce refused: {exc}"
    # Past message.timeout.ms, so a stuck record comes back as an error report.
    remaining = producer.flush(timeout + 5)
    if remaining or failed or len(written) != len(replays):
        lost = [
            f"{replays[i].entry.position}: {failed.get(i, 'not produced')}"
            for i in range(len(replays))
            if i not in written
        ]
        raise DlqError(
            f"{len(lost)} of {len(replays)} replays were not produced "
            f"({len(written)} were): " + "; ".join(lost)
        )
    return [written[i] for i in range(len(replays))]


def _check_targets(
    producer: Producer, replays: Sequence[Replay], timeout: float
) -> None:
    # All topics, not one by name: a producer's request for a missing topic
    # may create it, and a typo in --to must not.
    try:
        topics = producer.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise DlqError(f"broker metadata: {exc}") from exc
    for replay in replays:
        metadata = topics.get(replay.topic)
        if metadata is None or metadata.error is not None:
            raise DlqError(f"{replay.entry.position}: no topic {replay.topic!r}")
        if replay.partition is not None and replay.partition not in metadata.partitions:
            raise DlqError(
                f"{replay.entry.position}: {replay.topic} has no partition "
                f"{replay.partition}"
            )


def run(
    request: DlqRequest,
    settings: Settings,
    out: Callable[[str], None],
    note: Callable[[str], None],
) -> None:
    """Carry out a checked request: entries go to ``out``, summaries to ``note``."""
    bootstrap = settings.bootstrap_servers
    topic = topic_name(settings, DEADLETTER)
    if request.action == "list":
        entries = read_entries(bootstrap, topic=topic)
        chosen = select(
            entries, stage=request.stage, code=request.code, limit=request.limit
        )
        for entry in chosen:
            if request.as_json:
                out(orjson.dumps(entry_document(entry)).decode())
            else:
                out(format_line(entry))
        note(f"{len(chosen)} of {count(len(entries))} in {topic}")
    elif request.action == "show":
        (position,) = request.positions
        (entry,) = at_positions(
            _read_positions(bootstrap, topic, request.positions), [position], topic
        )
        out(describe(entry))
    else:
        _replay(request, settings, out, note)


def _read_positions(
    bootstrap: str, topic: str, positions: Sequence[Position]
) -> list[DeadLetter]:
    ranges: dict[int, tuple[int, int]] = {}
    for position in positions:
        first, last = ranges.get(position.partition, (position.offset, position.offset))
        ranges[position.partition] = (
            min(first, position.offset),
            max(last, position.offset),
        )
    return read_entries(bootstrap, topic=topic, ranges=ranges)


def _replay(
    request: DlqRequest,
    settings: Settings,
    out: Callable[[str], None],
    note: Callable[[str], None],
) -> None:
    bootstrap = settings.bootstrap_servers
    topic = topic_name(settings, DEADLETTER)
    if request.positions:
        entries = at_positions(
            _read_positions(bootstrap, topic, request.positions),
            request.positions,
            topic,
        )
    else:
        entries = select(
            read_entries(bootstrap, topic=topic),
            stage=request.stage,
            code=request.code,
        )
    to = replay_target(settings, request.to) if request.to else None
    # Every replay is planned before any is produced: one bad entry stops all.
    replays = [plan_replay(entry, to) for entry in entries]
    if request.dry_run:
        for replay in replays:
            out(f"would replay {describe_replay(replay)}")
        note(f"dry run: {count(len(replays))} would be replayed, nothing was produced")
        return

    def produced(replay: Replay, where: str) -> None:
        out(f"replayed {describe_replay(replay, where)}")

    produce_replays(bootstrap, replays, on_produced=produced)
    note(f"replayed {count(len(replays))}")
