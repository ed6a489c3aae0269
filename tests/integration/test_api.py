"""The HTTP API on a real worker: accept, dedup, preferences, status, auth."""

from __future__ import annotations

import sys
import time
import urllib.error
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from pipeline.broker import free_port
from pipeline.ids import notification_id
from tests.conftest import WorkerFactory
from tests.support import (
    ADMIN_KEY,
    BrokerUnderTest,
    Reply,
    Topics,
    WorkerProcess,
    call,
    produce,
    read_until,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def broker_with_topics(broker: BrokerUnderTest, topics: Topics) -> BrokerUnderTest:
    """The session broker with every topic of this test created."""
    topics.create(broker.url)
    return broker


@pytest.fixture
def worker(
    broker_with_topics: BrokerUnderTest, start_worker: WorkerFactory
) -> Iterator[WorkerProcess]:
    """One ready worker running both lanes."""
    started = start_worker()
    started.wait_ready(timeout=90)
    yield started


def api(
    worker: WorkerProcess, method: str, path: str, body: Any = None, **kw: Any
) -> Reply:
    """Call this worker's API."""
    return call(worker.web_port, method, path, body, **kw)


def status_of(worker: WorkerProcess, nid: str, settled: Any) -> dict[str, Any]:
    """Poll GET /v1/notifications/{nid} until ``settled(body)`` holds."""

    def ready() -> dict[str, Any] | None:
        reply = api(worker, "GET", f"/v1/notifications/{nid}")
        return reply.body if reply.status == 200 and settled(reply.body) else None

    return wait_for(ready, timeout=30, interval=0.2)  # type: ignore[no-any-return]


def set_user(
    worker: WorkerProcess,
    user: str,
    profile: dict[str, Any],
    prefs: dict[str, Any] | None = None,
) -> None:
    """PUT a profile (and preferences) and wait until the worker reads them back."""
    assert api(worker, "PUT", f"/v1/users/{user}", profile).status == 202
    if prefs is not None:
        assert api(worker, "PUT", f"/v1/users/{user}/preferences", prefs).status == 202
    wait_for(lambda: api(worker, "GET", f"/v1/users/{user}").status == 200, timeout=30)
    if prefs is not None:
        wait_for(
            lambda: api(worker, "GET", f"/v1/users/{user}/preferences").body.get(
                "updated_at"
            ),
            timeout=30,
        )


def notify(user: str, key: str, **fields: Any) -> dict[str, Any]:
    """A request body for ``user``."""
    return {
        "idempotency_key": key,
        "recipient": {"user_id": user},
        "type": "order_shipped",
        "priority": "transactional",
        "data": {"order_id": 4412},
        **fields,
    }


def test_accept_deduplicate_and_suppress_an_opted_out_channel(
    worker: WorkerProcess, broker_with_topics: BrokerUnderTest, topics: Topics
) -> None:
    """202 with the id; the same key again enqueues nothing; a 409 on a new body;
    an opted-out channel is suppressed with its reason visible in GET status."""
    user, key = unique("u"), unique("order")
    set_user(
        worker,
        user,
        {"email": "u@example.com", "phone": "+14155550123"},
        {"channels": {"sms": False}},
    )
    body = notify(user, key, channels=["email", "sms"])
    first = api(worker, "POST", "/v1/notifications", body)
    assert first.status == 202
    nid = first.body["notification_id"]
    assert nid == notification_id("default", key, user, "critical")

    status = status_of(worker, nid, lambda s: len(s["channels"]) == 2)
    # Email was queued for the send stage (which may already have moved it on).
    assert status["channels"]["sms"] == "suppressed"
    assert ("queued", "email") in [
        (e["event_type"], e["channel"]) for e in status["trail"]
    ]
    sms = [e for e in status["trail"] if e["channel"] == "sms"]
    assert [(e["event_type"], e["reason"]) for e in sms] == [
        ("suppressed", "channel_opt_out:sms")
    ]

    again = api(worker, "POST", "/v1/notifications", body)
    assert (again.status, again.body["notification_id"]) == (202, nid)
    assert again.body["status"] == "duplicate"
    assert again.headers.get("Idempotent-Replayed") == "true"
    conflict = api(
        worker, "POST", "/v1/notifications", {**body, "data": {"order_id": 1}}
    )
    assert conflict.status == 409
    assert conflict.body["error"]["code"] == "idempotency_conflict"
    assert conflict.body["error"]["field"] == "idempotency_key"

    # The same JSON produced straight onto the ingest topic (as kcat would, with
    # librdkafka's own partitioner) is a duplicate too, not a second send.
    produce(
        broker_with_topics.bootstrap,
        topics("notify.requests.critical"),
        [(user.encode(), orjson.dumps(body))],
    )
    final = status_of(
        worker,
        nid,
        lambda s: any(e["event_type"] == "deduplicated" for e in s["trail"]),
    )
    assert [e["event_type"] for e in final["trail"]].count("queued") == 1


def quiet_now() -> dict[str, str]:
    """Quiet hours (UTC) from an hour ago to an hour from now."""
    now = datetime.now(UTC)
    return {
        "start": (now - timedelta(hours=1)).strftime("%H:%M"),
        "end": (now + timedelta(hours=1)).strftime("%H:%M"),
    }


def test_quiet_hours_defer_promotional_but_not_critical(worker: WorkerProcess) -> None:
    """In the user's quiet hours a promotion is deferred (until when is visible);
    a critical notification goes straight through."""
    user = unique("u")
    set_user(
        worker,
        user,
        {"email": "q@example.com", "timezone": "UTC"},
        {"quiet_hours": quiet_now(), "timezone": "UTC"},
    )
    promo = api(
        worker,
        "POST",
        "/v1/notifications",
        notify(
            user,
            unique("promo"),
            type="campaign",
            priority="promotional",
            channels=["email"],
            campaign_id=1042,
            data={"headline": "Winter sale", "message": "Everything half off."},
        ),
    )
    critical = api(
        worker,
        "POST",
        "/v1/notifications",
        notify(
            user,
            unique("otp"),
            type="password_reset",
            priority="critical",
            channels=["email"],
            data={"reset_url": "https://app.example.com/reset/482913"},
        ),
    )
    assert promo.status == critical.status == 202

    deferred = status_of(
        worker, promo.body["notification_id"], lambda s: "email" in s["channels"]
    )
    assert deferred["channels"] == {"email": "deferred"}
    entry = next(e for e in deferred["trail"] if e["event_type"] == "deferred")
    assert entry["reason"] == "quiet_hours"
    assert datetime.fromisoformat(entry["until"]) > datetime.now(UTC)
    assert deferred["lane"] == "bulk"

    sent = status_of(
        worker,
        critical.body["notification_id"],
        lambda s: any(e["event_type"] == "queued" for e in s["trail"]),
    )
    # Queued for sending at once (the send stage may already have moved on).
    assert "deferred" not in [e["event_type"] for e in sent["trail"]]
    assert sent["lane"] == "critical"


def test_bad_requests_get_json_errors_naming_the_field(worker: WorkerProcess) -> None:
    """400 for bad JSON, 422 naming the field, 401 without a valid key."""
    missing = api(
        worker,
        "POST",
        "/v1/notifications",
        {"idempotency_key": "k", "type": "x", "recipient": {}},
    )
    assert missing.status == 422
    assert missing.body["error"] == {
        "code": "required",
        "message": "recipient.user_id: required",
        "field": "recipient.user_id",
    }
    prefs = api(
        worker,
        "PUT",
        "/v1/users/u/preferences",
        {"quiet_hours": {"start": "25:00", "end": "07:00"}},
    )
    assert (prefs.status, prefs.body["error"]["field"]) == (422, "quiet_hours.start")
    assert api(worker, "GET", "/v1/users/u", key=None).status == 401
    assert api(worker, "GET", "/v1/users/u", key="nk_nope_nope").status == 401
    assert api(worker, "GET", "/openapi.json", key=None).status == 200
    assert api(worker, "GET", "/health", key=None).status == 200


def test_tenant_keys_see_only_their_tenant(worker: WorkerProcess) -> None:
    """An admin creates a tenant key; it works for its tenant, is 403 elsewhere,
    and is 401 once revoked. Keys are never listed with their secrets."""
    created = api(worker, "POST", "/v1/admin/keys", {"tenant": "acme"}, key=ADMIN_KEY)
    assert created.status == 201
    acme = created.body["api_key"]
    # The key reaches every worker through the keys topic, within moments.
    wait_for(
        lambda: (
            api(worker, "POST", "/v1/admin/keys", {"tenant": "x"}, key=acme).status
            == 403
        ),
        timeout=30,
    )

    user = unique("u")
    reply = wait_for(
        lambda: (
            (
                r := api(
                    worker, "PUT", f"/v1/users/{user}", {"email": "a@acme.io"}, key=acme
                )
            ).status
            == 202
            and r
        ),
        timeout=30,
    )
    assert reply.body["profile"]["tenant"] == "acme"
    other = api(worker, "GET", f"/v1/users/{user}?tenant=default", key=acme)
    assert other.status == 403
    listed = api(worker, "GET", "/v1/admin/keys?tenant=acme", key=ADMIN_KEY)
    assert [k["key_id"] for k in listed.body["keys"]] == [created.body["key_id"]]
    assert "secret_sha256" not in listed.body["keys"][0]
    assert acme not in str(listed.body)

    default_nid = api(
        worker, "POST", "/v1/notifications", notify(unique("u"), unique("k"))
    ).body["notification_id"]
    wait_for(
        lambda: api(worker, "GET", f"/v1/notifications/{default_nid}").status == 200,
        timeout=30,
    )
    assert (
        api(worker, "GET", f"/v1/notifications/{default_nid}", key=acme).status == 403
    )

    revoked = api(
        worker, "DELETE", f"/v1/admin/keys/{created.body['key_id']}", key=ADMIN_KEY
    )
    assert revoked.status == 200
    wait_for(
        lambda: api(worker, "GET", f"/v1/users/{user}", key=acme).status == 401,
        timeout=30,
    )


def test_status_is_answered_by_whichever_worker_is_asked(
    broker_with_topics: BrokerUnderTest, start_worker: WorkerFactory
) -> None:
    """Two workers share the partitions; GET status works on both for every id."""
    app_id = unique("pair")
    first = start_worker(app_id=app_id, name="first")
    second = start_worker(app_id=app_id, name="second")
    first.wait_ready(timeout=90)
    second.wait_ready(timeout=90)

    def owners_split() -> bool:
        return all(
            (w.get("/health") or {}).get("assigned", 0) > 0 for w in (first, second)
        )

    wait_for(owners_split, timeout=60)
    ids = []
    for n in range(8):
        reply = call(
            first.web_port if n % 2 else second.web_port,
            "POST",
            "/v1/notifications",
            notify(unique("u"), unique("k")),
        )
        assert reply.status == 202, reply.body
        ids.append(reply.body["notification_id"])
    for nid in ids:
        for worker in (first, second):
            body = wait_for(
                lambda w=worker, n=nid: (
                    (r := call(w.web_port, "GET", f"/v1/notifications/{n}")).status
                    == 200
                    and r.body
                ),
                timeout=30,
            )
            assert body["notification_id"] == nid


def test_keys_and_limits_written_on_one_worker_hold_on_every_worker(
    broker_with_topics: BrokerUnderTest, start_worker: WorkerFactory
) -> None:
    """A key created, or a tenant's limits set, through either of two workers
    sharing the partitions is honoured by both within moments: the global
    tables apply another worker's writes as they come (Faust held them in a
    1,000-event buffer, so each worker saw only its own partitions' keys)."""
    app_id = unique("global")
    pair = [start_worker(app_id=app_id, name=name) for name in ("first", "second")]
    for worker in pair:
        worker.wait_ready(timeout=90)
    wait_for(
        lambda: all((w.get("/health") or {}).get("assigned", 0) > 0 for w in pair),
        timeout=60,
    )
    for n in range(4):
        tenant = unique("t")
        created = api(
            pair[n % 2], "POST", "/v1/admin/keys", {"tenant": tenant}, key=ADMIN_KEY
        )
        assert created.status == 201, created.body
        key = created.body["api_key"]
        for worker in pair:
            # 404: the key is known (a 401 otherwise), the user is not.
            wait_for(
                lambda w=worker, k=key: (
                    api(w, "GET", "/v1/users/nobody", key=k).status == 404
                ),
                timeout=10,
                interval=0.2,
            )
        path = f"/v1/tenants/{tenant}/limits"
        put = api(pair[n % 2], "PUT", path, {"caps": []}, key=ADMIN_KEY)
        assert put.status == 202, put.body
        wait_for(
            lambda w=pair[(n + 1) % 2], p=path: (
                api(w, "GET", p, key=ADMIN_KEY).body.get("caps") == []
            ),
            timeout=10,
            interval=0.2,
        )


def lane_workers(start_worker: WorkerFactory, app_id: str) -> dict[str, WorkerProcess]:
    """One worker per lane of one app (two consumer groups), each knowing
    where the other lane answers (NOTIFY_LANE_URLS); not yet ready."""
    ports = {"critical": free_port(), "bulk": free_port()}
    urls = ",".join(f"{lane}=http://127.0.0.1:{port}" for lane, port in ports.items())
    return {
        lane: start_worker(
            app_id=app_id,
            name=lane,
            web_port=ports[lane],
            notify_lanes=lane,
            notify_lane_urls=urls,
            # Unknown users' channels are suppressed at once, not held: the
            # tests want each notification in its final state quickly.
            notify_unknown_user_wait="0",
        )
        for lane in ports
    }


def test_status_of_another_lanes_notification_is_asked_of_that_lanes_workers(
    broker_with_topics: BrokerUnderTest, start_worker: WorkerFactory
) -> None:
    """One worker per lane (two groups): each keeps its own lane's status, and a
    GET for the other lane's notification is forwarded to NOTIFY_LANE_URLS."""
    workers = lane_workers(start_worker, unique("lanes"))
    # A critical-only worker that does not know where the bulk lane answers.
    alone = start_worker(app_id=unique("alone"), name="alone", notify_lanes="critical")
    for worker in (*workers.values(), alone):
        worker.wait_ready(timeout=90)
    ids = {}
    for lane, priority in (("critical", "transactional"), ("bulk", "promotional")):
        # Posted to the other lane's worker: any worker accepts any request.
        other = workers["bulk" if lane == "critical" else "critical"]
        body = notify(unique("u"), unique("k"), priority=priority, channels=["sms"])
        reply = api(other, "POST", "/v1/notifications", body)
        assert reply.status == 202, reply.body
        ids[lane] = reply.body["notification_id"]
    for lane, nid in ids.items():
        for worker in workers.values():
            body = status_of(worker, nid, lambda s: s["channels"])
            assert (body["notification_id"], body["lane"]) == (nid, lane)
            assert body["channels"] == {"sms": "suppressed"}  # no phone number
    refused = api(alone, "GET", f"/v1/notifications/{ids['bulk']}")
    assert refused.status == 503
    assert refused.body["error"]["code"] == "lane_not_served"
    assert "NOTIFY_LANE_URLS" in refused.body["error"]["message"]
    malformed = api(alone, "GET", "/v1/notifications/n_nonsense")
    assert (malformed.status, malformed.body["error"]["field"]) == (
        422,
        "notification_id",
    )


def test_requests_while_the_worker_starts_get_503_never_a_500(
    broker_with_topics: BrokerUnderTest, start_worker: WorkerFactory
) -> None:
    """From the moment the web server answers until the worker is ready, a POST
    gets 503 with Retry-After and the JSON error, then 202: never a 500 (the
    router used to fail with a TypeError on topics it had no metadata for)."""
    worker = start_worker()
    body = notify(unique("u"), unique("early"))
    replies: list[Reply] = []
    deadline = time.monotonic() + 120
    while not replies or replies[-1].status != 202:
        worker.assert_alive()
        assert time.monotonic() < deadline, Counter(r.status for r in replies)
        try:
            replies.append(api(worker, "POST", "/v1/notifications", body))
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.02)  # the web server is not listening yet: ask again
    statuses = Counter(reply.status for reply in replies)
    assert set(statuses) <= {202, 503}, statuses
    for reply in replies[:-1]:
        assert reply.body["error"]["code"] == "not_ready"
        assert int(reply.headers["Retry-After"]) > 0
    sys.stdout.write(f"\nwhile starting: {dict(statuses)}\n")


