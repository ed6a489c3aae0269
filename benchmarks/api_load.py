"""Accepted requests/s of POST /v1/notifications on one worker, loopback only.

    python -m benchmarks.api_load [--requests N] [--concurrency C] [--seconds S]

Starts the embedded broker and one real worker (both lanes), then a loopback
load generator bounded in count and in time posts N notification requests with
C in flight and reports accepted/s, client latency percentiles, and the same
generator against a bare aiohttp handler that only parses the body and answers
202 (the floor of the HTTP layer on this machine), as a ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/api_load.py` from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import orjson
from aiohttp import web

from pipeline.admin import ensure_topics
from pipeline.broker import EmbeddedBroker, free_port, terminate
from pipeline.settings import DEV_API_KEY, Settings

REPO = Path(__file__).resolve().parents[1]


def body(n: int) -> bytes:
    """The n-th request: transactional, one of 500 users."""
    return orjson.dumps(
        {
            "idempotency_key": f"load-{n}",
            "recipient": {"user_id": f"u{n % 500}"},
            "type": "order_shipped",
            "priority": "transactional",
            "data": {"order_id": n, "eta": "Tue", "items": ["a", "b", "c"]},
        }
    )


async def load(
    url: str, requests: int, concurrency: int, seconds: float
) -> dict[str, Any]:
    """Post ``requests`` bodies with ``concurrency`` in flight, stop at ``seconds``."""
    headers = {
        "Authorization": f"Bearer {DEV_API_KEY}",
        "Content-Type": "application/json",
    }
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(requests))
    deadline = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        for n in counter:
            if time.monotonic() > deadline:
                return
            started = time.perf_counter()
            async with session.post(url, data=body(n), headers=headers) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "sent": len(latencies),
        "statuses": statuses,
        "per_second": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }


async def bare_server(port: int) -> web.AppRunner:
    """An aiohttp handler that parses the JSON body and answers 202: the floor."""

    async def accept(request: web.Request) -> web.Response:
        orjson.loads(await request.read())
        return web.json_response({"notification_id": "n_0"}, status=202)

    application = web.Application()
    application.router.add_post("/v1/notifications", accept)
    runner = web.AppRunner(application)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def measure_floor(
    requests: int, concurrency: int, seconds: float
) -> dict[str, Any]:
    """The same generator against the bare handler."""
    port = free_port()
    runner = await bare_server(port)
    try:
        return await load(
            f"http://127.0.0.1:{port}/v1/notifications", requests, concurrency, seconds
        )
    finally:
        await runner.cleanup()


def wait_ready(port: int, worker: subprocess.Popen[bytes], timeout: float) -> None:
    """Poll the worker's /health until it is ready."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.returncode}")
        try:
            with urllib.request.urlopen(  # noqa: S310 - loopback
                f"http://127.0.0.1:{port}/health", timeout=1
            ) as response:
                if orjson.loads(response.read()).get("ready"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError("worker not ready")


def main(argv: list[str] | None = None) -> int:
    """Run both measurements and print them with their ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)

    floor = asyncio.run(measure_floor(args.requests, args.concurrency, args.seconds))
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as data_dir:
        ensure_topics(Settings(broker_url=broker.url))
        port = free_port()
        env = {
            **os.environ,
            "NOTIFY_BROKER_URL": broker.url,
            "NOTIFY_DATA_DIR": data_dir,
            "NOTIFY_WEB_PORT": str(port),
            "NOTIFY_APP_ID": "bench-api",
        }
        worker = subprocess.Popen(  # noqa: S603
            [str(Path(sys.executable).parent / "notify"), "worker", "-l", "warn"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(port, worker, 90)
            api = asyncio.run(
                load(
                    f"http://127.0.0.1:{port}/v1/notifications",
                    args.requests,
                    args.concurrency,
                    args.seconds,
                )
            )
        finally:
            terminate(worker, 30)
    print(f"requests {args.requests}, concurrency {args.concurrency}, loopback only")
    for name, result in (("bare aiohttp 202", floor), ("POST /v1/notifications", api)):
        print(
            f"  {name:24} {result['per_second']:8.0f} req/s   p50 {result['p50_ms']:6.1f}"
            f" ms   p99 {result['p99_ms']:6.1f} ms   statuses {result['statuses']}"
        )
    if floor["per_second"]:
        print(
            f"  ratio API / bare handler: {api['per_second'] / floor['per_second']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
