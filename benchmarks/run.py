"""Run the benchmark: raw floor, single-hop Faust relay and Faust agent, one run.

    python -m benchmarks.run [--events N] [--repeat R] [--sweep | --only NAME ...]

Each contender runs as its own process against a fresh embedded broker (Apache
Kafka, one KRaft node, a new log dir, free loopback ports) preloaded with the
same N notification requests; the report gives events/s, CPU µs/event and the
ratios.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.util
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/run.py` from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

from benchmarks import chain
from benchmarks.kafka import PARTITIONS, count_records, create_topics, preload
from benchmarks.workload import SPEC_ENV, PhaseSpec, Result
from pipeline.admin import ensure_topics
from pipeline.broker import EmbeddedBroker, free_port, terminate
from pipeline.settings import Settings
from pipeline.topology import topic_name

REPO = Path(__file__).resolve().parents[1]
INPUT_TOPIC = "bench.requests"
OUTPUT_TOPIC = "bench.output"
DEFAULT_EVENTS = 40_000
PR_SET_PDEATHSIG = 1
#: Cores of other load above which a run is flagged as disturbed.
BUSY = 0.2


@dataclass(frozen=True)
class Contender:
    """One way of doing the work: the floor loop or a Faust worker variant."""

    name: str
    kind: str  # "floor" or "faust"
    shape: str = "transform"
    overrides: dict[str, Any] = field(default_factory=dict)
    transport: str = "kafka"
    loop: str = "aio"
    loglevel: str = "info"  # as the Dockerfile runs the worker
    baseline: str = "relay"  # the relay its ratio is taken against
    note: str = ""


#: Faust settings that measured best (README.md, "Findings"; on Tansu, then).
TUNED: dict[str, Any] = {"producer_linger": 0.005}


def _faust(name: str, note: str = "", **kwargs: Any) -> Contender:
    return Contender(name, "faust", note=note, **kwargs)


CATALOGUE: tuple[Contender, ...] = (
    Contender("floor", "floor", note="confluent-kafka loop, same transform"),
    Contender("floor-relay", "floor", shape="relay", note="floor, no transform"),
    Contender(
        "chain",
        "chain",
        note="the real worker: ingest → fanout, both lanes, RocksDB",
    ),
    _faust("relay", "single hop: consume → await send unchanged", shape="relay"),
    _faust("agent", "project settings, await send per event"),
    _faust(
        "relay-tuned",
        "relay with TUNED settings",
        shape="relay",
        overrides=TUNED,
    ),
    _faust(
        "agent-tuned",
        "agent with TUNED settings",
        overrides=TUNED,
        baseline="relay-tuned",
    ),
    _faust(
        "agent-batched",
        "TUNED + take_events(1000) + send_soon",
        shape="take_send_soon",
        overrides=TUNED,
        baseline="relay-tuned",
    ),
    # Agent shapes, project settings.
    _faust("send_soon", "send_soon per event", shape="send_soon"),
    _faust("producer", "app.producer.send, no Topic layer", shape="producer"),
    _faust("take", "take_events(1000) + await send", shape="take_transform"),
    _faust("take-send_soon", "take_events + send_soon", shape="take_send_soon"),
    # One Faust setting at a time.
    _faust("linger-1ms", overrides={"producer_linger": 0.001}),
    _faust("linger-5ms", overrides={"producer_linger": 0.005}),
    _faust("linger-20ms", overrides={"producer_linger": 0.02}),
    _faust("batch-256k", overrides={"producer_max_batch_size": 262_144}),
    _faust("poll-100", overrides={"broker_max_poll_records": 100}),
    _faust("poll-2000", overrides={"broker_max_poll_records": 2000}),
    _faust("fetch-4m", overrides={"consumer_max_fetch_size": 4 * 2**20}),
    _faust("fetch-64k", overrides={"consumer_max_fetch_size": 64 * 2**10}),
    _faust("commit-5s", overrides={"broker_commit_interval": 5.0}),
    _faust("buffer-256", overrides={"stream_buffer_maxsize": 256}),
    _faust("buffer-32k", overrides={"stream_buffer_maxsize": 32_768}),
    _faust("wait-empty", overrides={"stream_wait_empty": True}),
    _faust("acks-1", "leader ack only: not durable", overrides={"producer_acks": 1}),
    _faust(
        "threaded", "producer in its own thread", overrides={"producer_threaded": True}
    ),
    _faust(
        "loglevel-warn",
        "Faust's default -l warn: its spinner sets the root logger to DEBUG",
        loglevel="warn",
    ),
    _faust("uvloop", "faust -L uvloop (needs uvloop installed)", loop="uvloop"),
    _faust("confluent", "confluent:// transport", transport="confluent"),
    # Combinations on top of TUNED.
    _faust(
        "tuned-send_soon",
        "TUNED + send_soon",
        shape="send_soon",
        overrides=TUNED,
        baseline="relay-tuned",
    ),
    _faust(
        "tuned-producer",
        "TUNED + app.producer.send",
        shape="producer",
        overrides=TUNED,
        baseline="relay-tuned",
    ),
    _faust(
        "tuned-uvloop",
        "TUNED + uvloop",
        overrides=TUNED,
        loop="uvloop",
        baseline="relay-tuned",
    ),
    _faust(
        "tuned-take",
        "TUNED + take_events + await send",
        shape="take_transform",
        overrides=TUNED,
        baseline="relay-tuned",
    ),
    _faust(
        "batched-uvloop",
        "agent-batched + uvloop",
        shape="take_send_soon",
        overrides=TUNED,
        loop="uvloop",
        baseline="relay-tuned",
    ),
    _faust(
        "tuned-producer-uv",
        "TUNED + app.producer.send + uvloop",
        shape="producer",
        overrides=TUNED,
        loop="uvloop",
        baseline="relay-tuned",
    ),
)
BY_NAME = {contender.name: contender for contender in CATALOGUE}
DEFAULT = (
    "floor",
    "relay",
    "agent",
    "relay-tuned",
    "agent-tuned",
    "agent-batched",
    "chain",
)


class ContenderFailed(RuntimeError):
    """A contender did not finish, or could not run here."""


@dataclass(frozen=True)
class Outcome:
    """A contender's measured result and what its output topic really holds."""

    contender: Contender
    result: Result
    output_records: int
    payload_bytes: float

    @property
    def rate(self) -> float:
        """Events per second between first consumed and last acked."""
        return self.result.events / self.result.wall_s

    @property
    def cpu_us(self) -> float:
        """CPU microseconds of the contender's process per event."""
        return self.result.cpu_s / self.result.events * 1e6

    @property
    def broker_us(self) -> float:
        """CPU microseconds of the broker per event during the window."""
        return self.result.broker_cpu_s / self.result.events * 1e6

    @property
    def others(self) -> float:
        """Cores that other processes on the machine kept busy during the window."""
        return self.result.others_cpu_s / self.result.wall_s


