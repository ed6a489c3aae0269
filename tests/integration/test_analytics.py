"""Analytics on the embedded stack: ``notify sink`` with chDB in-process, a
worker sending email through the SendGrid emulator (which posts its
delivered receipts back), opens and clicks through the tracking endpoints.

The events land in ``notif_events``; seed 001's funnel query, as printed
(the campaign id quoted), counts them; the funnel API and ``notify funnel``
agree; ``notify sql`` answers read-only; a malformed event is dead-lettered.
"""

from __future__ import annotations

import re
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.emulators.stack import EmulatorStack
from tests.support import (
    ADMIN_KEY,
    BIN,
    BrokerUnderTest,
    SinkProcess,
    Topics,
    WorkerProcess,
    call,
    produce,
    read_until,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration

#: Seed 001's query, as printed but for the quotes of a string campaign id.
SEED_FUNNEL = (
    "SELECT channel, countIf(event_type = 'sent') AS sent, "
    "countIf(event_type = 'delivered') AS delivered, "
    "countIf(event_type = 'opened') AS opened, "
    "round(countIf(event_type='opened') * 100.0 / "
    "nullIf(countIf(event_type='delivered'), 0), 2) AS open_rate_pct "
    "FROM notif_events WHERE campaign_id = '1042' "
    "AND ts >= now() - INTERVAL 7 DAY GROUP BY channel"
)


@pytest.fixture(scope="module")
def analytics(
    broker: BrokerUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[EmulatorStack, WorkerProcess, SinkProcess, Topics]]:
    """Emulators, one worker and the sink, on a fresh topic prefix."""
    topics = Topics.fresh()
    topics.create(broker.url)
    directory = tmp_path_factory.mktemp("analytics")
    common = {
        "NOTIFY_BROKER_URL": broker.url,
        "NOTIFY_APP_ID": unique("analytics"),
        "NOTIFY_TOPIC_PREFIX": topics.prefix,
    }
    sink = SinkProcess.reading(broker.url, topics, directory, common["NOTIFY_APP_ID"])
    worker = WorkerProcess(
        app="pipeline.app", env={}, log_path=directory / "worker.log"
    )
    stack = EmulatorStack(
        directory / "emulators", f"http://127.0.0.1:{worker.web_port}"
    ).start()
    worker.env = {
        **common,
        "NOTIFY_DATA_DIR": str(directory / "worker"),
        "NOTIFY_EMAIL_PROVIDERS": "sendgrid",
        "NOTIFY_SINK_URL": sink.url,
        **stack.env(),
    }
    sink.start()
    worker.start()
    try:
        sink.wait_ready(timeout=90)
        worker.wait_ready(timeout=90)
        yield stack, worker, sink, topics
    finally:
        worker.stop()
        sink.stop()
        stack.stop()


def sql(worker: WorkerProcess, query: str, fmt: str = "JSON") -> Any:
    """``POST /v1/analytics/sql`` with the admin key; the JSON answer's rows."""
    reply = call(
        worker.web_port,
        "POST",
        "/v1/analytics/sql",
        {"sql": query, "format": fmt},
        key=ADMIN_KEY,
    )
    assert reply.status == 200, reply.body
    return reply.body["data"]


def notify_cli(
    worker: WorkerProcess, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run ``notify ARGS --api <the worker>`` as an operator would."""
    return subprocess.run(
        [str(BIN / "notify"), *args, "--api", f"http://127.0.0.1:{worker.web_port}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": str(BIN), "NOTIFY_DATA_DIR": str(tmp_path)},
    )


def fetch(url: str) -> int:
    """GET without following a redirect; the status."""

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(Stay)
    try:
        with opener.open(url, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_events_land_and_seed_001s_funnel_counts_them(
    analytics: tuple[EmulatorStack, WorkerProcess, SinkProcess, Topics],
    tmp_path: Path,
) -> None:
    """Four emails of campaign 1042, each delivered (SendGrid's receipts);
    two opened, one of them clicked: seed 001's query says 4 sent, 4
    delivered, 2 opened, 50 %; the funnel API and ``notify funnel`` say the
    same with the click; each event is one row however often it is said."""
    stack, worker, _, _ = analytics
    users = []
    for _ in range(4):
        user = unique("fu")
        assert (
            call(
                worker.web_port,
                "PUT",
                f"/v1/users/{user}",
                {"email": f"{user}@example.com"},
            ).status
            == 202
        )
        users.append(user)
    wait_for(
        lambda: all(
            call(worker.web_port, "GET", f"/v1/users/{u}").status == 200 for u in users
        ),
        timeout=30,
    )
    for user in users:
        body = {
            "idempotency_key": unique("k"),
            "recipient": {"user_id": user},
            "type": "order_shipped",
            "channels": ["email"],
            "data": {
                "order_id": 1042,
                "tracking_url": "https://shop.example.com/t/1042",
            },
            "priority": "transactional",
            "campaign_id": "1042",
        }
        assert call(worker.web_port, "POST", "/v1/notifications", body).status == 202
    calls = stack.sendgrid.calls
    wait_for(lambda: all(calls.to(f"{u}@example.com") for u in users), timeout=60)
    base = re.escape(f"http://127.0.0.1:{worker.web_port}")
    for n, user in enumerate(users[:2]):
        [sent] = calls.to(f"{user}@example.com")
        text = orjson.dumps(sent.payload["body"]).decode()
        [pixel] = set(re.findall(base + r"/t/o/[A-Za-z0-9_.\-]+", text))
        assert fetch(pixel) == 200
        if n == 0:
            [click] = set(re.findall(base + r"/t/c/[A-Za-z0-9_.\-]+", text))
            assert fetch(click) == 302

    said: list[Any] = []

    def counted() -> list[dict[str, Any]] | None:
        rows = sql(worker, SEED_FUNNEL)
        said.append(rows)
        wanted = [
            {
                "channel": "email",
                "sent": 4,
                "delivered": 4,
                "opened": 2,
                "open_rate_pct": 50,
            }
        ]
        # Notification-wide events (accepted) have no channel: a row of zeros.
        mine = [row for row in rows if row["channel"]]
        others = [row for row in rows if not row["channel"]]
        quiet = all(row["sent"] == row["delivered"] == 0 for row in others)
        return rows if mine == wanted and quiet else None

    try:
        wait_for(counted, timeout=60, interval=1.0)
    except AssertionError as exc:
        raise AssertionError(f"seed 001's funnel said {said[-1:]}") from exc
    report = call(
        worker.web_port, "GET", "/v1/analytics/funnel?campaign_id=1042&by=channel"
    ).body
    [row] = report["rows"]
    assert (
        row["key"],
        row["sent"],
        row["delivered"],
        row["opened"],
        row["clicked"],
    ) == (
        "email",
        4,
        4,
        2,
        1,
    )
    assert (row["open_rate"], row["click_rate"]) == (50.0, 25.0)
    assert row["latency_ms"]["p50"] >= 0
    one_row_each = sql(
        worker,
        "SELECT count() AS rows, uniqExact(event_id) AS ids FROM notif_events_log FINAL "
        "WHERE campaign_id = '1042'",
    )
    assert one_row_each[0]["rows"] == one_row_each[0]["ids"]
    printed = notify_cli(worker, tmp_path, "funnel", "--campaign", "1042")
    assert printed.returncode == 0, printed.stderr
    assert re.search(
        r"email\s+4\s+4\s+2\s+1\s+100\.00\s+50\.00\s+25\.00", printed.stdout
    ), printed.stdout


def test_notify_sql_prints_a_table_and_refuses_writes(
    analytics: tuple[EmulatorStack, WorkerProcess, SinkProcess, Topics],
    tmp_path: Path,
) -> None:
    """``notify sql`` prints what clickhouse-client prints; a write is refused
    by the store (read-only), a tenant key by the API."""
    _, worker, _, _ = analytics

    def notify_sql(*args: str) -> subprocess.CompletedProcess[str]:
        return notify_cli(worker, tmp_path, "sql", *args)

    shown = notify_sql("SELECT 1 + 1 AS two")
    assert shown.returncode == 0, shown.stderr
    assert "┌─two─┐" in shown.stdout and re.search(r"│ +2 │", shown.stdout)
    refused = notify_sql("INSERT INTO notif_events_log (event_id) VALUES ('x')")
    assert refused.returncode == 1 and "422 query_failed" in refused.stderr
    assert "readonly" in refused.stderr.lower()
    tenant = call(worker.web_port, "POST", "/v1/analytics/sql", {"sql": "SELECT 1"})
    assert tenant.status == 403, tenant.body


def test_a_malformed_event_is_dead_lettered_with_its_bytes(
    analytics: tuple[EmulatorStack, WorkerProcess, SinkProcess, Topics],
    broker: BrokerUnderTest,
) -> None:
    """A message on notify.events that is no event goes to the dead-letter
    topic byte for byte with the sink's reason; the events around it land."""
    _, worker, sink, topics = analytics
    marker = unique("bad")
    good = {
        "event_id": f"e_{marker}",
        "event_type": "opened",
        "ts": "2026-12-05T03:00:00Z",
        "stage": "ingest",
        "tenant": "default",
        "campaign_id": marker,
    }
    bad = f"not json {marker}".encode()
    produce(
        broker.bootstrap,
        topics("notify.events"),
        [(b"k", bad), (b"k", orjson.dumps(good))],
    )
    [letter] = read_until(
        broker.bootstrap,
        [topics("notify.deadletter")],
        lambda kept: len(kept) >= 1,
        keep=lambda m: m.value() == bad,
        timeout=60,
    )
    headers = dict(letter.headers() or [])
    assert headers["notify.dlq.stage"] == b"sink"
    assert b"not an event" in headers["notify.dlq.reason"]
    wait_for(
        lambda: (
            sql(
                worker,
                f"SELECT count() AS n FROM notif_events WHERE campaign_id = '{marker}'",  # noqa: S608
            )
            == [{"n": 1}]
        ),
        timeout=30,
    )
    assert sink.health()["rejected"] >= 1  # type: ignore[index]


def notify_here(
    analytics: tuple[EmulatorStack, WorkerProcess, SinkProcess, Topics],
    broker: BrokerUnderTest,
    tmp_path: Path,
    *args: str,
) -> subprocess.CompletedProcess[str]:
    """Run ``notify ARGS`` on this deployment's settings (broker, topics, sink)."""
    _, _, sink, topics = analytics
    return subprocess.run(
        [str(BIN / "notify"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={
            "PATH": str(BIN),
            "NOTIFY_BROKER_URL": broker.url,
            "NOTIFY_TOPIC_PREFIX": topics.prefix,
            "NOTIFY_SINK_URL": sink.url,
            "NOTIFY_DATA_DIR": str(tmp_path),
        },
    )


def by_type(worker: WorkerProcess) -> dict[str, int]:
    """Events per type in notif_events."""
    rows = sql(
        worker,
        "SELECT event_type, count() AS n FROM notif_events GROUP BY event_type",
    )
    return {row["event_type"]: int(row["n"]) for row in rows}


def test_replays_change_no_count_and_call_no_provider(
    analytics: tuple[EmulatorStack, WorkerProcess, SinkProcess, Topics],
    broker: BrokerUnderTest,
    tmp_path: Path,
) -> None:
    """After a completed run: the events replayed into ClickHouse twice
    change no count; the requests replayed into the pipeline reach nobody
    again (the emulator's calls stay as they were); a dry run reports who
    would get what and sends nothing."""
    stack, worker, _, _ = analytics
    opted_out = unique("fo")
    email = {"email": f"{opted_out}@example.com"}
    assert call(worker.web_port, "PUT", f"/v1/users/{opted_out}", email).status == 202
    prefs = {"channels": {"email": False}}
    put = call(worker.web_port, "PUT", f"/v1/users/{opted_out}/preferences", prefs)
    assert put.status == 202
    wait_for(
        lambda: (
            call(worker.web_port, "GET", f"/v1/users/{opted_out}/preferences")
            .body.get("channels", {})
            .get("email")
            is False
        ),
        timeout=30,
    )

    def requests_again(*extra: str) -> subprocess.CompletedProcess[str]:
        """``notify replay`` of the critical requests into the pipeline."""
        return notify_here(
            analytics,
            broker,
            tmp_path,
            "replay",
            "--topic",
            "notify.requests.critical",
            "--from",
            "0",
            "--into",
            "pipeline",
            *extra,
        )

    calls = stack.sendgrid.calls
    wait_for(lambda: calls.delivered >= 4, timeout=60)  # the first test's emails
    before_calls = calls.delivered
    before = wait_for(lambda: by_type(worker) or None, timeout=30)
    for _ in range(2):
        done = notify_here(
            analytics,
            broker,
            tmp_path,
            "replay",
            "--topic",
            "notify.events",
            "--from",
            "0",
            "--into",
            "clickhouse",
        )
        assert done.returncode == 0, done.stderr
        assert "replayed" in done.stdout
        assert by_type(worker) == before
    dry = requests_again("--dry-run")
    assert dry.returncode == 0, dry.stderr
    # The first test's four users would get their email again (nothing
    # stops a dry run's decision but the preferences): each one listed.
    assert re.search(r"\b4\s+email would_send\b", dry.stdout), dry.stdout
    # Now the opted-out user: a dry run with a request of theirs on the range.
    body = {
        "idempotency_key": unique("k"),
        "recipient": {"user_id": opted_out},
        "type": "order_shipped",
        "channels": ["email"],
        "data": {"order_id": 7, "tracking_url": "https://shop.example.com/t/7"},
        "priority": "transactional",
    }
    nid = call(worker.web_port, "POST", "/v1/notifications", body).body[
        "notification_id"
    ]
    wait_for(
        lambda: (
            call(worker.web_port, "GET", f"/v1/notifications/{nid}").body.get("status")
            == "suppressed"
        ),
        timeout=30,
    )
    dry = requests_again("--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    decided = [
        orjson.loads(line) for line in dry.stdout.splitlines() if line.startswith("{")
    ]
    mine = [d for d in decided if d["user_id"] == opted_out]
    assert [(d["channel"], d["outcome"]) for d in mine] == [("email", "suppressed")]
    assert calls.delivered == before_calls + 0  # the dry runs sent nothing
    driven = requests_again()
    assert driven.returncode == 0, driven.stderr
    replayed = int(re.search(r"replayed (\d+) records", driven.stdout).group(1))  # type: ignore[union-attr]
    assert replayed == 5
    # Each replayed request is decided again: a duplicate of the first.
    wait_for(
        lambda: (
            by_type(worker).get("deduplicated", 0)
            >= before.get("deduplicated", 0) + replayed
        ),
        timeout=60,
        interval=1.0,
    )
    assert calls.delivered == before_calls  # nobody received anything again
    # The no-loss check passes on all of it...
    checked = notify_here(
        analytics, broker, tmp_path, "reconcile", "--since", "1h", "--grace", "1s"
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert " 0 missing, 0 doubled" in checked.stdout
    # ...and fails on a notification whose outcome never came (accepted and
    # queued, ten minutes ago, then nothing).
    lost = f"n_{unique('lost')}"
    at = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    produce(
        broker.bootstrap,
        analytics[3]("notify.events"),
        [
            (
                lost.encode(),
                orjson.dumps(
                    {
                        "event_id": f"e_{lost}_{kind}",
                        "event_type": kind,
                        "ts": at,
                        "stage": "test",
                        "notification_id": lost,
                        "tenant": "default",
                        "channel": channel,
                    }
                ),
            )
            for kind, channel in (("accepted", None), ("queued", "email"))
        ],
    )
    wait_for(
        lambda: (
            sql(
                worker,
                f"SELECT count() AS n FROM notif_events WHERE notification_id = '{lost}'",  # noqa: S608
            )
            == [{"n": 2}]
        ),
        timeout=30,
    )
    failed = notify_here(
        analytics, broker, tmp_path, "reconcile", "--since", "1h", "--grace", "1s"
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"missing  {lost} email: queued" in failed.stdout
