"""Campaigns on real workers: expanded where the users are, counted, paused,
cancelled, and resumed after a SIGKILL without sending anybody twice.

Users are produced straight onto ``notify.users.profiles`` (as a bulk
import would), tagged so each test targets only its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.emulators.stack import EmulatorStack
from tests.conftest import WorkerFactory
from tests.support import (
    BIN,
    DEV_KEY,
    BrokerUnderTest,
    Topics,
    WorkerProcess,
    call,
    module_worker,
    produce,
    read_until,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shared(
    broker: BrokerUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WorkerProcess, Topics]]:
    """One worker on topics of its own for the tests that kill nothing: each
    targets its own tag, list or campaign, so they share it."""
    with module_worker(
        broker.url, tmp_path_factory.mktemp("campaigns"), "camp"
    ) as shared:
        yield shared


def add_users(
    broker: BrokerUnderTest,
    topics: Topics,
    count: int,
    tags: list[str],
    *,
    email: bool = False,
) -> list[str]:
    """``count`` users with ``tags`` (and ``<user>@example.com`` if
    ``email``), produced as their profiles."""
    users = [unique("cu") for _ in range(count)]
    now = datetime.now(UTC).isoformat()
    produce(
        broker.bootstrap,
        topics("notify.users.profiles"),
        [
            (
                f"default/{user}".encode(),
                orjson.dumps(
                    {
                        "tenant": "default",
                        "user_id": user,
                        "tags": tags,
                        "updated_at": now,
                        **({"email": f"{user}@example.com"} if email else {}),
                    }
                ),
            )
            for user in users
        ],
        partitioner="murmur2_random",
    )
    return users


def campaign_body(tag: str, **extra: Any) -> dict[str, Any]:
    """Seed 002's bulk body, in-app, to the users tagged ``tag``."""
    return {
        "idempotency_key": unique("camp"),
        "campaign_name": "Winter sale",
        "type": "promotional",
        "target": {"tags": [tag]},
        "channels": ["in_app"],
        "message": {"title": "Winter sale", "body": "Everything half off."},
        **extra,
    }


def create(worker: WorkerProcess, body: dict[str, Any]) -> str:
    """POST the campaign; its id."""
    reply = call(worker.web_port, "POST", "/v1/notifications/bulk", body)
    assert reply.status == 202, reply.body
    assert reply.body["status"] == "accepted"
    return str(reply.body["campaign_id"])


def campaign(worker: WorkerProcess, cid: str) -> dict[str, Any]:
    """GET the campaign."""
    reply = call(worker.web_port, "GET", f"/v1/campaigns/{cid}")
    assert reply.status == 200, reply.body
    return reply.body  # type: ignore[no-any-return]


def reached_once(
    broker: BrokerUnderTest, topics: Topics, cid: str, count: int
) -> Counter[str]:
    """Users the campaign's ``sent`` decisions name, once ``count`` came: one
    per event id (a redelivered job says sent again under the same id)."""
    sent = read_until(
        broker.bootstrap,
        [topics("notify.events")],
        lambda kept: len(kept) >= count,
        keep=lambda m: (
            orjson.loads(m.value()).get("campaign_id") == cid
            and orjson.loads(m.value())["event_type"] == "sent"
        ),
        timeout=60,
    )
    decisions = {
        event["event_id"]: event["user_id"]
        for event in (orjson.loads(m.value()) for m in sent)
    }
    return Counter(decisions.values())


def profiles_known(worker: WorkerProcess, users: list[str]) -> None:
    """Wait until the worker has read the last profile of each partition."""
    wait_for(
        lambda: all(
            call(worker.web_port, "GET", f"/v1/users/{u}").status == 200
            for u in users[-20:]
        ),
        timeout=60,
    )


def test_a_campaign_reaches_its_tagged_audience_and_the_counts_add_up(
    broker: BrokerUnderTest,
    shared: tuple[WorkerProcess, Topics],
    tmp_path: Path,
) -> None:
    """1,000 tagged users of 1,250: every one gets the campaign once, the
    others none; the counts say so and add up; the same key is the same
    campaign."""
    worker, topics = shared
    tag = unique("vip")
    audience = add_users(broker, topics, 1_000, [tag, "newsletter"])
    others = add_users(broker, topics, 250, ["newsletter"])
    profiles_known(worker, audience + others)
    body = campaign_body(tag, rate=5_000)
    cid = create(worker, body)
    assert create(worker, body) == cid
    clash = call(worker.web_port, "POST", "/v1/notifications/bulk", {**body, "rate": 7})
    assert clash.status == 409, clash.body

    def completed() -> dict[str, Any] | None:
        shown = campaign(worker, cid)
        done = shown["state"] == "completed" and shown["counts"]["sent"] == 1_000
        return shown if done else None

    shown = wait_for(completed, timeout=120, interval=1.0)
    counts = shown["counts"]
    assert counts["targeted"] == counts["expanded"] == 1_000
    assert counts["notifications"] == 1_000
    outcomes = ("queued", "sent", "failed", "suppressed", "throttled", "deferred")
    assert sum(counts[o] for o in outcomes) == 1_000  # one channel each
    assert reached_once(broker, topics, cid, 1_000) == Counter(audience)
    listed = call(worker.web_port, "GET", "/v1/campaigns").body["items"]
    assert cid in [item["campaign_id"] for item in listed]
    # The command line sees the same, with its progress bar.
    watched = notify_campaign(worker, tmp_path, "status", cid, "--follow")
    assert watched.returncode == 0, watched.stderr
    last = watched.stdout.splitlines()[-1]
    assert "100.0%" in last and "completed" in last and "sent 1000" in last


