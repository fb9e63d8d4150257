"""The gateway's core, between the Kafka feed and the sockets: it keeps the market state and the
recent alerts, and turns each batch into stream messages for the hub.

- a trade updates its forming minute and goes out on ``@trade`` at once;
- a closed bar from ``bars`` goes out on ``@kline_<i>`` at once with ``x: true``;
- forming bars (``x: false``) and tickers go out on a clock, at most once per
  ``gateway.push_interval_ms`` per stream and only when they changed;
- an alert goes out on ``@alert`` and ``!alert`` at once.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from candlewax.codec import Alert, Bar
from candlewax.settings import Settings
from sinks.gateway import history, wire
from sinks.gateway.feed import Batch
from sinks.gateway.hub import Hub
from sinks.gateway.market import DAY, MINUTE, Market
from sinks.gateway.streams import Stream

#: Closed bars per stream kept for REST (the flow writes a window's file soon after its bars).
RECENT = 16


def _ms() -> int:
    return int(time.time() * 1000)


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = settings.gateway
        self.intervals = tuple(settings.intervals)
        self.market = Market(settings.calendar)
        self.hub = Hub(self.config.max_connections)
        self.alerts: deque[Alert] = deque(maxlen=self.config.alerts_kept)
        self._alert_ids: set[str] = set()
        #: (venue, symbol, interval) → start of the newest closed bar sent
        self.closed: dict[tuple[str, str, str], int] = {}
        #: symbols whose forming bars or ticker changed since the last push
        self.dirty: set[tuple[str, str]] = set()
        #: the newest closed bars of each stream, for REST until the flow's files have them
        self.recent: dict[tuple[str, str, str], deque[Bar]] = {}

    # ------------------------------------------------------------------ start

    def warm_up(self) -> int:
        """The newest 24 h of 1m bars of every symbol in the Parquet files (the tickers' start;
        the newest day the files hold, which need not be today: a replay's may be old)."""
        root = self.settings.data_dir
        days = history._dates(root, "1m")[:2]
        files = [f for day in days for f in history._day_files(root, "1m", day)]
        if not files:
            return 0
        newest = max(f[0] for f in files)
        files = [f for f in files if f[0] > newest - DAY * MINUTE]
        frame = history.wire_text(history.scan_parquet([f[2] for f in files]).collect())
        bars = [Bar.from_dict(_with_flags(row)) for row in frame.to_dicts()]
        self.market.add_bars(bars)
        for bar in bars:
            key = (bar.venue, bar.symbol, bar.interval)
            self.closed[key] = max(self.closed.get(key, -1), bar.start_ms)
        return len(bars)

    # ------------------------------------------------------------------ records

    def ingest(self, batch: Batch) -> None:
        now = _ms()
        for bar, ts in batch.bars:
            self._bar(bar, ts, now)
        for trade, ts in batch.trades:
            outcome = self.market.add_trade(trade, ts)
            if outcome == "counted":
                self.dirty.add((trade.venue, trade.symbol))
            if outcome != "duplicate":  # every trade of the log once, late ones included
                channel = f"{trade.venue}:{trade.symbol.lower()}@trade"
                if self.hub.listened(channel):
                    self.hub.publish(channel, "trade", wire.dumps(wire.trade(trade, now)), ts)
        for alert, ts in batch.alerts:
            self._alert(alert, ts, now)
        for event, ts in batch.users:
            self.hub.send_user(event.user, wire.dumps(wire.user_event(event, now)), ts)

    def _bar(self, bar: Bar, ts: int, now: int) -> None:
        key = (bar.venue, bar.symbol, bar.interval)
        if bar.start_ms <= self.closed.get(key, -1):
            return  # sent already (the start-up backfill re-reads a few)
        self.closed[key] = bar.start_ms
        self.recent.setdefault(key, deque(maxlen=RECENT)).append(bar)
        self.market.add_bar(bar, ts)
        self.dirty.add((bar.venue, bar.symbol))
        channel = f"{bar.venue}:{bar.symbol.lower()}@kline_{bar.interval}"
        if self.hub.listened(channel):
            data = wire.dumps(wire.closed_kline(bar, now))
            self.hub.publish(channel, "kline", data, ts, bar.start_ms)

    def _alert(self, alert: Alert, ts: int, now: int) -> None:
        if alert.id in self._alert_ids:
            return
        if len(self.alerts) == self.alerts.maxlen:
            self._alert_ids.discard(self.alerts[0].id)
        self.alerts.append(alert)
        self._alert_ids.add(alert.id)
        data = wire.dumps(wire.alert(alert, now))
        self.hub.publish(f"{alert.venue}:{alert.symbol.lower()}@alert", "alert", data, ts)
        self.hub.publish("!alert", "all_alerts", data, ts)

    # ------------------------------------------------------------------ clock

    def push(self) -> None:
        """Forming bars and tickers of the symbols that changed (called every push interval)."""
        now = _ms()
        everyone = self.hub.listened("!ticker@arr")
        tickers = []
        for venue, symbol in sorted(self.dirty):
            base = f"{venue}:{symbol.lower()}@"
            for interval in self.intervals:
                channel = f"{base}kline_{interval}"
                if not self.hub.listened(channel):
                    continue
                bar = self.market.forming_bar(venue, symbol, interval)
                if bar is None or bar.start_ms <= self.closed.get((venue, symbol, interval), -1):
                    continue  # nothing formed since the last closed bar
                data = wire.dumps(wire.forming_kline(bar, venue, symbol, interval, now))
                self.hub.publish(channel, "kline", data, bar.source_ms, bar.start_ms)
            one = self.hub.listened(f"{base}ticker")
            if one or everyone:
                summary = self.market.ticker(venue, symbol)
                if summary is None:
                    continue
                ticker = wire.ticker(summary, venue, symbol, now)
                if one:
                    self.hub.publish(f"{base}ticker", "ticker", wire.dumps(ticker), summary.source_ms, 0)  # fmt: skip
                tickers.append(ticker)
        if tickers:
            self.hub.publish("!ticker@arr", "all_tickers", wire.dumps(tickers), 0, 0)
        self.dirty.clear()

    def current(self, stream: Stream) -> tuple[bytes, int] | None:
        """What a new subscriber of a kline or ticker stream gets at once: the bar forming now
        (else the newest closed one), the ticker; with the bar's window (its conflation key)."""
        now = _ms()
        venue, symbol = stream.market
        if stream.kind == "kline":
            key = (venue, symbol, stream.interval)
            bar = self.market.forming_bar(venue, symbol, stream.interval)
            if bar is not None and bar.start_ms > self.closed.get(key, -1):
                return wire.dumps(wire.forming_kline(bar, venue, symbol, stream.interval, now)), bar.start_ms  # fmt: skip
            recent = self.recent.get(key)
            if recent:
                return wire.dumps(wire.closed_kline(recent[-1], now)), recent[-1].start_ms
            return None
        if stream.kind == "ticker":
            summary = self.market.ticker(venue, symbol)
            if summary is not None:
                return wire.dumps(wire.ticker(summary, venue, symbol, now)), 0
        return None

    # ------------------------------------------------------------------ REST

    def markets(self) -> dict[str, Any]:
        return {
            "default_venue": self.config.default_venue,
            "intervals": list(self.intervals),
            "symbols": [{"venue": v, "symbol": s} for v, s in sorted(self.market.symbols)],
        }

    def klines(
        self,
        venue: str,
        symbol: str,
        interval: str,
        start_ms: int | None,
        end_ms: int | None,
        limit: int,
    ) -> list[list[Any]]:
        """Binance's kline rows: the flow's closed bars (Parquet) and, when the range reaches
        it, the forming bar last."""
        end = end_ms if end_ms is not None else _ms() + 366 * DAY * MINUTE
        rows = history.read_bars(self.settings.data_dir, interval, venue, symbol, start_ms, end, limit)  # fmt: skip
        newest = rows[-1]["start_ms"] if rows else -1
        for bar in self.recent.get((venue, symbol, interval), ()):
            if bar.start_ms > newest and (start_ms is None or bar.start_ms >= start_ms) and bar.start_ms <= end:  # fmt: skip
                rows.append(bar.to_dict())
                newest = bar.start_ms
        rows = rows[-limit:] if start_ms is None else rows[:limit]
        forming = self.market.forming_bar(venue, symbol, interval)
        if (
            forming is not None
            and forming.start_ms > newest
            and forming.start_ms > self.closed.get((venue, symbol, interval), -1)
            and (start_ms is None or forming.start_ms >= start_ms)
            and forming.start_ms <= end
        ):
            if len(rows) < limit:
                rows.append(forming.fields())
            elif start_ms is None:
                rows = [*rows[1:], forming.fields()]
        return [wire.kline_row(r) for r in rows]

    def recent_alerts(self, since_ms: int, venue: str | None, symbol: str | None, limit: int) -> list[dict[str, Any]]:  # fmt: skip
        out: list[dict[str, Any]] = []
        for a in reversed(self.alerts):
            if a.ts_ms < since_ms:
                continue
            if symbol is not None and (a.symbol != symbol or a.venue != venue):
                continue
            out.append(wire.alert(a, 0) | {"E": a.ts_ms})
            if len(out) >= limit:
                break
        out.reverse()
        return [{k: v for k, v in a.items() if k not in ("e", "E")} for a in out]


def _with_flags(row: dict[str, Any]) -> dict[str, Any]:
    """A Parquet bar row as a ``bars`` message (files written before the flags have none)."""
    row.setdefault("complete", True)
    row.setdefault("gaps", 0)
    row.setdefault("v", 1)
    return row
