"""What decoding one topic value costs: the strict door and the send stage's job.

The request is decoded by ingest for every notification (`schemas.decode`,
strict, from the raw bytes); the delivery job by the send stage for every
channel. Each figure is the best of five timed loops, printed beside the
floor of parsing the same bytes with orjson into plain dicts (no checks), as
a ratio measured in the same run. With ``msgspec`` importable, the same
request declared as a msgspec Struct is timed too, for comparison.

    python -m benchmarks.decode [--loops 20000]
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.decode import decode
from schemas.records import DeliveryJob, DeviceToken, NotificationRequest

NOW = datetime(2026, 12, 4, tzinfo=UTC)
REQUEST = orjson.dumps(
    {
        "idempotency_key": "order-1042-shipped",
        "recipient": {"user_id": "u-123"},
        "type": "order_shipped",
        "priority": "transactional",
        "tenant": "acme",
        "channels": ["push", "email"],
        "data": {"order_id": "1042", "carrier": "UPS", "estimated_delivery": "Tue"},
        "expiry_at": "2026-12-05T10:00:00Z",
    }
)
JOB = DeliveryJob(
    notification_id="n_c0000000011111111111111111111111",
    tenant="acme",
    user_id="u-123",
    type="order_shipped",
    priority="transactional",
    lane="critical",
    channel="push",
    data={"order_id": "1042", "carrier": "UPS"},
    created_at=NOW,
    locale="en",
    timezone="Europe/Paris",
    devices=[
        DeviceToken(user_id="u-123", token="ab" * 32, platform="apns", tenant="acme")
    ],
).dumps()


def per_call(fn: Callable[[], Any], loops: int) -> float:
    """Microseconds per call, best of five timed loops."""
    return min(timeit.repeat(fn, number=loops, repeat=5)) / loops * 1e6


def msgspec_request() -> Callable[[], Any] | None:
    """The request as a msgspec Struct with the same constraints, if installed."""
    try:
        from benchmarks._msgspec_request import decoder
    except ImportError:
        return None
    return lambda: decoder.decode(REQUEST)


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", type=int, default=20_000)
    loops = parser.parse_args().loops
    floor_request = per_call(lambda: orjson.loads(REQUEST), loops)
    floor_job = per_call(lambda: orjson.loads(JOB), loops)
    rows = [
        (
            "request, strict door",
            per_call(lambda: decode(NotificationRequest, REQUEST), loops),
            floor_request,
        ),
        ("delivery job", per_call(lambda: decode(DeliveryJob, JOB), loops), floor_job),
    ]
    other = msgspec_request()
    if other is not None:
        rows.append(("request, msgspec Struct", per_call(other, loops), floor_request))
    out = sys.stdout
    out.write(
        f"orjson.loads floor: request {floor_request:.2f} µs, job {floor_job:.2f} µs\n"
    )
    for name, micros, floor in rows:
        out.write(
            f"{name}: {micros:.2f} µs per record ({micros / floor:.1f}x the floor)\n"
        )


if __name__ == "__main__":
    main()
