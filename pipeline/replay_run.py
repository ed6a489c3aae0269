"""What ``notify replay`` does with a range (``pipeline.replay`` says why)."""

from __future__ import annotations

import urllib.error
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, Producer

from pipeline.replay import (
    Bound,
    Checkpoint,
    Progress,
    ReplayError,
    Span,
    chunks,
    consumer_for,
    job_id,
    produce_again,
    read,
    spans,
    summary,
)
from pipeline.settings import Settings
from pipeline.topology import (
    ACCEPTED,
    ALL_TOPICS,
    DELIVERIES,
    DEVICES,
    EVENTS,
    PREFERENCES,
    PROFILES,
    REQUESTS,
    topic_name,
)

Say = Callable[[str], None]
#: Offsets per call when the sink process inserts a replayed range.
SINK_CHUNK = 100_000


def broker_topic(settings: Settings, name: str) -> str:
    """A pipeline topic's name on the broker (with the prefix); any other as given."""
    known = {spec.name for spec in ALL_TOPICS}
    return topic_name(settings, name) if name in known else name


def replay(
    settings: Settings,
    topic: str,
    start: Bound | None,
    stop: Bound | None,
    into: str,
    *,
    dry_run: bool,
    say: Say,
    as_json: bool = False,
) -> None:
    """Replay ``topic`` between the bounds into ClickHouse or the pipeline."""
    name = broker_topic(settings, topic)
    events = topic_name(settings, EVENTS)
    driven = {
        topic_name(settings, spec)
        for spec in (*REQUESTS.values(), *ACCEPTED.values(), *DELIVERIES.values())
    }
    if into == "clickhouse" and name != events:
        raise ReplayError(f"--into clickhouse replays {events}, not {name}")
    if into == "pipeline" and name not in driven:
        raise ReplayError(
            f"--into pipeline replays requests, accepted requests or delivery "
            f"jobs, not {name}"
        )
    job = job_id(name, start, stop, into)
    checkpoint = Checkpoint.load(settings.data_dir / "replay", job)
    consumer = consumer_for(settings)
    try:
        if dry_run:
            found = spans(consumer, name, start, stop)
            if into == "clickhouse":
                missing_report(settings, consumer, name, found, say)
            else:
                decisions_report(settings, consumer, name, found, say, as_json)
            return
        if not checkpoint.spans:
            checkpoint.spans = spans(consumer, name, start, stop)
            checkpoint.save()
        else:
            say(f"resuming replay {job} ({checkpoint.path})")
        left = [checkpoint.remaining(span) for span in checkpoint.spans]
        progress = Progress(sum(span.size for span in left), say)
        if into == "clickhouse":
            to_clickhouse(settings, name, left, checkpoint, progress)
        else:
            to_pipeline(settings, consumer, name, left, checkpoint, progress)
        progress.add(0, force=True)
        checkpoint.finish()
        say(f"replayed {progress.done:,} records of {name} into {into}")
    finally:
        consumer.close()


def to_clickhouse(
    settings: Settings,
    topic: str,
    left: list[Span],
    checkpoint: Checkpoint,
    progress: Progress,
    store: Client | None = None,
) -> None:
    """Insert each chunk again: into ``store`` (a client of this process's
    own), else through the sink when it owns the chDB store, else into the
    ClickHouse server."""
    from pipeline.analytics.store import connect, embedded

    own = store is None and not embedded(settings)
    client = connect(settings) if own else store
    try:
        for span in left:
            if client is None:
                # The sink owns the store: a range per call, 100,000 at most.
                for piece in chunks(span, SINK_CHUNK):
                    sink_replay(settings, topic, piece)
                    checkpoint.save(piece.partition, piece.end)
                    progress.add(piece.size)
                continue
            from pipeline.analytics.backfill import insert_span

            def inserted(
                next_offset: int, count: int, partition: int = span.partition
            ) -> None:
                checkpoint.save(partition, next_offset)
                progress.add(count)

            # One pass over the partition's range; a checkpoint per batch.
            insert_span(settings, client, topic, span, inserted)
            checkpoint.save(span.partition, span.end)
    finally:
        if own and client is not None:
            client.close()


def sink_replay(settings: Settings, topic: str, span: Span) -> dict[str, Any]:
    """Ask ``notify sink`` to insert one range again (it owns the chDB store)."""
    body = {
        "topic": topic,
        "partition": span.partition,
        "start": span.start,
        "end": span.end,
    }
    from pipeline.analytics.queries import sink_post

    try:
        result: dict[str, Any] = orjson.loads(sink_post(settings, "/replay", body, 600))
        return result
    except urllib.error.HTTPError as error:
        raise ReplayError(
            f"the sink refused: {error.code} {error.read()[:300]!r}"
        ) from None
    except OSError as error:
        raise ReplayError(
            "`notify sink` owns the analytics store and does not answer at "
            f"{settings.resolved_sink_url}: {error}"
        ) from None


def to_pipeline(
    settings: Settings,
    consumer: Consumer,
    topic: str,
    left: list[Span],
    checkpoint: Checkpoint,
    progress: Progress,
) -> None:
    """Produce each chunk again onto its topic and partition."""
    producer = Producer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "log_level": 2,
        }
    )
    for span in left:
        for piece in chunks(span):
            messages = list(read(consumer, topic, piece))
            produce_again(producer, topic, messages)
            checkpoint.save(piece.partition, piece.end)
            progress.add(piece.size)


