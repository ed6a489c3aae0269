"""The schedule: deferred notifications are sent when due, never before, once.

Real workers, through the API and ``notify.events``: a ``schedule_at`` a few
seconds ahead, and a worker SIGKILLed with scheduled items pending whose
replacement starts from a wiped local store.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import WorkerFactory
from tests.support import (
    BrokerUnderTest,
    Reply,
    Topics,
    WorkerProcess,
    call,
    module_worker,
    read_until,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shared(
    broker: BrokerUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WorkerProcess, Topics]]:
    """One worker on topics of its own for the tests that kill nothing (each
    reads only its own notifications' events)."""
    with module_worker(
        broker.url, tmp_path_factory.mktemp("scheduler"), "sched"
    ) as shared:
        yield shared


def post(worker: WorkerProcess, user: str, at: datetime, **extra: Any) -> str:
    """POST an in-app notification scheduled at ``at``; its id."""
    body = {
        "idempotency_key": unique("sched"),
        "recipient": {"user_id": user},
        "type": "comment_reply",
        "channels": ["in_app"],
        "data": {"author": "Bob", "excerpt": "see you"},
        "schedule_at": at.isoformat(),
        **extra,
    }
    reply: Reply = call(worker.web_port, "POST", "/v1/notifications", body)
    assert reply.status == 202, reply.body
    return str(reply.body["notification_id"])


def in_app_state(worker: WorkerProcess, nid: str) -> str | None:
    """The in-app channel's status of ``nid``, if the worker has one."""
    reply = call(worker.web_port, "GET", f"/v1/notifications/{nid}")
    return reply.body.get("channels", {}).get("in_app") if reply.status == 200 else None


def events_of(
    broker: BrokerUnderTest,
    topics: Topics,
    nids: set[str],
    kinds: set[str],
    count: int,
    settle: float = 0.0,
) -> list[dict[str, Any]]:
    """The ``notify.events`` of ``nids`` whose type is one of ``kinds``, once
    ``count`` of them have arrived (and ``settle`` more seconds have passed)."""

    def wanted(message: Any) -> bool:
        event = orjson.loads(message.value())
        return event.get("notification_id") in nids and event["event_type"] in kinds

    settled = time.monotonic() + settle
    messages = read_until(
        broker.bootstrap,
        [topics("notify.events")],
        lambda kept: len(kept) >= count and time.monotonic() >= settled,
        keep=wanted,
        timeout=60,
    )
    return [orjson.loads(message.value()) for message in messages]


def test_a_scheduled_notification_is_sent_when_due_and_never_before(
    broker: BrokerUnderTest, shared: tuple[WorkerProcess, Topics]
) -> None:
    """schedule_at 4 s ahead: deferred at once, queued and sent no earlier."""
    worker, topics = shared
    due = datetime.now(UTC) + timedelta(seconds=4)
    nid = post(worker, unique("u"), due)
    assert wait_for(lambda: in_app_state(worker, nid) == "deferred", timeout=10)
    wait_for(lambda: in_app_state(worker, nid) == "sent", timeout=30, interval=0.2)
    events = events_of(broker, topics, {nid}, {"deferred", "queued", "sent"}, 3)
    by_type = {event["event_type"]: event for event in events}
    assert datetime.fromisoformat(by_type["deferred"]["until"]) == due
    assert by_type["deferred"]["reason"] == "scheduled"
    for kind in ("queued", "sent"):
        assert datetime.fromisoformat(by_type[kind]["ts"]) >= due, by_type[kind]


def test_pending_items_survive_sigkill_and_a_wiped_store_and_go_out_once(
    broker: BrokerUnderTest,
    topics: Topics,
    start_worker: WorkerFactory,
    tmp_path: Path,
) -> None:
    """Items scheduled on a worker that is SIGKILLed, and replaced by one
    starting from an empty data directory, are each sent exactly once."""
    topics.create(broker.url)
    app_id, data_dir = unique("sched"), tmp_path / "store"
    first = start_worker(app_id=app_id, data_dir=data_dir, name="first")
    first.wait_ready(timeout=90)
    due = datetime.now(UTC) + timedelta(seconds=12)
    nids = {post(first, unique("u"), due) for _ in range(20)}
    # Deferred in the status means fanout has handled the request, and its
    # schedule entry sits in the table; the deferred events on the topic
    # mean that batch's outputs (the changelog included) were flushed.
    events_of(broker, topics, nids, {"deferred"}, len(nids))
    wait_for(
        lambda: all(in_app_state(first, nid) == "deferred" for nid in nids), timeout=30
    )
    first.kill()
    shutil.rmtree(data_dir)
    second = start_worker(app_id=app_id, data_dir=data_dir, name="second")
    second.wait_ready(timeout=90)
    wait_for(lambda: all(in_app_state(second, n) == "sent" for n in nids), timeout=60)
    # Read on for a while after the last: a second release would be a second
    # sent event (and a second inbox item).
    sent = events_of(broker, topics, nids, {"sent"}, len(nids), settle=3.0)
    # One sent decision per notification: a job redelivered after the
    # replacement's rebalance says it again under the same event id (the
    # ledger refuses a second call), which the status and analytics keep once.
    decisions = {event["event_id"]: event["notification_id"] for event in sent}
    assert Counter(decisions.values()) == Counter(nids)
    called = [e["notification_id"] for e in sent if e["reason"] != "already_sent"]
    assert Counter(called) == Counter(nids)  # one delivery each, said again or not
    for event in sent:
        assert datetime.fromisoformat(event["ts"]) >= due
    for nid in nids:  # each inbox holds the one message
        user = call(second.web_port, "GET", f"/v1/notifications/{nid}").body["user_id"]
        inbox = call(second.web_port, "GET", f"/v1/users/{user}/inbox").body
        assert [item["notification_id"] for item in inbox["items"]] == [nid]


def test_a_cancel_before_sending_holds_and_after_sending_is_refused(
    broker: BrokerUnderTest, shared: tuple[WorkerProcess, Topics]
) -> None:
    """DELETE of a notification scheduled 4 s ahead: cancelled, its status and
    notify.events say so, and it is not sent when due. DELETE of one already
    sent: 409 naming the channel sent."""
    worker, topics = shared
    due = datetime.now(UTC) + timedelta(seconds=4)
    nid = post(worker, unique("u"), due)
    assert wait_for(lambda: in_app_state(worker, nid) == "deferred", timeout=10)
    for _ in range(2):  # the same answer twice
        reply = call(worker.web_port, "DELETE", f"/v1/notifications/{nid}")
        assert reply.status == 200, reply.body
        assert reply.body == {
            "notification_id": nid,
            "status": "cancelled",
            "cancelled": ["in_app"],
        }
    status = call(worker.web_port, "GET", f"/v1/notifications/{nid}").body
    assert status["status"] == "cancelled" and status["cancelled_at"]
    # Read on until well past the due time: a release would show as sent.
    wait = (due - datetime.now(UTC)).total_seconds() + 3.0
    events = events_of(broker, topics, {nid}, {"cancelled", "sent"}, 2, settle=wait)
    # Once each: the second DELETE changed nothing.
    assert Counter((e["event_type"], e["channel"]) for e in events) == {
        ("cancelled", None): 1,
        ("cancelled", "in_app"): 1,
    }
    assert in_app_state(worker, nid) == "cancelled"
    sent = post(worker, unique("u"), datetime.now(UTC))
    wait_for(lambda: in_app_state(worker, sent) == "sent", timeout=30, interval=0.2)
    reply = call(worker.web_port, "DELETE", f"/v1/notifications/{sent}")
    assert reply.status == 409, reply.body
    assert reply.body["error"]["code"] == "already_sent"
    assert reply.body["error"]["channels"] == {"in_app": "sent"}
    missing = "n_c" + "0" * 32
    assert call(worker.web_port, "DELETE", f"/v1/notifications/{missing}").status == 404


def quiet_until_next_minute() -> tuple[dict[str, str], datetime]:
    """Quiet hours (UTC) from an hour ago to the next whole minute at least
    8 s away (quiet hours are whole minutes), and that end."""
    now = datetime.now(UTC)
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    if end - now < timedelta(seconds=8):
        end += timedelta(minutes=1)
    start = now - timedelta(hours=1)
    return {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}, end


def test_a_quiet_hours_deferral_is_sent_when_the_quiet_hours_end(
    broker: BrokerUnderTest, shared: tuple[WorkerProcess, Topics]
) -> None:
    """A notification in the user's quiet hours waits for their end (up to a
    minute here), then goes; not before."""
    worker, topics = shared
    user = unique("u")
    quiet, end = quiet_until_next_minute()
    prefs = {"quiet_hours": quiet, "timezone": "UTC"}
    path = f"/v1/users/{user}/preferences"
    assert call(worker.web_port, "PUT", path, prefs).status == 202
    wait_for(
        lambda: call(worker.web_port, "GET", path).body.get("updated_at"), timeout=30
    )
    nid = post(worker, user, datetime.now(UTC))
    wait_for(lambda: in_app_state(worker, nid) == "deferred", timeout=10)
    status = call(worker.web_port, "GET", f"/v1/notifications/{nid}").body
    deferral = next(e for e in status["trail"] if e["event_type"] == "deferred")
    assert deferral["reason"] == "quiet_hours"
    assert datetime.fromisoformat(deferral["until"]) == end
    wait_for(lambda: in_app_state(worker, nid) == "sent", timeout=90, interval=0.5)
    [sent] = events_of(broker, topics, {nid}, {"sent"}, 1)
    assert datetime.fromisoformat(sent["ts"]) >= end
