"""Kafka output for Bytewax: each item is (topic, key, value, timestamp_ms).

``write_batch`` returns only after Kafka confirmed every message of the batch (idempotent
producer, acks=all): a batch is "written" when its delivery reports say so, not when it was queued.

Every record the flow writes is bounded by construction (the codec's limits: bars and alerts
of a few hundred bytes, dead letters below ~60 KB). A value over
:data:`~candlewax.codec.MAX_MESSAGE_BYTES` would be a bug; it is replaced by a ``too_large``
dead letter that keeps its head and hash, so a broker refusal can never stop the flow.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from candlewax.codec import MAX_MESSAGE_BYTES, DeadLetter
from candlewax.kafka import Connection, TrackedProducer

log = logging.getLogger(__name__)


class KafkaRecord(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes
    timestamp_ms: int | None = None


class _KafkaPartition(StatelessSinkPartition[KafkaRecord]):
    def __init__(self, connection: Connection, deadletter_topic: str) -> None:
        self._producer = TrackedProducer(connection)
        self.deadletter_topic = deadletter_topic

    def write_batch(self, items: list[KafkaRecord]) -> None:
        for item in items:
            if len(item.value) > MAX_MESSAGE_BYTES:
                item = self._oversize(item)
            self._producer.send(item.topic, item.value, item.key, item.timestamp_ms)
        self._producer.flush()

    def _oversize(self, item: KafkaRecord) -> KafkaRecord:
        log.error("a %d-byte record for %s exceeds the message limit", len(item.value), item.topic)
        detail = f"a {len(item.value)}-byte record for {item.topic} exceeds {MAX_MESSAGE_BYTES}"
        letter = DeadLetter("too_large", detail, item.value, {"topic": item.topic})
        return KafkaRecord(self.deadletter_topic, None, letter.encode())

    def close(self) -> None:
        self._producer.flush()


class KafkaOutput(DynamicSink[KafkaRecord]):
    """Writes records to whatever topic each names (bars, alerts, deadletter)."""

    def __init__(self, connection: Connection, deadletter_topic: str = "deadletter") -> None:
        self.connection = connection
        self.deadletter_topic = deadletter_topic

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _KafkaPartition:
        return _KafkaPartition(self.connection, self.deadletter_topic)
