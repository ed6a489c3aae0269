"""The provider calls alone: what one delivery costs before Kafka is involved.

Run as its own process by ``benchmarks.send``, with the emulators' settings
in its environment (``EmulatorStack.env()``). It builds the worker's own
senders from those settings (``pipeline.providers.build``) and makes N calls,
half FCM pushes and half SendGrid emails like the send-stage run, in batches
of ``NOTIFY_SEND_BATCH`` made concurrently as a send batch makes them, at
most ``NOTIFY_PROVIDER_CONCURRENCY`` in flight per provider. It prints one JSON line: calls, wall seconds and this process's CPU seconds.

No Kafka, no ledger, no template rendering: the content is fixed. So the CPU
per call it reports is a floor under any send stage that calls providers
through these clients, whatever carries the jobs to it.

    python -m benchmarks.provider_calls N
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

from benchmarks.send import delivery_job
from pipeline.delivery import plan
from pipeline.providers.base import Content, Outgoing, Sender
from pipeline.providers.build import email_senders, push_senders
from pipeline.settings import Settings

CONTENT = Content(
    body="Your order 1042 has shipped; it arrives Tuesday.",
    title="Order shipped",
    subject="Your order has shipped",
    html="<p>Your order <b>1042</b> has shipped; it arrives Tuesday.</p>",
    text="Your order 1042 has shipped; it arrives Tuesday.",
    data={"order_id": "1042"},
    template="order_shipped",
)


def outgoing(n: int, run: str) -> Outgoing:
    """The n-th call, made as the send stage makes it from the n-th job of the
    send-stage run: even ones a push over FCM, odd ones an email."""
    job = delivery_job(n, "critical", "push" if n % 2 == 0 else "email", run)
    [target] = plan.targets(job)
    return plan.outgoing(job, target, CONTENT, None)


async def measure(calls: int, settings: Settings) -> dict[str, float]:
    """Make ``calls`` calls in concurrent batches; wall and CPU seconds."""
    fcm = next(s for s in push_senders(settings) if s.name == "fcm")
    sendgrid = next(s for s in email_senders(settings) if s.name == "sendgrid")
    senders: list[Sender] = [fcm, sendgrid]
    for sender in senders:
        await sender.start()
    slots = {s.name: asyncio.Semaphore(settings.provider_concurrency) for s in senders}

    async def call(message: Outgoing) -> object:
        sender = fcm if message.channel == "push" else sendgrid
        async with slots[sender.name]:
            return await sender.send(message)

    batch = settings.send_batch
    run = f"calls{int(time.time()) % 100000:05d}"
    try:
        # One warm-up call each: connections, the FCM access token.
        await asyncio.gather(call(outgoing(0, run)), call(outgoing(1, run)))
        failed = 0
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for start in range(2, calls + 2, batch):
            stop = min(start + batch, calls + 2)
            results = await asyncio.gather(
                *(call(outgoing(n, run)) for n in range(start, stop)),
                return_exceptions=True,
            )
            failed += sum(isinstance(r, BaseException) for r in results)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    finally:
        for sender in senders:
            await sender.stop()
    return {"calls": calls, "failed": failed, "wall_s": wall, "cpu_s": cpu}


def main(argv: list[str] | None = None) -> int:
    """Measure and print the JSON line."""
    args = sys.argv[1:] if argv is None else argv
    calls = int(args[0]) if args else 20_000
    result = asyncio.run(measure(calls, Settings()))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
