"""The send stage against emulators that answer at once, and critical latency
under a bulk backlog.

Four measurements; all but the third on a fresh embedded broker with one
real worker of ``pipeline.app``:

1. **deliveries/s**: N delivery jobs (half push over FCM, half email over
   SendGrid) are preloaded onto the critical lane's delivery topics, drained
   by one worker; the window runs from the first provider call the emulators see to the N-th,
   and the figure is printed as a ratio to the raw floor loop and to the
   single-hop Faust relay, both measured in the same run
   (``benchmarks.run``'s contenders);
2. **whole chain**: N requests (users with an email address and an FCM
   device; one email or one push each) go through ingest → fanout → send on
   one worker; notifications/s from the first provider call to the last;
3. **provider calls alone**: the same mix of FCM and SendGrid calls made by
   the worker's own senders in a process with no Kafka at all
   (``benchmarks.provider_calls``); with the relay's CPU per event it gives
   the ceiling of any chain of Faust agents that makes the two hops and the
   one provider call a notification needs (request → job, job → ledger);
4. **critical p99**: a backlog of bulk-lane email jobs (200,000 by default)
   is preloaded, one worker per lane started (lanes deploy apart, as in
   ``docker-compose.yml``), and while the bulk worker drains the backlog
   critical requests go in at a steady rate through the whole chain (ingest
   → fanout → send); each one's latency runs from its produce to the
   emulator accepting its email.

Everything binds loopback, is bounded in count and time, and stops itself.

    python -m benchmarks.send [--jobs 20000] [--backlog 200000] [--critical 600]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess  # noqa: S404 - our own workers
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from benchmarks.kafka import produce
from benchmarks.run import BY_NAME, Bench, Outcome, _start, _stop
from benchmarks.workload import process_cpu_seconds
from pipeline.admin import ensure_topics
from pipeline.broker import EmbeddedBroker, free_port
from pipeline.emulators.stack import EmulatorStack
from pipeline.ids import notification_id
from pipeline.partitioning import partition_for
from pipeline.providers.base import message_id_for
from pipeline.settings import Settings, get_settings
from pipeline.topology import (
    DELIVERIES,
    DEVICES,
    PROFILES,
    REQUESTS,
    TopicSpec,
    topic_name,
)
from schemas.records import DeliveryJob, DeviceToken, UserProfile

USERS = 500


def pipeline_topic(spec: TopicSpec) -> str:
    """``spec`` as the workers name it: under NOTIFY_TOPIC_PREFIX, if one is set."""
    return topic_name(get_settings(), spec)


def user(n: int) -> str:
    """The n-th benchmark user."""
    return f"b{n % USERS:04d}"


def fcm_token(n: int) -> str:
    """A registration token shaped like FCM's, one per user."""
    return f"bench{n % USERS:04d}" + "x" * 40


def job(n: int, lane: str, channel: str, run: str) -> tuple[bytes, bytes]:
    """The n-th delivery job, keyed by its user like fanout keys them."""
    value = delivery_job(n, lane, channel, run)
    return f"default/{value.user_id}".encode(), value.dumps()


def delivery_job(n: int, lane: str, channel: str, run: str) -> DeliveryJob:
    """The n-th delivery job: an email or a push to the n-th user's device."""
    uid = user(n)
    return DeliveryJob(
        notification_id=notification_id("default", f"{run}-{n}", uid, lane),
        tenant="default",
        user_id=uid,
        type="order_shipped",
        priority="transactional" if lane == "critical" else "promotional",
        lane=lane,
        channel=channel,
        data={"order_id": n, "eta": "Tue"},
        created_at=datetime.now(UTC),
        email=f"{uid}@example.com" if channel == "email" else None,
        devices=(
            [DeviceToken(user_id=uid, token=fcm_token(n), platform="fcm")]
            if channel == "push"
            else []
        ),
    )


def producer(bootstrap: str, linger_ms: int = 20) -> Producer:
    """A murmur2 producer, so records land on their user's partition."""
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": linger_ms,
            "partitioner": "murmur2_random",
            "log_level": 3,
        }
    )


def send_all(bootstrap: str, records: Iterable[tuple[str, bytes, bytes]]) -> int:
    """Produce (topic, key, value) records and wait for every ack."""
    errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            errors.append(error)

    client = producer(bootstrap)
    count = 0
    for topic, key, value in records:
        produce(client, topic, key, value, on_delivery)
        client.poll(0)
        count += 1
    if client.flush(120) or errors:
        raise RuntimeError(f"preload failed: {errors[:3]}")
    return count


