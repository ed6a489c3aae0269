"""Every topic of the pipeline, declared once: name, types, partitions, lane."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipeline.settings import LANES, Settings
from schemas.records import NotificationEvent

if TYPE_CHECKING:
    import faust
    from faust.types import TopicT

#: Headers a dead-letter record carries; its key and value are the original bytes.
DLQ_REASON = "notify.dlq.reason"
DLQ_CODE = "notify.dlq.code"
DLQ_STAGE = "notify.dlq.stage"
DLQ_SOURCE = "notify.dlq.source"  # topic[partition]@offset of the original


@dataclass(frozen=True)
class TopicSpec:
    """What one topic is: its name, key and value types, lane and configs."""

    name: str
    key: str
    value: str
    lane: str | None
    description: str
    compacted: bool = False
    configs: dict[str, str] = field(default_factory=dict)

    def kafka_configs(self) -> dict[str, str]:
        """Topic configs to create it with."""
        configs = dict(self.configs)
        if self.compacted:
            configs["cleanup.policy"] = "compact"
        return configs


def request_topic(lane: str) -> str:
    """Name of the lane's ingest topic."""
    return f"notify.requests.{lane}"


REQUESTS = {
    lane: TopicSpec(
        name=request_topic(lane),
        key="user_id (str)",
        value="NotificationRequest JSON (raw bytes, validated by ingest)",
        lane=lane,
        description=f"Requests produced by the API or any producer, {lane} lane.",
    )
    for lane in LANES
}
EVENTS = TopicSpec(
    name="notify.events",
    key="notification_id (str)",
    value="NotificationEvent",
    lane=None,
    description="Every stage's decision: status, trail, analytics, reconciliation.",
)
DEADLETTER = TopicSpec(
    name="notify.deadletter",
    key="original key (bytes)",
    value="original value (bytes); reason in notify.dlq.* headers",
    lane=None,
    description="Messages that could not be processed, byte for byte, with why.",
)

ALL_TOPICS: tuple[TopicSpec, ...] = (*REQUESTS.values(), EVENTS, DEADLETTER)


class Topology:
    """The topics of ``ALL_TOPICS`` bound to one Faust app."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.settings = settings
        self.requests: dict[str, TopicT] = {
            lane: self._raw(app, spec) for lane, spec in REQUESTS.items()
        }
        self.events: TopicT = app.topic(
            EVENTS.name,
            key_type=str,
            value_type=NotificationEvent,
            partitions=settings.topic_partitions,
            internal=True,
        )
        self.deadletter: TopicT = self._raw(app, DEADLETTER)

    def _raw(self, app: faust.App, spec: TopicSpec) -> TopicT:
        return app.topic(
            spec.name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=self.settings.topic_partitions,
            config=spec.kafka_configs() or None,
            internal=True,
        )