@dataclass
class Bench:
    """Runs contenders, each against a fresh broker holding the same input."""

    workdir: Path
    events: int
    timeout: float
    profile: bool = False
    runs: int = 0

    def run(self, contender: Contender) -> Outcome:
        """Start a broker, preload it, run ``contender``, check its output."""
        if contender.kind == "chain":
            return self.run_chain(contender)
        self.runs += 1
        tag = f"{self.runs:02d}-{contender.name}"
        if contender.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
            raise ContenderFailed("uvloop is not installed")
        # A fresh broker per contender: no contender is served by a broker
        # that holds (and caches, compacts, cleans) earlier runs' records.
        broker = EmbeddedBroker(log_path=self.workdir / f"{tag}.broker.log")
        try:
            with _quiet_stderr():
                broker.start()
                # start() leaves its metadata probe (a librdkafka client) in a
                # reference cycle; unless collected now it keeps reconnecting,
                # and logging, after the broker has stopped.
                gc.collect()
            create_topics(broker.bootstrap, INPUT_TOPIC, OUTPUT_TOPIC)
            last_offsets, payload = preload(broker.bootstrap, INPUT_TOPIC, self.events)
            spec = PhaseSpec(
                name=tag,
                bootstrap=broker.bootstrap,
                input_topic=INPUT_TOPIC,
                output_topic=OUTPUT_TOPIC,
                last_offsets=last_offsets,
                result_path=str(self.workdir / f"{tag}.json"),
                broker_pid=broker.pid,
                shape=contender.shape,
                overrides=contender.overrides,
                transport=contender.transport,
                profile_path=(
                    str(self.workdir / f"{tag}.prof")
                    if self.profile and contender.kind == "faust"
                    else None
                ),
                timeout=self.timeout,
            )
            self._run_process(contender, spec, broker)
            result = Result.read(Path(spec.result_path))
            produced = count_records(broker.bootstrap, OUTPUT_TOPIC)
        finally:
            broker.stop()
        return Outcome(contender, result, produced, payload)

    def run_chain(self, contender: Contender) -> Outcome:
        """The project's own worker against the same preloaded requests."""
        self.runs += 1
        tag = f"{self.runs:02d}-{contender.name}"
        broker = EmbeddedBroker(log_path=self.workdir / f"{tag}.broker.log")
        try:
            with _quiet_stderr():
                broker.start()
                gc.collect()
            # NOTIFY_TOPIC_PREFIX reaches the worker too, through os.environ.
            settings = Settings(broker_url=broker.url)
            ensure_topics(settings)
            requests = topic_name(settings, chain.REQUEST_TOPIC)
            _, payload = preload(broker.bootstrap, requests, self.events)
            env = {
                **os.environ,
                "NOTIFY_BROKER_URL": broker.url,
                "NOTIFY_APP_ID": f"bench-{tag}",
                "NOTIFY_DATA_DIR": str(self.workdir / tag),
                "NOTIFY_WEB_HOST": "127.0.0.1",
                "NOTIFY_WEB_PORT": str(free_port()),
            }
            argv = [sys.executable, "-m", "faust", "-A", "pipeline.app", "worker"]
            argv += ["--without-web", "--loglevel", contender.loglevel]
            process = _start(argv, env, self.workdir / f"{tag}.log")
            try:
                result, accepted = chain.measure(
                    broker.bootstrap,
                    self.events,
                    process.pid,
                    broker.pid,
                    self.timeout,
                    alive=lambda: process.poll() is None,
                    events_topic=topic_name(settings, chain.EVENTS_TOPIC),
                )
            except TimeoutError as exc:
                raise ContenderFailed(str(exc)) from None
            finally:
                _stop(process)
        finally:
            broker.stop()
        return Outcome(contender, result, accepted, payload)

    def _run_process(
        self, contender: Contender, spec: PhaseSpec, broker: EmbeddedBroker
    ) -> None:
        env = {
            **os.environ,
            SPEC_ENV: spec.to_env(),
            "NOTIFY_BROKER_URL": broker.url,
            "NOTIFY_APP_ID": f"bench-{spec.name}",
            "NOTIFY_DATA_DIR": str(self.workdir / spec.name),
            "NOTIFY_STORE_URL": "memory://",
            "NOTIFY_WEB_HOST": "127.0.0.1",
            "NOTIFY_WEB_PORT": str(free_port()),
        }
        if contender.kind == "floor":
            argv = [sys.executable, "-m", "benchmarks.floor"]
        else:
            argv = [sys.executable, "-m", "faust", "--loop", contender.loop]
            argv += ["-A", "benchmarks.faust_worker", "worker", "--without-web"]
            argv += ["--loglevel", contender.loglevel]
        log_path = self.workdir / f"{spec.name}.log"
        process = _start(argv, env, log_path)
        try:
            _wait_for_result(process, Path(spec.result_path), log_path, self.timeout)
        finally:
            _stop(process)


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    # librdkafka logs "connection refused" to fd 2 while the broker boots.
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _die_with_parent() -> None:
    # Runs in the child before exec: if the runner dies, the child gets SIGTERM.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _start(
    argv: list[str], env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the runner, which stops it
            preexec_fn=_die_with_parent,
        )