class Stack:
    """A broker, the emulators and one worker, all stopped on exit."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker = EmbeddedBroker(log_path=self.workdir / "broker.log")
        self.emulators = EmulatorStack(self.workdir / "emulators")
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Stack:
        self.broker.start()
        gc.collect()
        ensure_topics(Settings(broker_url=self.broker.url))
        self.emulators.start()
        return self

    def start_worker(self, name: str = "worker", **env: str) -> int:
        """A worker with the project's settings, sending through the emulators."""
        full = {
            **os.environ,
            **self.emulators.env(),
            "NOTIFY_BROKER_URL": self.broker.url,
            "NOTIFY_APP_ID": f"bench-{self.workdir.name}",
            "NOTIFY_DATA_DIR": str(self.workdir / name),
            "NOTIFY_WEB_HOST": "127.0.0.1",
            "NOTIFY_WEB_PORT": str(free_port()),
            "NOTIFY_EMAIL_PROVIDERS": "sendgrid",
            **env,
        }
        argv = [sys.executable, "-m", "faust", "-A", "pipeline.app", "worker"]
        argv += ["--loglevel", "warn"]
        process = _start(argv, full, self.workdir / f"{name}.log")
        self.processes.append(process)
        return process.pid

    def alive(self) -> None:
        """Raise if a worker died."""
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"a worker exited; see {self.workdir}/*.log")

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            _stop(process)
        self.emulators.stop()
        self.broker.stop()


def wait(condition: object, deadline: float, stack: Stack, what: str) -> None:
    """Poll ``condition()`` until true or the deadline."""
    while not condition():  # type: ignore[operator]
        stack.alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def throughput(workdir: Path, jobs: int, timeout: float) -> tuple[float, float]:
    """Deliveries/s through the send stage; and worker CPU µs per delivery."""
    run = f"{int(time.time()) % 100000:05d}"
    with Stack(workdir, "send-throughput") as stack:
        half = jobs // 2
        send_all(
            stack.broker.bootstrap,
            (
                (
                    pipeline_topic(DELIVERIES[ch, "critical"]),
                    *job(n, "critical", ch, run),
                )
                for n in range(jobs)
                for ch in ["push" if n < half else "email"]
            ),
        )
        fcm, sendgrid = stack.emulators.fcm.calls, stack.emulators.sendgrid.calls
        pid = stack.start_worker(NOTIFY_LANES="critical")
        deadline = time.monotonic() + timeout
        wait(lambda: fcm.delivered + sendgrid.delivered > 0, deadline, stack, "start")
        cpu0 = process_cpu_seconds(pid)
        first = min(c.at for c in [*fcm.calls[:1], *sendgrid.calls[:1]])
        wait(
            lambda: fcm.delivered + sendgrid.delivered >= jobs,
            deadline,
            stack,
            "every delivery",
        )
        cpu = process_cpu_seconds(pid) - cpu0
        last = max(c.at for c in [*fcm.calls, *sendgrid.calls])
        rate = jobs / (last - first)
        duplicates = fcm.duplicates + sendgrid.duplicates
        if duplicates:
            print(f"  note: {duplicates} duplicate provider calls")  # noqa: T201
        return rate, cpu / jobs * 1e6


def preload_profiles(bootstrap: str, users: list[str]) -> None:
    """A profile with an email address per user."""
    send_all(
        bootstrap,
        (
            (
                pipeline_topic(PROFILES),
                f"default/{uid}".encode(),
                UserProfile(user_id=uid, email=f"{uid}@example.com").dumps(),
            )
            for uid in users
        ),
    )


def preload_users(bootstrap: str, users: list[str]) -> None:
    """A profile with an email address and an active FCM device per user.

    Devices are keyed per token but live on their user's partition, so they
    are produced to it explicitly (the key's own hash would pick another).
    """
    preload_profiles(bootstrap, users)
    partitions = Settings().topic_partitions
    client = producer(bootstrap)
    for n, uid in enumerate(users):
        device = DeviceToken(user_id=uid, token=fcm_token(n), platform="fcm")
        client.produce(
            pipeline_topic(DEVICES),
            device.dumps(),
            f"default/{uid}#{device.token}".encode(),
            partition=partition_for(f"default/{uid}".encode(), partitions),
        )
        client.poll(0)
    if client.flush(60):
        raise RuntimeError("device preload failed")


