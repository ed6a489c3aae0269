"""A produce that fails is never dropped: the worker stops and its input is redone."""

from __future__ import annotations

from pathlib import Path

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


def test_failed_produce_stops_the_worker_and_loses_nothing(
    tmp_path: Path, topics: Topics
) -> None:
    """The broker freezes mid-stream; sends time out; every request still ends accepted.

    Faust's own behaviour here is to log the failed send, drop the record and
    commit the input offset anyway. The send guard refuses that commit and
    crashes the worker; a restarted worker redoes the uncommitted input.
    """
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        topics.create(broker.url)
        run = unique("guard")
        keys = [f"{run}-{i}" for i in range(REQUESTS)]
        bodies = [
            orjson.dumps(
                {
                    "idempotency_key": key,
                    "recipient": {"user_id": f"u{i % 97}"},
                    "type": "order_shipped",
                    "data": {"order_id": i},
                }
            )
            for i, key in enumerate(keys)
        ]
        produce(
            broker.bootstrap,
            topics("notify.requests.critical"),
            [(f"u{i % 97}".encode(), body) for i, body in enumerate(bodies)],
            **{"linger.ms": 20},
        )
        env = {
            "NOTIFY_BROKER_URL": broker.url,
            "NOTIFY_APP_ID": run,
            "NOTIFY_TOPIC_PREFIX": topics.prefix,
            "NOTIFY_BROKER_REQUEST_TIMEOUT": "2",
        }
        first = WorkerProcess(
            "pipeline.app",
            {**env, "NOTIFY_DATA_DIR": str(tmp_path / "first")},
            tmp_path / "first.log",
        ).start()
        try:
            first.wait_ready(timeout=90)
            read_until(
                broker.bootstrap,
                [topics("notify.events")],
                lambda kept: len(kept) >= 750,
                timeout=90,
            )
            broker.pause()
            try:
                code = first.wait_exit(timeout=60)
            finally:
                broker.resume()
        finally:
            first.stop()
        log = first.log_path.read_text(errors="replace")
        assert code != 0, first.log_tail()
        assert "produce failed" in log
        assert "refusing further offset commits" in log

        second = WorkerProcess(
            "pipeline.app",
            {**env, "NOTIFY_DATA_DIR": str(tmp_path / "second")},
            tmp_path / "second.log",
        ).start()
        wanted = {
            notification_id("default", key, f"u{i % 97}", "critical")
            for i, key in enumerate(keys)
        }
        try:
            second.wait_ready(timeout=90)

            accepted = AllAccepted(wanted)
            try:
                read_until(
                    broker.bootstrap, [topics("notify.events")], accepted, timeout=240
                )
            except AssertionError as exc:
                group = Settings(app_id=run).group_id
                where = "; ".join(
                    f"{name}: {group_positions(broker.bootstrap, group, topics(name))}"
                    for name in ("notify.requests.critical", "notify.accepted.critical")
                )
                raise AssertionError(
                    f"{exc}; committed/end {where}\n"
                    f"{second.log_lines(*WorkerProcess.READING_MARKS)}"
                ) from exc
        finally:
            second.stop()
