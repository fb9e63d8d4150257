"""Volatility detectors — pure logic, fed by the bars step (flows/bars.py), all in event time.

- **range**: in each (venue, symbol, interval) window, the first trade at which
  (high − low) / high reaches the threshold raises an alert *at that trade* (its ``ts_ms``), not
  at window close — once per window. Running high/low come from the window's trades in log order.
- **move**: on each closed bar, |close − close N bars ago| / close ≥ threshold (N bars of that
  symbol and interval, i.e. bars that exist; windows without trades have no bar).
- **zscore**: on each closed bar, |ln(close / previous close)| / σ ≥ k, where σ² is the EWMA of
  squared log returns *before* this one (half-life in bars); silent during a warm-up of W returns.

Incomplete bars (flows/barmath.py, "Flags") are ignored by default (``ignore_incomplete``): a
range window before the symbol's coverage or over a gap marker raises nothing, and a closed bar
with ``complete`` false is neither alerted on nor kept as history (as if it did not exist), so a
partial first bar never fires.

Thresholds come per interval with per-symbol overrides (:class:`AlertRules`). After an alert, the
same (rule, venue, symbol) stays silent for ``cooldown_ms`` of event time. Everything depends only
on the log (event times and order), so a replay at any speed gives the same alerts, whose ids are
deterministic (``codec.alert_id``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl

from candlewax.codec import INTERVALS, Alert, alert_id, format_ratio, format_scaled
from candlewax.settings.alerts import RULES, AlertRules
from flows.barmath import BarState

__all__ = ["RULES", "AlertRules", "VolatilityState"]

_WINDOW_SCHEMA = {
    "venue": pl.String,
    "symbol": pl.String,
    "start": pl.Int64,
    "high0": pl.Int128,
    "low0": pl.Int128,
    "fired": pl.Boolean,
}


def _empty_windows() -> pl.DataFrame:
    return pl.DataFrame(schema=_WINDOW_SCHEMA)


@dataclass
class _Ewma:
    last_close: float | None = None
    variance: float | None = None
    returns: int = 0


@dataclass
class VolatilityState:
    """Detector state of one ``trades`` partition (kept small: it is snapshotted each epoch)."""

    rules: AlertRules = field(default_factory=AlertRules)
    #: interval → open range windows: venue, symbol, start, high0, low0 (scaled ints), fired
    windows: dict[str, pl.DataFrame] = field(default_factory=dict)
    closes: dict[tuple[str, str, str], deque] = field(default_factory=dict)
    ewma: dict[tuple[str, str, str], _Ewma] = field(default_factory=dict)
    last_alert: dict[tuple[str, str, str], int] = field(default_factory=dict)

    # ------------------------------------------------------------------ range, per trade

    def on_trades(self, rows: pl.DataFrame, bars: BarState | None = None) -> list[Alert]:
        """On-time trade rows of one batch (kernel schema, log order) → range alerts; ``bars``
        (the partition's kernel state) tells which windows are incomplete."""
        if not rows.height:
            return []
        candidates: list[tuple[int, int, Alert]] = []
        intervals = sorted(self.rules.intervals("range"), key=INTERVALS.__getitem__)
        check = self.rules.ignore_incomplete and bars is not None and intervals
        if check and bars is not None and bars.all_complete(rows, INTERVALS[intervals[-1]]):
            check = False  # the common batch: every window complete, no per-row flags
        for interval in intervals:
            usable = rows
            if check and bars is not None:
                usable = rows.filter(~bars.incomplete_windows(rows, INTERVALS[interval]))
            if usable.height:
                candidates.extend(self._range(usable, interval))
        # Cooldown in event-time order (ties: log order), the same whatever the batching.
        candidates.sort(key=lambda c: (c[0], c[1]))
        return [a for _, _, a in candidates if self._cooled(a)]

    def _range(self, rows: pl.DataFrame, interval: str) -> list[tuple[int, int, Alert]]:
        length = INTERVALS[interval]
        keys = ["venue", "symbol", "start"]
        prior = self.windows.get(interval, _empty_windows())
        df = rows.select(
            "venue", "symbol", "id", "p", "ts_ms", start=pl.col("ts_ms") - pl.col("ts_ms") % length
        )
        # 1. Each window's high/low after this batch: one group_by and one join.
        batch = df.group_by(keys).agg(high1=pl.col("p").max(), low1=pl.col("p").min())
        merged = prior.join(batch, on=keys, how="full", coalesce=True).select(
            *keys,
            "high0",
            "low0",
            high=pl.max_horizontal("high0", "high1"),
            low=pl.min_horizontal("low0", "low1"),
            fired=pl.col("fired").fill_null(False),
        )
        # 2. Windows that newly reach their threshold (usually none).
        ratio = (pl.col("high") - pl.col("low")).cast(pl.Float64) / pl.col("high").cast(pl.Float64)
        crossing = merged.filter(
            ~pl.col("fired") & (ratio >= self._threshold_expr(merged, interval))
        )
        hits = pl.DataFrame()
        if crossing.height:
            # 3. Only for those: replay the batch's trades in log order to find the crossing one.
            thr = crossing.select(
                *keys, "high0", "low0", thr=self._threshold_expr(crossing, interval)
            )
            scan = (
                df.with_row_index("seq")
                .join(thr, on=keys, how="inner", maintain_order="left")
                .with_columns(
                    hi=pl.max_horizontal(pl.col("p").cum_max().over(keys), "high0"),
                    lo=pl.min_horizontal(pl.col("p").cum_min().over(keys), "low0"),
                )
            )
            scan_ratio = (pl.col("hi") - pl.col("lo")).cast(pl.Float64) / pl.col("hi").cast(
                pl.Float64
            )
            hits = (
                scan.filter(scan_ratio >= pl.col("thr"))
                .with_columns(ratio=scan_ratio)
                .group_by(keys, maintain_order=True)
                .first()
            )
            merged = merged.join(
                hits.select(keys).with_columns(hit=pl.lit(True)), on=keys, how="left"
            ).with_columns(fired=pl.col("fired") | pl.col("hit").fill_null(False))
        self.windows[interval] = merged.select(*keys, high0="high", low0="low", fired="fired")
        out = []
        for row in hits.iter_rows(named=True) if hits.height else []:
            value, threshold = row["ratio"], row["thr"]
            alert = self._alert(
                "range", row["venue"], row["symbol"], interval, row["start"], row["ts_ms"],
                value, threshold, format_scaled(row["p"]),
                f"{row['symbol']} {interval} range {value:.3%} ≥ {threshold:.3%} "
                f"(high {format_scaled(row['hi'])}, low {format_scaled(row['lo'])})",
            )  # fmt: skip
            out.append((row["ts_ms"], row["seq"], alert))
        return out

    def _threshold_expr(self, frame: pl.DataFrame, interval: str) -> pl.Expr:
        """Per-row threshold: the symbol's override, else the interval's default (None: off)."""
        default = self.rules.range.get(interval)
        overrides = {
            key.split("@", 1)[0]: value
            for key, value in self.rules.range.items()
            if key.endswith(f"@{interval}") and "@" in key
        }
        expr = pl.lit(default, dtype=pl.Float64)
        if overrides:
            expr = pl.col("symbol").replace_strict(overrides, default=expr, return_dtype=pl.Float64)
        return expr

    def expire(self, watermark_ms: int | None) -> None:
        """Forget range windows the watermark has closed (None: all, end of input)."""
        if watermark_ms is None:
            self.windows.clear()
            return
        for interval, frame in self.windows.items():
            if frame.height and int(frame["start"].min()) + INTERVALS[interval] <= watermark_ms:  # type: ignore[arg-type]
                self.windows[interval] = frame.filter(
                    pl.col("start") + INTERVALS[interval] > watermark_ms
                )

    # ------------------------------------------------------------------ move and z-score, per bar

    def on_closed(self, closed: Mapping[str, pl.DataFrame]) -> list[Alert]:
        """Closed kernel bars (per interval, sorted by venue, symbol, start) → move/z-score alerts."""
        candidates: list[tuple[int, Alert]] = []
        want = self.rules.intervals("move") | self.rules.intervals("zscore")
        for interval, frame in closed.items():
            if interval not in want or not frame.height:
                continue
            if self.rules.ignore_incomplete and "complete" in frame.columns:
                frame = frame.filter(pl.col("complete"))
            for row in frame.select("venue", "symbol", "start_ms", "close", "close_ts").iter_rows():
                candidates.extend(self._bar(interval, *row))
        candidates.sort(key=lambda c: c[0])
        return [a for _, a in candidates if self._cooled(a)]

    def _bar(
        self, interval: str, venue: str, symbol: str, start: int, close: int, close_ts: int
    ) -> list[tuple[int, Alert]]:
        out: list[tuple[int, Alert]] = []
        key = (venue, symbol, interval)
        price = close / 1e8
        n = self.rules.move_bars
        history = self.closes.setdefault(key, deque(maxlen=n))
        move_thr = self.rules.threshold("move", symbol, interval)
        if move_thr is not None and len(history) == n:
            ago = history[0]
            value = abs(close - ago) / close
            if value >= move_thr:
                text = f"{symbol} {interval} moved {(close - ago) / ago:+.3%} in {n} bars (≥ {move_thr:.3%})"
                out.append(
                    (
                        close_ts,
                        self._alert(
                            "move",
                            venue,
                            symbol,
                            interval,
                            start,
                            close_ts,
                            value,
                            move_thr,
                            format_scaled(close),
                            text,
                        ),
                    )
                )
        history.append(close)
        k = self.rules.threshold("zscore", symbol, interval)
        state = self.ewma.setdefault(key, _Ewma())
        if state.last_close is not None:
            r = math.log(price / state.last_close)
            if k is not None and state.variance and state.returns >= self.rules.zscore_warmup_bars:
                z = abs(r) / math.sqrt(state.variance)
                if z >= k:
                    text = f"{symbol} {interval} return {r:+.3%} is {z:.1f}σ (≥ {k:g}σ)"
                    out.append(
                        (
                            close_ts,
                            self._alert(
                                "zscore",
                                venue,
                                symbol,
                                interval,
                                start,
                                close_ts,
                                z,
                                k,
                                format_scaled(close),
                                text,
                            ),
                        )
                    )
            decay = 0.5 ** (1 / self.rules.zscore_halflife_bars)
            state.variance = (
                r * r if state.variance is None else decay * state.variance + (1 - decay) * r * r
            )
            state.returns += 1
        state.last_close = price
        return out

    # ------------------------------------------------------------------ shared

    def _cooled(self, alert: Alert) -> bool:
        key = (alert.rule, alert.venue, alert.symbol)
        last = self.last_alert.get(key)
        if last is not None and alert.ts_ms < last + self.rules.cooldown_ms:
            return False
        self.last_alert[key] = alert.ts_ms
        return True

    @staticmethod
    def _alert(
        rule: str, venue: str, symbol: str, interval: str, start: int, ts_ms: int,
        value: float, threshold: float, price: str, text: str,
    ) -> Alert:  # fmt: skip
        severity = "critical" if value >= 2 * threshold else "warning"
        return Alert(
            id=alert_id(rule, venue, symbol, interval, start),
            rule=rule,
            venue=venue,
            symbol=symbol,
            interval=interval,
            window_start_ms=start,
            ts_ms=ts_ms,
            value=format_ratio(value),
            threshold=format_ratio(threshold),
            price=price,
            severity=severity,
            text=text,
        )
