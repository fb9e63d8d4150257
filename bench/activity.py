"""Cost of activity bars (flows/activity.py) next to the time-bar kernel, in process.

On the same pre-decoded batches of synthetic trades (decoding is not timed), it times:

- time bars: ``BarState.step`` alone, every batch — the flow's kernel path today;
- time + activity: the same, then ``ActivityBars.step`` on each step's on-time trades with
  three kinds on every symbol (``tick:200``, and a ``volume`` and a ``value`` size per symbol
  of about 1/50 of its traffic, so every kind closes bars all along);
- the same with the three kinds on one symbol only (the others cost a join that drops them).

Each is run ``--repeats`` times on fresh state, the cases in turn; the best run counts. It prints trades/s and the
ratio to the time bars alone. When no symbol has kinds the flow does not call ActivityBars at
all, so the time-bar path is the first line, unchanged.

    .venv/bin/python -m bench.activity
    .venv/bin/python -m bench.activity --trades 200000 --symbols 10
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable

import polars as pl

from candlewax.codec.columns import decode_batch
from connectors.synthetic import SyntheticMarket
from flows.activity import ActivityBars, BarKind
from flows.barmath import BarState

SPAN_S = 600  # event time covered by the generated trades: 10 minutes
BARS_PER_SYMBOL = 50


def batches(symbols: int, n: int, size: int) -> list[pl.DataFrame]:
    market = SyntheticMarket(symbols, seed=11, trades_per_second=n / SPAN_S)
    values = [v for chunk in market.encoded(n, batch_size=50_000) for _, v, _ in chunk]
    return [
        decode_batch(values[i : i + size], list(range(i, min(i + size, n)))).rows
        for i in range(0, len(values), size)
    ]


def kinds_for(rows: list[pl.DataFrame]) -> dict[str, tuple[BarKind, ...]]:
    """Per symbol: tick:200, and volume / value sizes of 1/BARS_PER_SYMBOL of its traffic."""
    totals = (
        pl.concat([r.filter(~pl.col("hb")) for r in rows])
        .group_by("venue", "symbol")
        .agg(volume=pl.col("q").sum(), value=(pl.col("p") * pl.col("q")).sum())
        .sort("venue", "symbol")
    )
    config = {}
    for venue, symbol, volume, value in totals.iter_rows():
        step = max(1, value // BARS_PER_SYMBOL // 10**8) * 10**8  # value sizes: 8 decimals
        config[f"{venue}:{symbol}"] = (
            BarKind("tick", 200),
            BarKind("volume", max(1, volume // BARS_PER_SYMBOL)),
            BarKind("value", step),
        )
    return config


def timed(work: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    bars = work()
    return time.perf_counter() - start, bars


def time_bars(rows: list[pl.DataFrame]) -> Callable[[], int]:
    def work() -> int:
        state = BarState()
        return sum(f.height for r in rows for f in state.step(r).closed.values())

    return work


def with_activity(
    rows: list[pl.DataFrame], config: dict[str, tuple[BarKind, ...]]
) -> Callable[[], int]:
    def work() -> int:
        state, activity = BarState(), ActivityBars(config)
        made = 0
        for r in rows:
            result = state.step(r)
            made += sum(f.height for f in result.closed.values())
            made += sum(f.height for f in activity.step(result.on_time).values())
        return made

    return work


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--batch", type=int, default=10_000, help="trades per kernel step")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rows = batches(args.symbols, args.trades, args.batch)
    config = kinds_for(rows)
    one = dict(list(config.items())[:1])
    print(
        f"{args.trades} trades, {args.symbols} symbols, batches of {args.batch}, best of "
        f"{args.repeats} (Python {platform.python_version()}, Polars {pl.__version__})"
    )
    cases = {
        "time bars": time_bars(rows),
        f"time + activity, 3 kinds x {len(config)} symbols": with_activity(rows, config),
        "time + activity, 3 kinds x 1 symbol": with_activity(rows, one),
    }
    # Rounds of every case in turn, so that a noisy moment of the machine hits them alike.
    runs: dict[str, list[tuple[float, int]]] = {label: [] for label in cases}
    for _ in range(args.repeats):
        for label, work in cases.items():
            runs[label].append(timed(work))
    base = min(seconds for seconds, _ in runs["time bars"])
    for label, done in runs.items():
        best = min(seconds for seconds, _ in done)
        print(
            f"  {label:<44} {args.trades / best:>12,.0f} trades/s  {best:6.2f} s  "
            f"x{best / base:.2f}  ({done[0][1]} bars)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
