"""The workload every contender runs: requests, the shared transform, meters."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from pipeline.ids import event_id, notification_id

#: The environment variable that carries a phase's ``PhaseSpec`` to its process.
SPEC_ENV = "NOTIFY_BENCH_SPEC"

_KINDS: dict[str, tuple[str, list[str], str]] = {
    # type: (priority, channels, subject)
    "order.shipped": ("transactional", ["push", "email"], "Your order is on its way"),
    "password.reset": ("critical", ["email"], "Reset your password"),
    "payment.failed": ("critical", ["push", "email", "sms"], "Your payment failed"),
    "promo.weekly": ("promotional", ["email"], "This week's picks for you"),
    "comment.reply": ("transactional", ["push", "in_app"], "Someone replied to you"),
}
_TYPES = tuple(_KINDS)
_TENANTS = ("acme", "globex", "initech", "umbrella")
_LOCALES = ("en-GB", "de-DE", "fr-FR", "es-ES", "nl-NL")
_NAMES = ("Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Radia")
_CARRIERS = ("DHL", "UPS", "GLS", "DPD", "PostNL")


def make_request(index: int, rng: random.Random) -> tuple[bytes, bytes]:
    """One realistic notification request, about 500 bytes: (user_id, JSON)."""
    kind = _TYPES[index % len(_TYPES)]
    priority, channels, subject = _KINDS[kind]
    user_id = f"u_{rng.randrange(1_000_000):07d}"
    order = f"ord-{rng.randrange(10**9):09d}"
    body: dict[str, Any] = {
        "idempotency_key": f"{kind}:{index:09d}:{rng.getrandbits(64):016x}",
        "recipient": {"user_id": user_id},
        "type": kind,
        "priority": priority,
        "tenant": rng.choice(_TENANTS),
        "channels": channels,
        "locale": rng.choice(_LOCALES),
        "expiry_at": "2026-11-28T12:00:00Z",
        "data": {
            "first_name": rng.choice(_NAMES),
            "subject": subject,
            "order_id": order,
            "amount": f"{rng.randrange(100, 100_000) / 100:.2f}",
            "currency": "EUR",
            "items": rng.randrange(1, 9),
            "carrier": rng.choice(_CARRIERS),
            "tracking_number": f"{rng.getrandbits(48):012X}",
            "deep_link": f"notify://orders/{order}?utm_source=notify&utm_medium=push",
        },
    }
    if priority == "promotional":
        body["campaign_id"] = 1042
    return user_id.encode(), orjson.dumps(body)


def lane_of(priority: str) -> str:
    """Critical and transactional ride the critical lane; promotional the bulk one."""
    return "bulk" if priority == "promotional" else "critical"


def accept(body: Mapping[str, Any], now: str) -> dict[str, Any]:
    """The ``accepted`` event for a decoded request (ingest's work, minus checks)."""
    tenant = body.get("tenant") or "default"
    priority = body.get("priority", "transactional")
    nid = notification_id(
        tenant, body["idempotency_key"], body["recipient"]["user_id"], lane_of(priority)
    )
    return {
        "event_id": event_id(nid, "accepted", "ingest"),
        "event_type": "accepted",
        "ts": now,
        "stage": "ingest",
        "notification_id": nid,
        "tenant": tenant,
        "user_id": body["recipient"]["user_id"],
        "campaign_id": body.get("campaign_id"),
        "type": body["type"],
        "priority": priority,
        "lane": lane_of(priority),
        "locale": body.get("locale"),
        "channels": body.get("channels"),
        "data": body.get("data", {}),
    }


def process(raw: bytes) -> tuple[bytes, bytes]:
    """Decode, transform, encode: the per-event work of every contender."""
    event = accept(orjson.loads(raw), datetime.now(UTC).isoformat())
    return event["notification_id"].encode(), orjson.dumps(event)


class Progress:
    """Tells when every input partition has been read up to its last offset.

    Counting offsets rather than events keeps the end right even if a
    rebalance redelivers some events (at-least-once).
    """

    def __init__(self, last_offsets: Mapping[int, int]) -> None:
        self._last = dict(last_offsets)
        self._open = {p for p, offset in self._last.items() if offset >= 0}
        self.events = 0

    def saw(self, partition: int, offset: int) -> bool:
        """Count one consumed event; True once every partition is read to its end."""
        self.events += 1
        if partition in self._open and offset >= self._last[partition]:
            self._open.discard(partition)
        return not self._open


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all threads), from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name, which may itself hold spaces or parens.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait; guest time is inside user
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    """Clocks read at one instant: wall, own CPU, broker CPU, whole machine."""

    wall: float
    cpu: float
    broker_cpu: float
    machine_cpu: float

    @classmethod
    def now(cls, broker_pid: int | None) -> Sample:
        """Read the clocks; own CPU covers every thread of this process."""
        broker = process_cpu_seconds(broker_pid) if broker_pid else 0.0
        return cls(
            time.perf_counter(), time.process_time(), broker, machine_busy_seconds()
        )


@dataclass(frozen=True)
class Result:
    """What one contender measured between its first consumed and last acked event."""

    events: int
    wall_s: float
    cpu_s: float
    broker_cpu_s: float
    #: CPU that every other process used meanwhile (another test run, say).
    others_cpu_s: float
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def between(
        cls, start: Sample, end: Sample, events: int, info: dict[str, Any]
    ) -> Result:
        """The result of the window from ``start`` to ``end``."""
        cpu = end.cpu - start.cpu
        broker_cpu = end.broker_cpu - start.broker_cpu
        machine_cpu = end.machine_cpu - start.machine_cpu
        return cls(
            events=events,
            wall_s=end.wall - start.wall,
            cpu_s=cpu,
            broker_cpu_s=broker_cpu,
            others_cpu_s=max(0.0, machine_cpu - cpu - broker_cpu),
            info=info,
        )

    def write(self, path: Path) -> None:
        """Write atomically, so the runner never reads half a file."""
        partial = path.with_suffix(".partial")
        partial.write_bytes(orjson.dumps(asdict(self)))
        partial.replace(path)

    @classmethod
    def read(cls, path: Path) -> Result:
        """Read a result written by ``write``."""
        return cls(**orjson.loads(path.read_bytes()))


@dataclass(frozen=True)
class PhaseSpec:
    """Everything a contender process needs to know, passed in its environment."""

    name: str
    bootstrap: str
    input_topic: str
    output_topic: str
    last_offsets: dict[int, int]
    result_path: str
    broker_pid: int | None = None
    shape: str = "transform"
    take: int = 1000
    overrides: dict[str, Any] = field(default_factory=dict)
    transport: str = "kafka"
    profile_path: str | None = None
    timeout: float = 600.0

    def to_env(self) -> str:
        """Serialise for ``SPEC_ENV``."""
        return orjson.dumps(asdict(self), option=orjson.OPT_NON_STR_KEYS).decode()

    @classmethod
    def from_env(cls) -> PhaseSpec:
        """The spec this process was started with."""
        raw = orjson.loads(os.environ[SPEC_ENV])
        raw["last_offsets"] = {int(p): o for p, o in raw["last_offsets"].items()}
        return cls(**raw)
