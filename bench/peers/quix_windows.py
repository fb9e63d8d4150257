"""Peer of ``make bench-peers``: 1m bars the way the Quix Streams docs teach windowed aggregation.

An ``Application`` (its defaults: consumer group, at-least-once, RocksDB state with a changelog
topic) reads the topic from the earliest offset with a JSON value deserializer and a timestamp
extractor that returns the trade's ``ts_ms``; ``sdf.tumbling_window(60_000).reduce(...).final()``
makes the bars, grouped by the message key (venue:symbol), with prices and quantities as Python
floats. ``final()`` closes windows per key (its default): a key's window closes when a later
trade of that key arrives.

Runs under its own virtual environment (``requirements-quix.txt``), never imports candlewax, and
writes ``--out``: its bars, the messages the window called late, its elapsed time from the first
message to the last, its CPU time (all threads) from the first message to the end, and how long
it took to get its first message (group join and recovery).
It stops when it has read ``--trades`` messages, when no message came for ``--idle-s`` seconds
(``Application.run(timeout=...)``), or at ``--deadline-s``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from importlib.metadata import version

from quixstreams import Application

WINDOW_MS = 60_000


def new_bar(trade: dict) -> dict:
    price, qty = float(trade["price"]), float(trade["qty"])
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


def add_trade(bar: dict, trade: dict) -> dict:
    price, qty = float(trade["price"]), float(trade["qty"])
    return {
        **bar,
        "high": max(bar["high"], price),
        "low": min(bar["low"], price),
        "close": price,
        "volume": bar["volume"] + qty,
        "trades": bar["trades"] + 1,
    }


def trade_time(value: dict, headers: object, timestamp: int, timestamp_type: object) -> int:
    return int(value["ts_ms"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--trades", type=int, required=True, help="stop after this many messages")
    parser.add_argument("--out", required=True)
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--deadline-s", type=float, default=600.0)
    args = parser.parse_args()
    config = {
        "quixstreams": version("quixstreams"),
        "confluent_kafka": version("confluent-kafka"),
        "application": "Application defaults (consumer group, at-least-once, changelog topics), "
        "auto_offset_reset=earliest",
        "timestamps": "timestamp_extractor: value['ts_ms']",
        "window": "tumbling_window(60_000, grace_ms=0).reduce(...).final() (closing per key)",
        "numbers": "float",
    }
    seen = {"messages": 0, "late": 0}
    times: dict[str, float] = {}
    bars: list[dict] = []
    stopped_by = ["idle"]
    with tempfile.TemporaryDirectory() as state_dir:
        app = Application(
            broker_address=args.bootstrap,
            consumer_group=f"bench-quix-{uuid.uuid4().hex[:12]}",
            auto_offset_reset="earliest",
            state_dir=state_dir,
            loglevel="INFO",
        )

        def on_message(trade: dict) -> None:
            now = time.perf_counter()
            if "first" not in times:
                times["first"], times["first_cpu"] = now, time.process_time()
            times["last"] = now
            seen["messages"] += 1
            if seen["messages"] == args.trades:
                stopped_by[0] = "all trades read"
                app.stop()  # this message still goes through the window

        def on_late(*_: object) -> bool:
            seen["late"] += 1
            return False  # counted here; no log line per late message

        def deadline() -> None:
            stopped_by[0] = f"deadline of {args.deadline_s:g} s"
            app.stop()

        topic = app.topic(args.topic, value_deserializer="json", timestamp_extractor=trade_time)
        sdf = app.dataframe(topic)
        sdf = sdf.update(on_message)
        sdf = (
            sdf.tumbling_window(duration_ms=WINDOW_MS, on_late=on_late)
            .reduce(reducer=add_trade, initializer=new_bar)
            .final()
        )
        sdf = sdf.update(lambda w: bars.append({**w["value"], "start_ms": w["start"]}))
        timer = threading.Timer(args.deadline_s, deadline)
        timer.daemon = True
        timer.start()
        start = time.perf_counter()
        app.run(timeout=args.idle_s)
        wall = time.perf_counter() - start
        cpu = time.process_time() - times.get("first_cpu", time.process_time())
        timer.cancel()
    result = {
        "config": config,
        "messages": seen["messages"],
        "expected_messages": args.trades,
        "stopped_by": stopped_by[0],
        "elapsed_s": times.get("last", 0.0) - times.get("first", 0.0),
        "wall_s": wall,
        "cpu_s": cpu,
        "first_message_after_s": times["first"] - start if "first" in times else None,
        "late_items": seen["late"],
        "bars": bars,
    }
    with open(args.out, "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
