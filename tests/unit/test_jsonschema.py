"""The published JSON Schemas: current, valid, and in step with the strict door."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeAlias

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

# Imported plainly: without jsonschema (a dev dependency) this module must fail.
from jsonschema import Draft202012Validator, ValidationError
from pydantic import BaseModel

import schemas.jsonschema
from pipeline.errors import InvalidMessage
from schemas.campaigns import (
    Audience,
    Campaign,
    CampaignRequest,
    Message,
    Segment,
    TagsTarget,
)
from schemas.decode import decode
from schemas.jsonschema import DIALECT, PUBLISHED, SCHEMA_DIR, render, schema_for
from schemas.records import (
    CHANNELS,
    PLATFORMS,
    PRIORITIES,
    DeliveryJob,
    DeviceRegistration,
    DeviceToken,
    InboxItem,
    NotificationEvent,
    NotificationRequest,
    Preferences,
    PreferencesUpdate,
    ProfileUpdate,
    QuietHours,
    Recipient,
    Record,
    Suppression,
    UserProfile,
)

REGENERATE = "python -m schemas.jsonschema"

SEED_000_BODY: dict[str, Any] = {
    "idempotency_key": "order-4412-shipped",
    "recipient": {"user_id": "u_991"},
    "type": "order_shipped",
    "channels": ["push", "email"],
    "data": {"order_id": 4412, "eta": "Tue"},
    "priority": "transactional",
}

NOW = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
PARIS_WINTER = timezone(timedelta(hours=1))
DEVICE = DeviceToken(
    user_id="u_991",
    token="0f" * 32,  # an APNs device token: 64 hex digits
    platform="apns",
    tenant="acme",
    active=False,
    updated_at=NOW,
)

#: One instance of each published record, every optional field set off its default.
CAMPAIGN = CampaignRequest(
    idempotency_key="winter-1",
    campaign_name="Winter sale",
    type="campaign",
    target=TagsTarget(tags=["vip"]),
    channels=["email", "push"],
    message=Message(title="Winter sale", body="Everything half off."),
    data={"cta_url": "https://shop.example.com/sale"},
    schedule_at=NOW + timedelta(hours=1),
    expiry_at=NOW + timedelta(days=1),
    local_time="09:30",
    rate=500,
    chunk=200,
    tenant="acme",
)
EXAMPLES: dict[str, Record] = {
    "notification-request": NotificationRequest(
        idempotency_key="order-4412-shipped",
        recipient=Recipient(user_id="u_991"),
        type="order_shipped",
        priority="critical",
        tenant="acme",
        channels=["push", "email"],
        data={"order_id": 4412, "items": [{"sku": "A1", "qty": 2}]},
        schedule_at=datetime(2026, 11, 21, 10, 0, tzinfo=PARIS_WINTER),
        expiry_at=NOW + timedelta(hours=6),
        campaign_id="1042",
        digest_key="orders",
        locale="fr-FR",
    ),
    "preferences": Preferences(
        user_id="u_991",
        tenant="acme",
        enabled=False,
        channels={"sms": False, "push": True},
        types={"weekly_digest": False},
        marketing=False,
        quiet_hours=QuietHours(start="22:00", end="08:00"),
        timezone="Europe/Paris",
        locale="fr-FR",
        updated_at=NOW,
    ),
    "user-profile": UserProfile(
        user_id="u_991",
        tenant="acme",
        email="ada@example.org",
        phone="+33612345678",
        locale="fr-FR",
        timezone="Europe/Paris",
        tags=["vip"],
        updated_at=NOW,
    ),
    "device-token": DEVICE,
    "notification-event": NotificationEvent(
        event_id="e_1",
        event_type="sent",
        ts=NOW,
        stage="send",
        notification_id="n_1",
        tenant="acme",
        user_id="u_991",
        campaign_id="1042",
        type="order_shipped",
        priority="transactional",
        lane="critical",
        channel="push",
        provider="apns",
        template="order_shipped",
        variant="b",
        locale="fr-FR",
        reason="quiet_hours",
        error="timeout after 5s",
        attempt=2,
        until=NOW + timedelta(hours=1),
    ),
    "delivery-job": DeliveryJob(
        notification_id="n_1",
        tenant="acme",
        user_id="u_991",
        type="order_shipped",
        priority="transactional",
        lane="critical",
        channel="push",
        data={"order_id": 4412},
        created_at=NOW,
        ready_at=NOW,
        locale="fr-FR",
        timezone="Europe/Paris",
        campaign_id="1042",
        digest_key="orders",
        expiry_at=NOW + timedelta(days=1),
        email="ada@example.org",
        phone="+33612345678",
        devices=[DEVICE],
        attempt=1,
        not_before=NOW + timedelta(seconds=4),
        redrive=1,
    ),
    "suppression": Suppression(
        tenant="acme",
        channel="email",
        address="ada@example.org",
        reason="hard_bounce",
        created_at=NOW,
        code="550",
        active=False,
    ),
    "campaign-request": CAMPAIGN,
    "campaign": Campaign(
        campaign_id="c_1",
        tenant="acme",
        request=CAMPAIGN,
        body_hash="h",
        state="paused",
        created_at=NOW,
        updated_at=NOW + timedelta(minutes=1),
    ),
    "segment": Segment(
        segment_id="vip",
        tenant="acme",
        audience=Audience(tags=["vip"]),
        updated_at=NOW,
        deleted=True,
    ),
    "inbox-item": InboxItem(
        notification_id="n_1",
        type="comment_reply",
        title="Bob replied",
        body="Nice one",
        created_at=NOW,
        data={"thread": 7},
        read_at=NOW + timedelta(minutes=5),
    ),
}


def validator_for(schema: dict[str, Any]) -> Draft202012Validator:
    """A draft 2020-12 validator that asserts formats, date-time included."""
    Draft202012Validator.check_schema(schema)
    checker = Draft202012Validator.FORMAT_CHECKER
    # jsonschema checks date-time only when rfc3339-validator is installed;
    # without it every time string would pass silently.
    assert "date-time" in checker.checkers, "install rfc3339-validator"
    return Draft202012Validator(schema, format_checker=checker)


VALIDATORS = {
    name: validator_for(schema_for(model)) for name, model in PUBLISHED.items()
}


def wire(record: BaseModel) -> dict[str, Any]:
    """What a consumer reads: the record's JSON form, decoded."""
    assert isinstance(record, Record)
    body: dict[str, Any] = orjson.loads(record.dumps())
    return body


