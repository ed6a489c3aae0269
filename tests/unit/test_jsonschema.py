"""The published JSON Schemas: current, complete, and in step with the validator."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import faust
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

# Imported plainly: without jsonschema (a dev dependency) this module must fail.
from jsonschema import Draft202012Validator, ValidationError

import schemas.jsonschema
from pipeline.errors import InvalidMessage
from schemas.jsonschema import PUBLISHED, SCHEMA_DIR, schema_for, write_all
from schemas.records import (
    CHANNELS,
    PLATFORMS,
    PRIORITIES,
    DeliveryJob,
    DeviceToken,
    InboxItem,
    NotificationEvent,
    NotificationRequest,
    Preferences,
    QuietHours,
    Recipient,
    Suppression,
    UserProfile,
)
from schemas.requests import validate_request
from schemas.updates import (
    DEVICE_FIELDS,
    PREFERENCE_FIELDS,
    PROFILE_FIELDS,
    validate_device,
    validate_preferences,
    validate_profile,
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
EXAMPLES: dict[str, faust.Record] = {
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


REQUEST_SCHEMA = validator_for(schema_for(NotificationRequest))


def wire(record: faust.Record) -> dict[str, Any]:
    """What a consumer reads: the record through its codec, decoded as JSON."""
    body: dict[str, Any] = orjson.loads(record.dumps())
    return body


def errors(validator: Draft202012Validator, body: Any) -> list[str]:
    """The schema's complaints about ``body``, readable in an assertion message."""
    return [
        f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)
    ]


# (a) The committed files are what the generator makes from today's records.


def test_committed_schema_files_match_the_records(tmp_path: Path) -> None:
    """A field added to a record without regenerating the files fails here."""
    written = {
        path.name: path.read_text(encoding="utf-8") for path in write_all(tmp_path)
    }
    committed = {
        path.name: path.read_text(encoding="utf-8")
        for path in SCHEMA_DIR.glob("*.json")
    }
    stale = sorted(name for name in written if committed.get(name) != written[name])
    orphans = sorted(set(committed) - set(written))
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
    assert capsys.readouterr().out.count("wrote ") == len(PUBLISHED)


# (b) Every field is a property, and nothing else is.


def records_in(record_cls: type[faust.Record]) -> dict[str, type[faust.Record]]:
    """The record and every record nested in it, by class name."""
    found = {record_cls.__name__: record_cls}
    for descriptor in record_cls._options.descriptors.values():
        for related in descriptor.related_models:
            if related.__name__ not in found:
                found.update(records_in(related))
    return found


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_every_field_is_a_property_and_nothing_else(name: str) -> None:
    """The schema's properties are the record's fields, nested records included."""
    record_cls = PUBLISHED[name]
    schema = schema_for(record_cls)
    nested = records_in(record_cls)
    assert set(schema.get("$defs", {})) == set(nested) - {record_cls.__name__}
    for record_name, nested_cls in nested.items():
        part = schema if nested_cls is record_cls else schema["$defs"][record_name]
        fields = {d.output_name for d in nested_cls._options.descriptors.values()}
        assert set(part["properties"]) == fields, record_name
        required = {
            d.output_name
            for d in nested_cls._options.descriptors.values()
            if d.required
        }
        assert set(part.get("required", [])) == required, record_name


def test_every_published_schema_has_an_example() -> None:
    """A newly published record needs an instance below, or it goes untested."""
    assert set(EXAMPLES) == set(PUBLISHED)
    for name, record in EXAMPLES.items():
        assert type(record) is PUBLISHED[name], name


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_examples_set_every_optional_field(name: str) -> None:
    """Each example exercises every property, so a new field needs a value here."""
    record = EXAMPLES[name]
    at_default = [
        field
        for field, descriptor in record._options.descriptors.items()
        if not descriptor.required and getattr(record, field) == descriptor.default
    ]
    assert not at_default, f"give EXAMPLES[{name!r}] non-default {at_default}"


# (c) Real payloads validate; wrong ones do not.


