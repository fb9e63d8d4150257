"""Read a whole topic in tests: consume until every partition reports EOF (no sleeps)."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaError, TopicPartition


def read_topic(
    bootstrap: str, topic: str, timeout_s: float = 30.0
) -> list[tuple[int, int, bytes | None, bytes]]:
    """All messages of ``topic`` as (partition, offset, key, value), in partition/offset order."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "log_level": 3,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        partitions = sorted(meta.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        done: set[int] = set()
        out: list[tuple[int, int, bytes | None, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while len(done) < len(partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: no EOF on partitions {set(partitions) - done}")
            for msg in consumer.consume(1000, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        done.add(msg.partition())
                    continue
                out.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
        return sorted(out, key=lambda m: (m[0], m[1]))
    finally:
        consumer.close()
