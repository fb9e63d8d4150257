"""The publishing loop of replay/synthetic: pacing by recorded receive time, time shift,
heartbeats into every partition, dead letters for rejected input."""

from __future__ import annotations

import time

import pytest

from candlewax.codec import DeadLetter, Heartbeat, Trade, decode_message
from candlewax.settings import Settings
from connectors.producer import TradeProducer
from connectors.publish import publish
from tests.kafka_read import read_topic

pytestmark = pytest.mark.integration
T0 = 1_723_161_240_000


def _trade(i: int, ts: int) -> Trade:
    return Trade("binance", "BTCUSDT", str(i), "61828.5", "0.1", "buy", ts, ts - 1_200)


def test_speed_paces_by_receive_time_and_shift_moves_event_time(settings: Settings) -> None:
    # Four messages received 0.4 s apart; at speed 2 the replay must take at least 0.6 s.
    items = [(T0 + 400 * i, [_trade(i, T0 + 400 * i)], []) for i in range(4)]
    bad = DeadLetter("json", "broken", b"{oops", {"file": "rec.gz", "line": 3})
    items.insert(2, (T0 + 500, [], [bad]))
    with TradeProducer(
        settings.connection, settings.topic("trades"), settings.topic("deadletter")
    ) as producer:
        started = time.monotonic()
        stats = publish(items, producer, speed=2.0, shift_ms=86_400_000, heartbeat_ms=1_000)
        elapsed = time.monotonic() - started
    assert elapsed >= 0.6  # a lower bound only: pacing must wait; the machine may be slower
    assert (stats.trades, stats.rejected) == (4, 1)
    records = [
        rec
        for _, _, _, value in read_topic(settings.bootstrap_servers, settings.topic("trades"))
        for rec in decode_message(value)[0]
    ]
    trades = [r for r in records if isinstance(r, Trade)]
    assert [t.ts_ms for t in trades] == [T0 + 86_400_000 + 400 * i for i in range(4)]
    assert [t.recv_ms for t in trades] == [T0 + 86_400_000 + 400 * i - 1_200 for i in range(4)]
    # Exchange time crossed one second boundary (T0+1000): one heartbeat into each partition.
    beats = [r for r in records if isinstance(r, Heartbeat)]
    assert beats == [Heartbeat("binance", T0 + 86_400_000 + 1_200)] * 2
    (letter,) = [
        DeadLetter.decode(v)
        for *_, v in read_topic(settings.bootstrap_servers, settings.topic("deadletter"))
    ]
    assert (letter.raw, letter.source) == (b"{oops", {"file": "rec.gz", "line": 3})


def test_speed_zero_does_not_wait(settings: Settings) -> None:
    items = [(T0 + 60_000 * i, [_trade(i, T0 + 60_000 * i)], []) for i in range(3)]  # 2 minutes
    with TradeProducer(settings.connection, settings.topic("trades")) as producer:
        started = time.monotonic()
        publish(items, producer, speed=0)
        assert time.monotonic() - started < 60  # far below the recorded 120 s
