"""Throughput benchmarks: a Faust agent against a raw confluent-kafka floor."""