def missing_report(
    settings: Settings, consumer: Consumer, topic: str, found: list[Span], say: Say
) -> None:
    """How many of the range's events ``notif_events`` lacks (nothing written)."""
    from pipeline.analytics.funnel import literal
    from pipeline.analytics.queries import read_query

    total = present = 0
    for span in found:
        for piece in chunks(span):
            ids = []
            for message in read(consumer, topic, piece):
                try:
                    ids.append(str(orjson.loads(message.value() or b"")["event_id"]))
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue
            if not ids:
                continue
            listed = ",".join(literal(i) for i in ids)
            sql = f"SELECT uniqExact(event_id) AS n FROM notif_events_log WHERE event_id IN ({listed})"  # noqa: S608 - quoted ids
            answer = orjson.loads(read_query(settings, sql, "JSON"))
            total += len(set(ids))
            present += int(answer["data"][0]["n"])
    say(
        f"dry run: {total:,} events in the range, {present:,} in notif_events, "
        f"{total - present:,} missing (a replay would add them; nothing written)"
    )


def user_state(settings: Settings, consumer: Consumer) -> dict[str, dict[str, Any]]:
    """Every user's profile, preferences and devices, as the compacted state
    topics hold them now (the latest record per user)."""
    from agents.user_state import parse_state, with_device
    from pipeline.errors import InvalidMessage
    from schemas.records import DeviceToken, Preferences, UserProfile

    now = datetime.now().astimezone()
    state: dict[str, dict[str, Any]] = {}
    for spec, model, part in (
        (PROFILES, UserProfile, "profile"),
        (PREFERENCES, Preferences, "preferences"),
        (DEVICES, DeviceToken, "devices"),
    ):
        name = topic_name(settings, spec)
        for span in spans(consumer, name, None, None):
            for message in read(consumer, name, span):
                try:
                    record = parse_state(message.value(), model, now)
                except InvalidMessage:
                    continue
                key = f"{record.tenant}/{record.user_id}"
                held = state.setdefault(key, {})
                if part == "devices":
                    held["devices"] = with_device(held.get("devices"), record)  # type: ignore[arg-type]
                else:
                    held[part] = record
    return state


def decisions_report(
    settings: Settings,
    consumer: Consumer,
    topic: str,
    found: list[Span],
    say: Say,
    as_json: bool,
) -> None:
    """Decide each request of the range as fanout would now, nothing sent or
    written; say who would get what, per channel and reason."""
    from agents.fanout import CATALOGUE, UserState, fan_out
    from agents.ingest import accept
    from agents.send import render
    from pipeline.errors import InvalidMessage
    from schemas.decode import decode
    from schemas.records import AcceptedRequest, NotificationRequest

    accepted_topics = {topic_name(settings, spec) for spec in ACCEPTED.values()}
    if topic not in accepted_topics and topic not in {
        topic_name(settings, spec) for spec in REQUESTS.values()
    }:
        raise ReplayError("--dry-run decides requests: replay a requests topic")
    users = user_state(settings, consumer)
    throttles: dict[str, Any] = {}
    counts: Counter[tuple[str, ...]] = Counter()
    now = datetime.now().astimezone()
    total = sum(span.size for span in found)
    progress = Progress(total, say)
    for span in found:
        for message in read(consumer, topic, span):
            progress.add(1)
            source = f"{topic}[{span.partition}]@{message.offset()}"
            try:
                if topic in accepted_topics:
                    accepted = decode(AcceptedRequest, message.value() or b"")
                    request = accepted.notification()
                else:
                    request = decode(NotificationRequest, message.value() or b"")
                    accepted = accept(request, source, now)
            except InvalidMessage as exc:
                counts[("-", "invalid", exc.code)] += 1
                continue
            key = f"{request.tenant}/{request.recipient.user_id}"
            held = users.get(key, {})
            state = UserState(
                profile=held.get("profile"),
                preferences=held.get("preferences"),
                devices=held.get("devices"),
                throttle=throttles.get(key),
            )
            result = fan_out(accepted, state, CATALOGUE, now, request)
            if result.throttle is not None:
                throttles[key] = result.throttle
            failed_render = {}
            for job in result.jobs:
                try:
                    render(job)
                except Exception as exc:  # noqa: BLE001 - a template that fails
                    failed_render[job.channel] = f"{type(exc).__name__}: {exc}"[:120]
            for event in result.events:
                if event.event_type == "accepted" or event.channel is None:
                    continue
                kind: str = event.event_type
                reason = event.reason or ""
                if kind == "queued":
                    kind = (
                        "template_error"
                        if event.channel in failed_render
                        else "would_send"
                    )
                    reason = failed_render.get(event.channel, reason)
                counts[(event.channel, kind, reason)] += 1
                if as_json:
                    say(
                        orjson.dumps(
                            {
                                "source": source,
                                "notification_id": accepted.notification_id,
                                "user_id": request.recipient.user_id,
                                "channel": event.channel,
                                "outcome": kind,
                                "reason": reason,
                            }
                        ).decode()
                    )
    progress.add(0, force=True)
    say(f"dry run of {total:,} records (nothing sent, nothing written):")
    for line in summary(counts):
        say(line)