def test_a_reused_key_is_answered_at_once(worker: WorkerProcess) -> None:
    """Right after a 202, before fanout has written its idempotency entry, the
    same key and body is a duplicate with the same id and another body a 409."""
    user, key = unique("u"), unique("retry")
    body = notify(user, key)
    first = api(worker, "POST", "/v1/notifications", body)
    again = api(worker, "POST", "/v1/notifications", body)
    conflict = api(
        worker, "POST", "/v1/notifications", {**body, "data": {"order_id": 1}}
    )
    assert first.status == 202 and first.body["status"] == "accepted"
    assert (again.status, again.body["status"]) == (202, "duplicate")
    assert again.body["notification_id"] == first.body["notification_id"]
    assert conflict.status == 409
    assert conflict.body["error"]["code"] == "idempotency_conflict"


def test_a_key_reused_on_the_other_lane_is_a_conflict(worker: WorkerProcess) -> None:
    """Keys are per tenant across both lanes: the same key with another priority
    (so another lane) is 409 at once, and again once fanout has recorded it."""
    user, key = unique("u"), unique("lane")
    body = notify(user, key)
    first = api(worker, "POST", "/v1/notifications", body)
    promoted = {**body, "priority": "promotional"}
    at_once = api(worker, "POST", "/v1/notifications", promoted)
    assert first.status == 202
    assert (at_once.status, at_once.body["error"]["code"]) == (
        409,
        "idempotency_conflict",
    )
    status_of(worker, first.body["notification_id"], lambda s: s["channels"])
    later = api(worker, "POST", "/v1/notifications", promoted)
    assert later.status == 409


