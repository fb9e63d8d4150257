"""Backtests on a real broker: the live flow's bars and alerts again, from the topic (start
offsets found by time, even where the broker's offsets_for_times is wrong) or the Parquet archive;
only into the output directory."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import orjson
import polars as pl
import pytest
from bytewax.testing import run_main
from confluent_kafka import Consumer, KafkaError, TopicPartition

from candlewax.broker import EmbeddedBroker
from candlewax.settings import Settings
from flows.backtest import OffsetFinder, parse_time, run_backtest
from flows.bars import build_flow
from sinks.report import write_report
from tests.e2e.charts import report_data
from tests.integration.test_bars_flow import btcusdt, publish_capture
from tests.kafka_read import read_topic
from tests.reference import as_decimals, reference_bars

pytestmark = pytest.mark.integration
RULES = {"range": {"1m": 0.001, "5m": 0.002}, "move": {"1m": 0.0005}, "cooldown_ms": 0}
WHOLE = (1_700_000_000_000, 1_800_000_000_000)


def files(root: Path) -> dict[str, pl.DataFrame]:
    return {str(p.relative_to(root)): pl.read_parquet(p) for p in sorted(root.rglob("*.parquet"))}


def topic_counts(settings: Settings) -> dict[str, int]:
    return {
        name: len(read_topic(settings.bootstrap_servers, settings.topic(name)))
        for name in ("bars", "alerts", "deadletter")
    }


def test_a_backtest_equals_the_live_flow_and_writes_no_topic(
    settings: Settings, tmp_path: Path
) -> None:
    live = settings.replace(alerts=RULES, archive_trades=True)
    publish_capture(live)
    run_main(build_flow(live))
    live_alerts = sorted(
        (
            orjson.loads(v)
            for *_, v in read_topic(settings.bootstrap_servers, settings.topic("alerts"))
        ),
        key=lambda a: a["id"],
    )
    assert live_alerts
    before = topic_counts(settings)

    out = tmp_path / "bt"
    other_batches = live.replace(batch_max=37, archive_trades=False)
    summary = run_backtest(other_batches, WHOLE, out, show_progress=False)
    assert topic_counts(settings) == before  # nothing went to a live topic

    want = {k: v for k, v in files(live.data_dir).items() if k.startswith("bars/")}
    got = files(out)
    assert sorted(k for k in got if k.startswith("bars/")) == sorted(want)
    for name, frame in want.items():
        assert got[name].equals(frame), name
    ours = [orjson.loads(line) for line in (out / "alerts.jsonl").read_bytes().splitlines()]
    assert sorted(ours, key=lambda a: a["id"]) == live_alerts
    letters = [orjson.loads(line) for line in (out / "deadletter.jsonl").read_bytes().splitlines()]
    assert sorted(d["reason"] for d in letters) == ["bad_decimal", "bad_timestamp", "json", "late"]
    assert summary["alerts"] == len(live_alerts) and summary["bars"] == sum(
        f.height for f in want.values()
    )

    # The Parquet trade archive gives the same again.
    archived = tmp_path / "from-archive"
    run_backtest(
        other_batches, WHOLE, archived, archive=live.data_dir / "trades", show_progress=False
    )
    again = files(archived)
    for name, frame in want.items():
        assert again[name].equals(frame), name
    late_only = [
        orjson.loads(x)["reason"] for x in (archived / "deadletter.jsonl").read_bytes().splitlines()
    ]
    assert late_only == ["late"]  # the archive holds valid trades only

    # The report's chart data: every bar (as exact strings), every alert on its bar.
    data = report_data(write_report(out, summary, ours).read_text())
    entries = [e for s in data["series"] for e in s["intervals"]]
    assert sum(len(e["t"]) for e in entries) == sum(f.height for f in want.values())
    assert sorted(a["id"] for e in entries for a in e["alerts"]) == sorted(a["id"] for a in ours)
    closes = {
        (s["key"], e["interval"], t): c
        for s in data["series"]
        for e in s["intervals"]
        for t, c in zip(e["t"], e["c"], strict=True)
    }
    for b in (b for frame in want.values() for b in frame.iter_rows(named=True)):
        close = closes[(f"{b['venue']}:{b['symbol']}", b["interval"], b["start_ms"])]
        assert Decimal(close) == b["close"]


def test_a_range_and_symbols_select_exactly_those_trades(
    settings: Settings, tmp_path: Path
) -> None:
    publish_capture(settings, with_garbage=False)
    lo, hi = parse_time("2024-08-08T23:56:00Z"), parse_time("2024-08-08T23:58:30Z")
    out = tmp_path / "bt"
    run_backtest(settings.replace(alerts=RULES), (lo, hi), out, show_progress=False)
    bars = pl.read_parquet(out / "bars" / "interval=1m" / "**" / "*.parquet").sort("start_ms")
    inside = [t for t in btcusdt() if lo <= t.ts_ms < hi]
    want = reference_bars(inside, "1m")
    assert [as_decimals({**b, "interval": "1m"}) for b in bars.to_dicts()] == want
    assert [b["start_ms"] for b in want] == [lo, lo + 60_000, lo + 120_000]  # last one partial

    none = tmp_path / "none"
    summary = run_backtest(
        settings, (lo, hi), none, symbols=frozenset({"ETHUSDT"}), show_progress=False
    )
    assert summary["bars"] == 0 and not list(none.rglob("*.parquet"))


def test_start_offsets_by_time_even_where_offsets_for_times_is_wrong(
    settings: Settings, broker: EmbeddedBroker
) -> None:
    publish_capture(settings, with_garbage=False)
    topic = settings.topic("trades")
    stamps: dict[int, list[tuple[int, int]]] = {}  # independent: every message's timestamp
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": "scan",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    eof: set[int] = set()
    while len(eof) < len(parts):
        for msg in consumer.consume(1000, 0.5):
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(msg.partition())
                continue
            stamps.setdefault(msg.partition(), []).append((msg.offset(), msg.timestamp()[1]))
    consumer.close()
    finder = OffsetFinder(settings, topic)
    try:
        for p, rows in stamps.items():
            end = rows[-1][0] + 1
            for target in (0, rows[0][1], rows[len(rows) // 3][1], rows[-1][1], rows[-1][1] + 1):
                want = next((o for o, ts in rows if ts >= target), end)
                # Where timestamps are not monotonic the search may start earlier, never later.
                got = finder.first_at_or_after(p, target, end)
                assert got <= want
                assert all(ts < target for o, ts in rows if o < got) or got == want
        if broker.engine == "tansu":  # its offsets_for_times answers 0: the search path ran
            assert finder.searches > 0
    finally:
        finder.close()
