"""The no-loss proof under fire: the whole chain on a three-broker cluster
while workers are SIGKILLed and a broker dies, then ``notify reconcile``.

The production shape on one machine:

- an Apache Kafka cluster of three nodes started by the project
  (``EmbeddedCluster``): every topic with three replicas and
  ``min.insync.replicas=2``; every producer (the workers', the load's, the
  sink's) writes with ``acks=all``;
- the provider emulators, injecting 5xx answers and timeouts (a call that
  hangs past the worker's provider timeout, then fails);
- ``notify sink`` writing ``notify.events`` into chDB;
- two workers of one deployment (every lane); the *steady* one keeps
  running, the *victim* is SIGKILLed every few seconds of its being ready
  and restarted on its own data dir, as a supervisor would;
- a user population with email, phone, FCM and APNs devices in varied
  mixes, some opted out of everything, some of SMS, some of social types.

N requests (100,000 by default) go in at a steady rate, half produced onto
the request topics, half POSTed to the API (to either worker: a refused or
broken connection is retried on the other with the same idempotency key, as
a client would). A mix of types reaches every channel (push over APNs and
FCM, email, SMS, in-app), critical and promotional alike. One broker is
SIGKILLed and brought back on its data during the load.

When the load is in and every notification has settled, the run checks:

- every request made is accepted (its deterministic notification id is in
  ``notif_events``);
- ``notify reconcile`` (the command, as an operator runs it) finds nothing
  missing or doubled and exits 0;
- no API request was refused;

and prints the outcomes, the kills, the duplicate provider calls the
emulators saw (the same idempotency id and target accepted twice: a call
whose result was not recorded before a SIGKILL is made again, by design) and
the accepted→sent latency (p50, p99, worst). It exits non-zero if a check
fails.
Bounded in count and time; everything binds loopback and stops itself.

    python -m benchmarks.chaos [--requests 100000] [--users 2000]
        [--rate 400] [--worker-kills N] [--broker-kills 1]
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import os
import random
import shutil
import subprocess  # noqa: S404 - our own processes
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer

from benchmarks.run import REPO, _start, _stop, _stop_on_signals
from pipeline.admin import ensure_topics
from pipeline.analytics import reconcile as check
from pipeline.analytics.queries import read_query
from pipeline.broker import EmbeddedCluster, free_ports
from pipeline.devstack import healthy
from pipeline.emulators.stack import EmulatorStack
from pipeline.ids import notification_id
from pipeline.partitioning import partition_for
from pipeline.settings import Settings
from pipeline.topology import DEVICES, PREFERENCES, PROFILES, REQUESTS, topic_name
from schemas.records import DeviceToken, Preferences, UserProfile

BIN = Path(sys.executable).parent
TENANT = "default"
#: The request mix, by n % 10: (type, priority, data). Every channel is
#: reached: push and email (order_shipped, campaign), email and SMS
#: (password_reset), push and in-app (comment_reply).
MIX: list[tuple[str, str]] = [
    ("order_shipped", "transactional"),
    ("order_shipped", "transactional"),
    ("order_shipped", "transactional"),
    ("password_reset", "critical"),
    ("password_reset", "critical"),
    ("comment_reply", "transactional"),
    ("comment_reply", "transactional"),
    ("comment_reply", "transactional"),
    ("campaign", "promotional"),
    ("campaign", "promotional"),
]
DATA = {
    "order_shipped": lambda n: {
        "order_id": n,
        "carrier": "UPS",
        "estimated_delivery": "Tuesday",
        "tracking_url": f"https://shop.example.com/track/{n}",
    },
    "password_reset": lambda n: {
        "reset_url": f"https://app.example.com/reset/{n:06d}",
        "code": f"{n % 1000000:06d}",
    },
    "comment_reply": lambda n: {"author": "Bob", "excerpt": f"Reply number {n}"},
    "campaign": lambda n: {"headline": "Winter sale", "message": "20% off."},
}
#: The emulators' faults: (emulator, fault, rate). 5xx answers and timeouts.
FAULTS = [
    ("apns", "InternalServerError", 0.03),
    ("fcm", "timeout", 0.01),
    ("sendgrid", "503", 0.03),
    ("twilio", "timeout", 0.02),
]
#: API clients posting at once.
API_CLIENTS = 16
#: Seconds a worker waits for a provider; a "timeout" fault hangs longer.
PROVIDER_TIMEOUT = 2.0


@dataclass
class Plan:
    """What one run does."""

    requests: int = 100_000
    users: int = 2_000
    rate: float = 400.0  # requests/s offered, both doors together
    worker_kills: int | None = None  # None: every few seconds while loading
    kill_after: tuple[float, float] = (3.0, 8.0)  # s after the victim is ready
    broker_kills: int = 1
    broker_down: float = 8.0  # s a killed broker stays down
    settle: float = 600.0  # s to wait for every outcome after the load
    seed: int = 1042


@dataclass
class Result:
    """What one run saw."""

    requests: int = 0
    accepted: int = 0
    not_accepted: list[str] = field(default_factory=list)
    api_posts: int = 0
    api_retries: int = 0
    api_refused: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    sent_by_channel: Counter[str] = field(default_factory=Counter)
    missing: int = 0
    doubled: int = 0
    pending: int = 0
    reconcile_exit: int | None = None
    reconcile_output: str = ""
    duplicates: dict[str, int] = field(default_factory=dict)
    provider_calls: dict[str, int] = field(default_factory=dict)
    worker_kills: int = 0
    broker_kills: int = 0
    unplanned_exits: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    load_seconds: float = 0.0
    settle_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Every request accepted, every notification with exactly one
        outcome per channel, no API request refused. Duplicate provider calls
        are counted, not failed: a call whose result was not recorded before
        a SIGKILL is made again, with the same provider idempotency id."""
        return (
            not self.not_accepted
            and self.reconcile_exit == 0
            and not self.missing
            and not self.doubled
            and not self.api_refused
        )

    def lines(self) -> list[str]:
        """The report, one figure a line."""
        latency = self.latency_ms
        return [
            f"requests               {self.requests:,} ({self.api_posts:,} via the "
            f"API, {self.api_retries:,} retried on the other worker)",
            f"accepted               {self.accepted:,}"
            + (
                f"  NOT accepted: {len(self.not_accepted):,}"
                if self.not_accepted
                else ""
            ),
            "outcomes               "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(self.outcomes.items())),
            "sent by channel        "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(self.sent_by_channel.items())),
            f"reconcile              missing {self.missing}, doubled {self.doubled}, "
            f"pending {self.pending}; `notify reconcile` exit {self.reconcile_exit}",
            "provider calls         "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(self.provider_calls.items())),
            f"duplicate calls        {sum(self.duplicates.values())} "
            + str(dict(sorted(self.duplicates.items()))),
            f"kills                  {self.worker_kills} worker SIGKILLs, "
            f"{self.broker_kills} broker SIGKILLs, {self.unplanned_exits} "
            "unplanned worker exits (restarted)",
            f"accepted -> sent       p50 {latency.get('p50', 0):,.0f} ms, "
            f"p99 {latency.get('p99', 0):,.0f} ms, worst {latency.get('max', 0):,.0f} ms",
            f"time                   load {self.load_seconds:.1f} s, settled "
            f"{self.settle_seconds:.1f} s after it",
            "NOTHING LOST, NOTHING DOUBLED" if self.ok else "FAILED",
        ]


