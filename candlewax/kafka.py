"""Kafka client plumbing shared by every process: client configs, a producer that only calls a
message "sent" once Kafka's delivery report says so, and back-pressure instead of BufferError.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from candlewax import metrics
from candlewax.errors import ConfigError, DeliveryError
from candlewax.settings.types import is_secret_property

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Connection:
    """How to reach Kafka: the bootstrap servers and the librdkafka properties (security,
    SASL, TLS, timeouts...) that **every** client gets — admin, producers, consumers and the
    reachability check alike. Build it with ``Settings.connection``; the role defaults below
    (idempotence, manual offsets...) sit under the user's properties, so a property set in the
    settings always wins."""

    bootstrap_servers: str
    properties: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        shown = {k: "***" if is_secret_property(k) else v for k, v in self.properties.items()}
        return f"Connection({self.bootstrap_servers!r}, {shown!r})"

    def config(
        self, defaults: Mapping[str, Any] | None = None, fixed: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """``defaults`` < the user's properties < ``fixed`` (what a client cannot work without,
        e.g. its own ``group.id``)."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers, "log_level": 3}
        conf.update(defaults or {})
        conf.update(self.properties)
        conf.update(fixed or {})
        return conf


#: Idempotent, acks=all, a small linger so Kafka sees batches.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 500_000,
    "message.timeout.ms": 60_000,
}
#: Manual offsets, EOF events (the reliable "caught up" signal on every broker we test), a
#: session timeout that keeps group joins fast on Tansu, and a short fetch wait: a broker that
#: does not answer a waiting fetch as soon as data arrives (Tansu holds it for the whole wait)
#: would otherwise add up to librdkafka's default 500 ms to every trade → bar → alert hop.
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": True,
    "auto.offset.reset": "earliest",
    "session.timeout.ms": 6_000,
    "fetch.min.bytes": 1,
    "fetch.wait.max.ms": 10,
}


def producer_config(connection: Connection) -> dict[str, Any]:
    return connection.config(PRODUCER_DEFAULTS)


def consumer_config(
    connection: Connection, group_id: str, defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A consumer's config; ``defaults`` (a role's own, e.g. :func:`read_ahead`) go over
    :data:`CONSUMER_DEFAULTS` and under the user's properties."""
    return connection.config({**CONSUMER_DEFAULTS, **(defaults or {})}, {"group.id": group_id})


def read_ahead(batch_max: int) -> dict[str, Any]:
    """Bounded prefetch for a consumer that polls ``batch_max`` messages at a time: about two
    polls queued, at most 8 MB. librdkafka's defaults (100 000 messages or 64 MB *per
    partition*) cost the flow ~50 MB of RSS per partition and gain it nothing. A full queue
    postpones the partition's next fetch by ``fetch.queue.backoff.ms``, 1 s by default: with a
    queue this short that second would be the flow's pace (a third of its throughput,
    measured), so it is 5 ms."""
    return {
        "queued.min.messages": 2 * batch_max,
        "queued.max.messages.kbytes": 8_192,
        "fetch.queue.backoff.ms": 5,
    }


def admin_config(connection: Connection) -> dict[str, Any]:
    return connection.config()


def check_properties(properties: Mapping[str, str]) -> None:
    """Fail at start, in one clear line, on a Kafka property librdkafka does not know or whose
    value it refuses — not as a traceback out of the first client made with it."""
    if not properties:
        return
    base = {"bootstrap.servers": "127.0.0.1:9", "log_level": 0}
    for kind, make in (("producer", Producer), ("consumer", Consumer)):
        conf = {**base, **properties}
        if kind == "consumer":
            conf["group.id"] = "candlewax-check"
        try:
            client = make(conf)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else exc
            text = err.str() if isinstance(err, KafkaError) else str(err)
            raise ConfigError(
                f"kafka property error: {text}; set them in [candlewax.kafka] or CANDLEWAX_KAFKA "
                "(names and values: librdkafka's CONFIGURATION.md)"
            ) from None
        if kind == "consumer":
            client.close()


class TrackedProducer:
    """A confluent-kafka Producer that counts delivery reports per topic and outcome.

    ``send`` never raises BufferError: when librdkafka's queue is full it serves delivery
    reports until there is room. ``flush`` raises DeliveryError if anything was not confirmed.
    """

    def __init__(self, connection: Connection) -> None:
        self._producer = Producer(producer_config(connection))
        self.delivered = 0
        self.failed = 0
        self.last_error: KafkaError | None = None

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        topic = msg.topic() or "?"
        if err is None:
            self.delivered += 1
            metrics.PRODUCED.labels(topic, "ok").inc()
        else:
            self.failed += 1
            self.last_error = err
            metrics.PRODUCED.labels(topic, "error").inc()
            if self.failed == 1 or self.failed % 1000 == 0:
                log.error("delivery to %s failed (%d so far): %s", topic, self.failed, err)

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"on_delivery": self._on_delivery}
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.05)

    def poll(self, timeout_s: float = 0.0) -> None:
        self._producer.poll(timeout_s)

    def partitions(self, topic: str, timeout_s: float = 10.0) -> list[int]:
        meta = self._producer.list_topics(topic, timeout=timeout_s)
        info = meta.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise DeliveryError(f"topic {topic!r} does not exist: run `candlewax topics ensure`")
        return sorted(info.partitions)

    def flush(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        remaining = self._producer.flush(timeout_s)
        while remaining and time.monotonic() < deadline:
            remaining = self._producer.flush(max(0.1, deadline - time.monotonic()))
        if remaining:
            raise DeliveryError(
                f"{remaining} messages were not confirmed by Kafka within {timeout_s:.0f} s: "
                "is the broker reachable?"
            )
        if self.failed:
            raise DeliveryError(
                f"{self.failed} messages were rejected by Kafka (last error: {self.last_error})"
            )


def end_offsets(connection: Connection, topic: str, timeout_s: float = 30) -> dict[int, int]:
    """Per non-empty partition, one past its last offset — by reading to partition EOF, which
    every broker we test reports correctly (Tansu's high watermark is not reliable). Meant for
    small topics (alerts) and finite runs."""
    conf = consumer_config(connection, f"candlewax-ends-{uuid.uuid4().hex}")
    consumer = Consumer(conf)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        partitions = sorted(meta.partitions) if meta is not None else []
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        ends: dict[int, int] = {}
        done: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(partitions) and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.2):
                err, partition, offset = msg.error(), msg.partition(), msg.offset()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF and partition is not None:
                        done.add(partition)
                elif partition is not None and offset is not None:
                    ends[partition] = offset + 1
        return ends
    finally:
        consumer.close()
