"""Retention on a real worker: a sent attempt's ledger entry and its
notification's status are deleted once their retention is over, with a
tombstone on each changelog, so a worker that recovers the tables later does
not bring them back."""

from __future__ import annotations

import pytest

from pipeline.emulators.stack import EmulatorStack
from tests.conftest import WorkerFactory
from tests.support import (
    BrokerUnderTest,
    Topics,
    email_job,
    produce,
    read_until,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_a_sent_attempt_and_its_status_leave_after_their_retention(
    broker: BrokerUnderTest,
    emulators: EmulatorStack,
    start_worker: WorkerFactory,
    topics: Topics,
) -> None:
    topics.create(broker.url)
    app_id = unique("retention")
    worker = start_worker(
        app_id=app_id,
        notify_lanes="critical",
        notify_email_providers="sendgrid",
        notify_ledger_retention="0.0005",  # 1.8 s
        notify_status_retention="0.0005",
        **emulators.env(),
    )
    worker.wait_ready(timeout=90)
    run = unique("t").replace("-", "")
    nid, address = f"n_{run}", f"{run}@example.com"
    produce(
        broker.bootstrap,
        topics("notify.deliveries.email.critical"),
        [email_job(nid, "u-retention", address, 1)],
        partitioner="murmur2_random",
    )
    sendgrid = emulators.sendgrid.calls
    wait_for(lambda: sendgrid.to(address), timeout=60, interval=0.1)
    attempt = f"{nid}:email:{address}".encode()
    history = read_until(
        broker.bootstrap,
        [f"{app_id}-critical-send_ledger-changelog"],
        lambda got: bool(got) and got[-1].value() is None,
        keep=lambda m: attempt in (m.key() or b""),
        # A sweep every 10 s; on a loaded machine (the suite runs beside the
        # chaos run) a minute has not always been enough.
        timeout=150,
    )
    # sending, sent, then the tombstone; the worker is still up, one call made
    assert b'"sent"' in (history[-2].value() or b"")
    statuses = read_until(
        broker.bootstrap,
        [f"{app_id}-critical-status-changelog"],
        lambda got: bool(got) and got[-1].value() is None,
        keep=lambda m: m.key() is not None and nid.encode() in m.key(),
        timeout=150,
    )
    assert b'"sent"' in (statuses[-2].value() or b"")
    worker.assert_alive()
    assert len(sendgrid.to(address)) == 1
