"""The gateway's Kafka reader: one consumer thread on ``trades``, ``bars``, ``alerts`` and ``user_events``, no
consumer group (each replica reads everything; nothing is committed), batches handed to the
event loop.

Where it starts: ``trades`` and ``user_events`` at the end (live only); ``bars`` and ``alerts`` a bounded number of
messages before the end (``gateway.backfill_messages`` per partition), which covers the bars the
flow has sent but not yet written to Parquet, and fills the alert history of ``/api/v1/alerts``.
Every record goes through the codec; one that does not decode is counted and skipped (the flow
dead-letters bad trades already; the gateway only reads).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, TopicPartition

from candlewax import metrics
from candlewax.codec import Alert, Bar, ParseError, Trade, UserEvent, decode_message
from candlewax.kafka import consumer_config
from candlewax.settings import Settings
from candlewax.topics import ALERTS, BARS, TRADES, USER_EVENTS

log = logging.getLogger(__name__)
_POLL_S = 0.02


@dataclass(slots=True)
class Batch:
    """One poll's records, each with its Kafka timestamp (ms)."""

    trades: list[tuple[Trade, int]] = field(default_factory=list)
    bars: list[tuple[Bar, int]] = field(default_factory=list)
    alerts: list[tuple[Alert, int]] = field(default_factory=list)
    users: list[tuple[UserEvent, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.trades or self.bars or self.alerts or self.users)


def decode_batch(messages: list[tuple[str, bytes | None, int]], names: dict[str, str]) -> Batch:
    """(topic, value, timestamp) → a Batch; ``names`` maps a topic name to trades/bars/alerts.
    Total: any bytes in, never an exception out (rejects are counted)."""
    batch = Batch()
    for topic, value, ts in messages:
        role = names.get(topic)
        if role == TRADES:
            good, bad = decode_message(value)
            batch.trades.extend((t, ts) for t in good if isinstance(t, Trade))
            if bad:
                metrics.GATEWAY_RECORDS.labels(TRADES, "rejected").inc(len(bad))
            continue
        try:
            if value is None:
                raise ParseError("json", "empty message (tombstone)")
            if role == BARS:
                batch.bars.append((Bar.decode(value), ts))
            elif role == ALERTS:
                batch.alerts.append((Alert.decode(value), ts))
            elif role == USER_EVENTS:
                batch.users.append((UserEvent.decode(value), ts))
        except ParseError:
            metrics.GATEWAY_RECORDS.labels(role or "other", "rejected").inc()
    metrics.GATEWAY_RECORDS.labels(TRADES, "ok").inc(len(batch.trades))
    metrics.GATEWAY_RECORDS.labels(BARS, "ok").inc(len(batch.bars))
    metrics.GATEWAY_RECORDS.labels(ALERTS, "ok").inc(len(batch.alerts))
    metrics.GATEWAY_RECORDS.labels(USER_EVENTS, "ok").inc(len(batch.users))
    return batch


class Feed:
    """Reads until ``stop``; ``deliver(batch)`` is called from the reader thread."""

    def __init__(self, settings: Settings, deliver: Callable[[Batch], None]) -> None:
        self.settings = settings
        self.deliver = deliver
        self.stop = threading.Event()
        self.ready = threading.Event()
        #: The reader's fatal error, if it ended with one (``/healthz`` reports it).
        self.error: str | None = None
        self.names = {settings.topic(t): t for t in (TRADES, BARS, ALERTS, USER_EVENTS)}
        self.thread = threading.Thread(target=self._run, name="gateway-feed", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _assign(self, consumer: Consumer) -> None:
        backfill = self.settings.gateway.backfill_messages
        assignment = []
        for topic, role in self.names.items():
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            if meta.error is not None:
                raise RuntimeError(f"topic {topic}: {meta.error.str()}")
            for partition in sorted(meta.partitions):
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10
                )
                # Live only for trades and private events (a user gets what comes after login).
                live = role in (TRADES, USER_EVENTS)
                start = high if live else max(low, high - backfill)
                assignment.append(TopicPartition(topic, partition, start))
        consumer.assign(assignment)

    def _run(self) -> None:
        conf = consumer_config(
            self.settings.connection, f"candlewax-gateway-{uuid.uuid4().hex[:8]}"
        )
        conf["enable.partition.eof"] = False
        consumer = Consumer(conf)
        try:
            self._assign(consumer)
            self.ready.set()
            log.info("gateway reading %s", ", ".join(self.names))
            while not self.stop.is_set():
                messages = consumer.consume(1000, _POLL_S)
                batch = decode_batch(
                    [
                        (m.topic() or "", m.value(), m.timestamp()[1])
                        for m in messages
                        if m.error() is None
                    ],
                    self.names,
                )
                for m in messages:
                    err = m.error()
                    if err is not None and err.code() != KafkaError._PARTITION_EOF:
                        log.warning("gateway consumer: %s", err.str())
                if batch:
                    self.deliver(batch)
        except Exception as exc:  # the thread must not end silently: /healthz goes 503
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("gateway feed stopped: %s", self.error)
        finally:
            consumer.close()