def test_the_seed_request_body_validates() -> None:
    """The product brief's API body is valid for the schema and the validator."""
    assert errors(REQUEST_SCHEMA, SEED_000_BODY) == []
    validate_request(SEED_000_BODY)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_serialized_records_validate(name: str) -> None:
    """What the app writes for each record is valid, keys exactly the properties."""
    schema = schema_for(PUBLISHED[name])
    body = wire(EXAMPLES[name])
    assert set(body) == set(schema["properties"])
    assert errors(validator_for(schema), body) == []


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_records_with_only_required_fields_validate(name: str) -> None:
    """Defaults (null, empty, "default") are valid values on the wire too."""
    full = EXAMPLES[name]
    required = {
        field: getattr(full, field)
        for field, descriptor in full._options.descriptors.items()
        if descriptor.required
    }
    minimal = PUBLISHED[name](**required)
    assert errors(validator_for(schema_for(PUBLISHED[name])), wire(minimal)) == []


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_faust_metadata_and_unknown_fields_are_refused(name: str) -> None:
    """A payload with Faust's ``__faust`` key or a misspelt field is invalid."""
    validator = validator_for(schema_for(PUBLISHED[name]))
    body = wire(EXAMPLES[name])
    assert errors(validator, {**body, "__faust": {"ns": "schemas.records.X"}})
    assert errors(validator, {**body, "user-id": "u_991"})


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("device-token", {"platform": "wns"}),
        ("notification-event", {"event_type": "exploded"}),
        ("notification-event", {"ts": "2026-11-21T09:30:00"}),  # no offset
        ("notification-event", {"attempt": "2"}),
        ("delivery-job", {"channel": "fax"}),
        ("delivery-job", {"priority": "urgent"}),
        ("delivery-job", {"type": "Order Shipped"}),
        ("delivery-job", {"devices": [{"user_id": "u", "token": "t"}]}),
        ("preferences", {"channels": {"fax": False}}),
        ("preferences", {"quiet_hours": {"start": "22:00"}}),
        ("user-profile", {"tags": "vip"}),
    ],
)
def test_wrong_values_are_refused(name: str, change: dict[str, Any]) -> None:
    """The schemas carry the enums and patterns the app relies on."""
    validator = validator_for(schema_for(PUBLISHED[name]))
    faults = validator.iter_errors({**wire(EXAMPLES[name]), **change})
    assert {fault.absolute_path[0] for fault in faults} == set(change)


# (d) The request schema accepts what validate_request accepts, and only that.

TIME_FIELDS = ("schedule_at", "expiry_at")


def validator_refusal(body: Any) -> InvalidMessage | None:
    """None if the hand-written validator accepts ``body``, else its refusal."""
    try:
        validate_request(copy.deepcopy(body))
    except InvalidMessage as refusal:
        return refusal
    return None


