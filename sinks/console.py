"""Console view of the ``bars`` topic: the live table of ``candlewax demo`` and ``candlewax bars
tail``. It is an ordinary Kafka consumer, so it shows what any downstream consumer would see.

Every message goes through the codec: an unreadable one is counted (``unreadable`` on the
board) and skipped, never a reason for the view to stop.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from confluent_kafka import Consumer, KafkaError

from candlewax.codec import Alert, Bar, ParseError, Trade, decode_message
from candlewax.kafka import Connection, consumer_config


@dataclass
class BarBoard:
    """Latest bar per (venue, symbol) of one interval, plus counts per interval."""

    interval: str = "1m"
    latest: dict[tuple[str, str], dict] = field(default_factory=dict)
    #: The 1m bar still forming per symbol, from the trades topic (display only, floats).
    forming: dict[tuple[str, str], dict] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    trades: int = 0
    deadletters: int = 0
    alerts: int = 0
    #: Messages of bars/trades/alerts the codec rejected (skipped).
    unreadable: int = 0
    recent_alerts: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=6)
    )
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None

    def add_alert(self, value: bytes) -> None:
        try:
            a = Alert.decode(value)
        except ParseError:
            with self.lock:
                self.unreadable += 1
            return
        when = datetime.fromtimestamp(a.ts_ms / 1000, tz=UTC).strftime("%H:%M:%S")
        # Only the text of the alert is free text: printable characters of it, bounded.
        text = "".join(c if c.isprintable() else "?" for c in a.text[:200])
        line = f"{when} [{a.severity}] {a.venue}:{a.symbol} {a.rule} {a.interval}: {text}"
        with self.lock:
            self.alerts += 1
            self.recent_alerts.append(line)

    def add_trades(self, value: bytes) -> None:
        records, rejected = decode_message(value)  # the flow dead-letters what is bad
        with self.lock:
            self.unreadable += bool(rejected)
            for t in records:
                if not isinstance(t, Trade):
                    continue
                price, qty, ts = float(t.price), float(t.qty), t.ts_ms
                key = (t.venue, t.symbol)
                self.trades += 1
                start = ts - ts % 60_000
                bar = self.forming.get(key)
                if bar is None or start > bar["start_ms"]:
                    bar = self.forming[key] = {
                        "start_ms": start, "open": price, "high": price, "low": price,
                        "volume": 0.0, "trades": 0,
                    }  # fmt: skip
                elif start < bar["start_ms"]:
                    continue
                bar["high"] = max(bar["high"], price)
                bar["low"] = min(bar["low"], price)
                bar["close"] = price
                bar["volume"] += qty
                bar["trades"] += 1

    def add_bar(self, value: bytes) -> None:
        try:
            bar = Bar.decode(value)
        except ParseError:
            with self.lock:
                self.unreadable += 1
            return
        self.add(bar.to_dict())

    def add(self, bar: dict) -> None:
        with self.lock:
            self.counts[bar["interval"]] = self.counts.get(bar["interval"], 0) + 1
            if bar["interval"] == self.interval:
                key = (bar["venue"], bar["symbol"])
                prev = self.latest.get(key)
                if prev is None or bar["start_ms"] >= prev["start_ms"]:
                    self.latest[key] = bar

    def total(self) -> int:
        with self.lock:
            return sum(self.counts.values())

    def render(self, header: list[str], max_rows: int = 20) -> str:
        """The newest 1m bar per symbol: the forming one (``live``) or the last closed one."""
        with self.lock:
            rows: dict[tuple[str, str], tuple[str, dict]] = {
                key: ("closed", bar) for key, bar in self.latest.items()
            }
            for key, bar in self.forming.items():
                closed = self.latest.get(key)
                if closed is None or bar["start_ms"] > closed["start_ms"]:
                    rows[key] = ("live", bar)
            shown = sorted(rows.items(), key=lambda kv: (-int(kv[1][1]["trades"]), kv[0]))
            counts = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items(), key=_by_len))
            trades, dead, unreadable = self.trades, self.deadletters, self.unreadable
            n_alerts, recent = self.alerts, list(self.recent_alerts)
        lines = [
            *header,
            f"trades seen: {trades}   closed bars: {counts or 'none yet'}   alerts: {n_alerts}   "
            f"dead letters: {dead}" + (f"   unreadable: {unreadable}" if unreadable else ""),
            "",
            f"{'venue:symbol':<24} {'minute (UTC)':<17} {'state':<6} {'open':>14} {'high':>14} "
            f"{'low':>14} {'close':>14} {'chg%':>7} {'volume':>14} {'trades':>7} flags",
        ]
        for (venue, symbol), (state, b) in shown[:max_rows]:
            start = datetime.fromtimestamp(b["start_ms"] / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
            change = (float(b["close"]) / float(b["open"]) - 1) * 100
            lines.append(
                f"{venue + ':' + symbol:<24} {start:<17} {state:<6} {_num(b['open']):>14} "
                f"{_num(b['high']):>14} {_num(b['low']):>14} {_num(b['close']):>14} "
                f"{change:>+7.3f} {_num(b['volume']):>14} {b['trades']:>7} {_flags(state, b)}"
            )
        if len(shown) > max_rows:
            lines.append(f"... and {len(shown) - max_rows} more symbols")
        if recent:
            lines += ["", "latest alerts:", *(f"  {line}" for line in reversed(recent))]
        return "\n".join(lines)


def _flags(state: str, bar: dict) -> str:
    """``partial`` (the window starts before the symbol's coverage), ``gaps=N``, or nothing
    for a complete closed bar; the forming bar has no flags yet."""
    if state != "closed" or bar.get("complete", True):
        return ""
    return f"gaps={bar['gaps']}" if bar.get("gaps") else "partial"


def _by_len(item: tuple[str, int]) -> int:
    order = ["1m", "5m", "15m", "30m", "1h"]
    return order.index(item[0]) if item[0] in order else 99


def _num(text: str | float) -> str:
    value = float(text)
    return f"{value:.8g}" if value < 1 else f"{value:,.2f}"


def follow(
    connection: Connection,
    topics: list[str],
    on_value: Callable[[str, bytes], None],
    stop: threading.Event,
) -> None:
    """Read ``topics`` from the beginning until ``stop`` is set, calling ``on_value`` per message."""
    conf = consumer_config(connection, f"candlewax-console-{uuid.uuid4().hex[:8]}")
    conf["enable.partition.eof"] = False
    consumer = Consumer(conf)
    consumer.subscribe(topics)
    try:
        while not stop.is_set():
            for msg in consumer.consume(1000, 0.2):
                err = msg.error()
                if err is None:
                    on_value(msg.topic() or "", msg.value() or b"")
                elif err.code() != KafkaError._PARTITION_EOF:
                    continue
    finally:
        consumer.close()


def start_board(
    connection: Connection,
    bars_topic: str,
    deadletter_topic: str,
    stop: threading.Event,
    trades_topic: str | None = None,
    alerts_topic: str | None = None,
) -> BarBoard:
    """A BarBoard kept up to date by a background consumer thread (bars, dead letters and, if
    given, trades for the forming bars)."""
    board = BarBoard()

    def on_value(topic: str, value: bytes) -> None:
        if topic == deadletter_topic:
            board.deadletters += 1
        elif topic == trades_topic:
            board.add_trades(value)
        elif topic == alerts_topic:
            board.add_alert(value)
        else:
            board.add_bar(value)

    topics = [bars_topic, deadletter_topic] + [t for t in (trades_topic, alerts_topic) if t]
    thread = threading.Thread(
        target=follow,
        args=(connection, topics, on_value, stop),
        name="console-view",
        daemon=True,
    )
    thread.start()
    board.thread = thread
    return board


def redraw(text: str, out: TextIO = sys.stdout) -> None:
    """Repaint the terminal (ANSI) when interactive; otherwise print the frame once."""
    if out.isatty():
        out.write("\x1b[H\x1b[2J" + text + "\n")
    else:
        out.write(text + "\n\n")
    out.flush()


def wait(seconds: float, stop: threading.Event) -> bool:
    """Sleep up to ``seconds`` unless stopped; True if stopped."""
    deadline = time.monotonic() + seconds
    return stop.wait(max(0.0, deadline - time.monotonic()))