def user_of(n: int, users: int) -> str:
    """The n-th request's recipient."""
    return f"c{n % users:05d}"


def request_body(n: int, users: int, run: str) -> dict[str, Any]:
    """The n-th request of the run (seed 002's body)."""
    kind, priority = MIX[n % len(MIX)]
    body: dict[str, Any] = {
        "idempotency_key": f"{run}-{n}",
        "recipient": {"user_id": user_of(n, users)},
        "type": kind,
        "priority": priority,
        "data": DATA[kind](n),
    }
    if kind == "campaign":
        body["campaign_id"] = f"{run}-c"
    return body


def lane_of(body: dict[str, Any]) -> str:
    """The lane the API and ingest put a request on."""
    return "bulk" if body["priority"] == "promotional" else "critical"


def expected_id(body: dict[str, Any]) -> str:
    """The notification id a request gets, wherever it came in."""
    return notification_id(
        TENANT, body["idempotency_key"], body["recipient"]["user_id"], lane_of(body)
    )


def population(users: int) -> Iterator[tuple[str, bytes, bytes, int | None]]:
    """Profiles, devices and preferences of the users, as (topic spec name,
    key, value, partition); every fourth user gets no phone, every other an
    FCM device, every third an APNs one."""
    for n in range(users):
        uid = user_of(n, users)
        key = f"{TENANT}/{uid}".encode()
        phone = None if n % 4 == 3 else f"+1415{n:07d}"
        profile = UserProfile(user_id=uid, email=f"{uid}@example.com", phone=phone)
        yield "profiles", key, profile.dumps(), None
        devices = []
        if n % 2 == 0:
            devices.append(("fcm", f"chaos{n:06d}" + "f" * 140))
        if n % 3 == 0:
            devices.append(("apns", f"{n:064x}"))
        for platform, token in devices:
            device = DeviceToken(user_id=uid, token=token, platform=platform)
            yield "devices", f"{TENANT}/{uid}#{token}".encode(), device.dumps(), -1
        opted = n % 10
        if opted in (1, 3, 5):
            preferences = Preferences(
                user_id=uid,
                enabled=opted != 1,  # 1: everything but critical off
                channels={"sms": False} if opted == 3 else {},
                types={"social": False} if opted == 5 else {},
            )
            yield "preferences", key, preferences.dumps(), None


