"""Create the pipeline's topics with their partitions and configs (idempotent)."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.settings import Settings
from pipeline.topology import ALL_TOPICS, topic_name


def ensure_topics(settings: Settings, *, timeout: float = 15.0) -> list[str]:
    """Create every topic of the topology that is missing; return those created.

    Topics are named as the workers name them, under ``settings.topic_prefix``.
    """
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    existing = set(admin.list_topics(timeout=timeout).topics)
    named = [(topic_name(settings, spec), spec) for spec in ALL_TOPICS]
    wanted = [
        NewTopic(
            name,
            num_partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
            config=spec.kafka_configs(),
        )
        for name, spec in named
        if name not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created
