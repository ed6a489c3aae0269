"""The key → partition function of Kafka's default partitioner (murmur2).

Faust's producer (aiokafka) and Java clients use it; librdkafka clients such as
kcat default to another (CRC32), which is why ingest re-keys every request.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