def test_a_key_reused_across_lanes_run_apart_is_a_conflict(
    broker_with_topics: BrokerUnderTest, start_worker: WorkerFactory
) -> None:
    """One worker per lane (two groups, two idempotency tables): a key the
    critical lane accepted is known to the bulk lane's worker once it has read
    the critical lane's changelog, so the key reused as promotional is 409."""
    app_id = unique("split")
    workers = lane_workers(start_worker, app_id)
    for worker in workers.values():
        worker.wait_ready(timeout=90)
    body = notify(unique("u"), unique("k"), channels=["sms"])
    first = api(workers["critical"], "POST", "/v1/notifications", body)
    assert (first.status, first.body["status"]) == (202, "accepted")
    nid = first.body["notification_id"]

    # The bulk lane's own changelog gets the entry once its peer agent has
    # copied it into the bulk lane's table.
    read_until(
        broker_with_topics.bootstrap,
        [f"{app_id}-bulk-idempotency-changelog"],
        lambda kept: bool(kept),
        keep=lambda message: nid.encode() in (message.value() or b""),
    )
    promoted = api(
        workers["bulk"],
        "POST",
        "/v1/notifications",
        {**body, "priority": "promotional"},
    )
    assert (promoted.status, promoted.body["error"]["code"]) == (
        409,
        "idempotency_conflict",
    )


