"""Digests on real workers: a window closes on the wall clock, and a worker
SIGKILLed in the middle of one, restarted with a wiped local store, sends that
digest exactly once with every item."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import WorkerFactory
from tests.support import (
    BrokerUnderTest,
    Topics,
    WorkerProcess,
    call,
    read_until,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration

#: The packaged catalogue, with a short window for post_liked.
WINDOW_S = 6


@pytest.fixture
def types_file(tmp_path: Path) -> Path:
    """A catalogue whose post_liked digests over a few seconds."""
    from pipeline.policy import DEFAULT_CATALOGUE_PATH

    text = DEFAULT_CATALOGUE_PATH.read_text().replace(
        'window = "30s", items = 3', f'window = "{WINDOW_S}s", items = 3'
    )
    assert f'window = "{WINDOW_S}s"' in text
    path = tmp_path / "types.toml"
    path.write_text(text)
    return path


def like(worker: WorkerProcess, user: str, n: int, post: str) -> str:
    """POST one like of ``post``; its notification id."""
    reply = call(
        worker.web_port,
        "POST",
        "/v1/notifications",
        {
            "idempotency_key": unique(f"like{n}"),
            "recipient": {"user_id": user},
            "type": "post_liked",
            "channels": ["in_app"],
            "data": {"liker": f"friend{n}"},
            "digest_key": post,
        },
    )
    assert reply.status == 202, reply.body
    return str(reply.body["notification_id"])


def status(worker: WorkerProcess, nid: str) -> dict[str, Any] | None:
    """GET the notification's status, if the worker has it."""
    reply = call(worker.web_port, "GET", f"/v1/notifications/{nid}")
    return reply.body if reply.status == 200 else None


def carrier_of(worker: WorkerProcess, nid: str) -> str | None:
    """The digest a member says carried it."""
    body = status(worker, nid)
    for entry in (body or {}).get("trail", []):
        if entry["event_type"] == "digested":
            return str(entry["reason"]).removeprefix("digest ")
    return None


def test_a_digest_survives_sigkill_and_a_wiped_store_and_goes_out_once(
    broker: BrokerUnderTest,
    topics: Topics,
    start_worker: WorkerFactory,
    tmp_path: Path,
    types_file: Path,
) -> None:
    """Five likes open and fill a window; the worker is SIGKILLed before it
    closes and replaced by one with an empty data directory; the window
    still closes on time and one digest with all five goes out, once."""
    topics.create(broker.url)
    app_id, data_dir = unique("digest"), tmp_path / "store"
    env = {"notify_types_file": str(types_file)}
    first = start_worker(app_id=app_id, data_dir=data_dir, name="first", **env)
    first.wait_ready(timeout=90)
    user, post = unique("u"), unique("post")
    members = [like(first, user, n, post) for n in range(5)]
    carriers = wait_for(
        lambda: (
            [carrier_of(first, nid) for nid in members]
            if all(carrier_of(first, nid) for nid in members)
            else None
        ),
        timeout=20,
    )
    (digest_id,) = set(carriers)
    # The members' digested events are on the topic: their batch, the
    # digests table and the schedule entry included, was flushed.
    read_until(
        broker.bootstrap,
        [topics("notify.events")],
        lambda kept: (
            {orjson.loads(m.value())["notification_id"] for m in kept} >= set(members)
        ),
        keep=lambda m: orjson.loads(m.value())["event_type"] == "digested",
    )
    first.kill()
    shutil.rmtree(data_dir)
    second = start_worker(app_id=app_id, data_dir=data_dir, name="second", **env)
    second.wait_ready(timeout=90)
    digest = wait_for(
        lambda: (
            (body := status(second, digest_id))
            and body["channels"].get("in_app") == "sent"
            and body
        ),
        timeout=60,
        interval=0.3,
    )
    assert digest["type"] == "post_liked.digest"
    inbox = call(second.web_port, "GET", f"/v1/users/{user}/inbox").body
    assert [item["notification_id"] for item in inbox["items"]] == [digest_id]
    (item,) = inbox["items"]
    assert item["title"] == "friend0 and 4 others liked your photo"
    # Once: read on for a while past the send, for a second "sent" of it. A
    # batch redone after a rebalance says "sent" again with the same event
    # id (the ledger had it sent); analytics and status keep one.
    settled = time.monotonic() + 3

    def digest_sent(message: Any) -> bool:
        event = orjson.loads(message.value())
        return bool(
            event.get("notification_id") == digest_id and event["event_type"] == "sent"
        )

    sent = read_until(
        broker.bootstrap,
        [topics("notify.events")],
        lambda kept: bool(kept) and time.monotonic() >= settled,
        keep=digest_sent,
    )
    assert len({orjson.loads(m.value())["event_id"] for m in sent}) == 1
