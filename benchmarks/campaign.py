"""A campaign through the whole chain: recipients expanded and delivered per
second by one bulk worker, and the critical lane's latency meanwhile.

On a fresh embedded broker, with the emulators and one worker per lane (as
``docker-compose.yml`` deploys them):

1. N users with an email address and the tag ``bench`` (100,000 by default)
   are produced onto ``notify.users.profiles`` and read by the bulk worker;
2. a campaign targeting the tag (seed 002's body: promotional, a message, by
   email, unpaced) is POSTed to the bulk worker's API;
3. meanwhile critical email requests go in at a steady rate through the
   critical worker;
4. ``GET /v1/campaigns/{id}`` is polled until every recipient is sent: the
   expansion rate (recipients expanded per second until the campaign is
   ``completed``), the delivery rate (sent per second until the last), and
   the critical requests' accepted→sent p50 and p99;
5. every recipient is accounted for: targeted = expanded = the outcomes'
   sum = the audience, and the SendGrid emulator got one call per address
   and no duplicate (the run fails otherwise).

Bounded in count and time; everything binds loopback and stops itself.

    python -m benchmarks.campaign [--users 100000] [--critical 300]
        [--bulk-workers 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.send import (
    Stack,
    critical_line,
    critical_requests,
    pipeline_topic,
    preload_profiles,
    send_all,
)
from pipeline.broker import free_port
from pipeline.settings import Settings
from pipeline.topology import PROFILES
from schemas.records import UserProfile

TAG = "bench"


def tagged_profiles(bootstrap: str, count: int) -> list[str]:
    """``count`` users with an email address and the campaign's tag."""
    users = [f"m{n:06d}" for n in range(count)]
    send_all(
        bootstrap,
        (
            (
                pipeline_topic(PROFILES),
                f"default/{uid}".encode(),
                UserProfile(
                    user_id=uid, email=f"{uid}@example.com", tags=[TAG]
                ).dumps(),
            )
            for uid in users
        ),
    )
    return users


def api(port: int, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """One call to a worker's API with the dev key."""
    key = Settings().dev_api_key.get_secret_value()
    request = urllib.request.Request(  # noqa: S310 - loopback
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        return json.loads(answer.read())  # type: ignore[no-any-return]


def wait_ready(port: int, deadline: float, stack: Stack) -> None:
    """Until the worker's API answers."""
    while True:
        stack.alive()
        try:
            api(port, "GET", "/v1/campaigns")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError("the bulk worker's API never answered") from None
            time.sleep(0.5)


def accounted(shown: dict[str, Any], audience: list[str], stack: Stack) -> str:
    """Check every recipient is accounted for: the counts add up to the
    audience, one outcome per recipient, and the email provider got one
    call per address, none twice. The line that says so."""
    counts = shown["counts"]
    outcomes = ("queued", "sent", "failed", "suppressed", "throttled", "deferred")
    added = sum(counts[o] for o in outcomes)
    wanted = {f"{uid}@example.com" for uid in audience}
    # The critical lane's requests go through the same emulator: left out.
    called = Counter(
        call.target
        for call in stack.emulators.sendgrid.calls.calls
        if call.target in wanted
    )
    reached = set(called)
    duplicates = sum(n - 1 for n in called.values())
    problems = []
    if not counts["targeted"] == counts["expanded"] == len(audience):
        problems.append(f"targeted {counts['targeted']}, expanded {counts['expanded']}")
    if added != len(audience):
        problems.append(f"outcomes add up to {added}: {counts}")
    if reached != wanted:
        problems.append(f"{len(wanted - reached)} never called")
    if duplicates:
        problems.append(f"{duplicates} duplicate provider calls")
    if problems:
        raise AssertionError("; ".join(problems))
    return (
        f"  accounted for: {len(audience):,} targeted = expanded = outcomes, "
        f"{len(reached):,} addresses called once each, 0 duplicates\n"
    )


def measure(
    workdir: Path, users: int, critical: int, rate: float, bulk_workers: int = 1
) -> None:
    """Run the stack and print the figures."""
    run = f"{int(time.time()) % 100000:05d}"
    with Stack(workdir, "campaign") as stack:
        bootstrap = stack.broker.bootstrap
        critical_users = [f"c{n:03d}" for n in range(50)]
        preload_profiles(bootstrap, critical_users)
        audience = tagged_profiles(bootstrap, users)
        ports = [free_port() for _ in range(bulk_workers)]
        for n, bulk_port in enumerate(ports):
            stack.start_worker(
                f"bulk{n}", NOTIFY_LANES="bulk", NOTIFY_WEB_PORT=str(bulk_port)
            )
        stack.start_worker("critical", NOTIFY_LANES="critical")
        port = ports[0]
        for bulk_port in ports:
            wait_ready(bulk_port, time.monotonic() + 120, stack)
        # The bulk workers have read every profile when the last is found
        # (asked of any worker, the owner answers).
        last = audience[-1]
        while True:
            try:
                api(port, "GET", f"/v1/users/{last}")
                break
            except OSError:
                time.sleep(0.5)
        body = {
            "idempotency_key": f"bench-{run}",
            "campaign_name": "Benchmark",
            "type": "promotional",
            "target": {"tags": [TAG]},
            "channels": ["email"],
            "message": {"title": "Winter sale", "body": "Everything half off."},
            "rate": 100_000,
            "chunk": 2_000,
        }
        started = time.monotonic()
        cid = api(port, "POST", "/v1/notifications/bulk", body)["campaign_id"]
        latencies: list[float] = []
        lane = threading.Thread(
            target=lambda: latencies.extend(
                critical_requests(
                    stack, critical_users, run, critical, rate, time.monotonic() + 900
                )
            ),
            daemon=True,
        )
        lane.start()
        expanded_at = None
        while True:
            stack.alive()
            try:
                shown = api(port, "GET", f"/v1/campaigns/{cid}")
            except urllib.error.HTTPError as refused:
                if refused.code != 503:  # 503: partitions moving (a rebalance)
                    raise
                time.sleep(0.5)
                continue
            now = time.monotonic() - started
            if expanded_at is None and shown["state"] == "completed":
                expanded_at = now
            if shown["counts"]["sent"] >= users:
                sent_at = now
                break
            if now > 1800:
                raise TimeoutError(f"campaign not sent in 30 min: {shown['counts']}")
            time.sleep(0.5)
        lane.join(timeout=900)
        assert expanded_at is not None  # noqa: S101 - completed before all sent
        per = bulk_workers
        print(  # noqa: T201
            f"\ncampaign of {users:,} recipients (email), {per} bulk worker(s):\n"
            f"  expanded in {expanded_at:,.1f} s: {users / expanded_at:,.0f} "
            f"recipients/s ({users / expanded_at / per:,.0f} per worker)\n"
            f"  all sent in {sent_at:,.1f} s: {users / sent_at:,.0f} delivered/s "
            f"({users / sent_at / per:,.0f} per worker)\n"
            + critical_line(latencies, rate),
            flush=True,
        )
        time.sleep(3.0)  # a second call to anybody would come now
        print(accounted(api(port, "GET", f"/v1/campaigns/{cid}"), audience, stack))  # noqa: T201


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and measure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--critical", type=int, default=300)
    parser.add_argument("--rate", type=float, default=10.0, help="critical req/s")
    parser.add_argument("--bulk-workers", type=int, default=1, choices=(1, 2, 3, 4))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="notify-bench-") as tmp:
        measure(Path(tmp), args.users, args.critical, args.rate, args.bulk_workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
