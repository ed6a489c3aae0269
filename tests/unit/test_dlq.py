"""The dead-letter tool's pure parts: positions, filters, redrive, replays, lines."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from pipeline.dlq import (
    REPLAYED_FROM,
    DeadLetter,
    DlqError,
    DlqRequest,
    DlqUsageError,
    Position,
    Source,
    at_positions,
    bump_redrive,
    describe,
    describe_replay,
    entry_document,
    format_line,
    parse_position,
    parse_source,
    plan_replay,
    replay_target,
    select,
    stage_matches,
)
from pipeline.settings import Settings
from pipeline.topology import DLQ_CODE, DLQ_REASON, DLQ_SOURCE, DLQ_STAGE

T0 = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)


def entry(
    partition: int = 0,
    offset: int = 0,
    *,
    stage: str = "ingest",
    code: str = "invalid_json",
    reason: str = "body is not JSON",
    source: str | None = "notify.requests.bulk[2]@40",
    key: bytes | None = b"u_1",
    value: bytes | None = b"not json",
    second: int = 0,
) -> DeadLetter:
    """A dead letter as ``pipeline.deadletter`` writes one."""
    headers = [
        (DLQ_REASON, reason.encode()),
        (DLQ_CODE, code.encode()),
        (DLQ_STAGE, stage.encode()),
    ]
    if source is not None:
        headers.append((DLQ_SOURCE, source.encode()))
    stamp = T0.replace(second=second)
    return DeadLetter(partition, offset, stamp, key, value, tuple(headers))


JOB = orjson.dumps({"notification_id": "n1", "channel": "push", "attempt": 2})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3@42", Position(3, 42)),
        (" 0@0 ", Position(0, 0)),
        ("notify.deadletter[1]@7", Position(1, 7)),
    ],
)
def test_positions_parse(text: str, expected: Position) -> None:
    """PARTITION@OFFSET, or the form the replayed_from header shows."""
    assert parse_position(text) == expected
    assert str(expected) == f"{expected.partition}@{expected.offset}"


@pytest.mark.parametrize(
    "text",
    ["3", "3@", "@4", "a@b", "-1@2", "3@4@5", "notify.requests.bulk[0]@1", ""],
)
def test_bad_positions_are_usage_errors(text: str) -> None:
    """Anything else is refused, including another topic's position."""
    with pytest.raises(DlqUsageError):
        parse_position(text)


def test_sources_parse() -> None:
    """The source header is topic[partition]@offset; topics may have dots."""
    assert parse_source("notify.requests.bulk[2]@40") == Source(
        "notify.requests.bulk", 2, 40
    )
    with pytest.raises(DlqError):
        parse_source("notify.requests.bulk@40")


def test_headers_are_read_by_name() -> None:
    """Stage, code, reason and source come from the notify.dlq.* headers."""
    dead = entry(stage="send.push", code="BadDeviceToken", reason="gone")
    assert (dead.stage, dead.code) == ("send.push", "BadDeviceToken")
    assert dead.reason == "gone"
    assert dead.source == "notify.requests.bulk[2]@40"
    assert dead.position == Position(0, 0)
    assert entry(source=None).source == ""


def test_stage_filter_covers_sub_stages() -> None:
    """--stage send matches send.push and send.sms, not sender."""
    assert stage_matches("send.push", "send")
    assert stage_matches("send.push", "send.push")
    assert not stage_matches("sender", "send")
    assert not stage_matches("send.push", "send.sms")


def test_select_filters_orders_and_limits() -> None:
    """Entries pass both filters, oldest first, at most --limit."""
    entries = [
        entry(1, 5, stage="send.push", code="x", second=30),
        entry(0, 9, stage="ingest", code="x", second=10),
        entry(2, 1, stage="send.sms", code="y", second=20),
        entry(3, 2, stage="send.sms", code="x", second=5),
    ]
    assert [e.position for e in select(entries, stage="send")] == [
        Position(3, 2),
        Position(2, 1),
        Position(1, 5),
    ]
    assert [e.position for e in select(entries, stage="send", code="x")] == [
        Position(3, 2),
        Position(1, 5),
    ]
    assert [e.position for e in select(entries, code="x", limit=2)] == [
        Position(3, 2),
        Position(0, 9),
    ]
    assert select(entries, code="nothing") == []


def test_at_positions_keeps_the_order_asked_and_fails_on_a_missing_one() -> None:
    """Replay by position names exactly the entries wanted, each once."""
    entries = [entry(0, 1), entry(0, 2), entry(1, 1)]
    wanted = [Position(1, 1), Position(0, 1), Position(1, 1)]
    assert [e.position for e in at_positions(entries, wanted)] == [
        Position(1, 1),
        Position(0, 1),
    ]
    with pytest.raises(DlqError, match="0@3"):
        at_positions(entries, [Position(0, 1), Position(0, 3)])


