"""The backtest report: one self-contained HTML file (inline SVG and CSS, no scripts, nothing
fetched) with a candlestick chart per symbol and interval, the alerts marked on it, and tables:
alerts per rule and per symbol, and what the price did N bars after each alert.

Prices are drawn with floats (pixels); every number printed comes from the exact decimals.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from candlewax.codec import INTERVALS
from candlewax.storage import scan_parquet

#: Candles drawn per chart at most (the latest ones; the page says so when it cuts).
MAX_CANDLES = 240
#: Rows of the per-alert table at most.
MAX_ALERT_ROWS = 500
AFTER_BARS = (1, 5, 10)
_W, _H, _PAD = 960, 280, 48


def _t(ms: int, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime(fmt)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:+.3f}%"


def load_bars(bars_dir: Any) -> pl.DataFrame:
    files = sorted(bars_dir.rglob("*.parquet")) if bars_dir.is_dir() else []
    if not files:
        return pl.DataFrame()
    return scan_parquet(files).collect().sort("venue", "symbol", "interval", "start_ms")


def chart(bars: pl.DataFrame, alerts: Sequence[dict[str, Any]], title: str) -> str:
    """One candlestick chart (SVG): candles ``rect.candle``, wicks, alerts ``path.alert-marker``."""
    shown = bars.tail(MAX_CANDLES)
    n = shown.height
    lows = shown["low"].cast(pl.Float64).to_list()
    highs = shown["high"].cast(pl.Float64).to_list()
    opens = shown["open"].cast(pl.Float64).to_list()
    closes = shown["close"].cast(pl.Float64).to_list()
    starts = shown["start_ms"].to_list()
    # Bars without flags (written before they existed) are drawn as complete.
    whole = shown["complete"].to_list() if "complete" in shown.columns else [True] * n
    lo, hi = min(lows), max(highs)
    span = (hi - lo) or max(abs(hi), 1.0) * 1e-6
    step = (_W - 2 * _PAD) / max(n, 1)
    body = max(1.0, step * 0.7)

    def y(price: float) -> float:
        return _PAD / 2 + (hi - price) / span * (_H - _PAD)

    parts = [
        f'<svg class="chart" viewBox="0 0 {_W} {_H + 20}" width="{_W}" height="{_H + 20}" '
        f'role="img" aria-label="{_e(title)}">',
        f'<rect x="0" y="0" width="{_W}" height="{_H + 20}" fill="#fff"/>',
    ]
    for label_price in (hi, (hi + lo) / 2, lo):
        yy = y(label_price)
        parts.append(
            f'<line x1="{_PAD}" x2="{_W - _PAD}" y1="{yy:.1f}" y2="{yy:.1f}" class="grid"/>'
            f'<text x="{_W - _PAD + 4}" y="{yy + 4:.1f}" class="axis">{label_price:.6g}</text>'
        )
    for i in range(n):
        x = _PAD + i * step + step / 2
        up = closes[i] >= opens[i]
        top, bottom = y(max(opens[i], closes[i])), y(min(opens[i], closes[i]))
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y(highs[i]):.1f}" y2="{y(lows[i]):.1f}" '
            f'class="wick"/><rect class="candle {"up" if up else "down"}'
            f'{"" if whole[i] else " incomplete"}" x="{x - body / 2:.1f}" '
            f'y="{top:.1f}" width="{body:.1f}" height="{max(1.0, bottom - top):.1f}">'
            f"<title>{_e(_t(starts[i]))} O {shown['open'][i]} H {shown['high'][i]} "
            f"L {shown['low'][i]} C {shown['close'][i]}"
            f"{'' if whole[i] else ' (incomplete: partial or over a gap)'}</title></rect>"
        )
    index = {s: i for i, s in enumerate(starts)}
    width = INTERVALS.get(str(bars["interval"][0]))
    for a in alerts if width else ():  # alerts are of time bars
        at = index.get(a["ts_ms"] - a["ts_ms"] % width)
        if at is None:
            continue  # outside the candles shown
        x = _PAD + at * step + step / 2
        yy = y(highs[at]) - 6
        color = "#c62828" if a["severity"] == "critical" else "#ef6c00"
        parts.append(
            f'<path class="alert-marker" d="M{x:.1f},{yy:.1f} l-5,-9 h10 z" fill="{color}">'
            f"<title>{_e(a['rule'])} {_e(a['value'])} ≥ {_e(a['threshold'])} at "
            f"{_e(_t(a['ts_ms'], '%H:%M:%S'))}</title></path>"
        )
    parts.append(
        f'<text x="{_PAD}" y="{_H + 14}" class="axis">{_e(_t(starts[0]))} UTC</text>'
        f'<text x="{_W - _PAD}" y="{_H + 14}" class="axis" text-anchor="end">'
        f"{_e(_t(starts[-1]))} UTC</text></svg>"
    )
    return "".join(parts)


def after_alerts(bars: pl.DataFrame, alerts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each alert: the close of its bar, and the return N bars of its interval later."""
    closes: dict[tuple[str, str, str], tuple[list[int], list[float], dict[int, int]]] = {}
    for (venue, symbol, interval), group in bars.group_by(
        ["venue", "symbol", "interval"], maintain_order=True
    ):
        starts = group["start_ms"].to_list()
        closes[(str(venue), str(symbol), str(interval))] = (
            starts,
            group["close"].cast(pl.Float64).to_list(),
            {s: i for i, s in enumerate(starts)},
        )
    rows = []
    for a in alerts:
        key = (a["venue"], a["symbol"], a["interval"])
        row: dict[str, Any] = {**a, "close": None}
        for n in AFTER_BARS:
            row[f"after_{n}"] = None
        if key in closes:
            starts, values, index = closes[key]
            i = index.get(a["ts_ms"] - a["ts_ms"] % INTERVALS[a["interval"]])
            if i is not None:
                row["close"] = values[i]
                for n in AFTER_BARS:
                    if i + n < len(values) and values[i]:
                        row[f"after_{n}"] = values[i + n] / values[i] - 1
        rows.append(row)
    return rows


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px}h3{font-size:15px;margin:18px 0 4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:right}th{background:#f5f5f5}td.l,th.l{text-align:left}
.chart .candle.up{fill:#2e7d32}.chart .candle.down{fill:#c62828}.chart .wick{stroke:#555}
.chart .candle.incomplete{fill-opacity:.25;stroke-dasharray:3 2;stroke:#555}
.chart .grid{stroke:#eee}.chart .axis{font-size:11px;fill:#666}.note{color:#666}
"""


def write_report(out: Any, summary: dict[str, Any], alerts: Sequence[dict[str, Any]]) -> Path:
    """``out/report.html`` from ``out/bars`` (Parquet), the alerts and the summary."""
    bars = load_bars(out / "bars")
    title = f"candlewax backtest {_t(summary['from_ms'])} – {_t(summary['to_ms'])} UTC"
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="note">input: {_e(summary["input"])} · {summary["bars"]} bars · '
        f"{summary['alerts']} alerts · {summary['deadletters']} dead letters · "
        f"{summary['seconds']} s</p>",
    ]
    by_rule = Counter((a["rule"], a["interval"]) for a in alerts)
    by_symbol = Counter((a["venue"], a["symbol"]) for a in alerts)
    parts.append(
        "<h2>Alerts per rule</h2><table><tr><th class=l>rule</th><th class=l>interval"
        "</th><th>alerts</th></tr>"
    )
    parts += [
        f"<tr><td class=l>{_e(r)}</td><td class=l>{_e(i)}</td><td>{c}</td></tr>"
        for (r, i), c in sorted(by_rule.items())
    ]
    parts.append(
        "</table><h2>Alerts per symbol</h2><table><tr><th class=l>venue</th>"
        "<th class=l>symbol</th><th>alerts</th></tr>"
    )
    parts += [
        f"<tr><td class=l>{_e(v)}</td><td class=l>{_e(s)}</td><td>{c}</td></tr>"
        for (v, s), c in by_symbol.most_common()
    ]
    parts.append("</table>")
    rows = after_alerts(bars, alerts) if bars.height else []
    if rows:
        parts.append(
            "<h2>After each alert</h2><p class=note>Return of the close N bars (of the "
            "alert's interval) after the bar the alert fired in; mean of |return| per "
            "rule first.</p><table><tr><th class=l>rule</th>"
        )
        parts += [f"<th>mean |ret| +{n}</th>" for n in AFTER_BARS]
        parts.append("</tr>")
        for rule in sorted({r["rule"] for r in rows}):
            cells = []
            for n in AFTER_BARS:
                vals = [
                    abs(r[f"after_{n}"])
                    for r in rows
                    if r["rule"] == rule and r[f"after_{n}"] is not None
                ]
                cells.append(f"<td>{_pct(sum(vals) / len(vals)) if vals else ''}</td>")
            parts.append(f"<tr><td class=l>{_e(rule)}</td>{''.join(cells)}</tr>")
        parts.append(
            "</table><table><tr><th class=l>time (UTC)</th><th class=l>symbol</th>"
            "<th class=l>rule</th><th>value</th><th>close</th>"
        )
        parts += [f"<th>+{n} bars</th>" for n in AFTER_BARS]
        parts.append("</tr>")
        for r in rows[:MAX_ALERT_ROWS]:
            after = "".join(f"<td>{_pct(r['after_' + str(n)])}</td>" for n in AFTER_BARS)
            close = "" if r["close"] is None else format(r["close"], ".8g")
            parts.append(
                f"<tr class=alert-row><td class=l>{_e(_t(r['ts_ms'], '%Y-%m-%d %H:%M:%S'))}</td>"
                f"<td class=l>{_e(r['symbol'])}</td><td class=l>{_e(r['rule'])} "
                f"{_e(r['interval'])}</td><td>{_e(r['value'])}</td>"
                f"<td>{close}</td>{after}</tr>"
            )
        parts.append("</table>")
        if len(rows) > MAX_ALERT_ROWS:
            parts.append(
                f"<p class=note>first {MAX_ALERT_ROWS} of {len(rows)} alerts; all are "
                "in alerts.jsonl</p>"
            )
    parts.append("<h2>Charts</h2>")
    if bars.height:
        for (venue, symbol), per_symbol in bars.group_by(["venue", "symbol"], maintain_order=True):
            parts.append(f"<h3>{_e(venue)}:{_e(symbol)}</h3>")
            # Time intervals first, then the bars by activity (tick:…, volume:…, value:…).
            kinds = sorted(set(per_symbol["interval"].to_list()) - set(INTERVALS))
            for interval in [*INTERVALS, *kinds]:
                frame = per_symbol.filter(pl.col("interval") == interval)
                if not frame.height:
                    continue
                marks = [
                    a
                    for a in alerts
                    if (a["venue"], a["symbol"], a["interval"]) == (venue, symbol, interval)
                ]
                cut = (
                    f" — the last {MAX_CANDLES} of {frame.height}"
                    if frame.height > MAX_CANDLES
                    else ""
                )
                parts.append(
                    f'<div class="panel" data-symbol="{_e(symbol)}" data-interval="{interval}">'
                    f"<p class=note>{interval}: {frame.height} bars, {len(marks)} alerts{cut}</p>"
                    f"{chart(frame, marks, f'{symbol} {interval}')}</div>"
                )
    else:
        parts.append("<p>No bars in this range.</p>")
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("".join(parts), encoding="utf-8")
    return path
