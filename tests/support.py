"""Shared test helpers: the broker under test, worker processes, topic readers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from pipeline.admin import ensure_topics
from pipeline.broker import free_port, terminate
from pipeline.settings import Settings
from pipeline.topology import TopicSpec, topic_name
from schemas.records import DeliveryJob

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


#: Behaviours a broker may get wrong, named as ``NOTIFY_BROKER_DEFECTS`` takes
#: them; each is a case of the conformance suite (``tests/broker``). Apache
#: Kafka gets none of them wrong, so the embedded broker declares none.
KNOWN_BROKER_DEFECTS = frozenset(
    {
        # ListOffsets(latest) answers less than the true end offset.
        "list_offsets_latest",
        # cleanup.policy=compact is accepted but never performed.
        "compaction",
        # read_committed consumers see aborted records.
        "transactions",
        # A long-polling Fetch is not answered when records arrive.
        "fetch_long_poll",
    }
)


@dataclass(frozen=True)
class BrokerUnderTest:
    """The broker a test session talks to, and the defects declared for it."""

    url: str
    bootstrap: str
    defects: frozenset[str]
    embedded: bool

    @classmethod
    def embedded_at(cls, url: str, bootstrap: str) -> BrokerUnderTest:
        """The embedded Apache Kafka broker: no defect unless one is declared."""
        return cls(url, bootstrap, declared_defects(), embedded=True)

    @classmethod
    def external(cls, url: str) -> BrokerUnderTest:
        """A broker named by ``NOTIFY_TEST_BROKER_URL``."""
        from pipeline.settings import bootstrap_servers

        return cls(url, bootstrap_servers(url), declared_defects(), embedded=False)


def declared_defects() -> frozenset[str]:
    """The defects ``NOTIFY_BROKER_DEFECTS`` declares (empty by default)."""
    declared = os.environ.get("NOTIFY_BROKER_DEFECTS", "")
    defects = frozenset(part.strip() for part in declared.split(",") if part.strip())
    unknown = defects - KNOWN_BROKER_DEFECTS
    if unknown:
        raise ValueError(
            f"NOTIFY_BROKER_DEFECTS: unknown {sorted(unknown)}; "
            f"known: {sorted(KNOWN_BROKER_DEFECTS)}"
        )
    return defects


def unique(prefix: str) -> str:
    """A name no other test uses: topics, groups, idempotency keys."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class Topics:
    """One test's pipeline topics: the topology's names under a prefix of its own.

    A worker's new consumer group reads its topics from the start; under a
    prefix no other test uses, that is only this test's records.
    """

    prefix: str

    @classmethod
    def fresh(cls) -> Topics:
        """A prefix no other test uses (``NOTIFY_TOPIC_PREFIX`` of its workers)."""
        return cls(unique("t") + ".")

    @cached_property
    def settings(self) -> Settings:
        """Settings naming topics as this test's workers do (built once)."""
        return Settings(topic_prefix=self.prefix)

    def __call__(self, topic: TopicSpec | str) -> str:
        """The broker's name of pipeline topic ``topic`` (e.g. ``notify.events``)."""
        return topic_name(self.settings, topic)

    def create(self, broker_url: str) -> None:
        """Create every pipeline topic of this test on the broker at ``broker_url``."""
        ensure_topics(Settings(broker_url=broker_url, topic_prefix=self.prefix))


def consumer_config(bootstrap: str, group: str, **extra: Any) -> dict[str, Any]:
    """A confluent-kafka consumer config with the short group timeouts."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        # The dev profile's timings: a test's consumer that dies is out of
        # its group in seconds (librdkafka's default session is 45 s).
        "session.timeout.ms": 3000,
        "heartbeat.interval.ms": 500,
        "log_level": 3,
    }
    config.update(extra)
    return config


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    **config: Any,
) -> list[Message]:
    """Produce (key, value) records and return their delivery reports."""
    delivered: list[Message] = []
    errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            errors.append(error)
        else:
            delivered.append(message)

    producer = Producer({"bootstrap.servers": bootstrap, **config})
    for key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} records not delivered"
    assert not errors, errors
    return delivered


def read_until(
    bootstrap: str,
    topics: list[str],
    done: Callable[[list[Message]], bool],
    *,
    timeout: float = 60.0,
    keep: Callable[[Message], bool] = lambda message: True,
) -> list[Message]:
    """Read ``topics`` from the start until ``done(kept messages)`` or the deadline."""
    consumer = Consumer(consumer_config(bootstrap, unique("reader")))
    consumer.subscribe(topics)
    kept: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                if message.error() is None and keep(message):
                    kept.append(message)
            if done(kept):
                return kept
    finally:
        consumer.close()
    raise AssertionError(
        f"condition not met within {timeout}s on {topics}; read {len(kept)}: {done!r}"
    )


def committed_at(bootstrap: str, group: str, topic: str, partition: int) -> int:
    """The group's committed offset on ``topic[partition]`` (below 0 when none:
    the client answers -1001, its invalid offset)."""
    consumer = Consumer(consumer_config(bootstrap, group))
    try:
        [position] = consumer.committed([TopicPartition(topic, partition)], timeout=10)
        return int(position.offset)
    finally:
        consumer.close()


def group_positions(bootstrap: str, group: str, topic: str) -> str:
    """Per partition of ``topic``, the group's committed offset against the
    log's end, for a failure message: where a group stands, or stalled."""
    consumer = Consumer(consumer_config(bootstrap, group))  # never subscribes
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        committed = consumer.committed(tps, timeout=10)
        ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]
    finally:
        consumer.close()
    return ", ".join(
        f"[{tp.partition}] {tp.offset}/{end}"
        for tp, end in zip(committed, ends, strict=True)
    )


