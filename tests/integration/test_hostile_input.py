"""No single record can stop, poison or escape the flow: every class of hostile message of the
hardening issue, inserted early into a real stream, on every broker engine.

For each message: the flow runs through (in-process here, and as ``candlewax flow -r`` run twice
in the e2e test), the bars of the good trades equal the plain-Decimal reference over the clean
trades (Kafka and Parquet), nothing is late, no file lands outside DATA_DIR, and the dead letter
carries the expected reason and the message's own offset.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from functools import cache
from pathlib import Path

import orjson
import polars as pl
import pytest
from bytewax.testing import run_main
from confluent_kafka import Producer
from prometheus_client import REGISTRY

from candlewax.codec import INTERVALS, DeadLetter, Heartbeat, Trade
from candlewax.settings import Settings
from candlewax.topics import ensure_topics
from connectors.replay import iter_file
from flows.bars import build_flow
from tests.conftest import BTCUSDT_GZ
from tests.kafka_read import read_topic
from tests.reference import as_decimals, reference_bars

pytestmark = pytest.mark.integration

FUTURE = 4_070_908_800_000  # 2099-01-01
TRADE = Trade("binance", "BTCUSDT", "1", "61837.63", "0.5", "buy", 1723161260000, 1723161259000)


@cache
def clean_trades() -> tuple[Trade, ...]:
    return tuple(t for item in iter_file(BTCUSDT_GZ) for t in item.trades)[:3000]


def _with(**changes: object) -> bytes:
    obj = {**TRADE.to_dict(), **changes}
    return orjson.dumps(obj)


def hostile() -> list[tuple[str, bytes | None, str | None]]:
    """(name, message value, the reason of its dead letter; None: no dead letter)."""
    deep: object = TRADE.to_dict()
    for _ in range(400):
        deep = [deep]
    good = TRADE.encode()
    return [
        ("decimal of 5,000 digits", _with(price="1" * 5000), "bad_decimal"),
        ("decimal of 4,301 digits", _with(qty="9" * 4301), "bad_decimal"),
        ("array item nested 400 deep", json.dumps([deep]).encode(), "not_object"),
        ("venue holding NUL", _with(venue="bin\x00ance"), "bad_name"),
        ("venue longer than a file name", _with(venue="v" * 300), "bad_name"),
        ("600 KB of quotes", b'"' * 600_000, "json"),
        ("symbol of 900 KB", _with(symbol="S" * 900_000), "bad_name"),
        ("trade dated 2099", _with(id="f1", ts_ms=FUTURE, recv_ms=None), "implausible_time"),
        ("heartbeat dated 2099", Heartbeat("binance", FUTURE).encode(), "implausible_time"),
        ("venue escaping DATA_DIR", _with(venue="x/../../../../../ESCAPED"), "bad_name"),
        ("venue over the real archive", _with(venue="x/../venue=binance"), "bad_name"),
        ("symbol escaping DATA_DIR", _with(symbol="../../../ESCAPED"), "bad_name"),
        ("duplicate keys", good[:-1] + b',"price":"1"}', "duplicate_key"),
        ("lone surrogate", _with(symbol="\\ud800").replace(b"\\\\ud800", b"\\ud800"), "json"),
        ("id above 2**64", good.replace(b'"id":"1"', b'"id":18446744073709551617'), "bad_type"),
        ("non-canonical decimal", _with(price="+5"), "bad_decimal"),
        ("unicode digits", _with(price="\u0665"), "bad_decimal"),
        ("tombstone", None, "json"),
        ("binary garbage", bytes(range(256)), "json"),
        ("a real trade again", clean_trades()[40].encode(), None),  # a duplicate: counted only
    ]


def stream() -> tuple[list[bytes | None], dict[int, tuple[str, str | None]]]:
    """The clean capture with heartbeats, the hostile messages 5 apart from message 30 on;
    and offset → (name, reason) of each hostile message."""
    values: list[bytes | None] = []
    beat = None
    for trade in clean_trades():
        values.append(trade.encode())
        if beat is None or trade.ts_ms >= beat + 1000:
            beat = trade.ts_ms
            values.append(Heartbeat("binance", beat).encode())
    where: dict[int, tuple[str, str | None]] = {}
    for n, (name, value, why) in enumerate(hostile()):
        at = 30 + 5 * n
        values.insert(at, value)
        where[at] = (name, why)
    return values, where


def produce(settings: Settings, values: list[bytes | None]) -> None:
    """In order into partition 0 of a one-partition topic: offset = index."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "acks": "all",
                         "enable.idempotence": True, "message.max.bytes": 1_000_000})  # fmt: skip
    failures: list[object] = []
    for value in values:
        producer.produce(settings.topic("trades"), value, b"binance:BTCUSDT", partition=0,
                         on_delivery=lambda err, msg: err and failures.append(err))  # fmt: skip
        producer.poll(0)
    assert producer.flush(60) == 0 and not failures, failures