def test_bump_redrive_counts_from_zero_and_keeps_the_rest() -> None:
    """An absent redrive becomes 1, an existing one grows by one; the rest stays
    but the attempt, which starts over."""
    once = orjson.loads(bump_redrive(JOB))
    original = orjson.loads(JOB)
    assert once == {**original, "redrive": 1, "attempt": 0}
    assert orjson.loads(bump_redrive(orjson.dumps(once)))["redrive"] == 2


def test_a_redriven_job_starts_its_retries_over() -> None:
    """The last attempt's number and due time go: the job gets a full budget."""
    spent = orjson.dumps(
        {"notification_id": "n_1", "attempt": 5, "not_before": "2026-11-21T10:00:00Z"}
    )
    fresh = orjson.loads(bump_redrive(spent))
    assert fresh["attempt"] == 0 and "not_before" not in fresh


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[1, 2]",
        None,
        orjson.dumps({"redrive": True}),
        orjson.dumps({"redrive": "1"}),
        orjson.dumps({"redrive": -1}),
        orjson.dumps({"redrive": 1.5}),
    ],
)
def test_bump_redrive_refuses_what_is_not_a_job(value: bytes | None) -> None:
    """A delivery job is a JSON object whose redrive is a count."""
    with pytest.raises(DlqError):
        bump_redrive(value)


def test_replay_goes_back_to_the_source_topic_and_partition() -> None:
    """Same key and bytes, the source partition, and where it came from."""
    dead = entry(4, 17)
    replay = plan_replay(dead)
    assert (replay.topic, replay.partition) == ("notify.requests.bulk", 2)
    assert (replay.key, replay.value) == (b"u_1", b"not json")
    assert replay.headers == ((REPLAYED_FROM, b"notify.deadletter[4]@17"),)


def test_replay_to_another_topic_lets_the_partitioner_choose() -> None:
    """--to names the topic; the key decides the partition there."""
    replay = plan_replay(entry(), to="notify.requests.critical")
    assert (replay.topic, replay.partition) == ("notify.requests.critical", None)
    same = plan_replay(entry(), to="notify.requests.bulk")
    assert same.partition == 2


def test_replaying_a_delivery_job_raises_its_redrive() -> None:
    """A send.* stage value is a job: the ledger needs redrive raised to resend."""
    replay = plan_replay(entry(stage="send.push", value=JOB))
    assert orjson.loads(replay.value or b"")["redrive"] == 1
    assert "redrive=1" in describe_replay(replay)
    untouched = plan_replay(entry(stage="ingest", value=JOB))
    assert untouched.value == JOB


def test_replay_keeps_other_headers_but_not_the_dead_letter_ones() -> None:
    """The refusal's headers stay behind; a previous replayed_from is replaced."""
    dead = DeadLetter(
        0,
        3,
        T0,
        b"k",
        b"v",
        (
            ("traceparent", b"00-abc"),
            (REPLAYED_FROM, b"notify.deadletter[0]@1"),
            (DLQ_SOURCE, b"t[0]@9"),
            (DLQ_STAGE, b"ingest"),
        ),
    )
    assert plan_replay(dead).headers == (
        ("traceparent", b"00-abc"),
        (REPLAYED_FROM, b"notify.deadletter[0]@3"),
    )


def test_replay_needs_a_target_and_never_targets_the_dlq() -> None:
    """No source header and no --to is an error; so is a loop onto the DLQ."""
    with pytest.raises(DlqError, match="--to"):
        plan_replay(entry(source=None))
    with pytest.raises(DlqError, match="notify.deadletter"):
        plan_replay(entry(), to="notify.deadletter")
    with pytest.raises(DlqError, match="0@0"):
        plan_replay(entry(stage="send.sms", value=b"oops"))


def test_list_line_has_every_field_in_order() -> None:
    """partition@offset, time, stage, code, source, quoted reason, key."""
    line = format_line(entry(2, 41, second=3))
    assert line.split("  ") == [
        "2@41",
        "2026-06-10T12:00:03.000Z",
        "ingest",
        "invalid_json",
        "notify.requests.bulk[2]@40",
        '"body is not JSON"',
        "u_1",
    ]
    keyless = format_line(entry(key=None, source=None, code=""))
    assert keyless.split("  ")[3:] == ["-", "-", '"body is not JSON"', "(none)"]
    binary = format_line(entry(key=b"\xff\x00"))
    assert binary.endswith(repr(b"\xff\x00"))


