"""``make run``: the embedded broker, a worker and demo traffic, until Ctrl-C."""

from __future__ import annotations

import argparse
import hashlib
import itertools
import logging
import os
import shutil
import signal
import subprocess  # noqa: S404 - the worker is our own console script
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

import orjson
from confluent_kafka import Consumer, Producer

from pipeline.admin import ensure_topics
from pipeline.broker import EmbeddedBroker, free_port, terminate
from pipeline.emulators.stack import EmulatorStack
from pipeline.settings import Settings
from pipeline.topology import DEADLETTER, EVENTS, REQUESTS, topic_name

log = logging.getLogger("devstack")

DEMO_TYPES = (
    "order_shipped",
    "password_reset",
    "comment_reply",
    "campaign",
    "post_liked",
)
DEV_BROKER_PORT = 19092
#: What each demo type's templates need (see pipeline/templates/<type>/).
DEMO_DATA = {
    "order_shipped": lambda n: {
        "order_id": 4000 + n,
        "carrier": "UPS",
        "estimated_delivery": "Tuesday",
        "tracking_url": f"https://shop.example.com/track/{4000 + n}",
    },
    "password_reset": lambda n: {
        "reset_url": f"https://app.example.com/reset/{n:06d}",
        "code": f"{n % 1000000:06d}",
    },
    "comment_reply": lambda n: {"author": "Bob", "excerpt": f"Reply number {n}"},
    "campaign": lambda n: {
        "headline": "Winter sale",
        "message": "Everything 20% off this week.",
    },
    # Collected into one digest per user and post every 30 s.
    "post_liked": lambda n: {"liker": f"friend{n % 7}"},
}


def say(message: str) -> None:
    """Print a line for the person at the terminal."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def demo_request(n: int, settings: Settings) -> tuple[str, bytes, bytes]:
    """The n-th demo message: (topic, key, value); every 25th is malformed."""
    user = f"u_{n % 50:03d}"
    if n % 25 == 24:
        bulk = topic_name(settings, REQUESTS["bulk"])
        return bulk, user.encode(), b'{"recipient": "not an object"'
    kind = DEMO_TYPES[n % len(DEMO_TYPES)]
    promotional = kind.startswith("campaign")
    body = {
        "idempotency_key": f"demo-{n}",
        "recipient": {"user_id": user},
        "type": kind,
        "priority": "promotional" if promotional else "transactional",
        "data": DEMO_DATA[kind](n),
        **({"campaign_id": 1042} if promotional else {}),
        **({"digest_key": f"post-{n % 3}"} if kind == "post_liked" else {}),
    }
    lane = "bulk" if promotional else "critical"
    return topic_name(settings, REQUESTS[lane]), user.encode(), orjson.dumps(body)


def demo_device(n: int, platform: str) -> dict[str, str]:
    """A token shaped like the platform's: 64 hex digits for APNs, longer for FCM."""
    seed = hashlib.sha256(f"{platform}-{n}".encode()).hexdigest()
    token = seed if platform == "apns" else f"demo{seed}{seed[:40]}"
    return {"token": token, "platform": platform}


def demo_faults(stack: EmulatorStack) -> None:
    """A little trouble so retries, token removal and bounces show up."""
    stack.twilio.faults.update(error="503", error_rate=0.05)
    stack.fcm.faults.update(error="UNAVAILABLE", error_rate=0.03)
    stack.smtp.faults.fail_targets["u_013@example.com"] = "hard_bounce"
    stack.apns.faults.fail_targets[demo_device(8, "apns")["token"]] = "Unregistered"


