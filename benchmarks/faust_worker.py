"""The benchmark's Faust app: one agent of the chosen shape, run by ``faust worker``.

The runner starts ``python -m faust -A benchmarks.faust_worker worker`` with a
``PhaseSpec`` and the ``NOTIFY_*`` settings in its environment. The app is the
project's own (``pipeline.app.create_app``: dev-profile settings, guarded
transport), with the spec's Faust setting overrides applied on top.
"""

from __future__ import annotations

import cProfile
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import faust
from faust.streams import Stream
from faust.types import EventT, StreamT

from benchmarks.workload import PhaseSpec, Progress, Result, Sample, process
from pipeline.app import create_app, faust_options
from pipeline.settings import Settings
from schemas import codec

#: Faust settings the benchmark may override; their effective values are reported.
TUNABLES = (
    "broker_max_poll_records",
    "consumer_max_fetch_size",
    "broker_commit_interval",
    "producer_linger",
    "producer_max_batch_size",
    "producer_acks",
    "stream_buffer_maxsize",
    "stream_wait_empty",
    "stream_processing_timeout",
    "producer_threaded",
)

Handler = Callable[[EventT], Awaitable[None]]


def build_app(spec: PhaseSpec, settings: Settings) -> faust.App:
    """The project's app with ``spec.overrides``; ``confluent://`` gets a plain one."""
    if spec.transport == "confluent":
        # The project's app pins its own aiokafka-based transport, so the
        # confluent driver is measured with a plain app on the same options.
        codec.register()
        options = {**faust_options(settings, discover=[]), **spec.overrides}
        options["broker"] = f"confluent://{settings.bootstrap_servers}"
        return faust.App(settings.app_id, **options)
    app = create_app(settings, discover=[])
    if spec.overrides:
        app.config_from_object(spec.overrides, force=True)
    return app


spec = PhaseSpec.from_env()
app = build_app(spec, Settings())
source = app.topic(
    spec.input_topic,
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
)
sink = app.topic(
    spec.output_topic,
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
)


class Run:
    """Measures the window from the first consumed to the last acked event."""

    def __init__(self) -> None:
        self.progress = Progress(spec.last_offsets)
        self.half = sum(offset + 1 for offset in spec.last_offsets.values()) // 2
        self.start: Sample | None = None
        self.middle: Sample | None = None
        self.finished = False
        self.profiler = cProfile.Profile() if spec.profile_path else None

    def begin(self) -> None:
        """Start the clocks at the first event."""
        if self.start is None:
            self.start = Sample.now(spec.broker_pid)
            if self.profiler is not None:
                self.profiler.enable()

    async def finish(self) -> None:
        """Wait until every produced record is acked, then write the result."""
        # Faust's buffer flush gives up after 0.1 s without progress; loop
        # until send_soon's buffer is empty and aiokafka has every ack.
        await app.producer.flush()
        while app.producer.buffer.size:
            await app.producer.flush()
        end = Sample.now(spec.broker_pid)
        if self.profiler is not None:
            self.profiler.disable()
            self.profiler.dump_stats(str(spec.profile_path))
        assert self.start is not None
        assert self.middle is not None
        half = self.middle.wall - self.start.wall
        info: dict[str, Any] = {
            # Events/s over each half of the window: equal if steady.
            "halves": [
                round(self.half / half),
                round(
                    (self.progress.events - self.half) / (end.wall - self.middle.wall)
                ),
            ],
            "client": f"faust {faust.__version__} {app.conf.broker[0].scheme}://",
            "shape": spec.shape,
            "root_log_level": logging.getLevelName(logging.getLogger().level),
            "conf": {name: _plain(getattr(app.conf, name)) for name in TUNABLES},
        }
        if spec.profile_path:
            info["profile"] = spec.profile_path
        Result.between(self.start, end, self.progress.events, info).write(
            Path(spec.result_path)
        )
        self.finished = True

    async def saw(self, event: EventT) -> None:
        """Count ``event``; finish once every partition is read to its end."""
        message = event.message
        if self.progress.events == self.half:
            self.middle = Sample.now(spec.broker_pid)
        if self.progress.saw(message.partition, message.offset) and not self.finished:
            await self.finish()


def _plain(value: Any) -> Any:
    return value if isinstance(value, bool | int | float | str | None) else str(value)


run = Run()


async def relay(event: EventT) -> None:
    """Single hop: send the consumed record on unchanged, awaiting the send."""
    await sink.send(key=event.key, value=event.value)


async def transform(event: EventT) -> None:
    """Decode, transform, encode, then ``await topic.send`` (the usual agent)."""
    key, value = process(event.value)
    await sink.send(key=key, value=value)


async def transform_send_soon(event: EventT) -> None:
    """Same work, but ``send_soon``: the record goes through Faust's buffer."""
    key, value = process(event.value)
    sink.send_soon(key=key, value=value)


async def transform_producer(event: EventT) -> None:
    """Same work, handed straight to the producer, bypassing the Topic layer."""
    key, value = process(event.value)
    await app.producer.send(spec.output_topic, key, value, None, None, None)


SHAPES: dict[str, Handler] = {
    "relay": relay,
    "transform": transform,
    "send_soon": transform_send_soon,
    "producer": transform_producer,
}


@app.agent(source, name="bench")
async def bench(stream: StreamT[bytes]) -> None:
    """The benchmark agent: the shape the spec names, per event or per batch."""
    handle = SHAPES[spec.shape.removeprefix("take_")]
    if spec.shape.startswith("take_"):
        # take_events is on faust.Stream, not on the StreamT interface.
        batches = cast(Stream, stream).take_events(spec.take, within=0.05)
        async for events in batches:
            run.begin()
            for event in events:
                await handle(event)
                await run.saw(event)
        return
    async for event in stream.events():
        run.begin()
        await handle(event)
        await run.saw(event)