def test_json_document_is_serialisable() -> None:
    """list --json writes one object per entry, bytes as text."""
    document = entry_document(entry(1, 2, key=b"\xffk"))
    again = orjson.loads(orjson.dumps(document))
    assert again["position"] == "1@2"
    assert again["stage"] == "ingest"
    assert again["key"] == "\\xffk"
    assert again["value"] == "not json"
    assert again["headers"][DLQ_CODE] == "invalid_json"


def test_show_pretty_prints_json_and_reprs_other_bytes() -> None:
    """show: headers, key, and the value as indented JSON when it is JSON."""
    text = describe(entry(stage="send.push", value=JOB))
    assert "position: notify.deadletter[0]@0" in text
    assert f"  {DLQ_STAGE}: send.push" in text
    assert "key: u_1" in text
    assert '  "notification_id": "n1",' in text
    raw = describe(entry(value=b"\x00\x01binary"))
    assert raw.endswith(repr(b"\x00\x01binary"))


def test_requests_accept_the_documented_forms() -> None:
    """list with filters, show one position, replay by positions/filters/--all."""
    listing = DlqRequest.parse("list", stage="send", limit=5, as_json=True)
    assert (listing.stage, listing.limit, listing.as_json) == ("send", 5, True)
    shown = DlqRequest.parse("show", ["2@9"])
    assert shown.positions == (Position(2, 9),)
    by_position = DlqRequest.parse("replay", ["1@2", "1@3"], dry_run=True)
    assert by_position.positions == (Position(1, 2), Position(1, 3))
    assert DlqRequest.parse("replay", code="x", to="t").to == "t"
    assert DlqRequest.parse("replay", everything=True).everything


@pytest.mark.parametrize(
    ("action", "positions", "options"),
    [
        ("drop", [], {}),
        ("list", ["1@2"], {}),
        ("list", [], {"dry_run": True}),
        ("list", [], {"limit": 0}),
        ("show", [], {}),
        ("show", ["1@2", "1@3"], {}),
        ("show", ["1@2"], {"stage": "ingest"}),
        ("replay", [], {}),
        ("replay", ["1@2"], {"stage": "ingest"}),
        ("replay", [], {"everything": True, "code": "x"}),
        ("replay", [], {"everything": True, "limit": 3}),
        ("replay", [], {"everything": True, "as_json": True}),
        ("replay", ["x"], {}),
    ],
)
def test_requests_refuse_what_makes_no_sense(
    action: str, positions: list[str], options: dict[str, object]
) -> None:
    """A replay must say which entries; options of another action are refused."""
    with pytest.raises(DlqUsageError):
        DlqRequest.parse(action, positions, **options)  # type: ignore[arg-type]


STAGING = Settings(topic_prefix="staging.")


def test_replay_target_prefixes_the_pipelines_own_topics_only() -> None:
    """--to notify.requests.bulk means this deployment's; other names as given."""
    assert replay_target(STAGING, "notify.requests.bulk") == (
        "staging.notify.requests.bulk"
    )
    assert replay_target(STAGING, "staging.notify.requests.bulk") == (
        "staging.notify.requests.bulk"
    )
    assert replay_target(STAGING, "ops.quarantine") == "ops.quarantine"
    unprefixed = Settings(topic_prefix="")
    assert replay_target(unprefixed, "notify.requests.bulk") == "notify.requests.bulk"


def test_a_dead_letter_read_under_a_prefix_names_its_own_topic() -> None:
    """The replayed_from header, show and the no-loop check use the topic read."""
    message = Message(
        topic="staging.notify.deadletter",
        partition=3,
        offset=12,
        key=b"u_1",
        value=b"not json",
        headers=[(DLQ_SOURCE, b"staging.notify.requests.bulk[2]@40")],
        timestamp=(TIMESTAMP_CREATE_TIME, 1_000),
    )
    dead = DeadLetter.from_message(message)
    assert dead.topic == "staging.notify.deadletter"
    replay = plan_replay(dead)
    assert (replay.topic, replay.partition) == ("staging.notify.requests.bulk", 2)
    assert replay.headers == ((REPLAYED_FROM, b"staging.notify.deadletter[3]@12"),)
    assert "position: staging.notify.deadletter[3]@12" in describe(dead)
    with pytest.raises(DlqError, match="will not replay onto staging.notify"):
        plan_replay(dead, to=replay_target(STAGING, "notify.deadletter"))


def test_positions_in_header_form_name_the_prefixed_dead_letter_topic() -> None:
    """Under a prefix, T[P]@O must name the prefixed topic, as headers show it."""
    deadletter = "staging.notify.deadletter"
    shown = DlqRequest.parse("show", [f"{deadletter}[1]@7"], deadletter=deadletter)
    assert shown.positions == (Position(1, 7),)
    with pytest.raises(DlqUsageError, match="not the dead-letter topic"):
        DlqRequest.parse("show", ["notify.deadletter[1]@7"], deadletter=deadletter)