def errors(validator: Draft202012Validator, body: Any) -> list[str]:
    """The schema's complaints about ``body``, readable in an assertion message."""
    return [
        f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)
    ]


def door_refusal(model: type[BaseModel], body: Any) -> InvalidMessage | None:
    """None if the strict door admits ``body`` as ``model``, else its refusal."""
    # The stdlib encoder: bodies may hold integers beyond orjson's 64 bits.
    try:
        decode(model, json.dumps(body))
    except InvalidMessage as refusal:
        return refusal
    return None


# (a) The committed files are what the records generate.


def test_committed_schema_files_match_the_records() -> None:
    """A field added to a record without regenerating the files fails here."""
    committed = {path.stem for path in SCHEMA_DIR.glob("*.json")}
    stale = sorted(
        name
        for name, model in PUBLISHED.items()
        if name not in committed
        or (SCHEMA_DIR / f"{name}.json").read_text(encoding="utf-8") != render(model)
    )
    orphans = sorted(committed - set(PUBLISHED))
    assert not stale and not orphans, (
        f"schemas/json/ is out of date (stale: {stale}, no longer published: "
        f"{orphans}): run `{REGENERATE}`, delete the orphans, and commit"
    )


def test_main_writes_every_published_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The module's entry point writes one file per published record."""
    monkeypatch.setattr(schemas.jsonschema, "SCHEMA_DIR", tmp_path)
    schemas.jsonschema.main()
    assert sorted(path.stem for path in tmp_path.glob("*.json")) == sorted(PUBLISHED)
    for name, model in PUBLISHED.items():
        assert (tmp_path / f"{name}.json").read_text(encoding="utf-8") == render(model)
    assert capsys.readouterr().out.count("wrote ") == len(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_every_schema_is_valid_draft_2020_12(name: str) -> None:
    """Each committed document is a valid schema and says which dialect it is."""
    document = json.loads((SCHEMA_DIR / f"{name}.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(document)
    assert (document["$schema"], document["$id"]) == (DIALECT, f"{name}.json")


# (b) What the app writes validates; what it must not accept does not.


def test_every_published_schema_has_an_example() -> None:
    """A newly published record needs an instance above, or it goes untested."""
    assert set(EXAMPLES) == set(PUBLISHED)
    for name, record in EXAMPLES.items():
        assert type(record) is PUBLISHED[name], name


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_examples_set_every_optional_field(name: str) -> None:
    """Each example exercises every property, so a new field needs a value here."""
    record = EXAMPLES[name]
    at_default = [
        field
        for field, info in type(record).model_fields.items()
        if not info.is_required()
        and getattr(record, field) == info.get_default(call_default_factory=True)
    ]
    assert not at_default, f"give EXAMPLES[{name!r}] non-default {at_default}"


def test_the_seed_request_body_validates() -> None:
    """The product brief's API body is valid for the schema and the door."""
    assert errors(VALIDATORS["notification-request"], SEED_000_BODY) == []
    assert door_refusal(NotificationRequest, SEED_000_BODY) is None


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_serialized_records_validate(name: str) -> None:
    """What the app writes for each record is valid, keys exactly the properties."""
    record = EXAMPLES[name]
    body = wire(record)
    assert set(body) == set(schema_for(PUBLISHED[name])["properties"])
    assert errors(VALIDATORS[name], body) == []
    assert type(record).loads(record.dumps()) == record


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_records_with_only_required_fields_validate(name: str) -> None:
    """Defaults (null, empty, "default") are valid values on the wire too."""
    full = EXAMPLES[name]
    model = PUBLISHED[name]
    required = {
        field: getattr(full, field)
        for field, info in model.model_fields.items()
        if info.is_required()
    }
    assert errors(VALIDATORS[name], wire(model(**required))) == []


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_faust_metadata_and_unknown_fields_are_refused(name: str) -> None:
    """A payload with Faust's ``__faust`` key or a misspelt field is invalid."""
    body = wire(EXAMPLES[name])
    assert "__faust" not in body
    for extra in ({"__faust": {"ns": "schemas.records.X"}}, {"user-id": "u_991"}):
        assert errors(VALIDATORS[name], {**body, **extra})
        refusal = door_refusal(PUBLISHED[name], {**body, **extra})
        assert refusal is not None and refusal.code == "unknown_field"


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("device-token", {"platform": "wns"}),
        ("notification-event", {"event_type": "exploded"}),
        ("notification-event", {"ts": "21/11/2026 09:30Z"}),
        ("notification-event", {"attempt": "2"}),
        ("delivery-job", {"channel": "fax"}),
        ("delivery-job", {"priority": "urgent"}),
        ("delivery-job", {"type": "Order Shipped"}),
        ("delivery-job", {"devices": [{"user_id": "u", "token": "t"}]}),
        ("preferences", {"channels": {"fax": False}}),
        ("preferences", {"quiet_hours": {"start": "22:00"}}),
        ("user-profile", {"tags": "vip"}),
        ("suppression", {"channel": "push"}),
        ("inbox-item", {"title": 7}),
    ],
)
def test_wrong_values_are_refused(name: str, change: dict[str, Any]) -> None:
    """The schemas carry the enums and patterns the app relies on, as the door."""
    body = {**wire(EXAMPLES[name]), **change}
    faults = VALIDATORS[name].iter_errors(body)
    assert {fault.absolute_path[0] for fault in faults} == set(change)
    refusal = door_refusal(PUBLISHED[name], body)
    assert refusal is not None and refusal.field is not None
    assert refusal.field.split(".")[0] in change


# (c) The schema accepts what the door accepts, and only that.

Fault: TypeAlias = InvalidMessage | ValidationError


@dataclass(frozen=True)
class Gap:
    """Bodies the door and the published schema judge differently, and why."""

    name: str
    why: str
    #: Whether the door admits what the schema refuses (else the reverse).
    door_admits: bool
    #: Whether this gap explains ``fault`` (the schema's complaint when the door
    #: admits, the door's refusal when the schema admits) about ``body``.
    covers: Callable[[Any, Fault], bool]
    #: (published name, change to its example) bodies showing the gap.
    examples: tuple[tuple[str, dict[str, Any]], ...]


def value_at(body: Any, field: str) -> Any:
    """The value a refusal's dotted ``field`` names in ``body`` (None if none)."""
    if not field:
        return body
    if isinstance(body, dict):
        for key in sorted(body, key=len, reverse=True):  # keys may hold dots
            if field == key:
                return body[key]
            if field.startswith(f"{key}."):
                return value_at(body[key], field[len(key) + 1 :])
    head, _, rest = field.partition(".")
    if isinstance(body, list) and head.isdigit() and int(head) < len(body):
        return value_at(body[int(head)], rest)
    return None


def refused(
    check: Callable[[InvalidMessage, Any], bool],
) -> Callable[[Any, Fault], bool]:
    """A gap test on the door's refusal and the value it names."""

    def covers(body: Any, fault: Fault) -> bool:
        return isinstance(fault, InvalidMessage) and check(
            fault, value_at(body, fault.field or "")
        )

    return covers


def complained(
    check: Callable[[ValidationError], bool],
) -> Callable[[Any, Fault], bool]:
    """A gap test on one of the schema's complaints."""

    def covers(body: Any, fault: Fault) -> bool:
        return isinstance(fault, ValidationError) and check(fault)

    return covers


#: White space to Python's ``re`` (so to jsonschema's ``pattern``), but not to
#: pydantic's Rust regex nor to ECMA-262: the information separators.
PYTHON_ONLY_SPACE = {code: "x" for code in range(0x1C, 0x20)}


def python_only_space(error: ValidationError) -> bool:
    """The complaint goes away once Python-only white space is made a letter."""
    if not isinstance(error.instance, str):
        return False
    spelled = error.instance.translate(PYTHON_ONLY_SPACE)
    if spelled == error.instance:
        return False
    where = VALIDATORS["notification-request"].evolve(schema=error.schema)
    return bool(where.is_valid(spelled))


#: What JSON Schema cannot say, or says differently from the door by nature.
GAPS = (
    Gap(
        "expiry-after-schedule",
        "expiry_at must be later than schedule_at: JSON Schema compares no two "
        "fields (the request's description says it in words)",
        door_admits=False,
        covers=refused(
            lambda refusal, _: (
                refusal.field == "expiry_at"
                and refusal.reason.endswith("must be later than schedule_at")
            )
        ),
        examples=(
            (
                "notification-request",
                {
                    "schedule_at": "2026-11-21T10:00:00Z",
                    "expiry_at": "2026-11-21T11:00:00+01:00",
                },
            ),
        ),
    ),
    Gap(
        "integral-float-campaign-id",
        "JSON Schema's integer is any number with no fraction, so 1042.0 is one; "
        "the strict door takes only an integer written as one",
        door_admits=False,
        covers=refused(
            lambda refusal, value: (
                refusal.field == "campaign_id"
                and isinstance(value, float)
                and value.is_integer()
            )
        ),
        examples=(("notification-request", {"campaign_id": 1042.0}),),
    ),
    Gap(
        "final-newline",
        "Python's re (jsonschema's pattern engine) lets $ match before a final "
        "newline; pydantic's Rust regex, like ECMA-262 (ajv), does not",
        door_admits=False,
        covers=refused(
            lambda refusal, value: (
                refusal.code == "invalid_value"
                and isinstance(value, str)
                and value.endswith("\n")
            )
        ),
        examples=(
            ("notification-request", {"type": "order_shipped\n"}),
            ("preferences", {"quiet_hours": {"start": "08:00\n", "end": "09:00"}}),
            ("user-profile", {"email": "ada@example.org\n"}),
        ),
    ),
    Gap(
        "python-only-white-space",
        "\\s differs between regex engines: Python's re counts U+001C..U+001F as "
        "white space, Rust's (the door) and ECMA-262's do not. ECMA-262 also "
        "counts U+FEFF as white space and U+0085 not, unlike the door: an ECMA "
        "validator (ajv) refuses a blank-looking U+FEFF the door admits and "
        "admits a U+0085 the door refuses; this suite runs Python's engine only",
        door_admits=True,
        covers=complained(python_only_space),
        examples=(
            ("notification-request", {"tenant": "\x1c"}),
            ("notification-request", {"campaign_id": "\x1f"}),
            ("user-profile", {"email": "ada\x1d@example.org", "tags": ["\x1e"]}),
        ),
    ),
)


def explained(body: Any, fault: Fault, door_admits: bool) -> bool:
    """Whether a documented gap accounts for ``fault``."""
    return any(
        gap.door_admits == door_admits and gap.covers(body, fault) for gap in GAPS
    )


def assert_agreement(
    model: type[BaseModel], name: str, body: Any, door_body: Any = None
) -> None:
    """The schema ``name`` and the door for ``model`` give one verdict on
    ``body`` (the door reads ``door_body`` if given), bar documented gaps."""
    door_sees = body if door_body is None else door_body
    refusal = door_refusal(model, door_sees)
    complaints = list(VALIDATORS[name].iter_errors(body))
    if refusal is None:
        unexplained = [e for e in complaints if not explained(body, e, True)]
        assert not unexplained, (
            f"door admits, schema refuses: {[e.message for e in unexplained]}"
        )
    elif not complaints:
        assert explained(door_sees, refusal, False), (
            f"schema admits, door refuses: {refusal.reason}"
        )


def gap_cases(gaps: tuple[Gap, ...]) -> list[Any]:
    """One test case per example of each gap."""
    return [
        pytest.param(gap, name, change, id=f"{gap.name}-{n}")
        for gap in gaps
        for n, (name, change) in enumerate(gap.examples)
    ]


def verdicts(name: str, change: dict[str, Any]) -> tuple[Any, list[ValidationError]]:
    """The door's refusal (or None) and the schema's complaints on an example."""
    body = {**wire(EXAMPLES[name]), **change}
    return door_refusal(PUBLISHED[name], body), list(VALIDATORS[name].iter_errors(body))


@pytest.mark.parametrize(("gap", "name", "change"), gap_cases(GAPS))
def test_documented_gaps_are_real(gap: Gap, name: str, change: dict[str, Any]) -> None:
    """Each gap holds, and explains what it is listed for; if one closes, drop it."""
    body = {**wire(EXAMPLES[name]), **change}
    refusal, complaints = verdicts(name, change)
    if gap.door_admits:
        assert refusal is None and complaints
        assert all(gap.covers(body, complaint) for complaint in complaints)
    else:
        assert refusal is not None and not complaints
        assert gap.covers(body, refusal)


WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u180e\u2028\u3000\ufeff"
texts = (
    st.text(max_size=12)
    | st.text(alphabet=WHITESPACE, max_size=3)
    | st.sampled_from(["", " ", "x", "Z"])
)
optional_texts = st.none() | texts
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**65), max_value=2**65)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, 7.0, -1.5])
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
TIME_SPELLINGS: list[Callable[[datetime], str]] = [
    lambda moment: moment.isoformat(),
    lambda moment: moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
    lambda moment: moment.isoformat().replace("+00:00", "z"),
    lambda moment: moment.isoformat(sep=" "),
    lambda moment: moment.isoformat(timespec="minutes"),
    lambda moment: moment.strftime("%Y%m%dT%H%M%S%z"),
    lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%S%z"),
    lambda moment: moment.replace(tzinfo=None).isoformat(),
    lambda moment: moment.isoformat().lower(),
    lambda moment: str(int(moment.timestamp())),
]
times = st.builds(
    lambda moment, spell: spell(moment),
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=offsets,
    ),
    st.sampled_from(TIME_SPELLINGS),
)
optional_times = st.none() | times | texts