def test_a_read_right_after_a_write_finds_it(worker: WorkerProcess) -> None:
    """The worker that accepted a write answers a read of it at once, before
    its table has applied it: a notification is `accepted`, a profile is the
    one just put, a key just created can be revoked, and only once."""
    user = unique("u")
    posted = api(worker, "POST", "/v1/notifications", notify(user, unique("k")))
    assert posted.status == 202
    nid = posted.body["notification_id"]
    seen = api(worker, "GET", f"/v1/notifications/{nid}")
    assert (seen.status, seen.body["notification_id"]) == (200, nid)
    # Whatever the chain decided by then: the user has no profile yet, so a
    # look already taken holds it (deferred, unknown_user).
    assert seen.body["status"] in (
        "accepted",
        "deferred",
        "queued",
        "sent",
        "suppressed",
    )
    put = api(worker, "PUT", f"/v1/users/{user}", {"email": "fresh@example.org"})
    assert put.status == 202
    profile = api(worker, "GET", f"/v1/users/{user}")
    assert (profile.status, profile.body["email"]) == (200, "fresh@example.org")
    created = call(
        worker.web_port, "POST", "/v1/admin/keys", {"tenant": "acme"}, key=ADMIN_KEY
    )
    assert created.status == 201
    path = f"/v1/admin/keys/{created.body['key_id']}"
    revoked = call(worker.web_port, "DELETE", path, key=ADMIN_KEY)
    assert (revoked.status, revoked.body["revoked"]) == (200, True)