def provider_calls(workdir: Path, calls: int, timeout: float) -> tuple[float, float]:
    """Provider calls/s with no Kafka at all, and CPU µs per call.

    ``benchmarks.provider_calls`` runs as its own process against the
    emulators, so its CPU is the client's alone, as a worker's would be.
    """
    emulators = EmulatorStack(workdir / "provider-calls")
    emulators.start()
    try:
        done = subprocess.run(  # noqa: S603 - our own module
            [sys.executable, "-m", "benchmarks.provider_calls", str(calls)],
            env={**os.environ, **emulators.env()},
            capture_output=True,
            timeout=timeout,
            check=True,
        )
    finally:
        emulators.stop()
    result = orjson.loads(done.stdout.splitlines()[-1])
    if result["failed"]:
        raise RuntimeError(f"{result['failed']} provider calls failed")
    return calls / result["wall_s"], result["cpu_s"] / calls * 1e6


def chain_request(n: int, run: str) -> tuple[str, bytes, bytes]:
    """The n-th request of the chain run: one email or one push, alternately."""
    uid = user(n)
    body = {
        "idempotency_key": f"{run}-chain-{n}",
        "recipient": {"user_id": uid},
        "type": "order_shipped",
        "channels": ["push" if n % 2 else "email"],
        "priority": "transactional",
        "data": {"order_id": n, "eta": "Tue"},
    }
    # Keyed as the API keys requests (tenant/user_id, murmur2).
    requests = pipeline_topic(REQUESTS["critical"])
    return requests, f"default/{uid}".encode(), orjson.dumps(body)


def warm_up(stack: Stack, run: str, deadline: float) -> None:
    """Send warm-up requests until an email and a push are delivered.

    The worker folds the preloaded profiles and devices while it starts; a
    request decided before its user's state is read is held
    (``unknown_user``) and looked at again later. So warm-ups go in, a fresh
    one a second, until both channels deliver (the state is read), then the
    stragglers settle, and the measured window holds no held request.
    """
    fcm, sendgrid = stack.emulators.fcm.calls, stack.emulators.sendgrid.calls
    n = 0
    while not (fcm.delivered and sendgrid.delivered):
        if time.monotonic() > deadline:
            raise TimeoutError("timed out waiting for the warm-up requests")
        stack.alive()
        send_all(stack.broker.bootstrap, [chain_request(n, f"{run}-warm{n}")])
        n += 1
        time.sleep(1.0)
    time.sleep(2.0)