def produce_population(bootstrap: str, settings: Settings, users: int) -> None:
    """Write the users' state onto its topics (devices on their user's
    partition, as the API puts them)."""
    topics = {
        "profiles": topic_name(settings, PROFILES),
        "devices": topic_name(settings, DEVICES),
        "preferences": topic_name(settings, PREFERENCES),
    }
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "partitioner": "murmur2_random",  # Kafka's, as the workers expect
        }
    )
    for spec, key, value, partition in population(users):
        if partition == -1:
            user_key = key.split(b"#", 1)[0]
            partition = partition_for(user_key, settings.topic_partitions)
        extra = {} if partition is None else {"partition": partition}
        producer.produce(topics[spec], value, key, **extra)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("the user population was not acknowledged")


def say(line: str) -> None:
    """Print a line now (the run is long; a pipe would hold it)."""
    print(line, flush=True)


class Worker:
    """One ``faust worker`` of the deployment, restartable on its data dir."""

    def __init__(self, name: str, workdir: Path, port: int) -> None:
        self.name = name
        self.port = port
        self.data_dir = workdir / name
        self.log = workdir / f"{name}.log"
        self.env: dict[str, str] = {}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        """Start it (again, with the environment it had if none is given)."""
        if env is not None:
            self.env = {
                **env,
                "NOTIFY_DATA_DIR": str(self.data_dir),
                "NOTIFY_WEB_PORT": str(self.port),
            }
        argv = [sys.executable, "-m", "faust", "-A", "pipeline.app", "worker"]
        level = os.environ.get("CHAOS_WORKER_LOGLEVEL", "warn")
        self.process = _start([*argv, "--loglevel", level], self.env, self.log)

    @property
    def exited(self) -> bool:
        return self.process is None or self.process.poll() is not None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit, no flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, 30)

    def ready(self) -> bool:
        """Its ``/health`` says ready (tables recovered, agents running)."""
        return healthy(self.port)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.exited:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"worker {self.name} exited:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {self.name} not ready in {timeout:.0f} s")
            time.sleep(0.2)


class ApiClient:
    """POSTs requests to either worker; a refused or broken connection, a
    timeout or a 503 is retried on the other worker with the same body."""

    def __init__(self, workers: list[Worker], key: str, result: Result) -> None:
        self.workers = workers
        self.key = key
        self.result = result
        self.lock = threading.Lock()
        self.local = threading.local()  # each thread its own connections

    def post(self, body: dict[str, Any], first: int, deadline: float) -> None:
        payload = orjson.dumps(body)
        for attempt in itertools.count():
            worker = self.workers[(first + attempt) % len(self.workers)]
            if attempt:
                with self.lock:
                    self.result.api_retries += 1
                time.sleep(min(0.05 * attempt, 1.0))
            if time.monotonic() > deadline:
                with self.lock:
                    self.result.api_refused["timed out"] += 1
                return
            status, answer = self._send(worker.port, payload)
            if status in (200, 201, 202):
                return
            if status is None or status in (429, 502, 503, 504):
                continue  # down, starting or busy: the other one, or again
            with self.lock:
                self.result.api_refused[f"{status} {answer[:200]!r}"] += 1
            return

    def _send(self, port: int, payload: bytes) -> tuple[int | None, bytes]:
        connections = self.local.__dict__.setdefault("connections", {})
        connection = connections.get(port)
        if connection is None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connections[port] = connection
        try:
            connection.request(
                "POST",
                "/v1/notifications",
                payload,
                {
                    "Authorization": f"Bearer {self.key}",
                    "Content-Type": "application/json",
                },
            )
            answer = connection.getresponse()
            return answer.status, answer.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            connections.pop(port, None)
            return None, b""


