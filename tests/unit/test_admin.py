"""``notify topics``: which topics it creates, named as the workers name them."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka.admin import NewTopic

from pipeline import admin
from pipeline.settings import Settings
from pipeline.topology import ALL_TOPICS, DEADLETTER, EVENTS, SUPPRESSIONS


class FakeAdmin:
    """An AdminClient that knows some topics and records what it is asked to make."""

    existing: set[str] = set()
    asked: list[NewTopic] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def list_topics(self, timeout: float) -> SimpleNamespace:
        """The cluster's metadata: only the topic names are read."""
        return SimpleNamespace(topics={name: None for name in self.existing})

    def create_topics(
        self, topics: list[NewTopic], request_timeout: float
    ) -> dict[str, Future[None]]:
        """Every topic asked for is created at once."""
        FakeAdmin.asked = list(topics)
        futures: dict[str, Future[None]] = {}
        for topic in topics:
            futures[topic.topic] = Future()
            futures[topic.topic].set_result(None)
        return futures


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> type[FakeAdmin]:
    """The fake admin client in place of confluent-kafka's."""
    monkeypatch.setattr(admin, "AdminClient", FakeAdmin)
    FakeAdmin.existing, FakeAdmin.asked = set(), []
    return FakeAdmin


def test_every_topic_is_created_under_the_prefix(cluster: type[FakeAdmin]) -> None:
    """staging.notify.events, never notify.events, with each topic's configs."""
    settings = Settings(topic_prefix="staging.", topic_partitions=6)
    created = admin.ensure_topics(settings)
    assert sorted(created) == sorted(f"staging.{spec.name}" for spec in ALL_TOPICS)
    by_name = {topic.topic: topic for topic in cluster.asked}
    compacted = by_name[f"staging.{SUPPRESSIONS.name}"]
    assert compacted.config == {"cleanup.policy": "compact"}
    assert {topic.num_partitions for topic in cluster.asked} == {6}


def test_only_this_prefixs_missing_topics_are_created(
    cluster: type[FakeAdmin],
) -> None:
    """Another deployment's topics, or unprefixed ones, do not count as present."""
    cluster.existing = {EVENTS.name, f"other.{DEADLETTER.name}", f"p.{EVENTS.name}"}
    created = admin.ensure_topics(Settings(topic_prefix="p."))
    assert f"p.{DEADLETTER.name}" in created
    assert f"p.{EVENTS.name}" not in created
    assert len(created) == len(ALL_TOPICS) - 1


def test_no_prefix_creates_the_topologys_own_names(cluster: type[FakeAdmin]) -> None:
    """The default keeps the names the topology declares."""
    created = admin.ensure_topics(Settings(topic_prefix=""))
    assert sorted(created) == sorted(spec.name for spec in ALL_TOPICS)
    cluster.existing = set(created)
    assert admin.ensure_topics(Settings(topic_prefix="")) == []
