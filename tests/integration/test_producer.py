"""The trade producer against a real broker: keys, partitions, heartbeats, delivery reports."""

from __future__ import annotations

import socket

import orjson
import pytest

from candlewax.codec import Heartbeat, Trade, decode_message
from candlewax.errors import DeliveryError
from candlewax.kafka import Connection
from candlewax.settings import Settings
from connectors.producer import TradeProducer
from tests.kafka_read import read_topic

pytestmark = pytest.mark.integration


def _trades(n: int) -> list[Trade]:
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    return [
        Trade(
            "binance", symbols[i % 4], str(i), f"{100 + i}.5", "0.25", "buy", 1723161240000 + i * 10
        )
        for i in range(n)
    ]


def test_trades_are_keyed_and_each_symbol_stays_in_order(settings: Settings) -> None:
    trades = _trades(400)
    with TradeProducer(settings.connection, settings.topic("trades")) as producer:
        assert producer.send(trades) == 400
    assert producer.delivered == 400 and producer.failed == 0
    messages = read_topic(settings.bootstrap_servers, settings.topic("trades"))
    assert len(messages) == 400
    partition_of: dict[bytes, int] = {}
    seen: dict[str, list[int]] = {}
    for partition, _offset, key, value in messages:
        assert partition_of.setdefault(key, partition) == partition  # one key, one partition
        (trade,), _ = decode_message(value)
        assert key == f"binance:{trade.symbol}".encode()
        seen.setdefault(trade.symbol, []).append(int(trade.id))
    assert all(ids == sorted(ids) for ids in seen.values())


def test_array_messages_and_heartbeats_reach_every_partition(settings: Settings) -> None:
    trades = _trades(100)
    with TradeProducer(settings.connection, settings.topic("trades")) as producer:
        assert producer.send(trades, per_message=10) == 100
        producer.heartbeat("binance", 1723161300000)
    messages = read_topic(settings.bootstrap_servers, settings.topic("trades"))
    decoded = [rec for _, _, _, value in messages for rec in decode_message(value)[0]]
    assert sorted(int(t.id) for t in decoded if isinstance(t, Trade)) == list(range(100))
    beats = {
        p
        for p, _, _, v in messages
        if orjson.loads(v) == orjson.loads(Heartbeat("binance", 1723161300000).encode())
    }
    assert beats == {0, 1}
    assert len(messages) == 4 * 3 + 2  # 4 symbols × ⌈25/10⌉ arrays + one heartbeat per partition


def test_undelivered_messages_raise_on_flush() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    producer = TradeProducer(Connection(f"127.0.0.1:{port}", {"message.timeout.ms": "1500"}))
    producer.send(_trades(3))
    with pytest.raises(DeliveryError):
        producer.flush(timeout_s=10)
    assert producer.failed == 3