def python_time(value: str) -> bool:
    """Whether the validator's own parsing accepts ``value`` as an aware time."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return moment.tzinfo is not None


def schema_only_fault(error: ValidationError) -> bool:
    """Known gap: the schema's RFC 3339 is stricter than Python's ISO 8601."""
    # The schema asks for RFC 3339 date-times (seconds, a "T", a colon in the
    # offset); the validator takes whatever datetime.fromisoformat takes, such
    # as "2026-11-21T10:00Z" or "2026-11-21 10:00:00+01:00".
    return error.validator == "format" and list(error.absolute_path) in (
        [field] for field in TIME_FIELDS
    )


def validator_only_fault(body: dict[str, Any], refusal: InvalidMessage) -> bool:
    """Known gaps where the validator refuses what no JSON Schema keyword can."""
    value = body.get(refusal.field or "")
    if refusal.field == "expiry_at" and "later than schedule_at" in refusal.reason:
        return True  # a comparison between two fields
    if refusal.field == "campaign_id":
        # JSON Schema counts 1042.0 as an integer; the validator wants an int.
        return isinstance(value, float) and value.is_integer()
    if refusal.field == "data" and refusal.code == "invalid_value":
        return True  # orjson cannot encode an integer beyond 64 bits
    if isinstance(value, str) and value.endswith("\n") and refusal.field == "type":
        # Python's "$" matches before a final newline, so jsonschema (re.search)
        # accepts "order_shipped\n"; the validator uses fullmatch and refuses,
        # as an ECMA-262 engine (ajv) checking the same pattern does.
        return True
    if refusal.field in TIME_FIELDS and isinstance(value, str):
        # RFC 3339 allows a lower-case "z" (jsonschema upper-cases before it
        # checks); the validator only replaces "Z".
        return "z" in value and python_time(value.upper())
    return False


def assert_agreement(body: Any) -> None:
    """The schema and the validator give one verdict, bar the documented gaps."""
    refusal = validator_refusal(body)
    complaints = list(REQUEST_SCHEMA.iter_errors(body))
    if refusal is None:
        unexplained = [e.message for e in complaints if not schema_only_fault(e)]
        assert not unexplained, f"validator accepts, schema refuses: {unexplained}"
    elif not complaints:
        assert isinstance(body, dict) and validator_only_fault(body, refusal), (
            f"schema accepts, validator refuses: {refusal.reason}"
        )


WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u2028\u3000\ufeff"
texts = (
    st.text(max_size=12)
    | st.text(alphabet=WHITESPACE, max_size=3)
    | st.sampled_from(["", " ", "x", "Z"])
)
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
    lambda moment: moment.replace(tzinfo=None).isoformat(),
    lambda moment: moment.isoformat().lower(),
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
optional_texts = st.none() | texts

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
    "schedule_at": st.none() | times | texts,
    "expiry_at": st.none() | times | texts,
    "campaign_id": json_scalars | st.sampled_from([1042, 1042.0, "1042", ""]),
    "digest_key": optional_texts,
    "locale": optional_texts,
}


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
    assert set(FIELD_VALUES) == set(NotificationRequest._options.fields)


DROP = object()  # stands for "leave the field out"


def changed(field: str, value: Any) -> dict[str, Any]:
    """The seed body with one field set to ``value``, or dropped for ``DROP``."""
    body = copy.deepcopy(SEED_000_BODY)
    body.pop(field, None)
    return body if value is DROP else {**body, field: value}


@settings(max_examples=300)
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
# Python's "$" matches before a final newline: jsonschema accepts this, the
# validator (fullmatch) and an ECMA-262 engine (ajv) refuse it.
@example(("type", "order_shipped\n"))
@example(("priority", None))
@example(("tenant", None))
@example(("tenant", " "))
@example(("locale", "\x1c"))
@example(("channels", []))
@example(("channels", ["sms", "sms"]))
@example(("data", None))
@example(("data", {"n": 2**64}))
@example(("campaign_id", ""))
@example(("campaign_id", " "))
@example(("campaign_id", 1042.0))
@example(("campaign_id", True))
@example(("schedule_at", "2026-11-21T10:00Z"))
@example(("schedule_at", "2026-11-21t10:00:00z"))
@example(("expiry_at", "2026-11-21T10:00:00"))
def test_one_changed_field_gets_one_verdict(change: tuple[str, Any]) -> None:
    """Each field alone: the schema and the validator agree, bar documented gaps."""
    assert_agreement(changed(*change))


@settings(max_examples=200)
@given(request_bodies())
@example(
    {
        **SEED_000_BODY,
        "schedule_at": "2026-11-21T10:00:00Z",
        "expiry_at": NOW.isoformat(),
    }
)
def test_schema_and_validator_agree_on_requests(body: dict[str, Any]) -> None:
    """Whenever one refuses a request the other does too, bar documented gaps."""
    assert_agreement(body)


@given(json_values.filter(lambda value: not isinstance(value, dict)))
def test_both_refuse_bodies_that_are_not_objects(body: Any) -> None:
    """A request is a JSON object for the schema as for the validator."""
    assert validator_refusal(body) is not None
    assert errors(REQUEST_SCHEMA, body)


@pytest.mark.parametrize(
    ("change", "validator_ok", "schema_ok"),
    [
        pytest.param(
            {
                "schedule_at": "2026-11-21T10:00:00Z",
                "expiry_at": "2026-11-21T11:00:00+01:00",
            },
            False,
            True,
            id="expiry-not-after-schedule",
        ),
        pytest.param({"campaign_id": 1042.0}, False, True, id="integral-float"),
        pytest.param({"type": "order_shipped\n"}, False, True, id="trailing-newline"),
        pytest.param({"data": {"n": 2**64}}, False, True, id="int-beyond-64-bits"),
        pytest.param(
            {"schedule_at": "2026-11-21T10:00:00z"}, False, True, id="lower-case-z"
        ),
        pytest.param(
            {"schedule_at": "2026-11-21T10:00Z"}, True, False, id="no-seconds"
        ),
        pytest.param(
            {"schedule_at": "2026-11-21 10:00:00+01:00"}, True, False, id="space"
        ),
        pytest.param(
            {"schedule_at": "2026-11-21T10:00:00+0100"}, True, False, id="basic-offset"
        ),
    ],
)
def test_documented_gaps_are_real(
    change: dict[str, Any], validator_ok: bool, schema_ok: bool
) -> None:
    """Each known disagreement holds; if one closes, drop it from the exclusions."""
    body = {**SEED_000_BODY, **change}
    assert (validator_refusal(body) is None, not errors(REQUEST_SCHEMA, body)) == (
        validator_ok,
        schema_ok,
    )


# The user-state schemas admit what schemas.updates admits from the API.

STATE_VALIDATORS: dict[str, Callable[..., faust.Record]] = {
    "preferences": validate_preferences,
    "user-profile": validate_profile,
    "device-token": validate_device,
}
STATE_SCHEMAS = {
    name: validator_for(schema_for(PUBLISHED[name])) for name in STATE_VALIDATORS
}
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
clocks = st.from_regex(r"[0-2]?[0-9]:[0-6]?[0-9]", fullmatch=True) | texts
zones = st.sampled_from(["Europe/Paris", "UTC", "Mars/Olympus", " ", ""]) | st.none()
locales = st.from_regex(r"[a-z]{1,4}([-_][A-Za-z0-9]{1,9}){0,2}", fullmatch=True)
STATE_VALUES: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "preferences": {
        "enabled": st.booleans(),
        "channels": flags,
        "types": flags,
        "marketing": st.booleans(),
        "quiet_hours": st.none()
        | st.fixed_dictionaries({"start": clocks, "end": clocks})
        | st.dictionaries(st.sampled_from(["start", "end", "tz"]), clocks),
        "timezone": zones,
        "locale": locales | optional_texts,
    },
    "user-profile": {
        "email": st.from_regex(r"[a-z.@ ]{1,6}@[a-z]{1,5}\.[a-z]{2,3}", fullmatch=True)
        | optional_texts,
        "phone": st.from_regex(r"\+?[0-9]{5,16}", fullmatch=True) | optional_texts,
        "locale": locales | optional_texts,
        "timezone": zones,
        "tags": st.lists(texts, max_size=3),
    },
    "device-token": {
        "token": texts
        | st.integers(min_value=4090, max_value=4100).map(lambda n: "0" * n),
        "platform": st.sampled_from([*PLATFORMS, "wns", "APNS"]) | texts,
        "active": st.booleans(),
    },
}


def state_only_fault(refusal: InvalidMessage) -> bool:
    """Known gap: the validator asks the machine's IANA database about time zones."""
    return refusal.field == "timezone" and refusal.code == "invalid_value"


