"""The publishing loop of replay/synthetic: pacing by recorded receive time, time shift,
heartbeats into every partition, dead letters for rejected input; the replay's batch path
writes the log of the per-trade path."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from candlewax.codec import DeadLetter, Heartbeat, Trade, decode_message
from candlewax.settings import Settings
from candlewax.topics import ensure_topics
from connectors.producer import TradeProducer
from connectors.publish import publish
from connectors.replay import iter_batches, iter_file
from tests.conftest import BTCUSDT_GZ
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


def _log(bootstrap: str, topic: str) -> list[tuple[int, int, bytes | None, bytes, int]]:
    """Every message of ``topic``: (partition, offset, key, value, timestamp), in order."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "log_level": 3,
        }
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        done: set[int] = set()
        out = []
        deadline = time.monotonic() + 60
        while len(done) < len(partitions) and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.2):
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        done.add(msg.partition())
                    continue
                value = msg.value()
                assert value is not None
                out.append((msg.partition(), msg.offset(), msg.key(), value, msg.timestamp()[1]))
        assert len(done) == len(partitions), f"{topic}: no EOF"
        return sorted(out, key=lambda m: (m[0], m[1]))
    finally:
        consumer.close()


@pytest.mark.parametrize(
    ("source", "options"),
    [("spot", {}), ("spot", {"per_message": 20, "shift_ms": 86_400_000}), ("hostile", {})],
)
def test_batches_write_the_log_of_the_per_trade_path(
    settings: Settings, tmp_path: Path, source: str, options: dict[str, Any]
) -> None:
    """``candlewax replay``'s batch path and the per-trade path it replaced, each to its own
    topics of the same broker: the same messages in the same partitions at the same offsets,
    with the same keys and timestamps; the same dead letters."""
    from tests.unit.test_replay_batches import _hostile_lines, _write

    path = BTCUSDT_GZ if source == "spot" else _write(tmp_path / "t.jsonl", _hostile_lines())
    other = settings.replace(topic_prefix=f"{settings.topic_prefix}b.")
    ensure_topics(other)
    per_trade = ((i.recv_ms, i.trades, i.rejected) for i in iter_file(path))
    runs = [(settings, per_trade), (other, iter_batches(path, batch_lines=1000))]
    stats = []
    for target, items in runs:
        with TradeProducer(
            target.connection, target.topic("trades"), target.topic("deadletter")
        ) as producer:
            stats.append(publish(items, producer, **options))
    assert stats[0] == stats[1] and stats[0].trades > 3000
    want = _log(settings.bootstrap_servers, settings.topic("trades"))
    got = _log(other.bootstrap_servers, other.topic("trades"))
    assert len(got) == len(want) and got == want
    assert {p for p, *_ in want} == {0, 1}

    def letters(s: Settings) -> list[tuple[Any, ...]]:
        out = []
        for *_, value, _ in _log(s.bootstrap_servers, s.topic("deadletter")):
            d = DeadLetter.decode(value)
            out.append((d.reason, d.detail, d.raw, d.source, d.raw_bytes, d.raw_sha256))
        return out

    assert letters(other) == letters(settings)
    assert len(letters(settings)) == stats[0].rejected
