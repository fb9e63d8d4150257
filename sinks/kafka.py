"""Kafka output for Bytewax: each item is (topic, key, value, timestamp_ms).

``write_batch`` returns only after Kafka confirmed every message of the batch (idempotent
producer, acks=all): a batch is "written" when its delivery reports say so, not when it was queued.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from candlewax.kafka import TrackedProducer


class KafkaRecord(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes
    timestamp_ms: int | None = None


class _KafkaPartition(StatelessSinkPartition[KafkaRecord]):
    def __init__(self, bootstrap_servers: str, extra: Mapping[str, str]) -> None:
        self._producer = TrackedProducer(bootstrap_servers, extra)

    def write_batch(self, items: list[KafkaRecord]) -> None:
        for item in items:
            self._producer.send(item.topic, item.value, item.key, item.timestamp_ms)
        self._producer.flush()

    def close(self) -> None:
        self._producer.flush()


class KafkaOutput(DynamicSink[KafkaRecord]):
    """Writes records to whatever topic each names (bars, alerts, deadletter)."""

    def __init__(self, bootstrap_servers: str, extra: Mapping[str, str] | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.extra = dict(extra or {})

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _KafkaPartition:
        return _KafkaPartition(self.bootstrap_servers, self.extra)