#: Values worth trying per request field, valid and nearly valid.
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "idempotency_key": texts
    | st.integers(min_value=250, max_value=260).map(lambda n: "k" * n),
    "recipient": st.fixed_dictionaries(
        {"user_id": texts | json_values}, optional={"email": json_values}
    )
    | st.dictionaries(st.text(max_size=8), json_values, max_size=2),
    "type": st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,99}", fullmatch=True)
    | texts
    | st.sampled_from(["Order Shipped", "a" * 100, "a" * 101, "order_shipped\n"]),
    "priority": st.sampled_from(PRIORITIES) | texts,
    "tenant": optional_texts,
    "channels": st.none()
    | st.lists(st.sampled_from([*CHANNELS, "fax", "Push"]), max_size=5),
    "data": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
    "schedule_at": optional_times,
    "expiry_at": optional_times,
    "campaign_id": json_scalars | st.sampled_from([1042, 1042.0, "1042", ""]),
    "digest_key": optional_texts,
    "locale": optional_texts,
}
DROP = object()  # stands for "leave the field out"


def changed(seed: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    """``seed`` with one field set to ``value``, or dropped for ``DROP``."""
    body = copy.deepcopy(seed)
    body.pop(field, None)
    return body if value is DROP else {**body, field: value}


@st.composite
def request_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """The seed body after a few mutations: drops, new values, unknown fields."""
    body = copy.deepcopy(SEED_000_BODY)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        action = draw(st.sampled_from(["drop", "set", "any", "unknown"]))
        field = draw(st.sampled_from(sorted(FIELD_VALUES)))
        if action == "drop":
            body.pop(field, None)
        elif action == "set":
            body[field] = draw(FIELD_VALUES[field])
        elif action == "any":
            body[field] = draw(json_values)
        else:
            unknown = draw(st.text(max_size=10).filter(lambda k: k not in body))
            body[unknown] = draw(json_values)
    return body


def test_every_request_field_has_generated_values() -> None:
    """A new request field needs values in FIELD_VALUES, or agreement goes untested."""
    assert set(FIELD_VALUES) == set(NotificationRequest.model_fields)


def assert_request_agreement(body: Any) -> None:
    """The request schema and the door agree on ``body``, bar documented gaps."""
    assert_agreement(NotificationRequest, "notification-request", body)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(sorted(FIELD_VALUES)).flatmap(
        lambda field: st.tuples(
            st.just(field), FIELD_VALUES[field] | json_values | st.just(DROP)
        )
    )
)
@example(("idempotency_key", "k" * 255))
@example(("idempotency_key", "k" * 256))
@example(("idempotency_key", " \t"))
@example(("recipient", {"user_id": "\u3000"}))
@example(("recipient", {"user_id": "u", "email": "a@b.c"}))
@example(("recipient", {}))
@example(("type", "a" * 100))
@example(("type", "a" * 101))
@example(("type", "order_shipped\n"))
@example(("priority", None))
@example(("tenant", None))
@example(("tenant", " "))
@example(("tenant", "\ufeff"))
@example(("tenant", "\x85"))
@example(("locale", "\x1c"))
@example(("channels", []))
@example(("channels", ["sms", "sms"]))
@example(("data", None))
@example(("data", {"n": 2**64}))
@example(("campaign_id", ""))
@example(("campaign_id", " "))
@example(("campaign_id", 1042.0))
@example(("campaign_id", 2**70))
@example(("campaign_id", True))
@example(("schedule_at", "2026-11-21T10:00Z"))
@example(("schedule_at", "2026-11-21t10:00:00z"))
@example(("schedule_at", "2026-12-31T23:59:60Z"))
@example(("schedule_at", "0000-01-01T00:00:00Z"))
@example(("schedule_at", "1795000000"))
@example(("expiry_at", "2026-11-21T10:00:00"))
def test_one_changed_field_gets_one_verdict(change: tuple[str, Any]) -> None:
    """Each field alone: the schema and the door agree, bar documented gaps."""
    assert_request_agreement(changed(SEED_000_BODY, *change))


