"""Throughput of the bars flow against a ceiling measured in the same run.

For each symbol count, the synthetic market writes N trades to a fresh ``trades`` topic of the
broker (embedded Tansu unless ``--bootstrap-servers``), then:

- ceiling: a bare confluent-kafka consumer reads the topic to EOF and ``orjson.loads`` every
  message — the least any Python consumer of this topic must do;
- flow: the real bars dataflow (``flows.bars.build_flow``, one Bytewax worker) reads the same
  topic to EOF and writes 1m bars, 5m…1h rollups, the ``bars`` topic, Parquet bars and the trade
  archive;
- batch ceiling: the same consumer taking ``consume()`` batches and parsing each with one
  vectorized call (``pl.read_ndjson``) — the least a consumer that works on columns must do;
- kernel: the in-process bar kernel on the same messages (decode + aggregate, no Kafka, no
  Bytewax), and aggregation alone on pre-decoded rows.

It prints trades/s, flow ÷ each ceiling, the process's peak RSS while the flow ran, and writes bench/results/throughput-<time>.json.

    make bench                          # 1M trades at 10, 1 000, 10 000 symbols
    make bench ARGS="--trades 200000 --symbols 10"
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson
import polars as pl
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from candlewax.broker import EmbeddedBroker
from candlewax.codec.columns import decode_batch
from candlewax.settings import Settings
from candlewax.topics import ensure_topics
from connectors.synthetic import DEFAULT_START_MS, SyntheticMarket
from flows.barmath import BarState

SPAN_S = 600  # event time covered by the generated trades: 10 minutes


def produce(
    settings: Settings,
    symbols: int,
    n: int,
    per_message: int = 1,
    *,
    span_s: float = SPAN_S,
    start_ms: int = DEFAULT_START_MS,
    flush_s: float = 120,
) -> int:
    """``n`` trades of the synthetic market (seed 11) over ``span_s`` of event time from
    ``start_ms``, streamed to ``trades`` in 50 000-trade chunks; returns the messages written."""
    market = SyntheticMarket(symbols, seed=11, start_ms=start_ms, trades_per_second=n / span_s)
    producer = Producer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    topic = settings.topic("trades")
    messages = 0
    for chunk in market.encoded(n, per_message=per_message, batch_size=50_000):
        for key, value, ts in chunk:
            while True:
                try:
                    producer.produce(topic, value, key, timestamp=ts)
                    break
                except BufferError:
                    producer.poll(0.05)
            messages += 1
        producer.poll(0)
    if producer.flush(flush_s):
        raise RuntimeError("benchmark trades were not all delivered")
    return messages


def ceiling(settings: Settings) -> tuple[float, int]:
    """Seconds to consume + decode the whole topic, and trades seen."""
    topic = settings.topic("trades")
    consumer, parts = _assigned(settings, topic)
    done: set[int] = set()
    trades = 0
    loads = orjson.loads
    start = time.perf_counter()
    while len(done) < len(parts):
        for msg in consumer.consume(10_000, 0.05):
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    done.add(msg.partition())
                continue
            obj = loads(msg.value())
            trades += len(obj) if isinstance(obj, list) else 1
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed, trades


def ceiling_batch(settings: Settings, batch_max: int = 10_000) -> tuple[float, int]:
    """Seconds to consume the whole topic in ``consume()`` batches and parse each batch with one
    vectorized call (``pl.read_ndjson`` of the joined values; arrays: one ``pl.read_json``):
    the least a Python consumer that works on columns must do."""
    topic = settings.topic("trades")
    consumer, parts = _assigned(settings, topic)
    done: set[int] = set()
    trades = 0
    start = time.perf_counter()
    while len(done) < len(parts):
        msgs = consumer.consume(batch_max, 0.05)
        values = [m.value() for m in msgs if m.error() is None]
        done.update(m.partition() for m in msgs if m.error() is not None)  # type: ignore[misc]
        if not values:
            continue
        if values[0][:1] == b"[":  # arrays of trades: one JSON array of all their items
            frame = pl.read_json(io.BytesIO(b"[" + b",".join(v[1:-1] for v in values) + b"]"))
        else:
            frame = pl.read_ndjson(io.BytesIO(b"\n".join(values)))  # type: ignore[arg-type]
        trades += frame.height
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed, trades


def _assigned(settings: Settings, topic: str) -> tuple[Consumer, list[int]]:
    """A bare consumer (EOF events on) assigned every partition of ``topic`` from offset 0."""
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
    return consumer, parts


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    """``--engine`` (the embedded broker's) and ``--bootstrap-servers`` (any Kafka instead)."""
    parser.add_argument("--engine", default="tansu")
    parser.add_argument("--bootstrap-servers", default=None)


def start_broker(args: argparse.Namespace) -> tuple[EmbeddedBroker | None, str]:
    """The embedded broker of ``args.engine`` started, unless ``args.bootstrap_servers``
    names one; returns it (None for a given one: the caller stops only its own) and the
    bootstrap servers."""
    if args.bootstrap_servers is not None:
        return None, args.bootstrap_servers
    broker = EmbeddedBroker(args.engine)
    return broker, broker.start()


def flow(settings: Settings) -> float:
    from bytewax.testing import run_main

    from flows.bars import build_flow

    start = time.perf_counter()
    run_main(build_flow(settings))
    return time.perf_counter() - start


class PeakRss:
    """The process's largest resident set while the block runs, sampled every 20 ms from
    /proc/self/status (ru_maxrss would carry the peak of everything before)."""

    def __init__(self) -> None:
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.peak_bytes = max(self.peak_bytes, rss_bytes())
            if self._stop.wait(0.02):
                return


def rss_bytes(pid: int | str = "self") -> int:
    """VmRSS of a process (Linux), 0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def kernel(symbols: int, n: int) -> tuple[float, float]:
    """trades/s of decode+aggregate, and of aggregate alone, on 10 000-message batches."""
    market = SyntheticMarket(symbols, seed=11, trades_per_second=n / SPAN_S)
    values = [v for chunk in market.encoded(n, batch_size=50_000) for _, v, _ in chunk]
    batches = [values[i : i + 10_000] for i in range(0, len(values), 10_000)]
    state = BarState()
    start = time.perf_counter()
    decoded = []
    for batch in batches:
        rows = decode_batch(batch).rows
        decoded.append(rows)
        state.step(rows)
    state.flush()
    full = time.perf_counter() - start
    state = BarState()
    start = time.perf_counter()
    for rows in decoded:
        state.step(rows)
    state.flush()
    agg = time.perf_counter() - start
    return n / full, n / agg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, nargs="+", default=[10, 1_000, 10_000])
    parser.add_argument("--per-message", type=int, default=1, help="trades per Kafka message")
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (median reported)")
    add_broker_arguments(parser)
    args = parser.parse_args()
    broker, bootstrap = start_broker(args)
    results = []
    print(
        f"{args.trades:,} trades per case, {args.per_message} per message, "
        f"{args.partitions} partition(s), broker {args.engine if broker else bootstrap}"
    )
    print(
        f"{'symbols':>8} {'ceiling/s':>11} {'batch ceil/s':>12} {'flow/s':>10} "
        f"{'÷ceil':>6} {'÷batch':>7} {'kernel/s':>10} {'aggregate/s':>11} {'flow RSS':>9}"
    )
    try:
        for symbols in args.symbols:
            ceil_s, batch_s, flow_s, peaks = [], [], [], []
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory() as data_dir:
                    settings = Settings(
                        bootstrap_servers=bootstrap,
                        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
                        partitions=args.partitions,
                        retention_ms=-1,
                        data_dir=Path(data_dir),
                        exit_when_done=True,
                    )
                    ensure_topics(settings)
                    produce(settings, symbols, args.trades, args.per_message)
                    elapsed, seen = ceiling(settings)
                    assert seen == args.trades, (seen, args.trades)
                    ceil_s.append(elapsed)
                    elapsed, seen = ceiling_batch(settings)
                    assert seen == args.trades, (seen, args.trades)
                    batch_s.append(elapsed)
                    with PeakRss() as rss:
                        flow_s.append(flow(settings))
                    peaks.append(rss.peak_bytes)
            k_full, k_agg = kernel(symbols, args.trades)
            ceil_rate = args.trades / statistics.median(ceil_s)
            batch_rate = args.trades / statistics.median(batch_s)
            flow_rate = args.trades / statistics.median(flow_s)
            row = {
                "symbols": symbols,
                "ceiling_trades_per_s": round(ceil_rate),
                "batch_ceiling_trades_per_s": round(batch_rate),
                "flow_trades_per_s": round(flow_rate),
                "flow_over_ceiling": round(flow_rate / ceil_rate, 3),
                "flow_over_batch_ceiling": round(flow_rate / batch_rate, 3),
                "kernel_trades_per_s": round(k_full),
                "aggregate_trades_per_s": round(k_agg),
                "flow_peak_rss_mib": round(max(peaks) / 2**20),
            }
            results.append(row)
            print(
                f"{symbols:>8} {ceil_rate:>11,.0f} {batch_rate:>12,.0f} {flow_rate:>10,.0f} "
                f"{flow_rate / ceil_rate:>6.2f} {flow_rate / batch_rate:>7.2f} {k_full:>10,.0f} "
                f"{k_agg:>11,.0f} {max(peaks) / 2**20:>6,.0f} MiB",
                flush=True,
            )
    finally:
        if broker is not None:
            broker.stop()
    save_results("throughput", {"args": vars(args), "results": results})
    return 0


def save_results(kind: str, result: dict[str, object]) -> Path:
    """``result`` and this machine into bench/results/<kind>-<UTC time>.json; prints the path."""
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    machine = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }
    path = out / f"{kind}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps({**result, "machine": machine}, indent=2))
    print(f"results: {path}")
    return path


if __name__ == "__main__":
    sys.exit(main())
