"""A worker killed with SIGKILL in the middle of a send burst loses nothing.

5,000 delivery jobs; the worker is killed once about a third of them reached
the provider, then started again on the same state. Every job must end
delivered (none lost). Duplicate provider calls are counted by the emulator:
the ledger records ``sending`` durably before each call and the result after
it, so only calls whose result was not yet recorded when the worker died can
be repeated (at most one batch); the test prints how many were.
"""

from __future__ import annotations

import secrets
import sys
import time
from datetime import UTC, datetime

import pytest
from confluent_kafka import Message

from pipeline.emulators.stack import EmulatorStack
from pipeline.providers.base import message_id_for
from schemas.records import DeliveryJob
from tests.support import (
    BrokerUnderTest,
    Topics,
    WorkerProcess,
    committed_at,
    email_job,
    produce,
    read_until,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration

JOBS = 5_000
USERS = 200
BATCH = 200


def job(n: int, run: str) -> tuple[bytes, bytes]:
    """The n-th email job of this run."""
    return email_job(f"n_{run}{n:05d}", f"u{n % USERS}", f"{run}-{n}@example.com", n)


def test_sigkill_mid_burst_loses_nothing(
    broker: BrokerUnderTest,
    emulators: EmulatorStack,
    tmp_path_factory: pytest.TempPathFactory,
    topics: Topics,
) -> None:
    """Kill, restart: every one of 5,000 jobs delivered; duplicates printed."""
    topics.create(broker.url)
    directory = tmp_path_factory.mktemp("crash-worker")
    env = {
        "NOTIFY_BROKER_URL": broker.url,
        "NOTIFY_APP_ID": unique("crash"),
        "NOTIFY_DATA_DIR": str(directory / "state"),
        "NOTIFY_TOPIC_PREFIX": topics.prefix,
        "NOTIFY_LANES": "critical",
        "NOTIFY_EMAIL_PROVIDERS": "sendgrid",
        "NOTIFY_SEND_BATCH": str(BATCH),
        **emulators.env(),
    }
    first = WorkerProcess(app="pipeline.app", env=env, log_path=directory / "1.log")
    first.start().wait_ready(timeout=90)
    run = unique("r").replace("-", "")
    jobs_topic = topics("notify.deliveries.email.critical")
    reports = produce(
        broker.bootstrap,
        jobs_topic,
        (job(n, run) for n in range(JOBS)),
        **{"partitioner": "murmur2_random", "linger.ms": 5},
    )
    sendgrid = emulators.sendgrid.calls
    wait_for(lambda: sendgrid.delivered >= JOBS // 3, timeout=120, interval=0.05)
    first.kill()
    at_kill = sendgrid.delivered
    assert at_kill < JOBS, "the burst ended before the kill: nothing was tested"

    second = WorkerProcess(app="pipeline.app", env=env, log_path=directory / "2.log")
    second.start()
    try:
        wanted = {
            message_id_for(f"n_{run}{n:05d}:email:{run}-{n}@example.com")
            for n in range(JOBS)
        }

        def missing() -> set[str]:
            return wanted - {call.message_id for call in sendgrid.calls}

        def where_missing(gone: set[str]) -> str:
            # Lost (the group committed past a job it never sent) or stalled
            # (its partition's committed offset is behind), per partition.
            partition_of = {r.key(): r.partition() or 0 for r in reports}
            ends: dict[int, int] = {}
            for report in reports:
                at, end = report.partition() or 0, (report.offset() or 0) + 1
                ends[at] = max(ends.get(at, 0), end)
            counts: dict[int, int] = {}
            for n in range(JOBS):
                mid = message_id_for(f"n_{run}{n:05d}:email:{run}-{n}@example.com")
                if mid in gone:
                    partition = partition_of[f"default/u{n % USERS}".encode()]
                    counts[partition] = counts.get(partition, 0) + 1
            group = f"{env['NOTIFY_APP_ID']}-critical"
            return "; ".join(
                f"partition {p}: {count} missing, group committed "
                f"{committed_at(broker.bootstrap, group, jobs_topic, p)} of {ends[p]}"
                for p, count in sorted(counts.items())
            )

        def all_delivered() -> bool:
            second.assert_alive()
            return not missing()

        try:
            wait_for(all_delivered, timeout=240, interval=0.5)
        except AssertionError as exc:
            gone = missing()
            raise AssertionError(
                f"{len(gone)} of {JOBS} jobs never reached the provider: "
                f"{where_missing(gone)}\n"
                f"{second.log_lines(*WorkerProcess.READING_MARKS)}"
            ) from exc
    finally:
        second.stop()
    duplicates = sendgrid.duplicates
    sys.stdout.write(
        f"\n{JOBS} jobs, killed after {at_kill} deliveries: all delivered, "
        f"{duplicates} duplicate provider call(s)\n"
    )
    # Only calls in flight or whose result was not yet durable can repeat.
    assert duplicates <= BATCH


def test_a_pending_retry_survives_a_sigkill(
    broker: BrokerUnderTest,
    emulators: EmulatorStack,
    tmp_path_factory: pytest.TempPathFactory,
    topics: Topics,
) -> None:
    """A retry waiting out a 429's Retry-After is in the retry table, not in
    memory: the worker is killed while it waits, and the restarted worker
    sends it when it is due, not before."""
    topics.create(broker.url)
    directory = tmp_path_factory.mktemp("retry-worker")
    env = {
        "NOTIFY_BROKER_URL": broker.url,
        "NOTIFY_APP_ID": unique("retry"),
        "NOTIFY_DATA_DIR": str(directory / "state"),
        "NOTIFY_TOPIC_PREFIX": topics.prefix,
        "NOTIFY_LANES": "critical",
        **emulators.env(),
    }
    first = WorkerProcess(app="pipeline.app", env=env, log_path=directory / "1.log")
    first.start().wait_ready(timeout=90)
    phone = "+1415" + str(secrets.randbelow(10**7)).zfill(7)
    twilio = emulators.twilio
    twilio.faults.update(retry_after=12)
    twilio.faults.fail_targets[phone] = "20429"
    nid = f"n_{unique('r').replace('-', '')}"
    value = DeliveryJob(
        notification_id=nid,
        tenant="default",
        user_id="u-retry",
        type="order_shipped",
        priority="transactional",
        lane="critical",
        channel="sms",
        data={"order_id": 1},
        created_at=datetime.now(UTC),
        phone=phone,
    ).dumps()
    [record] = produce(
        broker.bootstrap,
        topics("notify.deliveries.sms.critical"),
        [(b"default/u-retry", value)],
        partitioner="murmur2_random",
    )
    read_until(
        broker.bootstrap,
        [topics("notify.events")],
        lambda got: any(b'"retried"' in (m.value() or b"") for m in got),
        keep=lambda m: m.key() == nid.encode(),
        timeout=60,
    )
    refused_at = time.monotonic()
    # Once the job's offset is committed only the retry table can bring it back.
    wait_for(
        lambda: (
            committed(broker, f"{env['NOTIFY_APP_ID']}-critical", record)
            > (record.offset() or 0)
        ),
        timeout=30,
        interval=0.2,
    )
    first.kill()
    twilio.faults.reset()
    second = WorkerProcess(app="pipeline.app", env=env, log_path=directory / "2.log")
    second.start()
    try:
        wait_for(lambda: len(twilio.calls.to(phone)) == 1, timeout=90, interval=0.2)
    finally:
        second.stop()
    [delivered] = twilio.calls.to(phone)
    assert delivered.at - refused_at >= 10.0  # Retry-After held across the crash


def committed(broker: BrokerUnderTest, group: str, record: Message) -> int:
    """The group's committed offset on ``record``'s partition (below 0: none)."""
    return committed_at(
        broker.bootstrap, group, str(record.topic()), record.partition() or 0
    )
