"""Replays against the broker's own speed, in one run on one broker.

An NDJSON file of N synthetic trades (``connectors/synthetic.py``, 100 symbols, seed 11, ten
minutes of event time: the file ``candlewax replay`` reads, one canonical trade per line) is
written once; then, each on fresh topics:

- ceiling: a bare confluent-kafka producer writes the very records the replay writes (the
  lines as values, ``venue:SYMBOL`` keys, ``ts_ms`` timestamps; the replay's producer settings,
  no delivery callback), then a bare consumer reads the topic to EOF (and, for reference, once
  more with ``orjson.loads`` of every message: ``make bench``'s ceiling), in this process;
- replay: the file → ``trades`` as ``candlewax replay FILE`` publishes it (its batch path:
  ``candlewax.cli.common.replay_items`` + ``publish``), and, in the first run, the per-trade
  path it replaced (one ``Trade`` per trade, ``iter_file``) on another topic, for comparison;
- end to end: the replay, then the real bars flow (``bench.throughput.flow``: one Bytewax
  worker, ``exit_when_done``) from that topic to Parquet, the bars topic and the archive.

It prints trades/s, end to end ÷ ceiling (target ≥ 0.7) and the replay alone against the bare
producer, and writes bench/results/replay-<time>.json.

    python -m bench.replay                       # 1M trades
    python -m bench.replay --trades 200000 --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from bench.throughput import SPAN_S, add_broker_arguments, ceiling, flow, save_results, start_broker
from candlewax.cli.common import publish, replay_items
from candlewax.kafka import producer_config
from candlewax.settings import Settings
from candlewax.topics import ensure_topics
from connectors.synthetic import SyntheticMarket

Record = tuple[bytes, bytes, int]


def write_file(path: Path, symbols: int, n: int) -> list[Record]:
    """The NDJSON file of ``n`` synthetic trades; returns its records as the replay writes them
    (key, value, timestamp)."""
    market = SyntheticMarket(symbols, seed=11, trades_per_second=n / SPAN_S)
    records: list[Record] = []
    with path.open("wb") as out:
        for chunk in market.encoded(n, batch_size=50_000):
            out.write(b"\n".join(value for _, value, _ in chunk) + b"\n")
            records.extend(chunk)
    return records


def bare_produce(settings: Settings, records: list[Record]) -> float:
    """Seconds for a bare producer (the replay's producer settings, no callback) to write
    ``records`` and have them all confirmed."""
    producer = Producer(producer_config(settings.connection))
    topic = settings.topic("trades")
    produce = producer.produce
    start = time.perf_counter()
    for key, value, ts in records:
        while True:
            try:
                produce(topic, value, key, timestamp=ts)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError("the ceiling's records were not all delivered")
    return time.perf_counter() - start


def bare_consume(settings: Settings) -> tuple[float, int]:
    """Seconds for a bare consumer to read the topic to EOF (nothing done with the messages),
    and the messages read."""
    topic = settings.topic("trades")
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"bench-{uuid.uuid4().hex}",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    done: set[int] = set()
    seen = 0
    start = time.perf_counter()
    while len(done) < len(parts):
        for msg in consumer.consume(10_000, 0.05):
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    done.add(msg.partition())
                continue
            seen += 1
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed, seen


def replay(settings: Settings, path: Path, per_trade: bool = False) -> tuple[float, Any]:
    """Seconds for ``candlewax replay FILE`` (or its per-trade path) to publish the file, all
    confirmed; and its stats."""
    if per_trade:
        from connectors.replay import iter_file

        items: Any = ((i.recv_ms, i.trades, i.rejected) for i in iter_file(path))
    start = time.perf_counter()
    if not per_trade:
        items = replay_items(str(path), None, None)
    stats = publish(settings, items, 0.0, 0, 1, threading.Event())
    return time.perf_counter() - start, stats


def fresh(bootstrap: str, partitions: int, data_dir: Path) -> Settings:
    settings = Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
        partitions=partitions,
        retention_ms=-1,
        data_dir=data_dir,
        exit_when_done=True,
    )
    ensure_topics(settings)
    return settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (median reported)")
    parser.add_argument(
        "--no-per-trade", action="store_true", help="skip the per-trade replay path (before)"
    )
    add_broker_arguments(parser)
    args = parser.parse_args()

    broker, bootstrap = start_broker(args)
    times: dict[str, list[float]] = {
        k: [] for k in ("produce", "consume", "consume_loads", "replay", "per_trade", "flow")
    }
    n = args.trades
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "trades.jsonl"
            records = write_file(path, args.symbols, n)
            print(
                f"{n:,} trades, {args.symbols} symbols, {path.stat().st_size / 1e6:.0f} MB of "
                f"NDJSON, {args.partitions} partition(s), broker "
                f"{args.engine if broker else bootstrap}, {args.repeat} run(s)",
                flush=True,
            )
            for run in range(args.repeat):
                data = Path(tmp) / f"data{run}"
                settings = fresh(bootstrap, args.partitions, data / "ceiling")
                times["produce"].append(bare_produce(settings, records))
                consumed, seen = bare_consume(settings)
                assert seen == n, (seen, n)
                times["consume"].append(consumed)
                consumed, seen = ceiling(settings)
                assert seen == n, (seen, n)
                times["consume_loads"].append(consumed)
                if not args.no_per_trade and run == 0:  # once: it is only the "before"
                    settings = fresh(bootstrap, args.partitions, data / "per_trade")
                    took, stats = replay(settings, path, per_trade=True)
                    assert stats.trades == n, (stats.trades, n)
                    times["per_trade"].append(took)
                settings = fresh(bootstrap, args.partitions, data / "flow")
                took, stats = replay(settings, path)
                assert (stats.trades, stats.rejected) == (n, 0), stats
                times["replay"].append(took)
                times["flow"].append(flow(settings))
                if not any((data / "flow" / "bars").rglob("*.parquet")):
                    raise RuntimeError("the flow wrote no Parquet bars")
            del records
    finally:
        if broker is not None:
            broker.stop()
    median = {k: statistics.median(v) for k, v in times.items() if v}
    rate = {k: n / s for k, s in median.items()}
    ceiling_rate = n / (median["produce"] + median["consume"])
    end_to_end = n / (median["replay"] + median["flow"])
    rows = [
        ("ceiling: bare produce", rate["produce"], None),
        ("ceiling: bare consume", rate["consume"], None),
        ("ceiling: produce, then consume", ceiling_rate, 1.0),
        ("(consume + orjson.loads, make bench)", rate["consume_loads"], None),
        ("replay (candlewax replay)", rate["replay"], rate["replay"] / rate["produce"]),
    ]
    if "per_trade" in rate:
        rows.append(("replay, per-trade path (before)", rate["per_trade"], None))
    rows += [
        ("flow (Kafka → bars → Parquet)", rate["flow"], None),
        ("end to end: replay, then flow", end_to_end, end_to_end / ceiling_rate),
    ]
    print(f"{'':34} {'trades/s':>12} {'ratio':>7}")
    for label, value, ratio in rows:
        shown = "" if ratio is None else f"{ratio:.2f}"
        print(f"{label:34} {value:>12,.0f} {shown:>7}")
    print(
        "ratio: end to end ÷ ceiling (target ≥ 0.70); for the replay, ÷ the bare producer"
        + (
            f"; replay vs its per-trade path: {rate['replay'] / rate['per_trade']:.2f}×"
            if "per_trade" in rate
            else ""
        ),
        flush=True,
    )
    result = {
        "args": vars(args),
        "seconds": times,
        "trades_per_s": {k: round(v) for k, v in rate.items()},
        "ceiling_trades_per_s": round(ceiling_rate),
        "end_to_end_trades_per_s": round(end_to_end),
        "end_to_end_over_ceiling": round(end_to_end / ceiling_rate, 3),
        "replay_over_bare_produce": round(rate["replay"] / rate["produce"], 3),
    }
    save_results("replay", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