def topic_records(bootstrap: str) -> dict[str, int]:
    """Records written so far to each topic: its partitions' end offsets summed."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "records-count"})
    try:
        topics = consumer.list_topics(timeout=10).topics
        return {
            name: sum(
                consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                for p in meta.partitions
            )
            for name, meta in topics.items()
            if not name.startswith("__")
        }
    finally:
        consumer.close()


def chain_throughput(
    workdir: Path,
    requests: int,
    timeout: float,
    watch: Callable[[int], AbstractContextManager[object]] | None = None,
    written: dict[str, float] | None = None,
    worker_env: dict[str, str] | None = None,
) -> tuple[float, float]:
    """Notifications/s through the whole chain, request to provider; CPU µs each.

    One worker runs ingest → fanout → send with RocksDB tables. Warm-up
    requests go first, so the user state is loaded before the window; the
    window runs from the first provider call of the measured requests to
    the last. ``watch(pid)``, if given, is entered for the measured requests
    (a sampling profiler: `benchmarks.profile_chain`). ``written``, if given,
    gets the records each measured notification wrote, per topic.
    ``worker_env`` adds settings to the worker's environment.
    """
    run = f"{int(time.time()) % 100000:05d}"
    with Stack(workdir, "chain-throughput") as stack:
        bootstrap = stack.broker.bootstrap
        preload_users(bootstrap, [user(n) for n in range(USERS)])
        fcm, sendgrid = stack.emulators.fcm.calls, stack.emulators.sendgrid.calls
        pid = stack.start_worker(NOTIFY_LANES="critical", **(worker_env or {}))
        deadline = time.monotonic() + timeout
        warm_up(stack, run, deadline)
        warm_fcm, warm_sendgrid = len(fcm.calls), len(sendgrid.calls)
        before = topic_records(bootstrap) if written is not None else {}
        with nullcontext() if watch is None else watch(pid):
            cpu0 = process_cpu_seconds(pid)
            send_all(bootstrap, (chain_request(n, run) for n in range(requests)))
            wait(
                lambda: (
                    fcm.delivered + sendgrid.delivered
                    >= requests + warm_fcm + warm_sendgrid
                ),
                deadline,
                stack,
                "every notification",
            )
            cpu = process_cpu_seconds(pid) - cpu0
        if written is not None:
            # The last writes (status, events) may trail the provider calls.
            time.sleep(2.0)
            for name, count in topic_records(bootstrap).items():
                if count > before.get(name, 0):
                    written[name] = (count - before.get(name, 0)) / requests
        calls = [*fcm.calls[warm_fcm:], *sendgrid.calls[warm_sendgrid:]]
        first = min(c.at for c in calls)
        last = max(c.at for c in calls)
        duplicates = fcm.duplicates + sendgrid.duplicates
        if duplicates:
            print(f"  note: {duplicates} duplicate provider calls")  # noqa: T201
        return requests / (last - first), cpu / requests * 1e6


def critical_latency(
    workdir: Path,
    backlog: int,
    critical: int,
    rate: float,
    timeout: float,
    bulk_nice: int = 0,
    critical_env: dict[str, str] | None = None,
) -> tuple[list[float], int]:
    """Accepted-to-sent latencies (s) of critical requests over a bulk backlog."""
    run = f"{int(time.time()) % 100000:05d}"
    with Stack(workdir, "send-latency") as stack:
        bootstrap = stack.broker.bootstrap
        users = [f"c{n:03d}" for n in range(50)]
        preload_profiles(bootstrap, users)
        preloaded = send_all(
            bootstrap,
            (
                (
                    pipeline_topic(DELIVERIES["email", "bulk"]),
                    *job(n, "bulk", "email", run),
                )
                for n in range(backlog)
            ),
        )
        sendgrid = stack.emulators.sendgrid.calls
        # The lanes deploy apart, as in docker-compose.yml: one worker (and
        # consumer group) per lane, so the backlog never queues critical work.
        bulk = stack.start_worker("bulk", NOTIFY_LANES="bulk")
        if bulk_nice:
            # What CPU shares do for separate containers on one host.
            os.setpriority(os.PRIO_PROCESS, bulk, bulk_nice)
        critical_pid = stack.start_worker(
            "critical", NOTIFY_LANES="critical", **(critical_env or {})
        )
        deadline = time.monotonic() + timeout
        wait(lambda: sendgrid.delivered > 1000, deadline, stack, "the bulk lane")
        pids = {
            "bulk worker": bulk,
            "critical worker": critical_pid,
            "broker": stack.broker.pid,
            "emulators + load": os.getpid(),
        }
        cpu0 = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
        wall0 = time.monotonic()
        latencies = critical_requests(stack, users, run, critical, rate, deadline)
        wall = time.monotonic() - wall0
        print(  # noqa: T201
            "  cores busy while measuring: "
            + ", ".join(
                f"{name} {(process_cpu_seconds(pid) - cpu0[name]) / wall:.2f}"
                for name, pid in pids.items()
            )
        )
        drained = sum(1 for c in sendgrid.calls if c.target.startswith("b"))
        print(  # noqa: T201
            f"  bulk backlog {preloaded:,}: {drained:,} drained while measuring"
        )
        return latencies, preloaded - drained


def critical_requests(
    stack: Stack, users: list[str], run: str, count: int, rate: float, deadline: float
) -> list[float]:
    """Send ``count`` critical email requests at ``rate``/s through the whole
    chain; each one's latency (s) from its produce to the emulator taking it.

    Like the API: one request at a time, no client-side batching. The clock
    starts at the produce call, before the broker's ack (when the API would
    answer 202), so it overstates "accepted to sent" a little.
    """
    client = producer(stack.broker.bootstrap, linger_ms=0)
    sendgrid = stack.emulators.sendgrid.calls
    sent_at: dict[str, float] = {}
    for n in range(count):
        uid = users[n % len(users)]
        key = f"{run}-crit-{n}"
        nid = notification_id("default", key, uid, "critical")
        sent_at[message_id_for(f"{nid}:email:{uid}@example.com")] = time.monotonic()
        body = {
            "idempotency_key": key,
            "recipient": {"user_id": uid},
            "type": "order_shipped",
            "channels": ["email"],
            "priority": "critical",
            "data": {"order_id": n},
        }
        # Keyed as the API keys requests: decided without the accepted hop.
        client.produce(
            pipeline_topic(REQUESTS["critical"]),
            orjson.dumps(body),
            f"default/{uid}".encode(),
        )
        client.poll(0)
        time.sleep(1 / rate)
    client.flush(30)

    def all_arrived() -> bool:
        seen = {c.message_id for c in sendgrid.calls}
        return all(m in seen for m in sent_at)

    wait(all_arrived, deadline, stack, "the critical requests")
    arrived = {c.message_id: c.at for c in sendgrid.calls if c.message_id in sent_at}
    return [arrived[m] - t for m, t in sent_at.items()]


def critical_line(latencies: list[float], rate: float) -> str:
    """The critical lane's figures while something else runs."""
    return (
        f"critical lane meanwhile, {len(latencies)} requests at {rate:.0f}/s: "
        f"accepted→sent p50 {statistics.median(latencies) * 1000:,.0f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:,.0f} ms"
    )


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    """Run both measurements and print them with the floor and relay."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--backlog", type=int, default=200_000)
    parser.add_argument("--critical", type=int, default=600)
    parser.add_argument("--rate", type=float, default=30.0, help="critical req/s")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--bulk-nice",
        type=int,
        default=0,
        help="run the bulk worker at this nice level (CPU shares on one host)",
    )
    parser.add_argument(
        "--latency-only", action="store_true", help="skip the throughput run"
    )
    parser.add_argument(
        "--critical-env",
        action="append",
        default=[],
        metavar="NOTIFY_X=VALUE",
        help="a setting for the critical-lane worker only (repeatable)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="notify-bench-") as tmp:
        workdir = Path(tmp)
        if not args.latency_only:
            bench = Bench(workdir=workdir, events=args.jobs, timeout=args.timeout)
            base: dict[str, Outcome] = {
                name: bench.run(BY_NAME[name]) for name in ("floor", "relay")
            }
            rate, cpu_us = throughput(workdir, args.jobs, args.timeout)
            floor, relay = base["floor"].rate, base["relay"].rate
            chain, chain_us = chain_throughput(workdir, args.jobs, args.timeout)
            calls, call_us = provider_calls(workdir, args.jobs, args.timeout)
            # Two Faust hops (request → job, job → ledger) and one provider
            # call are the least a notification costs; each hop is taken at
            # the relay's CPU per event.
            relay_us = base["relay"].cpu_us
            ceiling = 1e6 / (2 * relay_us + call_us)
            print(  # noqa: T201
                f"\nfloor {floor:,.0f}/s   relay {relay:,.0f}/s\n"
                f"send stage {rate:,.0f} deliveries/s = {rate / floor:.3f}x floor, "
                f"{rate / relay:.2f}x relay ({cpu_us:,.0f} µs worker CPU per "
                "delivery)\n"
                f"whole chain {chain:,.0f} notifications/s = {chain / floor:.3f}x "
                f"floor, {chain / relay:.2f}x relay ({chain_us:,.0f} µs worker CPU "
                "per notification)\n"
                f"provider calls alone, no Kafka: {calls:,.0f} calls/s, "
                f"{call_us:,.0f} µs CPU per call (relay: {relay_us:,.0f} µs per "
                "event)\n"
                f"ceiling of a Faust chain (2 hops + 1 provider call, no other "
                f"work): {ceiling:,.0f} notifications/s = "
                f"{ceiling / relay:.2f}x relay"
            )
        latencies, left = critical_latency(
            workdir,
            args.backlog,
            args.critical,
            args.rate,
            args.timeout,
            args.bulk_nice,
            dict(item.split("=", 1) for item in args.critical_env),
        )
        print(  # noqa: T201
            f"critical lane over a bulk backlog ({left:,} bulk jobs still queued "
            f"at the end, bulk nice {args.bulk_nice}): {len(latencies)} requests, "
            "accepted→sent p50 "
            f"{statistics.median(latencies) * 1000:,.0f} ms, p99 "
            f"{percentile(latencies, 0.99) * 1000:,.0f} ms, max "
            f"{max(latencies) * 1000:,.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
