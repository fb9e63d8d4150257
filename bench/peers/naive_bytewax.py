"""Peer of ``make bench-peers``: 1m bars the way the Bytewax 0.21 docs teach windowing.

``KafkaSource(tail=False)`` (read the topic to its end) → ``orjson.loads`` → ``key_on`` venue:symbol
→ ``fold_window`` with an ``EventClock`` on the trade's ``ts_ms`` (``wait_for_system_duration``
from ``--wait-s``) and a 1-minute ``TumblingWindower`` aligned to the epoch; prices and quantities
are Python floats. One worker (``bytewax.testing.run_main``), as candlewax's flow in the benchmark.

Runs under its own virtual environment (``requirements-bytewax.txt``), never imports candlewax,
and writes ``--out``: its bars, the items the windowing called late, its elapsed time from the
first message to the last, and its CPU time (all threads) from the first message to the end. A deadline (``--deadline-s``) ends a run that hangs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from importlib.metadata import version

import orjson
from bytewax import operators as op
from bytewax.connectors.kafka import KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.operators import windowing as win
from bytewax.operators.windowing import EventClock, TumblingWindower
from bytewax.testing import TestingSink, run_main

WINDOW = timedelta(minutes=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Seen:
    """Messages read and when (perf_counter) the first and the last one came."""

    def __init__(self) -> None:
        self.messages = 0
        self.first: float | None = None
        self.last: float | None = None
        self.first_cpu = 0.0  # process_time() at the first message
        self.late = 0


def new_bar() -> dict | None:
    return None


def add_trade(bar: dict | None, trade: dict) -> dict:
    price, qty = float(trade["price"]), float(trade["qty"])
    if bar is None:
        return {
            "venue": trade["venue"],
            "symbol": trade["symbol"],
            "open": price,
            "high": price,
            "low": price,
            "close": price,
            "volume": qty,
            "trades": 1,
        }
    bar["high"] = max(bar["high"], price)
    bar["low"] = min(bar["low"], price)
    bar["close"] = price
    bar["volume"] += qty
    bar["trades"] += 1
    return bar


def merge_bars(a: dict | None, b: dict | None) -> dict | None:  # session windows only
    if a is None or b is None:
        return a or b
    return {
        **a,
        "high": max(a["high"], b["high"]),
        "low": min(a["low"], b["low"]),
        "close": b["close"],
        "volume": a["volume"] + b["volume"],
        "trades": a["trades"] + b["trades"],
    }


def build(bootstrap: str, topic: str, wait_s: float, seen: Seen, out: list) -> Dataflow:
    flow = Dataflow("naive_bars")
    messages = op.input("kafka_in", flow, KafkaSource([bootstrap], [topic], tail=False))

    def decode(msg):
        now = time.perf_counter()
        if seen.first is None:
            seen.first = now
            seen.first_cpu = time.process_time()
        seen.last = now
        seen.messages += 1
        return orjson.loads(msg.value)

    trades = op.map("decode", messages, decode)
    keyed = op.key_on("by_symbol", trades, lambda t: f"{t['venue']}:{t['symbol']}")
    clock = EventClock(
        lambda t: datetime.fromtimestamp(t["ts_ms"] / 1000, tz=UTC),
        wait_for_system_duration=timedelta(seconds=wait_s),
    )
    windower = TumblingWindower(length=WINDOW, align_to=EPOCH)
    bars = win.fold_window("bars_1m", keyed, clock, windower, new_bar, add_trade, merge_bars)

    def count_late(step_id: str, item: object) -> None:
        seen.late += 1

    op.inspect("late", bars.late, count_late)
    window_ms = int(WINDOW.total_seconds() * 1000)
    flat = op.map("flatten", bars.down, lambda kv: {**kv[1][1], "start_ms": kv[1][0] * window_ms})
    op.output("bars_out", flat, TestingSink(out))
    return flow


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--trades", type=int, required=True, help="trades the topic holds")
    parser.add_argument("--out", required=True)
    parser.add_argument("--wait-s", type=float, default=5.0, help="wait_for_system_duration")
    parser.add_argument("--deadline-s", type=float, default=600.0)
    args = parser.parse_args()
    config = {
        "bytewax": version("bytewax"),
        "confluent_kafka": version("confluent-kafka"),
        "source": "KafkaSource(tail=False), 1 worker (run_main)",
        "clock": f"EventClock(ts_ms, wait_for_system_duration={args.wait_s:g} s)",
        "windower": "TumblingWindower(1 minute, align_to=1970-01-01T00:00Z)",
        "numbers": "float",
    }

    def deadline() -> None:  # run_main cannot be stopped from outside: give up loudly
        with open(args.out, "w") as fh:
            json.dump({"error": f"deadline of {args.deadline_s:g} s passed", **config}, fh)
        os._exit(3)

    timer = threading.Timer(args.deadline_s, deadline)
    timer.daemon = True
    timer.start()
    seen, bars = Seen(), []
    start = time.perf_counter()
    run_main(build(args.bootstrap, args.topic, args.wait_s, seen, bars))
    wall = time.perf_counter() - start
    cpu = time.process_time() - seen.first_cpu
    timer.cancel()
    elapsed = (seen.last or 0.0) - (seen.first or 0.0)
    result = {
        "config": config,
        "messages": seen.messages,
        "expected_messages": args.trades,
        "stopped_by": "end of topic (tail=False)",
        "elapsed_s": elapsed,
        "wall_s": wall,
        "cpu_s": cpu,
        "late_items": seen.late,
        "bars": bars,
    }
    with open(args.out, "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