def demo_users(port: int, api_key: str, users: int = 50) -> None:
    """Give the demo users profiles, devices and varied preferences via the API."""
    for n in range(users):
        user = f"u_{n:03d}"
        profile: dict[str, object] = {"email": f"{user}@example.com"}
        if n % 3 != 2:
            profile["phone"] = f"+1415555{n:04d}"
        calls: list[tuple[str, str, object]] = [("PUT", f"/v1/users/{user}", profile)]
        if n % 3 == 0:
            calls.append(("POST", f"/v1/users/{user}/devices", demo_device(n, "fcm")))
        if n % 4 == 0:
            calls.append(("POST", f"/v1/users/{user}/devices", demo_device(n, "apns")))
        if n % 5 == 0:
            calls.append(
                (
                    "PUT",
                    f"/v1/users/{user}/preferences",
                    {"channels": {"sms": False}, "marketing": n % 10 != 0},
                )
            )
        if n % 7 == 0:
            now = datetime.now(UTC)
            quiet = {
                "start": (now - timedelta(hours=1)).strftime("%H:%M"),
                "end": (now + timedelta(hours=1)).strftime("%H:%M"),
            }
            calls.append(
                (
                    "PUT",
                    f"/v1/users/{user}/preferences",
                    {"quiet_hours": quiet, "timezone": "UTC"},
                )
            )
        for method, path, body in calls:
            request = urllib.request.Request(  # noqa: S310 - loopback
                f"http://127.0.0.1:{port}{path}",
                data=orjson.dumps(body),
                method=method,
                headers={
                    "Authorization": f"Bearer {api_key}",
                    "Content-Type": "application/json",
                },
            )
            with urllib.request.urlopen(request, timeout=10):  # noqa: S310
                pass


def demo_traffic(
    bootstrap: str, stop: threading.Event, per_second: float, settings: Settings
) -> None:
    """Produce demo requests at ``per_second`` until ``stop`` is set."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for n in itertools.count():
        if stop.wait(1.0 / per_second):
            break
        topic, key, value = demo_request(n, settings)
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    producer.flush(5)


def tally_events(
    bootstrap: str, stop: threading.Event, tally: Counter[str], settings: Settings
) -> None:
    """Count the event types on ``notify.events`` (what `make run` reports)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "devstack-tally",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 3000,
            "heartbeat.interval.ms": 500,
        }
    )
    deadletter = topic_name(settings, DEADLETTER)
    consumer.subscribe([topic_name(settings, EVENTS), deadletter])
    try:
        while not stop.is_set():
            for message in consumer.consume(num_messages=500, timeout=0.5):
                if message.error() is not None:
                    continue
                if message.topic() == deadletter:
                    tally["dead-letter records"] += 1
                else:
                    tally[orjson.loads(message.value() or b"{}").get("event_type")] += 1
    finally:
        consumer.close()


def healthy(port: int) -> bool:
    """True once the worker's /health says it is ready."""
    try:
        url = f"http://127.0.0.1:{port}/health"
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310
            return bool(orjson.loads(response.read()).get("ready"))
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return False


