"""Where a worker's CPU goes in the whole chain, by part.

Runs `benchmarks.send`'s whole-chain measurement (one worker, ingest →
fanout → send, emulators answering at once) with py-spy sampling the worker
for the measured requests, and sorts each sample by the innermost frame
that names a part:

- **provider call**: our senders, aiohttp and what it uses;
- **produce**: Faust's send path and the Kafka client's producer;
- **changelogs / tables**: Faust's tables and stores, RocksDB;
- **consume**: the Kafka client's consumer, Faust's consumer, conductor,
  streams and agents, our reading layer;
- **decisions**: our agents and decision modules, records, templates;
- **event loop**: asyncio and mode frames with nothing of the above
  beneath them (scheduling, callbacks, waits);
- **other**: the rest.

Samples waiting in ``select`` are idle and not counted. Each part's share
times the CPU µs per notification the run measured gives its µs.

    python -m benchmarks.profile_chain [--requests 10000] [--keep stacks.txt]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess  # noqa: S404 - py-spy on our own worker
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.send import chain_throughput

#: Parts, and the frame fragments that name them; the innermost frame that
#: holds a fragment decides.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "provider call",
        (
            "pipeline/providers",
            "aiohttp",
            "dispatch (agents/send.py",
            "yarl",
            "multidict",
        ),
    ),
    (
        "produce",
        (
            "send_soon",
            "faust/transport/producer",
            "aiokafka/producer",
            "ProducerBuffer",
            "Producer.",
            "faust/topics.py",
            "send (faust/channels.py",
        ),
    ),
    (
        "changelogs / tables",
        ("faust/tables", "faust/stores", "pipeline/stores", "(tables/"),
    ),
    (
        "consume",
        (
            "aiokafka/consumer",
            "faust/transport/consumer",
            "faust/transport/conductor",
            "faust/transport/drivers/aiokafka",
            "faust/streams",
            "faust/agents",
            "getmany (pipeline/transport.py",
            "pipeline/reading",
        ),
    ),
    (
        "decisions",
        ("(agents/", "(pipeline/", "(schemas/", "pydantic", "orjson", "jinja2"),
    ),
)
EVENT_LOOP = ("asyncio/", "mode/", "selectors")


def part_of(frames: list[str]) -> str | None:
    """The part a sample belongs to, innermost frame first; None if idle."""
    if "select (selectors" in frames[-1] or "EpollSelector.select" in frames[-1]:
        return None
    for frame in reversed(frames):
        for name, fragments in PARTS:
            if any(fragment in frame for fragment in fragments):
                return name
    if any(fragment in frames[-1] for fragment in EVENT_LOOP):
        return "event loop"
    return "other"


def shares(stacks: Path) -> Counter[str]:
    """Busy samples per part, from py-spy's raw (folded) output."""
    counts: Counter[str] = Counter()
    for line in stacks.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        part = part_of(stack.split(";"))
        if part is not None:
            counts[part] += int(n)
    return counts


@contextmanager
def sampled(pid: int, out: Path) -> Iterator[None]:
    """py-spy samples process ``pid`` (every thread) into ``out`` meanwhile."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [spy, "record", "-p", str(pid), "-o", str(out), "-f", "raw"]
    process = subprocess.Popen(  # noqa: S603 - our own worker
        [*command, "-r", "250", "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)  # py-spy writes its file and exits
        process.wait(60)


def main(argv: list[str] | None = None) -> int:
    """Run the whole chain once under the sampler; print µs per part."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--keep", type=Path, help="keep py-spy's raw stacks here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="notify-profile-") as tmp:
        stacks = args.keep or Path(tmp) / "stacks.txt"
        written: dict[str, float] = {}
        rate, cpu_us = chain_throughput(
            Path(tmp),
            args.requests,
            args.timeout,
            watch=lambda pid: sampled(pid, stacks),
            written=written,
        )
        counts = shares(stacks)
    busy = sum(counts.values()) or 1
    print(  # noqa: T201
        f"whole chain {rate:,.0f} notifications/s, {cpu_us:,.0f} µs worker CPU "
        f"per notification ({busy:,} busy samples)"
    )
    for part, n in counts.most_common():
        share = n / busy
        print(f"  {part:20s} {share:6.1%}  {share * cpu_us:6,.0f} µs")  # noqa: T201
    print(  # noqa: T201
        f"records written per notification: {sum(written.values()):.2f}"
    )
    for topic, per in sorted(written.items(), key=lambda kv: -kv[1]):
        print(f"  {per:5.2f}  {topic}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