def test_an_uploaded_list_reaches_each_listed_user_once(
    broker: BrokerUnderTest, shared: tuple[WorkerProcess, Topics]
) -> None:
    """A segment's users uploaded as text (a repeat, a blank line):
    stored on their partitions, and a campaign to the segment reaches each
    listed user once. A bad line refuses the whole upload, naming the line;
    a list replaced is what the next look at the segment shows."""
    worker, topics = shared
    listed = [unique("lu") for _ in range(2_500)]
    text = "\n".join(listed) + f"\n\n{listed[0]}\n"
    segment = unique("seg")
    path = f"/v1/segments/{segment}/users"
    bad = call(
        worker.web_port,
        "PUT",
        path,
        b"u_1\nu/2\nu_3\n",
        content_type="text/plain",
    )
    assert bad.status == 422 and "line 2" in bad.body["error"]["message"], bad.body
    wrong = call(worker.web_port, "PUT", path, {"user_ids": ["u_1"]})
    assert wrong.status == 415, wrong.body
    saved = call(worker.web_port, "PUT", path, text.encode(), content_type="text/plain")
    assert saved.status == 202, saved.body
    uploaded = saved.body["audience"]["uploaded"]
    assert uploaded["count"] == 2_500
    assert sum(uploaded["chunks"].values()) >= len(uploaded["chunks"])
    body = campaign_body("-", target={"segment_id": segment}, rate=5_000)
    cid = create(worker, body)
    shown = wait_for(
        lambda: (
            (c := campaign(worker, cid))["state"] == "completed"
            and c["counts"]["sent"] == 2_500
            and c
        ),
        timeout=90,
        interval=1.0,
    )
    assert shown["counts"]["targeted"] == shown["counts"]["expanded"] == 2_500
    assert reached_once(broker, topics, cid, 2_500) == Counter(listed)
    # Replaced by a smaller list: the segment names the new upload.
    again = call(worker.web_port, "PUT", path, b"u_a\nu_b\n", content_type="text/plain")
    assert again.status == 202, again.body
    now = call(worker.web_port, "GET", f"/v1/segments/{segment}").body
    assert now["audience"]["uploaded"]["count"] == 2
    assert now["audience"]["uploaded"]["upload_id"] != uploaded["upload_id"]


