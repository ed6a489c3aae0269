"""The key → partition function of Kafka's default partitioner (murmur2).

Faust's producer (aiokafka) and Java clients use it; librdkafka clients such as
kcat default to another (CRC32), which is why ingest re-keys every request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiokafka.partitioner import murmur2

from pipeline.errors import InvalidMessage

if TYPE_CHECKING:
    from pipeline.settings import Settings


def key_hash(key: bytes) -> int:
    """Kafka's default partitioner hash of ``key`` (murmur2, made positive)."""
    return murmur2(key) & 0x7FFFFFFF


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key``."""
    return key_hash(key) % partitions


def check_user_partition(
    tenant: str, user_id: str, partition: int, settings: Settings
) -> None:
    """Refuse a user's record that is not on that user's partition.

    Everything about a user (state, idempotency, the send ledger) is looked
    up on the partition Kafka's default partitioner (murmur2) gives
    ``tenant/user_id``; a record a CRC32 producer (librdkafka's default, kcat's)
    put elsewhere would be checked against the wrong state. Forwarding it is
    no cure: on a rebuild an old misplaced record would overwrite a newer one,
    so it is refused with a reason the producer can act on.
    """
    key = f"{tenant}/{user_id}"
    wanted = partition_for(key.encode(), settings.topic_partitions)
    if partition != wanted:
        raise InvalidMessage(
            f"record for {key!r} is on partition {partition}, its user's is "
            f"{wanted}: produce with the murmur2 partitioner (Java's default; "
            "librdkafka: partitioner=murmur2_random)",
            code="misrouted",
        )