@settings(max_examples=100, deadline=None)
@given(request_bodies())
@example(
    {
        **SEED_000_BODY,
        "schedule_at": "2026-11-21T10:00:00Z",
        "expiry_at": NOW.isoformat(),
    }
)
def test_schema_and_door_agree_on_requests(body: dict[str, Any]) -> None:
    """Whenever one refuses a request the other does too, bar documented gaps."""
    assert_request_agreement(body)


@settings(max_examples=50, deadline=None)
@given(json_values.filter(lambda value: not isinstance(value, dict)))
def test_both_refuse_bodies_that_are_not_objects(body: Any) -> None:
    """A request is a JSON object for the schema as for the door."""
    refusal = door_refusal(NotificationRequest, body)
    assert refusal is not None and refusal.code == "not_an_object"
    assert errors(VALIDATORS["notification-request"], body)


# The user-state schemas admit what the door admits, from the API (the update
# bodies) and from a producer writing the stored records to their topics.

STATE_UPDATES: dict[str, type[BaseModel]] = {
    "preferences": PreferencesUpdate,
    "user-profile": ProfileUpdate,
    "device-token": DeviceRegistration,
}
IDENTITY = {"user_id": "u_991", "tenant": "acme", "updated_at": NOW.isoformat()}
STATE_SEEDS: dict[str, dict[str, Any]] = {
    "preferences": {
        "enabled": False,
        "channels": {"sms": False},
        "types": {"weekly_digest": False},
        "marketing": False,
        "quiet_hours": {"start": "22:00", "end": "08:00"},
        "timezone": "Europe/Paris",
        "locale": "fr-FR",
    },
    "user-profile": {
        "email": "ada@example.org",
        "phone": "+33612345678",
        "locale": "fr-FR",
        "timezone": "Europe/Paris",
        "tags": ["vip"],
    },
    "device-token": {"token": "0f" * 32, "platform": "apns", "active": True},
}
flags = st.dictionaries(
    st.sampled_from([*CHANNELS, "fax", "weekly_digest", "Weekly", ""]) | texts,
    st.booleans() | json_scalars,
    max_size=3,
)
clocks = st.from_regex(r"[0-2]?[0-9]:[0-6]?[0-9]\n?", fullmatch=True) | texts
zones = st.sampled_from(["Europe/Paris", "UTC", "Mars/Olympus", "Europe", " ", ""])
locales = st.from_regex(r"[a-z]{1,4}([-_][A-Za-z0-9]{1,9}){0,2}\n?", fullmatch=True)
IDENTITY_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "user_id": texts,
    "tenant": texts,
    "updated_at": optional_times,
}
STATE_VALUES: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "preferences": {
        "enabled": st.booleans(),
        "channels": flags,
        "types": flags,
        "marketing": st.booleans(),
        "quiet_hours": st.none()
        | st.fixed_dictionaries({"start": clocks, "end": clocks})
        | st.dictionaries(st.sampled_from(["start", "end", "tz"]), clocks),
        "timezone": st.none() | zones,
        "locale": locales | optional_texts,
        **IDENTITY_VALUES,
    },
    "user-profile": {
        "email": st.from_regex(r"[a-z.@ ]{1,6}@[a-z]{1,5}\.[a-z]{2,3}", fullmatch=True)
        | optional_texts,
        "phone": st.from_regex(r"\+?[0-9]{5,16}", fullmatch=True) | optional_texts,
        "locale": locales | optional_texts,
        "timezone": st.none() | zones,
        "tags": st.lists(texts, max_size=3),
        **IDENTITY_VALUES,
    },
    "device-token": {
        "token": texts
        | st.integers(min_value=4090, max_value=4100).map(lambda n: "0" * n),
        "platform": st.sampled_from([*PLATFORMS, "wns", "APNS"]) | texts,
        "active": st.booleans(),
        **IDENTITY_VALUES,
    },
}


