"""A produce that fails is never dropped: the worker stops and its input is redone."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import orjson
import pytest
from confluent_kafka import Message

from pipeline.broker import EmbeddedBroker
from pipeline.ids import notification_id
from pipeline.settings import Settings
from tests.support import (
    Topics,
    WorkerProcess,
    group_positions,
    produce,
    read_until,
    unique,
)

pytestmark = pytest.mark.integration

REQUESTS = 3_000
T = TypeVar("T")


class AllAccepted:
    """Done once every wanted notification id has an event; reads each once."""

    def __init__(self, wanted: set[str]) -> None:
        self.missing = set(wanted)
        self.read = 0

    def __call__(self, kept: list[Message]) -> bool:
        for message in kept[self.read :]:
            self.missing.discard(orjson.loads(message.value())["notification_id"])
        self.read = len(kept)
        return not self.missing

    def __repr__(self) -> str:
        return f"{len(self.missing)} never accepted, e.g. {sorted(self.missing)[:3]}"


class Run:
    """A broker with 3,000 requests waiting, and the workers that take them."""

    def __init__(self, broker: EmbeddedBroker, topics: Topics, tmp_path: Path) -> None:
        self.broker, self.topics, self.tmp_path = broker, topics, tmp_path
        topics.create(broker.url)
        self.run = unique("guard")
        keys = [f"{self.run}-{i}" for i in range(REQUESTS)]
        produce(
            broker.bootstrap,
            topics("notify.requests.critical"),
            [
                (
                    f"u{i % 97}".encode(),
                    orjson.dumps(
                        {
                            "idempotency_key": key,
                            "recipient": {"user_id": f"u{i % 97}"},
                            "type": "order_shipped",
                            "data": {"order_id": i},
                        }
                    ),
                )
                for i, key in enumerate(keys)
            ],
            **{"linger.ms": 20},
        )
        self.wanted = {
            notification_id("default", key, f"u{i % 97}", "critical")
            for i, key in enumerate(keys)
        }

    def worker(self, name: str) -> WorkerProcess:
        """A worker of the run's group, started, with its own data dir."""
        env = {
            "NOTIFY_BROKER_URL": self.broker.url,
            "NOTIFY_APP_ID": self.run,
            "NOTIFY_TOPIC_PREFIX": self.topics.prefix,
            "NOTIFY_BROKER_REQUEST_TIMEOUT": "2",
            "NOTIFY_DATA_DIR": str(self.tmp_path / name),
        }
        return WorkerProcess("pipeline.app", env, self.tmp_path / f"{name}.log").start()

    def wait_for_events(self, count: int) -> None:
        """Until the workers wrote ``count`` events (some work is done)."""
        read_until(
            self.broker.bootstrap,
            [self.topics("notify.events")],
            lambda kept: len(kept) >= count,
            timeout=90,
        )

    def frozen(
        self, meanwhile: Callable[[WorkerProcess], T]
    ) -> tuple[WorkerProcess, T]:
        """A first worker does some of the work; then the broker freezes and
        ``meanwhile(worker)`` runs; the broker resumes, the worker is stopped."""
        first = self.worker("first")
        try:
            first.wait_ready(timeout=90)
            self.wait_for_events(750)
            self.broker.pause()
            try:
                result = meanwhile(first)
            finally:
                self.broker.resume()
        finally:
            first.stop()
        return first, result

    def finish(self) -> None:
        """A fresh worker takes over; every request ends accepted."""
        second = self.worker("second")
        try:
            second.wait_ready(timeout=90)
            accepted = AllAccepted(self.wanted)
            try:
                read_until(
                    self.broker.bootstrap,
                    [self.topics("notify.events")],
                    accepted,
                    timeout=240,
                )
            except AssertionError as exc:
                group = Settings(app_id=self.run).group_id
                where = "; ".join(
                    f"{name}: "
                    f"{group_positions(self.broker.bootstrap, group, self.topics(name))}"
                    for name in ("notify.requests.critical", "notify.accepted.critical")
                )
                raise AssertionError(
                    f"{exc}; committed/end {where}\n"
                    f"{second.log_lines(*WorkerProcess.READING_MARKS)}"
                ) from exc
        finally:
            second.stop()


def test_failed_produce_stops_the_worker_and_loses_nothing(
    tmp_path: Path, topics: Topics
) -> None:
    """The broker freezes mid-stream; sends time out; every request still ends accepted.

    Faust's own behaviour here is to log the failed send, drop the record and
    commit the input offset anyway. The send guard refuses that commit and
    crashes the worker; a restarted worker redoes the uncommitted input. The
    records in flight are on both produce paths: the batch path's (events,
    jobs, changelogs) and Faust's.
    """
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        run = Run(broker, topics, tmp_path)
        first, code = run.frozen(lambda worker: worker.wait_exit(timeout=60))
        log = first.log_path.read_text(errors="replace")
        assert code != 0, first.log_tail()
        assert "produce failed" in log
        assert "refusing further offset commits" in log
        run.finish()


def test_a_worker_killed_before_its_batches_are_acknowledged_loses_nothing(
    tmp_path: Path, topics: Topics
) -> None:
    """The broker freezes, so the batches a worker handed to its client wait
    for their acknowledgement; the worker is SIGKILLed then. Its input
    offsets were not committed past them: a fresh worker redoes that input,
    and every request ends accepted."""
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        run = Run(broker, topics, tmp_path)
        _, code = run.frozen(killed_with_batches_unacknowledged)
        assert code != 0
        run.finish()


def killed_with_batches_unacknowledged(worker: WorkerProcess) -> int:
    """SIGKILL a worker of a frozen broker; its exit code."""
    time.sleep(1.0)  # batches handed over meanwhile wait for acks
    worker.kill()
    return worker.wait_exit(timeout=30)
