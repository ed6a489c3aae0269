"""What one produced record costs a worker, by the path it takes.

A notification costs about nine produces (events, jobs, table changelogs),
so the per-record cost of a produce decides how far the chain can go. This
starts a fresh embedded broker and one real ``faust worker`` of the project's
app (its settings, codec and guarded transport), whose task sends N records
of 500 B through each path in turn and measures the worker's CPU for each:

- ``faust send_soon``: ``Topic.send_soon``, what agents and table writes use;
- ``faust await send``: ``await Topic.send``;
- ``aiokafka send``: ``await AIOKafkaProducer.send`` on Faust's own client;
- ``aiokafka batch``: records appended to per-partition batches of the same
  client (``create_batch`` / ``send_batch``), 500 at a time.

Each path ends with a flush, so its figure covers every record acknowledged.
The ratios are to the ``faust send_soon`` path of the same run.

    python -m benchmarks.produce [--records 30000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess  # noqa: S404 - our own worker
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from pipeline.app import create_app
from pipeline.broker import EmbeddedBroker, free_port
from pipeline.settings import Settings

TOPIC = "bench.produce"
VALUE = b"x" * 500
PARTITIONS = 4
#: The result line the worker prints and the runner reads back.
MARK = "PRODUCE-RESULT"

app = create_app(Settings(), discover=[])
topic = app.topic(TOPIC, key_type=bytes, value_type=bytes, partitions=PARTITIONS)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _faust_send_soon(n: int) -> None:
    for i in range(n):
        topic.send_soon(key=str(i).encode(), value=VALUE)
        if i % 200 == 0:  # let the buffer drain, as an agent's loop would
            await asyncio.sleep(0)


async def _faust_send(n: int) -> None:
    for i in range(n):
        await topic.send(key=str(i).encode(), value=VALUE)


async def _aiokafka_send(n: int) -> None:
    client = app.producer._producer  # type: ignore[attr-defined]
    for i in range(n):
        await client.send(TOPIC, VALUE, key=str(i).encode())


async def _aiokafka_batch(n: int) -> None:
    client = app.producer._producer  # type: ignore[attr-defined]
    for start in range(0, n, 500):
        batches = {p: client.create_batch() for p in range(PARTITIONS)}
        for i in range(start, min(n, start + 500)):
            partition = i % PARTITIONS
            key = str(i).encode()
            if batches[partition].append(key=key, value=VALUE, timestamp=None) is None:
                await client.send_batch(batches[partition], TOPIC, partition=partition)
                batches[partition] = client.create_batch()
                batches[partition].append(key=key, value=VALUE, timestamp=None)
        for partition, batch in batches.items():
            await client.send_batch(batch, TOPIC, partition=partition)


PATHS: dict[str, Callable[[int], Awaitable[None]]] = {
    "faust send_soon": _faust_send_soon,
    "faust await send": _faust_send,
    "aiokafka send": _aiokafka_send,
    "aiokafka batch": _aiokafka_batch,
}


@app.task
async def measure() -> None:
    """In the worker: each path in turn, then the figures, then exit."""
    if os.environ.get("BENCH_PRODUCE_RECORDS") is None:
        return
    n = int(os.environ["BENCH_PRODUCE_RECORDS"])
    await asyncio.sleep(2.0)  # past the start-up
    await topic.send(key=b"warm", value=VALUE)
    for name, path in PATHS.items():
        await app.producer.flush()
        cpu, wall = _cpu(), time.monotonic()
        await path(n)
        await app.producer.flush()
        cpu, wall = _cpu() - cpu, time.monotonic() - wall
        print(f"{MARK} {name}|{cpu / n * 1e6:.1f}|{n / wall:.0f}", flush=True)  # noqa: T201
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    """Start a broker and a worker, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="notify-produce-") as tmp:
        workdir = Path(tmp)
        broker = EmbeddedBroker(log_path=workdir / "broker.log").start()
        try:
            env = {
                **os.environ,
                "NOTIFY_BROKER_URL": broker.url,
                "NOTIFY_DATA_DIR": str(workdir / "data"),
                "NOTIFY_APP_ID": "bench-produce",
                "NOTIFY_WEB_HOST": "127.0.0.1",
                "NOTIFY_WEB_PORT": str(free_port()),
                "BENCH_PRODUCE_RECORDS": str(args.records),
            }
            argv_ = [sys.executable, "-m", "faust", "-A", "benchmarks.produce"]
            argv_ += ["worker", "--without-web", "--loglevel", "warn"]
            done = subprocess.run(  # noqa: S603
                argv_,
                env=env,
                capture_output=True,
                text=True,
                timeout=args.timeout,
                check=False,
            )
        finally:
            broker.stop()
    rows = [
        line.split(MARK, 1)[1].strip().split("|")
        for line in done.stdout.splitlines() + done.stderr.splitlines()
        if MARK in line
    ]
    if len(rows) != len(PATHS):
        print(done.stdout[-2000:], done.stderr[-2000:])  # noqa: T201
        return 1
    base = float(rows[0][1])
    print(f"{args.records:,} records of {len(VALUE)} B per path")  # noqa: T201
    header = f"{'path':<18} {'CPU µs/record':>14} {'records/s':>10} {'x send_soon':>12}"
    print(header)  # noqa: T201
    for name, cpu_us, rate in rows:
        cpu = float(cpu_us)
        print(f"{name:<18} {cpu:>14.1f} {int(rate):>10,} {cpu / base:>12.2f}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
