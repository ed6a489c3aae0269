"""The no-loss proof under fire, at 10,000 requests: ``benchmarks.chaos``'s run
with three worker SIGKILLs and one broker SIGKILL, on its own three-broker
cluster (replication factor 3, ``min.insync.replicas`` 2, ``acks=all``).

Every request made is accepted, ``notify reconcile`` finds nothing missing or
doubled (exit 0), and no API request was refused: a POST that met a dead
worker was answered 503 and retried on the other one with the same
idempotency key.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.chaos import Chaos, Plan
from pipeline.settings import Settings

# About five minutes on two cores: `make test` runs it alone, after the rest
# of the suite (beside it, the workers starved and never settled).
pytestmark = [pytest.mark.integration, pytest.mark.longest]


def test_nothing_is_lost_or_sent_twice_while_workers_and_a_broker_die(
    tmp_path: Path,
) -> None:
    plan = Plan(
        requests=10_000,
        users=500,
        rate=250.0,
        worker_kills=3,
        broker_kills=1,
        settle=300.0,
    )
    lines: list[str] = []
    result = Chaos(plan, tmp_path, log=lines.append).run()
    report = "\n".join([*lines, *result.lines(), result.reconcile_output])
    assert result.worker_kills == 3, report
    assert result.broker_kills == 1, report
    assert result.accepted == plan.requests, report
    assert not result.not_accepted, report
    assert not result.api_refused, report
    assert (result.missing, result.doubled, result.pending) == (0, 0, 0), report
    assert result.reconcile_exit == 0, report
    # A call whose result was not recorded before a SIGKILL is made again
    # (same provider idempotency id): at most the batch in flight per kill.
    batch = Settings().send_batch
    assert sum(result.duplicates.values()) <= batch * plan.worker_kills, report
    # Every channel was sent on; every provider was called.
    assert set(result.sent_by_channel) == {"push", "email", "sms", "in_app"}, report
    assert all(result.provider_calls.values()), report
    assert result.ok, report