@pytest.fixture
def one_partition(settings: Settings) -> Settings:
    s = settings.replace(topic_prefix=f"h{uuid.uuid4().hex[:10]}.", partitions=1)
    ensure_topics(s)
    return s


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def check_outputs(settings: Settings, where: dict[int, tuple[str, str | None]]) -> None:
    trades = clean_trades()
    # Bars (topic and Parquet) equal the reference over the clean trades only.
    bars: dict[str, list[dict]] = {k: [] for k in INTERVALS}
    for *_, value in read_topic(settings.bootstrap_servers, settings.topic("bars")):
        bar = orjson.loads(value)
        bars[bar["interval"]].append(bar)

    def norm(rows: list[dict]) -> list[dict]:
        return sorted((as_decimals(b) for b in rows), key=lambda b: (b["symbol"], b["start_ms"]))

    for name in INTERVALS:
        want = norm(reference_bars(trades, name))
        assert norm(bars[name]) == want, name
        frame = pl.read_parquet(
            settings.data_dir / "bars" / f"interval={name}" / "**" / "*.parquet"
        )
        assert norm([{**r, "interval": name} for r in frame.to_dicts()]) == want, name
    # The archive is the log's valid trades — the clean ones, the duplicate and the one dated
    # 2099 (a backtest from it replays the same guards) — under venue=binance only.
    venues = {p.name for p in (settings.data_dir / "trades").iterdir()}
    assert venues == {"venue=binance"}
    archived = pl.read_parquet(settings.data_dir / "trades" / "**" / "*.parquet")
    assert archived.height == len(trades) + 2
    assert sorted(archived.filter(pl.col("ts_ms") >= FUTURE)["id"].to_list()) == ["f1"]
    # Nothing was written outside DATA_DIR.
    escaped = settings.data_dir.parent.parent / "ESCAPED"
    assert not escaped.exists() and not list(settings.data_dir.parent.rglob("ESCAPED"))
    # One dead letter per hostile message, with its reason and its own offset; nothing late.
    letters = [DeadLetter.decode(v) for *_, v in
               read_topic(settings.bootstrap_servers, settings.topic("deadletter"))]  # fmt: skip
    got = sorted((d.source["offset"], d.reason) for d in letters)
    want_letters = sorted((off, why) for off, (_, why) in where.items() if why is not None)
    assert got == want_letters, [(where.get(o, ("?",))[0], r) for o, r in got]
    assert all(d.source["topic"] == settings.topic("trades") for d in letters)
    assert all(len(d.encode()) < 64_000 for d in letters)  # bounded, whatever came in


def test_no_single_record_stops_or_poisons_the_flow(one_partition: Settings) -> None:
    values, where = stream()
    produce(one_partition, values)
    late = _metric("candlewax_late_trades_total", venue="binance")
    dupes = _metric("candlewax_flow_duplicate_trades_total", venue="binance")
    run_main(build_flow(one_partition))
    assert _metric("candlewax_late_trades_total", venue="binance") == late  # 0 real trades late
    assert _metric("candlewax_flow_duplicate_trades_total", venue="binance") == dupes + 1
    check_outputs(one_partition, where)


def test_every_message_produced_twice_gives_the_clean_bars(one_partition: Settings) -> None:
    values = [t.encode() for t in clean_trades()]
    produce(one_partition, [v for v in values for _ in (0, 1)])
    dupes = _metric("candlewax_flow_duplicate_trades_total", venue="binance")
    run_main(build_flow(one_partition.replace(archive_trades=False)))
    assert _metric("candlewax_flow_duplicate_trades_total", venue="binance") - dupes == 3000
    bars = [orjson.loads(v) for *_, v in
            read_topic(one_partition.bootstrap_servers, one_partition.topic("bars"))]  # fmt: skip
    for name in INTERVALS:
        ours = sorted((as_decimals(b) for b in bars if b["interval"] == name),
                      key=lambda b: b["start_ms"])  # fmt: skip
        want = sorted((as_decimals(b) for b in reference_bars(clean_trades(), name)),
                      key=lambda b: b["start_ms"])  # fmt: skip
        assert ours == want, name
    assert read_topic(one_partition.bootstrap_servers, one_partition.topic("deadletter")) == []


@pytest.mark.e2e
def test_the_flow_command_runs_through_and_restarts_over_hostile_input(
    one_partition: Settings, tmp_path: Path
) -> None:
    """`candlewax flow -r` twice over the same log: exit 0 both times (before, one such
    message made every start, -r included, exit 1)."""
    values, where = stream()
    produce(one_partition, values)
    recovery = tmp_path / "recovery"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDLEWAX_")}
    env.update(
        CANDLEWAX_BOOTSTRAP_SERVERS=one_partition.bootstrap_servers,
        CANDLEWAX_TOPIC_PREFIX=one_partition.topic_prefix,
        CANDLEWAX_DATA_DIR=str(one_partition.data_dir),
        CANDLEWAX_METRICS_PORT="0",
    )
    cli = [sys.executable, "-m", "candlewax.cli"]
    subprocess.run([*cli, "recovery", "init", str(recovery)], env=env, check=True, timeout=60)
    for _ in range(2):
        done = subprocess.run(
            [*cli, "flow", "--exit-when-done", "-r", str(recovery)],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Traceback" not in done.stderr
    check_outputs(one_partition, where)
