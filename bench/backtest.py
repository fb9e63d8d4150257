"""Backtests: from the Parquet trade archive (column-wise, no JSON) and from Kafka.

In one run, for each symbol count: the synthetic market (seed 11, as ``bench.throughput``)
writes N trades to a fresh ``trades`` topic of the broker (embedded Tansu unless
``--bootstrap-servers``), and the same messages, decoded once, are written as the Parquet trade
archive the flow writes (``sinks.parquet.write_trade_block``, blocks of 100 000 offsets). Then:

- **archive**: ``run_backtest(..., archive=DIR)`` over the whole range — bars, rollups, the
  default detectors, Parquet bars and the summary, as ``candlewax backtest --from-archive``;
- **kafka**: ``run_backtest`` over the same range from the topic, against the **batch ceiling**
  of ``bench.throughput`` (``consume()`` batches, one vectorized parse per batch) on that topic;
- **kernel**: bars + detectors in process on the archive's rows (``BarState.step`` and
  ``VolatilityState`` on 10 000-row batches, decoding not timed): what the archive backtest
  can at most reach.

Both backtests must produce the same bars (checked). Prints trades/s and the ratios; writes
bench/results/backtest-<time>.json.

    make bench                                   # part of it
    python -m bench.backtest --trades 1000000 --symbols 10 1000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import polars as pl

from bench.throughput import (
    add_broker_arguments,
    ceiling_batch,
    produce,
    save_results,
    start_broker,
)
from candlewax.codec.columns import decode_batch
from candlewax.settings import Settings
from candlewax.topics import ensure_topics
from connectors.synthetic import SyntheticMarket
from flows.backtest import run_backtest
from flows.barmath import BarState
from flows.bars import ARCHIVE_BLOCK
from flows.volatility import VolatilityState
from sinks.parquet import write_trade_block

SPAN_S = 600


def write_archive(data_dir: Path, symbols: int, n: int) -> tuple[int, int, list[pl.DataFrame]]:
    """The messages ``produce`` writes, as the archive of partition 0; returns the event-time
    range and the decoded 10 000-row batches."""
    market = SyntheticMarket(symbols, seed=11, trades_per_second=n / SPAN_S)
    values = [v for chunk in market.encoded(n, batch_size=50_000) for _, v, _ in chunk]
    lo = orjson.loads(values[0])["ts_ms"]
    hi = max(orjson.loads(v)["ts_ms"] for v in values[-1000:]) + 1
    for start in range(0, len(values), ARCHIVE_BLOCK):
        block = values[start : start + ARCHIVE_BLOCK]
        rows = decode_batch(block, list(range(start, start + len(block)))).rows  # type: ignore[arg-type]
        end = start + len(block) - 1
        write_trade_block(data_dir, 0, start, end, rows)
    batches = [
        decode_batch(values[i : i + 10_000], list(range(i, i + 10_000))).rows  # type: ignore[arg-type]
        for i in range(0, len(values), 10_000)
    ]
    return lo, hi, batches


def kernel(batches: list[pl.DataFrame]) -> float:
    """trades/s of bars + the default detectors on decoded batches (as the step runs them)."""
    bars, vol = BarState(), VolatilityState()
    trades = sum(b.height for b in batches)
    start = time.perf_counter()
    for rows in batches:
        result = bars.step(rows)
        vol.on_trades(result.on_time, bars)
        vol.on_closed(result.closed)
        vol.expire(bars.watermark_ms)
    vol.on_closed(bars.flush().closed)
    return trades / (time.perf_counter() - start)


def bars_of(out: Path) -> dict[str, pl.DataFrame]:
    return {
        str(p.relative_to(out)): pl.read_parquet(p)
        for p in sorted((out / "bars").rglob("*.parquet"))
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, nargs="+", default=[10, 1_000])
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (median reported)")
    add_broker_arguments(parser)
    args = parser.parse_args()
    broker, bootstrap = start_broker(args)
    print(f"{args.trades:,} trades per case, broker {args.engine if broker else bootstrap}")
    print(
        f"{'symbols':>8} {'archive/s':>11} {'kernel/s':>11} {'÷kernel':>8} {'kafka/s':>10} "
        f"{'batch ceil/s':>12} {'÷batch':>7}"
    )
    results = []
    try:
        for symbols in args.symbols:
            arch_s, kafka_s, ceil_s, kern = [], [], [], []
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory() as tmp:
                    root = Path(tmp)
                    settings = Settings(
                        bootstrap_servers=bootstrap,
                        topic_prefix=f"bt{uuid.uuid4().hex[:8]}.",
                        partitions=1,
                        retention_ms=-1,
                        data_dir=root / "live",
                    )
                    ensure_topics(settings)
                    produce(settings, symbols, args.trades, 1)
                    lo, hi, batches = write_archive(root / "live", symbols, args.trades)
                    kern.append(kernel(batches))
                    elapsed, seen = ceiling_batch(settings)
                    assert seen == args.trades, (seen, args.trades)
                    ceil_s.append(elapsed)
                    start = time.perf_counter()
                    run_backtest(settings, (lo, hi), root / "a", archive=root / "live" / "trades",
                                 show_progress=False)  # fmt: skip
                    arch_s.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    run_backtest(settings, (lo, hi), root / "k", show_progress=False)
                    kafka_s.append(time.perf_counter() - start)
                    a, k = bars_of(root / "a"), bars_of(root / "k")
                    if a.keys() != k.keys() or any(not a[n].equals(k[n]) for n in a):
                        raise RuntimeError("the archive and Kafka backtests wrote different bars")
            n = args.trades
            row = {
                "symbols": symbols,
                "archive_trades_per_s": round(n / statistics.median(arch_s)),
                "kernel_trades_per_s": round(statistics.median(kern)),
                "kafka_trades_per_s": round(n / statistics.median(kafka_s)),
                "batch_ceiling_trades_per_s": round(n / statistics.median(ceil_s)),
            }
            row["archive_over_kernel"] = round(
                row["archive_trades_per_s"] / row["kernel_trades_per_s"], 3
            )
            row["kafka_over_batch_ceiling"] = round(
                row["kafka_trades_per_s"] / row["batch_ceiling_trades_per_s"], 3
            )
            results.append(row)
            print(
                f"{symbols:>8} {row['archive_trades_per_s']:>11,} {row['kernel_trades_per_s']:>11,} "
                f"{row['archive_over_kernel']:>8.2f} {row['kafka_trades_per_s']:>10,} "
                f"{row['batch_ceiling_trades_per_s']:>12,} {row['kafka_over_batch_ceiling']:>7.2f}",
                flush=True,
            )
    finally:
        if broker is not None:
            broker.stop()
    save_results("backtest", {"args": vars(args), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