def _wait_for_result(
    process: subprocess.Popen[bytes], result: Path, log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not result.exists():
        if process.poll() is not None:
            status = f"exited with {process.returncode}"
        elif time.monotonic() > deadline:
            status = f"gave no result within {timeout:.0f}s"
        else:
            time.sleep(0.1)
            continue
        tail = log_path.read_text(errors="replace").strip().splitlines()[-12:]
        raise ContenderFailed(status + "; log tail:\n    " + "\n    ".join(tail))


def _stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    terminate(process, timeout)


def fastest_run(outcomes: Sequence[Outcome]) -> Outcome:
    """The fastest of repeated runs: other load on the machine only slows a run."""
    return max(outcomes, key=lambda outcome: outcome.rate)


def report(outcomes: Sequence[Outcome], events: int, profiled: bool) -> None:
    """Print the figures and the ratios against the floor and the relay."""
    by_name = {outcome.contender.name: outcome for outcome in outcomes}
    floor = by_name.get("floor")
    payload = outcomes[0].payload_bytes if outcomes else 0.0
    print()
    print(
        f"{events:,} events of {payload:.0f} B JSON on average, {PARTITIONS} "
        "partitions, a fresh Kafka broker (one KRaft node) per contender"
    )
    if profiled:
        print("PROFILED: cProfile slows the Faust workers; compare shares only.")
    header = (
        f"{'contender':<16}{'events/s':>10}{'CPU µs/ev':>11}{'broker µs/ev':>14}"
        f"{'others':>8}{'x floor':>9}{'x relay':>9}{'output':>9}  note"
    )
    print(header)
    print("-" * len(header))
    for outcome in outcomes:
        relay = by_name.get(outcome.contender.baseline) or by_name.get("relay")
        short = "" if outcome.output_records >= events else "  OUTPUT SHORT"
        busy = "*" if outcome.others > BUSY else " "
        print(
            f"{outcome.contender.name:<16}{outcome.rate:>10,.0f}"
            f"{outcome.cpu_us:>11,.1f}{outcome.broker_us:>14,.1f}"
            f"{outcome.others:>7.2f}{busy}"
            f"{_ratio(outcome, floor, 3)}{_ratio(outcome, relay, 2)}"
            f"{outcome.output_records:>9,}  {outcome.contender.note}{short}"
        )
    if any(outcome.others > BUSY for outcome in outcomes):
        print(
            f"* other processes kept more than {BUSY} of a core busy during this "
            "run: its events/s are understated; rerun on a quiet machine."
        )
    print()
    for name in ("agent", "agent-tuned", "agent-batched"):
        agent = by_name.get(name)
        relay = by_name.get(agent.contender.baseline) if agent else None
        if agent and floor and relay:
            print(
                f"{name}: {agent.rate / floor.rate:.3f}x floor, "
                f"{agent.rate / relay.rate:.2f}x {relay.contender.name}, "
                f"{agent.cpu_us / floor.cpu_us:.1f}x the floor's CPU per event"
            )


def _ratio(outcome: Outcome, base: Outcome | None, digits: int) -> str:
    if base is None:
        return f"{'n/a':>9}"
    return f"{outcome.rate / base.rate:>9.{digits}f}"


def profile_breakdown(path: str, top: int = 12) -> list[tuple[str, float]]:
    """Own (``tottime``) seconds per package in a cProfile dump, largest first."""
    totals: dict[str, float] = {}
    stats: dict[Any, Any] = pstats.Stats(path).stats  # type: ignore[attr-defined]
    for (filename, _line, function), (_cc, _nc, own, _cum, _callers) in stats.items():
        package = _package(filename, function)
        totals[package] = totals.get(package, 0.0) + own
    return sorted(totals.items(), key=lambda item: item[1], reverse=True)[:top]


def _package(filename: str, function: str) -> str:
    if filename == "~":
        return function.strip("<>")
    parts = Path(filename).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    for marker in ("python3.11", "lib"):
        if marker in parts:
            rest = parts[parts.index(marker) + 1 :]
            return f"stdlib {rest[0]}" if rest else filename
    return Path(filename).parent.name or filename


def _print_profile(outcome: Outcome) -> None:
    profile = outcome.result.info.get("profile")
    if profile:
        for package, seconds in profile_breakdown(profile):
            print(f"      {package:<44}{seconds:8.2f}s")


def _as_json(outcome: Outcome, runs: Sequence[Outcome]) -> dict[str, Any]:
    contender = outcome.contender
    return {
        "runs_events_per_s": [round(run.rate, 1) for run in runs],
        "name": contender.name,
        "events_per_s": round(outcome.rate, 1),
        "cpu_us_per_event": round(outcome.cpu_us, 2),
        "broker_cpu_us_per_event": round(outcome.broker_us, 2),
        "other_load_cores": round(outcome.others, 2),
        "output_records": outcome.output_records,
        "shape": contender.shape,
        "overrides": contender.overrides,
        "transport": contender.transport,
        "loop": contender.loop,
        "loglevel": contender.loglevel,
        "result": outcome.result.info,
    }


def _stop_on_signals() -> None:
    # SIGTERM / SIGHUP unwind like Ctrl-C, so every `finally` stops its process.
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the chosen contenders, print the report."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    parser.add_argument("--repeat", type=int, default=1, help="runs per contender")
    parser.add_argument("--sweep", action="store_true", help="run every contender")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(BY_NAME), metavar="NAME", help="contenders"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the workers")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", type=Path, help="keep logs and profiles here")
    parser.add_argument(
        "--timeout", type=float, help="seconds per contender (default: from --events)"
    )
    args = parser.parse_args(argv)
    names = [c.name for c in CATALOGUE] if args.sweep else list(args.only or DEFAULT)
    for required in ("relay", "floor"):  # every report needs both baselines
        if required not in names:
            names.insert(0, required)
    timeout = args.timeout or max(90.0, args.events / 250)
    _stop_on_signals()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="notify-bench-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        bench = Bench(workdir, args.events, timeout, profile=args.profile)
        runs: dict[str, list[Outcome]] = {name: [] for name in names}
        failed: set[str] = set()
        for round_ in range(1, args.repeat + 1):
            # Rounds rather than back-to-back repeats: a slow spell of the
            # machine then hits every contender alike instead of one ratio.
            for name in names:
                if name in failed:
                    continue
                try:
                    outcome = bench.run(BY_NAME[name])
                except ContenderFailed as exc:
                    print(f"  {name:<16}FAILED: {exc}")
                    failed.add(name)
                    continue
                runs[name].append(outcome)
                print(
                    f"  [{round_}/{args.repeat}] {name:<16}{outcome.rate:>9,.0f} "
                    f"events/s{outcome.cpu_us:>8,.1f} CPU µs/event, "
                    f"others {outcome.others:.2f}"
                )
                _print_profile(outcome)
        outcomes = [fastest_run(runs[name]) for name in names if runs[name]]
        report(outcomes, args.events, args.profile)
        print(f"total {time.monotonic() - started:.0f}s")
        if args.json:
            args.json.write_bytes(
                orjson.dumps(
                    [_as_json(o, runs[o.contender.name]) for o in outcomes],
                    option=orjson.OPT_INDENT_2,
                )
            )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; everything the benchmark started has been stopped")
        sys.exit(130)