def test_every_state_field_has_generated_values() -> None:
    """A new user-state field needs values in STATE_VALUES, or goes untested."""
    for name, values in STATE_VALUES.items():
        assert set(values) == set(PUBLISHED[name].model_fields), name
        assert set(STATE_SEEDS[name]) | set(IDENTITY) == set(values), name


@pytest.mark.parametrize("name", sorted(STATE_SEEDS))
def test_state_seeds_are_admitted(name: str) -> None:
    """The seed bodies above are valid, so each change tests one field alone."""
    assert door_refusal(STATE_UPDATES[name], STATE_SEEDS[name]) is None
    record = {**STATE_SEEDS[name], **IDENTITY}
    assert door_refusal(PUBLISHED[name], record) is None
    assert errors(VALIDATORS[name], record) == []


def assert_state_agreement(name: str, field: str, value: Any) -> None:
    """One changed field of a user-state record: one verdict from the schema and
    the door, whether the record comes from a producer or as an API body."""
    record = changed({**STATE_SEEDS[name], **IDENTITY}, field, value)
    assert_agreement(PUBLISHED[name], name, record)
    if field in IDENTITY:
        return  # the API takes these from the path, the key and its clock
    update = {key: record[key] for key in record if key not in IDENTITY}
    assert_agreement(STATE_UPDATES[name], name, record, door_body=update)
    if door_refusal(STATE_UPDATES[name], update) is None:
        # What the API stores for the body (its views build it so).
        admitted = decode(STATE_UPDATES[name], json.dumps(update))
        stored = PUBLISHED[name](
            **dict(admitted), user_id="u_991", tenant="acme", updated_at=NOW
        )
        body = wire(stored)
        unexplained = [
            e.message
            for e in VALIDATORS[name].iter_errors(body)
            if not explained(body, e, True)
        ]
        assert not unexplained


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(sorted(STATE_VALUES)).flatmap(
        lambda name: st.sampled_from(sorted(STATE_VALUES[name])).flatmap(
            lambda field: st.tuples(
                st.just(name),
                st.just(field),
                STATE_VALUES[name][field] | json_values | st.just(DROP),
            )
        )
    )
)
@example(("preferences", "quiet_hours", {"start": "22:00", "end": "24:00"}))
@example(("preferences", "quiet_hours", {"start": "22:00", "end": "08:00\n"}))
@example(("preferences", "types", {"Weekly": True}))
@example(("preferences", "quiet_hours", {"start": "22:00", "end": "08:00", "tz": "Z"}))
@example(("preferences", "locale", "fr-ABCDEFGHI"))
@example(("preferences", "timezone", "Mars/Olympus"))
@example(("preferences", "timezone", "Europe"))
@example(("preferences", "updated_at", "2026-11-21T09:30:00"))
@example(("user-profile", "locale", "fr_FR"))
@example(("user-profile", "phone", "+1234567"))
@example(("user-profile", "phone", "+123456"))
@example(("user-profile", "tags", [""]))
@example(("user-profile", "tags", ["b", "a", "b"]))
@example(("user-profile", "email", "ada@example"))
@example(("user-profile", "email", "ada\x1c@example.org"))
@example(("device-token", "token", "0" * 4096))
@example(("device-token", "token", "0" * 4097))
@example(("device-token", "token", " "))
@example(("device-token", "user_id", " "))
def test_user_state_schemas_agree_with_the_door(change: tuple[str, str, Any]) -> None:
    """Each user-state field alone gets one verdict, bar documented gaps."""
    assert_state_agreement(*change)