def port_is_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:``port``."""
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def main(argv: list[str] | None = None) -> int:
    """Run the stack in the foreground; Ctrl-C stops every part of it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=20.0, help="demo requests/s")
    parser.add_argument("--no-demo", action="store_true", help="no demo traffic")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # The SMTP emulator logs every command at INFO.
    logging.getLogger("mail.log").setLevel(logging.WARNING)

    base = Settings()
    data_dir = base.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if not port_is_free(base.web_port):
        say(f"port {base.web_port} is taken; set NOTIFY_WEB_PORT to another port")
        return 2
    # The embedded broker formats a fresh log dir each start: it has no
    # changelogs, so table state left by the previous run would be ahead of them.
    shutil.rmtree(data_dir / "faust", ignore_errors=True)

    port = DEV_BROKER_PORT if port_is_free(DEV_BROKER_PORT) else free_port()
    broker = EmbeddedBroker(
        port=port, data_dir=data_dir / "broker", log_path=data_dir / "broker.log"
    ).start()
    stop = threading.Event()
    worker: subprocess.Popen[bytes] | None = None
    sink: subprocess.Popen[bytes] | None = None
    threads: list[threading.Thread] = []
    emulators = EmulatorStack(
        data_dir / "emulators", f"http://127.0.0.1:{base.web_port}"
    ).start()
    if not args.no_demo:
        demo_faults(emulators)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        settings = Settings(broker_url=broker.url)
        ensure_topics(settings)
        env = {
            **os.environ,
            "NOTIFY_BROKER_URL": broker.url,
            "NOTIFY_DATA_DIR": str(data_dir),
            **emulators.env(),
        }
        worker_log = data_dir / "worker.log"
        sink_log = data_dir / "sink.log"
        notify = str(Path(sys.executable).parent / "notify")
        # The sink owns the in-process analytics store (chDB under the data dir).
        with sink_log.open("ab") as output:
            sink = subprocess.Popen(  # noqa: S603
                [notify, "sink"],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with worker_log.open("ab") as output:
            worker = subprocess.Popen(  # noqa: S603
                [notify, "worker", "-l", "info"],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C is ours to relay, in order
            )
        deadline = time.monotonic() + 90
        while not healthy(base.web_port):
            if (
                worker.poll() is not None
                or time.monotonic() > deadline
                or stop.is_set()
            ):
                say(f"worker did not start; see {worker_log}")
                return 1
            time.sleep(0.2)

        api_key = base.dev_api_key.get_secret_value()
        if not args.no_demo:
            demo_users(base.web_port, api_key)
        tally: Counter[str] = Counter()
        # Daemons: a client still closing once the broker is gone must not
        # hold the interpreter's exit, which joins every other thread.
        threads = [
            threading.Thread(
                target=tally_events,
                args=(broker.bootstrap, stop, tally, settings),
                daemon=True,
            )
        ]
        if not args.no_demo:
            threads.append(
                threading.Thread(
                    target=demo_traffic,
                    args=(broker.bootstrap, stop, args.rate, settings),
                    daemon=True,
                )
            )
        for thread in threads:
            thread.start()
        web = f"http://127.0.0.1:{base.web_port}"
        say(
            "\n".join(
                [
                    "notify-pipeline is running (Ctrl-C stops everything)",
                    f"  broker        {broker.url}   log {data_dir / 'broker.log'}",
                    f"  worker        pid {worker.pid}   log {worker_log}",
                    f"  sink          pid {sink.pid}   log {sink_log}   "
                    f"(notify.events -> ClickHouse, chDB under {data_dir / 'clickhouse'})",
                    f"  health        {web}/health",
                    f"  API           {web}/openapi.json",
                    f"  API docs      {web}/docs",
                    f"  API key       {api_key}   (NOTIFY_DEV_API_KEY)",
                    f"  dashboard     {web}/dashboard   sign in with the admin key "
                    f"{base.admin_api_key.get_secret_value()}   (NOTIFY_ADMIN_API_KEY)",
                    f"  providers     APNs {emulators.apns.url}  FCM "
                    f"{emulators.fcm.url}  SMTP {emulators.smtp.url}",
                    f"                SendGrid {emulators.sendgrid.url}  Twilio "
                    f"{emulators.twilio.url}  (emulators; some faults on)",
                    f"  an inbox      curl -H 'Authorization: Bearer {api_key}' "
                    f"{web}/v1/users/u_000/inbox",
                    "  dead letters  notify dlq list",
                    '  analytics     notify sql "SELECT event_type, count() FROM '
                    'notif_events GROUP BY event_type"',
                    "  a funnel      notify funnel --campaign 1042 --by variant",
                    f"  a status      curl -H 'Authorization: Bearer {api_key}' "
                    f"{web}/v1/notifications/<id>",
                    "  demo traffic  "
                    + ("off" if args.no_demo else f"{args.rate:g} requests/s"),
                    f"  your shell    export NOTIFY_BROKER_URL={broker.url}",
                    "  produce       kcat -P -b "
                    f"{broker.bootstrap} -t "
                    f"{topic_name(settings, REQUESTS['critical'])} -k u_1",
                    "  read events   kcat -C -b "
                    f"{broker.bootstrap} -t {topic_name(settings, EVENTS)} "
                    "-o beginning",
                ]
            )
        )
        while not stop.wait(10):
            if worker.poll() is not None:
                say(f"worker exited with {worker.returncode}; see {worker_log}")
                return 1
            if sink.poll() is not None:
                say(f"sink exited with {sink.returncode}; see {sink_log}")
                return 1
            say(
                "  events so far: "
                + ", ".join(f"{k} {v}" for k, v in sorted(tally.items()))
            )
            say(
                "  provider deliveries: "
                + ", ".join(f"{k} {v}" for k, v in emulators.delivered().items())
            )
        return 0
    finally:
        stop.set()
        # The worker's stop (last commits, leaving its group) runs while the
        # demo threads wind down, not after them; both need the broker up.
        if worker is not None and worker.poll() is None:
            say("stopping worker")
            worker.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if worker is not None:
            terminate(worker, 30)
        if sink is not None:
            say("stopping sink")
            terminate(sink, 30)
        say("stopping broker")
        broker.stop()
        emulators.stop()


if __name__ == "__main__":
    sys.exit(main())
