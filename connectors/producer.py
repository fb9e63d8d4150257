"""The trade producer every connector uses: idempotent, acks=all, keyed by ``venue:SYMBOL``.

A trade counts as published only when Kafka's delivery report confirms it; ``close()`` flushes
and raises if anything was lost. Heartbeats go to *every* partition of ``trades`` so each
partition's event-time watermark advances even when its symbols are idle.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from types import TracebackType

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
        self.sent = 0

    @property
    def delivered(self) -> int:
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
        self._producer.flush(timeout_s)

    def __enter__(self) -> TradeProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.flush()