def two_promotions(worker: WorkerProcess) -> list[str]:
    """POST two promotional in-app notifications to a new user; their ids."""
    user = unique("u")
    ids = []
    for n in range(2):
        reply = api(
            worker,
            "POST",
            "/v1/notifications",
            notify(
                user,
                unique(f"promo{n}"),
                type="comment_reply",
                priority="promotional",
                channels=["in_app"],
                data={"author": "Bob"},
            ),
        )
        assert reply.status == 202, reply.body
        ids.append(reply.body["notification_id"])
    return ids


def test_a_throttled_notification_shows_its_cap(worker: WorkerProcess) -> None:
    """Seed 003's one promotional notification a minute: the second one within
    the minute is throttled, and its status names the cap."""
    ids = two_promotions(worker)
    first = status_of(worker, ids[0], lambda s: s["channels"].get("in_app") == "sent")
    assert first["channels"] == {"in_app": "sent"}
    second = status_of(worker, ids[1], lambda s: s["channels"])
    assert second["channels"] == {"in_app": "throttled"}
    (entry,) = [e for e in second["trail"] if e["event_type"] == "throttled"]
    assert entry["reason"] == "cap promotional/minute 1"


def test_a_tenant_sets_its_own_limits(worker: WorkerProcess) -> None:
    """PUT /v1/tenants/{tenant}/limits: read back at once, applied by fanout
    (no caps: two promotional in a minute both go), and a tenant key may not
    touch another tenant's."""
    path = "/v1/tenants/default/limits"
    assert api(worker, "GET", path).body == {
        "tenant": "default",
        "caps": None,
        "over_cap": None,
        "rate": None,
        "updated_at": None,
    }
    put = api(worker, "PUT", path, {"caps": []})
    assert (put.status, put.body["limits"]["caps"]) == (202, [])
    assert api(worker, "GET", path).body["caps"] == []
    bad = api(worker, "PUT", path, {"caps": ["sms/fortnight 2"]})
    assert (bad.status, bad.body["error"]["field"]) == (422, "caps.0")
    assert api(worker, "PUT", "/v1/tenants/acme/limits", {"caps": []}).status == 403

    def applied() -> bool:
        statuses = [
            status_of(worker, nid, lambda s: s["channels"])
            for nid in two_promotions(worker)
        ]
        return all(s["channels"] == {"in_app": "sent"} for s in statuses)

    # The worker applies the PUT when it reads it back: moments.
    wait_for(applied, timeout=30, interval=0.5)