def wait_for(
    condition: Callable[[], Any], *, timeout: float, interval: float = 0.1
) -> Any:
    """Poll ``condition`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@dataclass
class WorkerProcess:
    """A real ``faust worker`` subprocess with its own data dir, port and log."""

    app: str
    env: dict[str, str]
    log_path: Path
    web_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start the worker; it binds its web server to loopback only."""
        env = {**os.environ, **self.env}
        env["NOTIFY_WEB_PORT"] = str(self.web_port)
        env["NOTIFY_WEB_HOST"] = "127.0.0.1"
        # Never the sink of a stack running on this machine's default port.
        env.setdefault("NOTIFY_SINK_URL", f"http://127.0.0.1:{free_port()}")
        argv = [
            str(BIN / "faust"),
            "-A",
            self.app,
            "worker",
            "-l",
            "info",
            "--web-port",
            str(self.web_port),
            "--web-host",
            "127.0.0.1",
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def get(self, path: str) -> Any:
        """GET a JSON document from the worker's web server, or None if not up."""
        url = f"http://127.0.0.1:{self.web_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the worker says its tables are recovered and it runs."""

        def ready() -> bool:
            self.assert_alive()
            health = self.get("/health")
            return bool(health and health.get("ready"))

        wait_for(ready, timeout=timeout, interval=0.2)

    def assert_alive(self) -> None:
        """Fail with the log's tail if the worker has exited."""
        assert self.process is not None
        code = self.process.poll()
        if code is not None:
            raise AssertionError(f"worker exited with {code}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the worker's log."""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def log_lines(self, *marks: str) -> str:
        """The lines of the worker's log that hold any of ``marks``."""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(line for line in text if any(m in line for m in marks))

    #: What a worker logs about its group membership and reading positions.
    READING_MARKS = (
        "Joined group",
        "Heartbeat failed",
        "partitions in",
        "partitions took",
        "sought back",
        "handed over already",
    )

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit, no flush."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not stop in time."""
        if self.process is None:
            return None
        return terminate(self.process, timeout)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the worker to exit by itself; return its exit code."""
        assert self.process is not None
        return self.process.wait(timeout)


@dataclass
class SinkProcess:
    """A real ``notify sink`` subprocess: the analytics store's owner."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def reading(
        cls, broker_url: str, topics: Topics, directory: Path, app_id: str, **more: Any
    ) -> SinkProcess:
        """A sink of ``topics``' events, its data and log under ``directory``."""
        env = {
            "NOTIFY_BROKER_URL": broker_url,
            "NOTIFY_APP_ID": app_id,
            "NOTIFY_TOPIC_PREFIX": topics.prefix,
            "NOTIFY_DATA_DIR": str(directory / "sink"),
        }
        return cls(env=env, log_path=directory / "sink.log", **more)

    @property
    def url(self) -> str:
        """Where it answers (what workers get as NOTIFY_SINK_URL)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SinkProcess:
        """Start it on loopback."""
        env = {**os.environ, **self.env}
        env["NOTIFY_SINK_PORT"] = str(self.port)
        env["NOTIFY_WEB_HOST"] = "127.0.0.1"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "notify"), "sink"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def health(self) -> dict[str, Any] | None:
        """Its ``/health`` figures, or None while it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:  # noqa: S310
                return json.loads(answer.read())  # type: ignore[no-any-return]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until it answers (its schema applied, its loop running)."""

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise AssertionError(f"notify sink exited:\n{tail}")
            return self.health() is not None

        wait_for(ready, timeout=timeout, interval=0.2)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (it inserts what it holds) and wait."""
        if self.process is None:
            return None
        return terminate(self.process, timeout)


@contextmanager
def module_worker(
    broker_url: str, directory: Path, name: str
) -> Iterator[tuple[WorkerProcess, Topics]]:
    """One ready worker on topics of its own, for a module's tests that kill
    nothing and each read only their own records; stopped afterwards."""
    topics = Topics.fresh()
    topics.create(broker_url)
    worker = WorkerProcess(
        app="pipeline.app",
        env={
            "NOTIFY_BROKER_URL": broker_url,
            "NOTIFY_APP_ID": unique(name),
            "NOTIFY_DATA_DIR": str(directory / "worker"),
            "NOTIFY_TOPIC_PREFIX": topics.prefix,
        },
        log_path=directory / "worker.log",
    ).start()
    try:
        worker.wait_ready(timeout=90)
        yield worker, topics
    finally:
        worker.stop()


DEV_KEY = "nk_dev_default_key_for_local_use_only"
ADMIN_KEY = "nk_dev_admin_key_for_local_use_only"


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, JSON body and headers."""

    status: int
    body: Any
    headers: dict[str, str]


def call(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = DEV_KEY,
    content_type: str = "application/json",
) -> Reply:
    """One request to a worker's API on loopback (a ``bytes`` body as is)."""
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = (
        body
        if isinstance(body, bytes)
        else (json.dumps(body).encode() if body is not None else None)
    )
    request = urllib.request.Request(  # noqa: S310 - loopback only
        f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
            raw, status, got = response.read(), response.status, response.headers
    except urllib.error.HTTPError as error:
        raw, status, got = error.read(), error.code, error.headers
    return Reply(status, json.loads(raw) if raw else None, dict(got.items()))


def email_job(
    notification_id: str, user_id: str, email: str, order_id: int
) -> tuple[bytes, bytes]:
    """A critical-lane order_shipped email job, keyed by its user as fanout keys it."""
    value = DeliveryJob(
        notification_id=notification_id,
        tenant="default",
        user_id=user_id,
        type="order_shipped",
        priority="transactional",
        lane="critical",
        channel="email",
        data={"order_id": order_id},
        created_at=datetime.now(UTC),
        email=email,
    )
    return f"default/{user_id}".encode(), value.dumps()