def notify_campaign(
    worker: WorkerProcess, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run ``notify campaign ARGS`` against the worker's API, as an operator."""
    env = {**os.environ, "NOTIFY_DATA_DIR": str(tmp_path / "cli")}
    return subprocess.run(
        [
            str(BIN / "notify"),
            "campaign",
            *args,
            "--api",
            f"http://127.0.0.1:{worker.web_port}",
            "--key",
            DEV_KEY,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_pause_resume_and_cancel_stop_expansion_within_a_chunk(
    broker: BrokerUnderTest, shared: tuple[WorkerProcess, Topics]
) -> None:
    """At 100 recipients/s in chunks of 50: paused, nothing more is expanded
    after the chunk in hand; resumed, it goes on; cancelled, it stops for
    good."""
    worker, topics = shared
    tag = unique("slow")
    users = add_users(broker, topics, 1_500, [tag])
    profiles_known(worker, users)
    cid = create(worker, campaign_body(tag, rate=100, chunk=50))
    wait_for(lambda: campaign(worker, cid)["counts"]["expanded"] > 0, timeout=30)
    paused = call(worker.web_port, "POST", f"/v1/campaigns/{cid}/pause")
    assert paused.status == 202 and paused.body["state"] == "paused", paused.body
    time.sleep(1.0)  # a chunk in hand when the pause arrived may still finish
    held = campaign(worker, cid)["counts"]["expanded"]
    time.sleep(2.0)
    assert campaign(worker, cid)["counts"]["expanded"] == held
    again = call(worker.web_port, "POST", f"/v1/campaigns/{cid}/pause")
    assert again.status == 409
    resumed = call(worker.web_port, "POST", f"/v1/campaigns/{cid}/resume")
    assert resumed.status == 202 and resumed.body["state"] == "expanding"
    wait_for(lambda: campaign(worker, cid)["counts"]["expanded"] > held, timeout=30)
    cancelled = call(worker.web_port, "DELETE", f"/v1/campaigns/{cid}")
    assert cancelled.status == 202 and cancelled.body["state"] == "cancelled"
    time.sleep(1.0)
    stopped = campaign(worker, cid)["counts"]["expanded"]
    time.sleep(2.0)
    shown = campaign(worker, cid)
    assert shown["state"] == "cancelled"
    assert shown["counts"]["expanded"] == stopped < 1_500
    assert call(worker.web_port, "DELETE", f"/v1/campaigns/{cid}").status == 409
    # Every recipient expanded before the cancel ends sent, or cancelled on
    # its way (fanout and send drop a cancelled campaign's requests and
    # jobs): nobody is left queued, and the counts still add up.
    outcomes = ("queued", "sent", "failed", "suppressed", "throttled", "cancelled")

    def settled() -> dict[str, int] | None:
        counts = campaign(worker, cid)["counts"]
        added = sum(counts[o] for o in outcomes)
        return counts if counts["queued"] == 0 and added == stopped else None

    counts = wait_for(settled, timeout=30, interval=0.5)
    assert counts["sent"] + counts["cancelled"] == stopped, counts


def test_a_worker_killed_mid_expansion_resumes_and_sends_nobody_twice(
    broker: BrokerUnderTest,
    topics: Topics,
    start_worker: WorkerFactory,
    emulators: EmulatorStack,
    tmp_path: Path,
) -> None:
    """SIGKILL while a campaign expands, restart from a wiped local store: the
    expansion resumes from its checkpoints, and the email provider (the
    SendGrid emulator) gets exactly one call per user, none twice.

    The campaign is scheduled a little ahead, so the kill falls in the
    expansion and not on a provider call in flight: what a crash during a
    send may repeat (the calls whose result was not yet durable) is
    ``test_send_crash``'s subject; this one is the expansion's."""
    topics.create(broker.url)
    app_id, data_dir = unique("camp"), tmp_path / "store"
    env = {"notify_email_providers": "sendgrid", **emulators.env()}
    first = start_worker(app_id=app_id, data_dir=data_dir, name="first", **env)
    first.wait_ready(timeout=90)
    tag = unique("kill")
    users = add_users(broker, topics, 1_000, [tag], email=True)
    profiles_known(first, users)
    due = datetime.now(UTC) + timedelta(seconds=15)
    body = campaign_body(
        tag, rate=200, chunk=100, channels=["email"], schedule_at=due.isoformat()
    )
    cid = create(first, body)
    wait_for(
        lambda: 200 <= campaign(first, cid)["counts"]["expanded"] < 1_000,
        timeout=60,
        interval=0.1,
    )
    first.kill()
    sendgrid = emulators.sendgrid.calls
    assert sendgrid.delivered == 0, "a send began before the kill: not this test"
    shutil.rmtree(data_dir)
    second = start_worker(app_id=app_id, data_dir=data_dir, name="second", **env)
    second.wait_ready(timeout=90)
    wait_for(
        lambda: (
            campaign(second, cid)["state"] == "completed"
            and sendgrid.delivered >= 1_000
        ),
        timeout=150,
        interval=1,
    )
    time.sleep(3.0)  # a second call, if any, would come now
    reached = Counter(call.target for call in sendgrid.calls)
    assert reached == Counter(f"{user}@example.com" for user in users)
    assert sendgrid.duplicates == 0
    counts = wait_for(
        lambda: (c := campaign(second, cid)["counts"])["sent"] == 1_000 and c,
        timeout=30,
    )
    assert counts["expanded"] == counts["targeted"] == 1_000


def test_two_workers_share_the_expansion(
    broker: BrokerUnderTest, topics: Topics, start_worker: WorkerFactory
) -> None:
    """Each of two workers expands the partitions it owns: both show in the
    campaign's expanded_by, and the audience is reached once in all."""
    topics.create(broker.url)
    app_id = unique("pair")
    first = start_worker(app_id=app_id, name="first")
    second = start_worker(app_id=app_id, name="second")
    first.wait_ready(timeout=90)
    second.wait_ready(timeout=90)
    tag = unique("pair")
    users = add_users(broker, topics, 1_000, [tag])
    profiles_known(first, users)
    cid = create(first, campaign_body(tag, rate=2_000))

    def completed() -> dict[str, Any] | None:
        # Any worker answers for any campaign, once it has read it (moments).
        reply = call(second.web_port, "GET", f"/v1/campaigns/{cid}")
        shown: dict[str, Any] = reply.body
        return (
            shown if reply.status == 200 and shown["counts"]["sent"] == 1_000 else None
        )

    try:
        shown = wait_for(completed, timeout=120, interval=1.0)
    except AssertionError:
        last = [
            call(w.web_port, "GET", f"/v1/campaigns/{cid}").body
            for w in (first, second)
        ]
        raise AssertionError(f"never all sent: {last}") from None
    assert shown["state"] == "completed"
    assert len(shown["expanded_by"]) == 2, shown["expanded_by"]
    assert sum(shown["expanded_by"].values()) == shown["partitions"]
    assert shown["counts"]["expanded"] == 1_000
