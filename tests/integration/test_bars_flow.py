"""The bars dataflow end to end on a real broker: trades topic → bars topic + Parquet + dead letters.

Runs the same Bytewax flow `candlewax flow` runs (in-process via run_main), on every engine.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from functools import cache
from pathlib import Path

import duckdb
import orjson
import polars as pl
import pytest
from bytewax.testing import run_main
from prometheus_client import REGISTRY

from candlewax.codec import INTERVALS, Bar, DeadLetter, Trade, decode_message
from candlewax.settings import Settings
from candlewax.topics import ensure_topics
from connectors.producer import TradeProducer
from connectors.publish import publish
from connectors.replay import iter_file
from flows.bars import build_flow
from tests.conftest import BTCUSDT_GZ
from tests.kafka_read import read_topic
from tests.reference import DECIMAL_FIELDS, as_decimals, reference_bars
from tests.reference_activity import reference_activity_bars

pytestmark = pytest.mark.integration


@cache
def btcusdt() -> tuple[Trade, ...]:
    return tuple(t for item in iter_file(BTCUSDT_GZ) for t in item.trades)


GARBAGE = [
    b"{this is not json",
    orjson.dumps(
        {
            "v": 1,
            "venue": "binance",
            "symbol": "BTCUSDT",
            "id": "x1",
            "price": "NaN",
            "qty": "1",
            "ts_ms": 1723161300000,
        }
    ),
    orjson.dumps(
        {
            "v": 1,
            "venue": "binance",
            "symbol": "BTCUSDT",
            "id": "x2",
            "price": "1",
            "qty": "1",
            "ts_ms": 1723161300,
        }
    ),
]


def publish_capture(settings: Settings, per_message: int = 1, with_garbage: bool = True) -> Trade:
    """The BTCUSDT capture, garbage in the middle, and one trade 3 minutes late at the end."""
    trades = btcusdt()
    half = len(trades) // 2
    late = dataclasses.replace(trades[100], id="late-1")
    with TradeProducer(settings.connection, settings.topic("trades")) as producer:
        items = [(t.recv_ms or t.ts_ms, [t], []) for t in trades[:half]]
        publish(items, producer, per_message=per_message)
        if with_garbage:
            for value in GARBAGE:
                producer._producer.send(settings.topic("trades"), value, b"binance:BTCUSDT")
        items = [(t.recv_ms or t.ts_ms, [t], []) for t in trades[half:]]
        publish(items, producer, per_message=per_message)
        producer.send([late])
    return late


def read_bars(settings: Settings) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {k: [] for k in INTERVALS}
    for _, _, key, value in read_topic(settings.bootstrap_servers, settings.topic("bars")):
        bar = orjson.loads(value)
        assert key == f"{bar['venue']}:{bar['symbol']}".encode()
        out[bar["interval"]].append(bar)
    return out


def norm(bars: list[dict]) -> list[dict]:
    return sorted(
        (as_decimals(b) for b in bars), key=lambda b: (b["venue"], b["symbol"], b["start_ms"])
    )


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_flow_writes_exact_bars_to_kafka_and_parquet_and_dead_letters_bad_input(
    settings: Settings,
) -> None:
    late = publish_capture(settings)
    watched = {
        ("candlewax_parse_errors_total", ("stage", "flow"), ("reason", "json")): 1,
        ("candlewax_parse_errors_total", ("stage", "flow"), ("reason", "bad_decimal")): 1,
        ("candlewax_parse_errors_total", ("stage", "flow"), ("reason", "bad_timestamp")): 1,
        ("candlewax_late_trades_total", ("venue", "binance")): 1,
        ("candlewax_flow_trades_total", ("venue", "binance")): len(btcusdt()),
        ("candlewax_bars_emitted_total", ("interval", "1m")): 7,
    }
    before = {key: _metric(key[0], **dict(key[1:])) for key in watched}
    run_main(build_flow(settings))
    # Everything rejected or late is counted, by reason (metrics are process-wide: deltas).
    for key, expected in watched.items():
        assert _metric(key[0], **dict(key[1:])) - before[key] == expected, key
    trades = btcusdt()

    # 1. The bars topic: every interval equals the reference computed from the trades.
    bars = read_bars(settings)
    for name in INTERVALS:
        assert norm(bars[name]) == norm(reference_bars(trades, name)), name
    assert len(bars["1m"]) == 7

    # 2. Parquet: the same bars, readable by polars and duckdb, exact DECIMAL columns.
    root = settings.data_dir / "bars"
    frame = pl.read_parquet(root / "interval=1m" / "**" / "*.parquet")
    assert frame.schema["quote_volume"] == pl.Decimal(38, 16)
    parquet_bars = [{**row, "interval": "1m"} for row in frame.to_dicts()]
    assert norm(parquet_bars) == norm(bars["1m"])
    ((count, volume),) = duckdb.sql(
        f"select count(*), sum(volume) from read_parquet('{root}/**/*.parquet', hive_partitioning=true) "
        "where interval = '1h'"
    ).fetchall()
    assert count == len(bars["1h"])
    assert volume == sum(as_decimals(b)["volume"] for b in bars["1h"])  # type: ignore[misc]

    # 3. Dead letters: each bad message once, with its reason and the offset it came from.
    trades_log = {
        (p, o): v for p, o, _, v in read_topic(settings.bootstrap_servers, settings.topic("trades"))
    }
    letters = [
        DeadLetter.decode(v)
        for *_, v in read_topic(settings.bootstrap_servers, settings.topic("deadletter"))
    ]
    assert sorted(d.reason for d in letters) == ["bad_decimal", "bad_timestamp", "json", "late"]
    for letter in letters:
        src = letter.source
        assert src["topic"] == settings.topic("trades")
        raw = trades_log[(src["partition"], src["offset"])]
        if letter.reason == "late":
            (trade,), _ = decode_message(raw)
            assert trade == late and decode_message(letter.raw)[0][0].id == "late-1"
        else:
            assert letter.raw == raw

    # 4. The trade archive holds every valid trade exactly once (the late one included).
    archive = pl.read_parquet(settings.data_dir / "trades" / "**" / "*.parquet")
    assert archive.height == len(trades) + 1
    assert archive["id"].n_unique() == archive.height
    assert (
        archive.filter(pl.col("id") == trades[0].id)["price"].item()
        == pl.Series([trades[0].price]).cast(pl.Decimal(38, 8)).item()
    )


def test_rerun_rewrites_the_same_files_without_duplicates(settings: Settings) -> None:
    publish_capture(settings, with_garbage=False)
    run_main(build_flow(settings))
    first = _snapshot(settings.data_dir)
    run_main(build_flow(settings))  # no recovery store: reads the topic again from the start
    assert _snapshot(settings.data_dir) == first
    assert not list(settings.data_dir.rglob("*.tmp"))


def test_batching_and_message_form_do_not_change_bars(settings: Settings) -> None:
    """One trade per message read in big polls vs. JSON arrays of 25 read 7 messages at a time."""
    publish_capture(settings, with_garbage=False)
    run_main(build_flow(settings))
    single = read_bars(settings)

    arrays = settings.replace(
        topic_prefix=settings.topic_prefix + "arr.",
        batch_max=7,
        data_dir=settings.data_dir.parent / "arr",
    )
    ensure_topics(arrays)
    publish_capture(arrays, per_message=25, with_garbage=False)
    run_main(build_flow(arrays))
    batched = read_bars(arrays)
    for name in INTERVALS:
        assert norm(batched[name]) == norm(single[name])


def _snapshot(data_dir: Path) -> dict[str, list[tuple]]:
    return {
        str(path.relative_to(data_dir)): sorted(pl.read_parquet(path).rows())
        for path in sorted(data_dir.rglob("*.parquet"))
    }


def test_flow_publishes_alerts_with_deterministic_ids(settings: Settings) -> None:
    """Range alerts on the real capture reach the alerts topic, keyed by venue:SYMBOL, equal to
    an independent computation; a second run (other poll size) gives the same ids."""
    from decimal import Decimal

    from candlewax.codec import Alert
    from tests.reference import reference_range_alerts

    rules = {"range": {"1m": 0.001}, "move": {}, "zscore": {}, "cooldown_ms": 0}
    publish_capture(settings, with_garbage=False)
    run_main(build_flow(settings.replace(alerts=rules)))
    alerts = [
        (k, Alert.decode(v))
        for *_, k, v in read_topic(settings.bootstrap_servers, settings.topic("alerts"))
    ]
    assert {k for k, _ in alerts} == {b"binance:BTCUSDT"}
    want = reference_range_alerts(btcusdt(), "1m", Decimal("0.001"))
    assert sorted((a.window_start_ms, a.ts_ms) for _, a in alerts) == [(s, ts) for s, ts, _ in want]

    again = settings.replace(
        alerts=rules,
        batch_max=17,
        topic_prefix=settings.topic_prefix + "again.",
        data_dir=settings.data_dir.parent / "again",
    )
    ensure_topics(again)
    publish_capture(again, with_garbage=False)
    run_main(build_flow(again))
    ids = {
        Alert.decode(v).id
        for *_, v in read_topic(settings.bootstrap_servers, again.topic("alerts"))
    }
    assert ids == {a.id for _, a in alerts}


KINDS = ("tick:500", "volume:7.5", "value:250000")


def test_bars_by_activity_go_to_kafka_and_parquet_equal_to_the_reference(
    settings: Settings,
) -> None:
    """tick, volume and value bars of the capture through the real flow: on `bars` and in
    Parquet, field for field a plain-Decimal computation of the grid rule; flagged like time
    bars (the capture's first trade starts the symbol's coverage: every span is complete)."""
    settings = settings.replace(bar_kinds={"binance:BTCUSDT": KINDS})
    publish_capture(settings, per_message=20, with_garbage=False)
    run_main(build_flow(settings))
    on_time = btcusdt()  # the late copy at the end is no trade of any bar
    want, forming = reference_activity_bars(on_time, {"binance:BTCUSDT": KINDS})
    got: dict[str, list[dict]] = {}
    for _, _, key, value in read_topic(settings.bootstrap_servers, settings.topic("bars")):
        bar = orjson.loads(value)
        if bar["interval"] in KINDS:
            assert key == b"binance:BTCUSDT"
            got.setdefault(bar["interval"], []).append(bar)
    assert set(got) == set(KINDS)
    for kind in KINDS:
        expected = [
            {"start_ms": b["start_ms"], "end_ms": b["end_ms"], "open": b["open"],
             "high": b["high"], "low": b["low"], "close": b["close"], "volume": b["volume"],
             "quote_volume": b["quote"], "trades": b["trades"], "buy_volume": b["buy_volume"],
             "buy_quote_volume": b["buy_quote"], "first_id": b["open_id"],
             "last_id": b["close_id"]}
            for b in want[kind]
        ]  # fmt: skip
        ours = [
            {k: (Decimal(v) if k in DECIMAL_FIELDS else v) for k, v in b.items()
             if k in expected[0]}
            for b in sorted(got[kind], key=lambda b: (b["start_ms"], b["first_id"]))
        ]  # fmt: skip
        assert ours == sorted(expected, key=lambda b: (b["start_ms"], b["first_id"])), kind
        assert all(Bar.decode(orjson.dumps(b)).interval == kind for b in got[kind])
        assert all(b["complete"] and b["gaps"] == 0 for b in got[kind])
        assert forming.get(kind)  # an unfinished bar at the end is not published
        # Parquet: the same bars, however many files share a start.
        frame = pl.read_parquet(
            settings.data_dir / "bars" / f"interval={kind}" / "**" / "*.parquet"
        )
        assert frame.height == len(expected)
        assert sorted(frame["first_id"].to_list()) == sorted(b["first_id"] for b in expected)