def assert_state_agreement(name: str, body: dict[str, Any]) -> None:
    """A body the API admits makes a valid record; one it refuses, an invalid one."""
    schema = STATE_SCHEMAS[name]
    # What a producer writing the record itself would send for the same body.
    as_record = {**body, "user_id": "u_991", "tenant": "acme"}
    as_record["updated_at"] = NOW.isoformat()
    try:
        record = STATE_VALIDATORS[name](
            copy.deepcopy(body), tenant="acme", user_id="u_991", now=NOW
        )
    except InvalidMessage as refusal:
        assert errors(schema, as_record) or state_only_fault(refusal), (
            f"schema accepts, validator refuses: {refusal.reason}"
        )
        return
    assert errors(schema, wire(record)) == []
    assert errors(schema, as_record) == []


def test_every_state_field_has_generated_values() -> None:
    """A new user-state field needs values in STATE_VALUES, or goes untested."""
    assert {name: set(values) for name, values in STATE_VALUES.items()} == {
        "preferences": set(PREFERENCE_FIELDS),
        "user-profile": set(PROFILE_FIELDS),
        "device-token": set(DEVICE_FIELDS),
    }


@settings(max_examples=300)
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
@example(("preferences", "types", {"Weekly": True}))
@example(("preferences", "quiet_hours", {"start": "22:00", "end": "08:00", "tz": "Z"}))
@example(("preferences", "locale", "fr-ABCDEFGHI"))
@example(("user-profile", "locale", "fr_FR"))
@example(("preferences", "timezone", "Mars/Olympus"))
@example(("user-profile", "phone", "+1234567"))
@example(("user-profile", "phone", "+123456"))
@example(("user-profile", "tags", [""]))
@example(("user-profile", "email", "ada@example"))
@example(("device-token", "token", "0" * 4096))
@example(("device-token", "token", "0" * 4097))
@example(("device-token", "token", " "))
def test_user_state_schemas_agree_with_the_api(change: tuple[str, str, Any]) -> None:
    """Each user-state field alone gets one verdict, bar the time zone database."""
    name, field, value = change
    body = copy.deepcopy(STATE_SEEDS[name])
    body.pop(field)
    if value is not DROP:
        body[field] = value
    assert_state_agreement(name, body)


@pytest.mark.parametrize("name", sorted(STATE_SEEDS))
def test_state_seeds_are_admitted(name: str) -> None:
    """The seed bodies above are valid, so each change tests one field alone."""
    STATE_VALIDATORS[name](STATE_SEEDS[name], tenant="acme", user_id="u", now=NOW)
