"""Publishing loop shared by the replay and synthetic connectors: pace, shift, heartbeat, publish.

``speed`` is relative to the recorded receive clock: 0 publishes as fast as Kafka takes it, 1
replays in real time, 10 ten times faster. ``shift_ms`` moves event and receive times together
(e.g. to replay a 2024 capture as if it happened now, so the broker's retention keeps it).

Heartbeats carry the newest *exchange* time seen per venue into every partition of ``trades``,
every ``heartbeat_ms`` of event time: they let idle symbols' windows close, and because they are
derived from the data, a replay at any speed writes the same log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

from candlewax.codec import DeadLetter, Trade
from connectors.producer import TradeProducer

log = logging.getLogger(__name__)


def shift_trade(trade: Trade, shift_ms: int) -> Trade:
    """The same trade ``shift_ms`` later (earlier if negative): ``ts_ms`` and ``recv_ms`` move."""
    recv_ms = None if trade.recv_ms is None else trade.recv_ms + shift_ms
    return replace(trade, ts_ms=trade.ts_ms + shift_ms, recv_ms=recv_ms)


@dataclass
class PublishStats:
    trades: int = 0
    rejected: int = 0
    heartbeats: int = 0
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None


def publish(
    items: Iterable[tuple[int, list[Trade], list[DeadLetter]]],
    producer: TradeProducer,
    *,
    speed: float = 0.0,
    shift_ms: int = 0,
    heartbeat_ms: int = 1_000,
    per_message: int = 1,
    stop: threading.Event | None = None,
    stats: PublishStats | None = None,
) -> PublishStats:
    """Publish ``(recv_ms, trades, rejected)`` items in order; returns counts.

    Rejected input goes to the dead-letter topic; nothing else stops the stream.
    """
    stats = stats or PublishStats()
    next_beat: dict[str, int] = {}
    newest: dict[str, int] = {}
    wall0: float | None = None
    recv0: int | None = None
    for recv_ms, trades, rejected in items:
        if stop is not None and stop.is_set():
            break
        if speed > 0:
            if wall0 is None or recv0 is None:
                wall0, recv0 = time.monotonic(), recv_ms
            delay = wall0 + (recv_ms - recv0) / 1000 / speed - time.monotonic()
            if delay > 0:
                if stop is not None:
                    if stop.wait(delay):
                        break
                else:
                    time.sleep(delay)
        for letter in rejected:
            producer.dead_letter(letter)
            stats.rejected += 1
        if not trades:
            continue
        if shift_ms:
            trades = [shift_trade(t, shift_ms) for t in trades]
        stats.trades += producer.send(trades, per_message)
        for trade in trades:
            if trade.ts_ms > newest.get(trade.venue, -1):
                newest[trade.venue] = trade.ts_ms
        if stats.first_ts_ms is None:
            stats.first_ts_ms = min(t.ts_ms for t in trades)
        stats.last_ts_ms = max(stats.last_ts_ms or 0, max(t.ts_ms for t in trades))
        if heartbeat_ms > 0:
            for venue, ts in newest.items():
                due = next_beat.get(venue)
                if due is None:
                    next_beat[venue] = ts - ts % heartbeat_ms + heartbeat_ms
                elif ts >= due:
                    producer.heartbeat(venue, ts)
                    stats.heartbeats += 1
                    next_beat[venue] = ts - ts % heartbeat_ms + heartbeat_ms
    return stats