def test_a_users_notifications_are_listed_newest_first_by_page(
    worker: WorkerProcess,
) -> None:
    """GET /v1/users/{id}/notifications: the user's own, newest first, with
    their status, a page at a time through next_cursor."""
    user = unique("u")
    posted = []
    for n in range(3):
        reply = api(worker, "POST", "/v1/notifications", notify(user, unique(f"k{n}")))
        posted.append(reply.body["notification_id"])
        status_of(worker, posted[-1], lambda s: s["channels"])
        time.sleep(0.01)  # distinct acceptance milliseconds keep the order plain
    api(worker, "POST", "/v1/notifications", notify(unique("other"), unique("k")))
    path = f"/v1/users/{user}/notifications"
    first = api(worker, "GET", f"{path}?limit=2")
    assert first.status == 200, first.body
    assert [i["notification_id"] for i in first.body["items"]] == posted[:0:-1]
    assert all(i["status"] != "accepted" for i in first.body["items"])
    cursor = first.body["next_cursor"]
    second = api(worker, "GET", f"{path}?limit=2&cursor={cursor}")
    assert [i["notification_id"] for i in second.body["items"]] == posted[:1]
    assert second.body["next_cursor"] is None
    assert api(worker, "GET", f"{path}?limit=0").status == 422
    bad = api(worker, "GET", f"{path}?cursor=not-a-cursor")
    assert bad.status == 422 and bad.body["error"]["field"] == "cursor"
    assert api(worker, "GET", f"/v1/users/{unique('nobody')}/notifications").body == {
        "items": [],
        "next_cursor": None,
    }
