"""The trade producer every connector uses: idempotent, acks=all, keyed by ``venue:SYMBOL``.

A trade counts as published only when Kafka's delivery report confirms it; ``close()`` flushes
and raises if anything was lost. Heartbeats go to *every* partition of ``trades`` so each
partition's event-time watermark advances even when its symbols are idle.

:meth:`TradeProducer.send_encoded` is the bulk form of :meth:`~TradeProducer.send` for trades
already encoded (replays): the same messages, produced in a tight loop, their delivery reports
counted in bulk — the same counts and metrics, settled after each call and on flush.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from candlewax import metrics
from candlewax.codec import (
    DeadLetter,
    Gap,
    Heartbeat,
    Since,
    Trade,
    encode_trades,
    message_key,
)
from candlewax.kafka import Connection, TrackedProducer

log = logging.getLogger(__name__)


class TradeProducer:
    """Publishes normalized trades (one message per trade, or JSON arrays per symbol)."""

    def __init__(
        self,
        connection: Connection,
        trades_topic: str = "trades",
        deadletter_topic: str = "deadletter",
    ) -> None:
        self.trades_topic = trades_topic
        self.deadletter_topic = deadletter_topic
        self._producer = TrackedProducer(connection)
        self._partitions: list[int] | None = None
        self._bulk = _Deliveries(self._producer, trades_topic)
        self.sent = 0

    @property
    def delivered(self) -> int:
        self._bulk.settle()
        return self._producer.delivered

    @property
    def failed(self) -> int:
        return self._producer.failed

    def send(self, trades: Iterable[Trade], per_message: int = 1) -> int:
        """Queue trades; with ``per_message > 1`` consecutive trades of one symbol share a
        message (a JSON array). Returns how many trades were queued."""
        count = 0
        if per_message <= 1:
            per_venue: dict[str, int] = {}
            for trade in trades:
                self._producer.send(self.trades_topic, trade.encode(), trade.key, trade.ts_ms)
                per_venue[trade.venue] = per_venue.get(trade.venue, 0) + 1
            for venue, n in per_venue.items():
                metrics.CONNECTOR_TRADES.labels(venue).inc(n)
                count += n
        else:
            groups: dict[str, list[Trade]] = {}
            for trade in trades:
                group = groups.setdefault(trade.key, [])
                group.append(trade)
                if len(group) >= per_message:
                    count += self._send_group(groups.pop(trade.key))
            for group in groups.values():
                count += self._send_group(group)
        self.sent += count
        self._producer.poll(0)
        return count

    def send_encoded(
        self,
        values: Sequence[bytes],
        keys: Sequence[str],
        timestamps: Sequence[int],
        venue_counts: Mapping[str, int],
        per_message: int = 1,
        ends: Sequence[int] | None = None,
    ) -> int:
        """Queue trades already encoded — ``values[i]`` is exactly ``Trade.encode()`` of trade
        i, ``keys[i]`` its key, ``timestamps[i]`` its ``ts_ms``; ``venue_counts`` the trades per
        venue — as :meth:`send` would queue them: with ``per_message > 1``, ``ends`` are the
        ends of the groups :meth:`send` was called with (one recorded message each), and within
        each the consecutive trades of one symbol share a message. Returns the trades queued."""
        if per_message <= 1:
            self._produce(values, keys, timestamps)
        else:
            self._produce(*_grouped(values, keys, timestamps, per_message, ends))
        count = 0
        for venue, n in venue_counts.items():
            metrics.CONNECTOR_TRADES.labels(venue).inc(n)
            count += n
        self.sent += count
        self._producer.poll(0)
        self._bulk.settle()
        return count

    def _produce(
        self, values: Sequence[bytes], keys: Sequence[str], timestamps: Sequence[int]
    ) -> None:
        # One C call per message, nothing else: this loop is the replay's ceiling. The bare
        # producer is TrackedProducer's own (the same queue, so the same order as heartbeats);
        # positionally: partition (-1: the partitioner's), callback, on_delivery, timestamp.
        raw = self._producer._producer
        produce = raw.produce
        topic = self.trades_topic
        report = self._bulk
        for value, key, ts in zip(values, keys, timestamps, strict=True):
            try:
                produce(topic, value, key, -1, report, None, ts)
            except BufferError:
                while True:  # the queue is full: serve delivery reports until there is room
                    raw.poll(0.05)
                    try:
                        produce(topic, value, key, -1, report, None, ts)
                        break
                    except BufferError:
                        continue

    def _send_group(self, group: list[Trade]) -> int:
        head = group[0]
        value = encode_trades(group)
        self._producer.send(
            self.trades_topic, value, message_key(head.venue, head.symbol), group[-1].ts_ms
        )
        metrics.CONNECTOR_TRADES.labels(head.venue).inc(len(group))
        return len(group)

    def heartbeat(self, venue: str, ts_ms: int) -> None:
        """Exchange time on ``venue`` reached ``ts_ms``: tell every partition."""
        if self._partitions is None:
            self._partitions = self._producer.partitions(self.trades_topic)
        value = Heartbeat(venue, ts_ms).encode()
        for partition in self._partitions:
            self._producer.send(self.trades_topic, value, venue, ts_ms, partition=partition)

    def marker(self, marker: Since | Gap) -> None:
        """A :class:`Since` or :class:`Gap` of one symbol, keyed like its trades (so the flow
        reads it in their order)."""
        ts_ms = marker.ts_ms if isinstance(marker, Since) else marker.to_ms
        self._producer.send(self.trades_topic, marker.encode(), marker.key, ts_ms)

    def dead_letter(self, letter: DeadLetter) -> None:
        metrics.PARSE_ERRORS.labels("connector", letter.reason).inc()
        self._producer.send(self.deadletter_topic, letter.encode())

    def flush_ready(self) -> None:
        """Serve delivery reports that are ready, without waiting."""
        self._producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> None:
        try:
            self._producer.flush(timeout_s)
        finally:
            self._bulk.settle()

    def __enter__(self) -> TradeProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.flush()


class _Deliveries:
    """The delivery reports of :meth:`TradeProducer.send_encoded`: a success is one addition
    (the tracked producer's own report, a metric call per message, costs more than producing
    it); :meth:`settle` hands the successes to the tracked producer's count and the
    ``candlewax_produced_messages_total`` metric. Failures go through the tracked producer's report at
    once (counted, logged, and raised by flush)."""

    __slots__ = ("ok", "settled", "topic", "tracked")

    def __init__(self, tracked: TrackedProducer, topic: str) -> None:
        self.tracked = tracked
        self.topic = topic
        self.ok = 0
        self.settled = 0

    def __call__(self, err: Any, msg: Any) -> None:
        if err is None:
            self.ok += 1
        else:
            self.tracked._on_delivery(err, msg)

    def settle(self) -> None:
        n = self.ok - self.settled
        if n:
            self.settled += n
            self.tracked.delivered += n
            metrics.PRODUCED.labels(self.topic, "ok").inc(n)


def _grouped(
    values: Sequence[bytes],
    keys: Sequence[str],
    timestamps: Sequence[int],
    per_message: int,
    ends: Sequence[int] | None,
) -> tuple[list[bytes], list[str], list[int]]:
    """The messages :meth:`TradeProducer.send` writes with ``per_message > 1``, call by call
    (``ends``): consecutive trades of one key, at most ``per_message`` to a message, sent when
    full and the rest in order of their first trade; a message's timestamp is its last trade's."""
    out_values: list[bytes] = []
    out_keys: list[str] = []
    out_ts: list[int] = []

    def emit(group: list[int]) -> None:
        out_values.append(b"[" + b",".join(values[i] for i in group) + b"]")
        out_keys.append(keys[group[0]])
        out_ts.append(timestamps[group[-1]])

    lo = 0
    for hi in ends if ends is not None else [len(values)]:
        if hi - lo == 1:
            emit([lo])
        else:
            groups: dict[str, list[int]] = {}
            for i in range(lo, hi):
                group = groups.setdefault(keys[i], [])
                group.append(i)
                if len(group) >= per_message:
                    emit(groups.pop(keys[i]))
            for group in groups.values():
                emit(group)
        lo = hi
    return out_values, out_keys, out_ts