class Chaos:
    """One run: start everything, load, kill, settle, check, stop."""

    def __init__(self, plan: Plan, workdir: Path, log: Any = say) -> None:
        self.plan = plan
        self.workdir = workdir
        self.say = log
        self.result = Result(requests=plan.requests)
        self.run_id = f"chaos{int(time.time())}"
        self.rng = random.Random(plan.seed)  # noqa: S311 - a schedule, not a secret
        self.cluster = EmbeddedCluster(3, data_dir=workdir / "kafka")
        self.emulators: EmulatorStack | None = None
        self.sink: subprocess.Popen[bytes] | None = None
        self.sink_port = 0
        self.workers: list[Worker] = []
        self.loading = threading.Event()
        self.stop_chaos = threading.Event()
        self.errors: list[BaseException] = []

    # -- the stack ----------------------------------------------------------

    def settings(self) -> Settings:
        return Settings(
            broker_url=self.cluster.url,
            topic_replication_factor=3,
            sink_url=f"http://127.0.0.1:{self.sink_port}",
        )

    def start(self) -> None:
        self.say("starting a three-broker Kafka cluster ...")
        self.cluster.start()
        ports = free_ports(3)
        self.sink_port = ports[0]
        settings = self.settings()
        ensure_topics(settings)
        self.workers = [
            Worker(name, self.workdir, port)
            for name, port in zip(("steady", "victim"), ports[1:], strict=True)
        ]
        # Receipts and webhooks go to the worker that is never killed.
        self.emulators = EmulatorStack(
            self.workdir / "emulators", f"http://127.0.0.1:{ports[1]}"
        ).start()
        for emulator, fault, rate in FAULTS:
            getattr(self.emulators, emulator).faults.update(
                error=fault,
                error_rate=rate,
                timeout_hold=PROVIDER_TIMEOUT + 1.0,
                seed=self.plan.seed,
            )
        env = {
            **os.environ,
            **self.emulators.env(),
            "NOTIFY_BROKER_URL": self.cluster.url,
            "NOTIFY_TOPIC_REPLICATION_FACTOR": "3",
            "NOTIFY_APP_ID": self.run_id,
            "NOTIFY_WEB_HOST": "127.0.0.1",
            "NOTIFY_EMAIL_PROVIDERS": "sendgrid",
            "NOTIFY_PROVIDER_TIMEOUT": str(PROVIDER_TIMEOUT),
            "NOTIFY_SINK_URL": settings.resolved_sink_url,
            "NOTIFY_SINK_PORT": str(self.sink_port),
        }
        self.env = env
        self.say("starting notify sink, two workers, the user population ...")
        self.sink = _start(
            [str(BIN / "notify"), "sink"],
            {**env, "NOTIFY_DATA_DIR": str(self.workdir / "sink")},
            self.workdir / "sink.log",
        )
        for worker in self.workers:
            worker.start(env)
        produce_population(self.cluster.bootstrap, settings, self.plan.users)
        for worker in self.workers:
            worker.wait_ready(180)

    def stop(self) -> None:
        self.stop_chaos.set()
        for worker in self.workers:
            worker.stop()
        if self.sink is not None:
            _stop(self.sink, 30)
        if self.emulators is not None:
            self.emulators.stop()
        self.cluster.stop()

    # -- the load -----------------------------------------------------------

    def load(self) -> None:
        """Every request, half on the topics, half through the API, paced."""
        settings = self.settings()
        producer = Producer(
            {
                "bootstrap.servers": self.cluster.bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "partitioner": "murmur2_random",
                "linger.ms": 5,
            }
        )
        failed: list[KafkaError] = []

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                failed.append(error)

        api = ApiClient(
            self.workers,
            Settings().dev_api_key.get_secret_value(),
            self.result,
        )
        started = time.monotonic()
        deadline = started + self.plan.requests / self.plan.rate * 4 + 300
        # Clients of the API are many and wait each for their answer: a slow
        # answer (a rebalance) holds one of them, not the whole load.
        clients = ThreadPoolExecutor(API_CLIENTS, thread_name_prefix="api")
        posted = []
        for n in range(self.plan.requests):
            due = started + n / self.plan.rate
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            body = request_body(n, self.plan.users, self.run_id)
            if n % 2:
                self.result.api_posts += 1
                posted.append(clients.submit(api.post, body, n // 2, deadline))
            else:
                topic = topic_name(settings, REQUESTS[lane_of(body)])
                key = f"{TENANT}/{body['recipient']['user_id']}".encode()
                producer.produce(topic, orjson.dumps(body), key, on_delivery=delivered)
                producer.poll(0)
            if n % 10_000 == 9_999:
                self.say(f"  {n + 1:,} requests in, {time.monotonic() - started:.0f} s")
        clients.shutdown(wait=True)
        for future in posted:
            future.result()
        if producer.flush(120) or failed:
            raise RuntimeError(f"requests not acknowledged: {failed[:3]}")
        self.result.load_seconds = time.monotonic() - started

    # -- the chaos ----------------------------------------------------------

    def supervise(self) -> None:
        """Kill the victim every few seconds of its being ready, restart it;
        restart any worker that exits by itself (a supervisor would)."""
        kills_left = self.plan.worker_kills
        victim = self.workers[1]
        next_kill: float | None = None
        while not self.stop_chaos.wait(0.2):
            for worker in self.workers:
                if worker.exited:
                    self.result.unplanned_exits += 1
                    self.say(f"  worker {worker.name} exited by itself; restarting")
                    worker.start()
            wanted = kills_left is None and self.loading.is_set()
            wanted = wanted or bool(kills_left)
            if not wanted:
                continue
            if next_kill is None:
                if victim.ready():
                    next_kill = time.monotonic() + self.rng.uniform(
                        *self.plan.kill_after
                    )
                continue
            if time.monotonic() >= next_kill:
                victim.kill()
                self.result.worker_kills += 1
                if kills_left is not None:
                    kills_left -= 1
                time.sleep(0.5)
                victim.start()
                next_kill = None

    def break_brokers(self) -> None:
        """Kill one broker at a time, spread over the load; bring each back."""
        for k in range(self.plan.broker_kills):
            share = (k + 1) / (self.plan.broker_kills + 1)
            at = self.plan.requests / self.plan.rate * share
            if self.stop_chaos.wait(at if k == 0 else at / (k + 1)):
                return
            node = self.rng.randrange(len(self.cluster.nodes))
            self.say(f"  SIGKILL broker {node + 1}")
            self.cluster.kill(node)
            self.result.broker_kills += 1
            if self.stop_chaos.wait(self.plan.broker_down):
                return
            self.cluster.restart(node)
            self.say(f"  broker {node + 1} back")
        # A process dies with the thread that started it (PR_SET_PDEATHSIG):
        # this one outlives the broker it restarted.
        self.stop_chaos.wait()

    def _thread(self, target: Any, name: str) -> threading.Thread:
        def guarded() -> None:
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 - reported by run()
                self.errors.append(exc)

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        return thread

    # -- the checks ---------------------------------------------------------

    def query(self, sql: str) -> list[dict[str, Any]]:
        answer = read_query(self.settings(), sql, "JSON")
        return orjson.loads(answer)["data"]  # type: ignore[no-any-return]

    def reconciled(self) -> check.Reconciliation:
        rows = self.query(check.reconcile_sql(24 * 3600, 0, TENANT))
        return check.classify(rows, datetime.now(UTC))

    def settle(self) -> None:
        """Until every notification has its outcome (or the time is up)."""
        started = time.monotonic()
        expected = self.plan.requests
        last = ""
        while time.monotonic() - started < self.plan.settle:
            accepted = self.query(
                "SELECT uniqExact(notification_id) AS n FROM notif_events "
                "WHERE event_type = 'accepted'"
            )[0]["n"]
            found = self.reconciled()
            state = (
                f"  accepted {int(accepted):,}/{expected:,}, missing "
                f"{len(found.missing)}, pending {len(found.pending)}"
            )
            if state != last:
                self.say(state)
                last = state
            if int(accepted) >= expected and not found.missing and not found.pending:
                break
            time.sleep(5)
        self.result.settle_seconds = time.monotonic() - started

    def check(self) -> None:
        """Every figure of the result, from ClickHouse and the emulators."""
        ids = {
            expected_id(request_body(n, self.plan.users, self.run_id))
            for n in range(self.plan.requests)
        }
        seen = {
            row["notification_id"]
            for row in self.query(
                "SELECT DISTINCT notification_id FROM notif_events "
                "WHERE event_type = 'accepted'"
            )
        }
        self.result.accepted = len(ids & seen)
        self.result.not_accepted = sorted(ids - seen)
        found = self.reconciled()
        self.result.missing = len(found.missing)
        self.result.doubled = len(found.doubled)
        self.result.pending = len(found.pending)
        self.result.outcomes = Counter(
            {
                row["event_type"]: int(row["n"])
                for row in self.query(
                    "SELECT event_type, uniqExact(notification_id, channel) AS n "
                    "FROM notif_events GROUP BY event_type"
                )
            }
        )
        self.result.sent_by_channel = Counter(
            {
                row["channel"]: int(row["n"])
                for row in self.query(
                    "SELECT channel, uniqExact(notification_id) AS n "
                    "FROM notif_events WHERE event_type = 'sent' GROUP BY channel"
                )
            }
        )
        latency = self.query(
            "SELECT quantile(0.5)(d) AS p50, quantile(0.99)(d) AS p99, max(d) AS max "
            "FROM (SELECT s.notification_id, s.channel, "
            "dateDiff('millisecond', any(a.at), min(s.ts)) AS d "
            "FROM notif_events AS s INNER JOIN (SELECT notification_id, "
            "min(ts) AS at FROM notif_events WHERE event_type = 'accepted' "
            "GROUP BY notification_id) AS a USING notification_id "
            "WHERE s.event_type = 'sent' GROUP BY s.notification_id, s.channel)"
        )[0]
        self.result.latency_ms = {k: float(v or 0) for k, v in latency.items()}
        assert self.emulators is not None
        for name in ("apns", "fcm", "sendgrid", "twilio"):
            calls = getattr(self.emulators, name).calls
            self.result.duplicates[name] = calls.duplicates
            self.result.provider_calls[name] = calls.delivered
        done = subprocess.run(  # noqa: S603 - our own command
            [str(BIN / "notify"), "reconcile", "--since", "1d", "--grace", "1s"],
            cwd=REPO,
            env={**self.env, "NOTIFY_DATA_DIR": str(self.workdir / "cli")},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        self.result.reconcile_exit = done.returncode
        self.result.reconcile_output = (done.stdout + done.stderr)[-4000:]

    def run(self) -> Result:
        """The whole run; stopped whatever happens."""
        try:
            self.start()
            threads = [
                self._thread(self.supervise, "supervise"),
                self._thread(self.break_brokers, "break-brokers"),
            ]
            self.loading.set()
            self.say(
                f"loading {self.plan.requests:,} requests at {self.plan.rate:.0f}/s"
            )
            self.load()
            self.loading.clear()
            self.say("load in; waiting for every outcome ...")
            # Planned kills not done yet during the load are done now.
            deadline = time.monotonic() + 300
            while self.result.broker_kills < self.plan.broker_kills or (
                self.plan.worker_kills is not None
                and self.result.worker_kills < self.plan.worker_kills
            ):
                if time.monotonic() > deadline or self.errors:
                    break
                time.sleep(0.5)
            self.workers[1].wait_ready(180)
            while not self.cluster_whole():
                time.sleep(0.5)
            self.settle()
            self.stop_chaos.set()
            for thread in threads:
                thread.join(120)
            if self.errors:
                raise self.errors[0]
            self.check()
        finally:
            self.stop()
        return self.result

    def cluster_whole(self) -> bool:
        return all(node.running for node in self.cluster.nodes)


def main(argv: list[str] | None = None) -> int:
    """Run it and print the report; exit 1 unless nothing was lost."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=400.0)
    parser.add_argument("--worker-kills", type=int, default=None)
    parser.add_argument("--broker-kills", type=int, default=1)
    parser.add_argument(
        "--settle",
        type=float,
        default=Plan.settle,
        help="seconds to wait for every outcome once the load is in",
    )
    args = parser.parse_args(argv)
    plan = Plan(
        requests=args.requests,
        users=args.users,
        rate=args.rate,
        worker_kills=args.worker_kills,
        broker_kills=args.broker_kills,
        settle=args.settle,
    )
    _stop_on_signals()
    directory = Path(tempfile.mkdtemp(prefix="notify-chaos-"))
    result = Chaos(plan, directory, log=say).run()
    print()
    for line in result.lines():
        print(line)
    if result.reconcile_exit:
        print(result.reconcile_output)
    if not result.ok:
        print(f"logs kept in {directory}")
        return 1
    shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
