"""The backtest report: one self-contained HTML file, openable without a server.

A summary first (the range, counts, alerts per rule and interval with what the close did 1, 5
and 10 bars later), then one interactive candlestick chart — a symbol picker and an interval
picker, the alerts marked on the bars they fired in, zoom and pan — then the long tables,
collapsed (``<details>``) and paged: alerts per symbol, and every alert (up to
``MAX_ALERT_ROWS``) with its returns.

The chart is TradingView's Lightweight Charts, inlined from the file `make web` vendors
(``sinks/gateway/static/vendor``), driven by the live page's own ``chart.js``, inlined too; the
bars and alerts are JSON in the page. Prices travel as exact decimal strings: the chart draws
them as floats, and every number printed (tables, the chart's legend) is an exact decimal.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from candlewax.codec import INTERVALS
from candlewax.errors import ConfigError
from candlewax.storage import scan_parquet

#: Where the live page's files are: chart.js and chart.css are in git, vendor/ is `make web`'s.
STATIC = Path(__file__).resolve().parent / "gateway" / "static"
LIBRARY = STATIC / "vendor" / "lightweight-charts.standalone.production.js"
#: Candles per chart at most (the latest ones; the page says so when it cuts).
MAX_CANDLES = 10_000
#: Rows of the per-alert table at most (all alerts are in alerts.jsonl).
MAX_ALERT_ROWS = 500
#: Rows per page of the paged tables; the per-symbol table is collapsed past OPEN_ROWS rows.
PAGE_ROWS = 50
OPEN_ROWS = 10
AFTER_BARS = (1, 5, 10)


def _t(ms: int, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime(fmt)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(x: Decimal | None, sign: str = "+") -> str:
    return "" if x is None else f"{100 * x:{sign}.3f}%"


def load_bars(bars_dir: Any) -> pl.DataFrame:
    files = sorted(bars_dir.rglob("*.parquet")) if bars_dir.is_dir() else []
    if not files:
        return pl.DataFrame()
    return scan_parquet(files).collect().sort("venue", "symbol", "interval", "start_ms")


def assets() -> dict[str, str]:
    """The chart library, chart.js and chart.css, as text; the library is `make web`'s."""
    if not LIBRARY.is_file():
        raise ConfigError(
            f"the backtest report inlines the chart library, and {LIBRARY} is missing: "
            "run `make web` (npm ci, then the file is copied from node_modules)"
        )
    return {
        "library": LIBRARY.read_text(encoding="utf-8"),
        "chart": (STATIC / "chart.js").read_text(encoding="utf-8"),
        "css": (STATIC / "chart.css").read_text(encoding="utf-8"),
    }


def inline_script(code: str) -> str:
    """JavaScript safe inside ``<script>``: no ``</script`` or ``<!--`` can end or bend it (both
    only ever occur in string literals, comments or regular expressions, where ``<\\/`` and
    ``<\\!`` mean the same)."""
    code = re.sub(r"</(?=script)", r"<\\/", code, flags=re.IGNORECASE)
    return code.replace("<!--", "<\\!--")


def inline_json(data: Any) -> str:
    """JSON for ``<script type="application/json">``: ``<``, ``>`` and ``&`` as \\u escapes, so
    no text in it (an alert's, a symbol's) can close the element; JSON.parse reads it back."""
    raw = orjson.dumps(data).decode()
    return raw.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def bar_start(alert: dict[str, Any]) -> int | None:
    """The start of the bar an alert fired in (alerts are of time bars)."""
    if alert.get("window_start_ms") is not None:
        return int(alert["window_start_ms"])
    width = INTERVALS.get(str(alert["interval"]))
    return None if width is None else alert["ts_ms"] - alert["ts_ms"] % width


def after_alerts(bars: pl.DataFrame, alerts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each alert: the close of its bar (exact), and the return N bars of its interval
    later (exact decimal arithmetic)."""
    closes: dict[tuple[str, str, str], tuple[list[Decimal], dict[int, int]]] = {}
    for (venue, symbol, interval), group in bars.group_by(
        ["venue", "symbol", "interval"], maintain_order=True
    ):
        starts = group["start_ms"].to_list()
        closes[(str(venue), str(symbol), str(interval))] = (
            group["close"].to_list(),
            {s: i for i, s in enumerate(starts)},
        )
    rows = []
    for a in alerts:
        key = (a["venue"], a["symbol"], a["interval"])
        row: dict[str, Any] = {**a, "close": None}
        for n in AFTER_BARS:
            row[f"after_{n}"] = None
        start = bar_start(a)
        if key in closes and start is not None:
            values, index = closes[key]
            i = index.get(start)
            if i is not None:
                row["close"] = values[i]
                for n in AFTER_BARS:
                    if i + n < len(values) and values[i]:
                        row[f"after_{n}"] = values[i + n] / values[i] - 1
        rows.append(row)
    return rows


def _mean_abs(rows: Sequence[dict[str, Any]], n: int) -> Decimal | None:
    vals = [abs(r[f"after_{n}"]) for r in rows if r[f"after_{n}"] is not None]
    return sum(vals, Decimal(0)) / len(vals) if vals else None


def chart_data(bars: pl.DataFrame, alerts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The page's JSON: per venue:symbol and interval, the latest MAX_CANDLES bars as columns
    of exact strings (t: start ms, o h l c v, n: trades, x: 1 = incomplete) and the alerts."""
    marks: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for a in alerts:
        start = bar_start(a)
        if start is None:
            continue
        marks.setdefault((a["venue"], a["symbol"], a["interval"]), []).append(
            {
                "id": str(a["id"]),
                "t": start,
                "ts_ms": a["ts_ms"],
                "rule": a["rule"],
                "interval": a["interval"],
                "severity": a.get("severity", "warning"),
                "value": str(a["value"]),
                "threshold": str(a["threshold"]),
                "text": a.get("text") or "",
            }
        )
    per_symbol = Counter((a["venue"], a["symbol"]) for a in alerts)
    series = []
    if bars.height:
        complete = (
            pl.col("complete") if "complete" in bars.columns else pl.lit(True)
        )  # bars written before the flags existed are complete
        for (venue, symbol), frame in bars.group_by(["venue", "symbol"], maintain_order=True):
            key = f"{venue}:{symbol}"
            # Time intervals first, then the bars by activity (tick:…, volume:…, value:…).
            present = set(frame["interval"].to_list())
            kinds = sorted(present - set(INTERVALS))
            entries = []
            for interval in [*(i for i in INTERVALS if i in present), *kinds]:
                part = frame.filter(pl.col("interval") == interval)
                shown = part.tail(MAX_CANDLES).select(
                    pl.col("start_ms").alias("t"),
                    *(
                        pl.col(c).cast(pl.String).alias(k)
                        for c, k in (
                            ("open", "o"),
                            ("high", "h"),
                            ("low", "l"),
                            ("close", "c"),
                            ("volume", "v"),
                        )
                    ),
                    pl.col("trades").alias("n"),
                    (~complete).cast(pl.Int8).alias("x"),
                )
                entries.append(
                    {
                        "interval": interval,
                        "total": part.height,
                        "incomplete": int(shown["x"].sum()),
                        **shown.to_dict(as_series=False),
                        "alerts": marks.get((str(venue), str(symbol), interval), []),
                    }
                )
            series.append(
                {
                    "key": key,
                    "venue": venue,
                    "symbol": symbol,
                    "alerts": per_symbol[(venue, symbol)],
                    "intervals": entries,
                }
            )
    default: dict[str, Any] = {"key": None, "interval": None}
    if series:
        # The symbol with the most alerts, on the first interval that has any.
        best = max(series, key=lambda s: s["alerts"])
        with_alerts = [e["interval"] for e in best["intervals"] if e["alerts"]]
        names = [e["interval"] for e in best["intervals"]]
        default = {
            "key": best["key"],
            "interval": (with_alerts or (["1m"] if "1m" in names else names))[0],
        }
    return {"default": default, "series": series}


def _summary(
    summary: dict[str, Any], alerts: Sequence[dict[str, Any]], rows: list[dict[str, Any]], n: int
) -> list[str]:
    cards = [
        (summary["bars"], "bars"),
        (summary["alerts"], "alerts"),
        (n, "symbols"),
        (summary["deadletters"], "dead letters"),
        (f"{summary['seconds']} s", "to run"),
    ]
    parts = ['<div class="cards">']
    parts += [f'<div class="card"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for v, k in cards]
    parts.append(f'</div><p class="note">input: {_e(summary["input"])}</p>')
    by_rule = Counter((a["rule"], a["interval"]) for a in alerts)
    if not by_rule:
        parts.append("<p>No alerts in this range.</p>")
        return parts
    parts.append(
        '<h2>Alerts per rule</h2><table class="by-rule"><thead><tr><th class=l>rule</th>'
        "<th class=l>interval</th><th>alerts</th>"
        + "".join(f"<th>mean |ret| +{k}</th>" for k in AFTER_BARS)
        + "</tr></thead><tbody>"
    )
    for (rule, interval), count in sorted(by_rule.items()):
        mine = [r for r in rows if (r["rule"], r["interval"]) == (rule, interval)]
        means = "".join(f"<td>{_pct(_mean_abs(mine, k), '')}</td>" for k in AFTER_BARS)
        parts.append(
            f"<tr><td class=l>{_e(rule)}</td><td class=l>{_e(interval)}</td>"
            f"<td>{count}</td>{means}</tr>"
        )
    parts.append(
        "</tbody></table><p class=note>mean |ret| +N: the mean absolute return of the close N "
        "bars (of the alert's interval) after the bar the alert fired in.</p>"
    )
    return parts


def _tables(alerts: Sequence[dict[str, Any]], rows: list[dict[str, Any]]) -> list[str]:
    by_symbol = Counter((a["venue"], a["symbol"]) for a in alerts)
    if not by_symbol:
        return []
    opened = " open" if len(by_symbol) <= OPEN_ROWS else ""
    parts = [
        f"<details class=by-symbol{opened}><summary>Alerts per symbol ({len(by_symbol)} "
        f'symbols)</summary><table class="paged" data-page-size="{PAGE_ROWS}"><thead><tr>'
        "<th class=l>venue</th><th class=l>symbol</th><th>alerts</th></tr></thead><tbody>"
    ]
    parts += [
        f"<tr><td class=l>{_e(v)}</td><td class=l>{_e(s)}</td><td>{c}</td></tr>"
        for (v, s), c in by_symbol.most_common()
    ]
    parts.append("</tbody></table></details>")
    cut = (
        f", the first {MAX_ALERT_ROWS} (all are in alerts.jsonl)"
        if len(rows) > MAX_ALERT_ROWS
        else ""
    )
    parts.append(
        f"<details class=after><summary>Every alert ({len(rows)}{cut})</summary>"
        "<p class=note>Return of the close N bars (of the alert's interval) after the bar the "
        "alert fired in. Click a row to see its bar on the chart.</p>"
        f'<table class="paged" data-page-size="{PAGE_ROWS}"><thead><tr>'
        "<th class=l>time (UTC)</th><th class=l>symbol</th><th class=l>rule</th>"
        "<th>value</th><th>threshold</th><th>close</th>"
        + "".join(f"<th>+{k} bars</th>" for k in AFTER_BARS)
        + "</tr></thead><tbody>"
    )
    for r in rows[:MAX_ALERT_ROWS]:
        after = "".join(f"<td>{_pct(r['after_' + str(k)])}</td>" for k in AFTER_BARS)
        close = "" if r["close"] is None else format(r["close"], "f")
        start = bar_start(r)
        parts.append(
            f'<tr class="alert-row" data-key="{_e(r["venue"])}:{_e(r["symbol"])}" '
            f'data-interval="{_e(r["interval"])}" data-t="{"" if start is None else start}">'
            f"<td class=l>{_e(_t(r['ts_ms'], '%Y-%m-%d %H:%M:%S'))}</td>"
            f"<td class=l>{_e(r['venue'])}:{_e(r['symbol'])}</td>"
            f'<td class="l sev-{_e(r.get("severity", "warning"))}">{_e(r["rule"])} '
            f"{_e(r['interval'])}</td><td>{_e(r['value'])}</td><td>{_e(r['threshold'])}</td>"
            f"<td>{close}</td>{after}</tr>"
        )
    parts.append("</tbody></table></details>")
    return parts


def write_report(out: Any, summary: dict[str, Any], alerts: Sequence[dict[str, Any]]) -> Path:
    """``out/report.html`` from ``out/bars`` (Parquet), the alerts and the summary."""
    code = assets()  # first: a missing `make web` fails before any work
    bars = load_bars(out / "bars")
    rows = after_alerts(bars, alerts) if bars.height else [dict(a) for a in alerts]
    for r in rows:
        r.setdefault("close", None)
        for k in AFTER_BARS:
            r.setdefault(f"after_{k}", None)
    data = chart_data(bars, alerts)
    title = f"candlewax backtest {_t(summary['from_ms'])} – {_t(summary['to_ms'])} UTC"
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{code['css']}</style></head>"
        '<body data-candlewax="report"><main id="cw-report">',
        f"<h1>{_e(title)}</h1>",
        *_summary(summary, alerts, rows, len(data["series"])),
        "<h2>Chart</h2>",
    ]
    if data["series"]:
        parts.append(
            '<div class="cw-controls"><label for="cw-symbol">symbol</label> '
            '<select id="cw-symbol"></select> <label for="cw-interval">interval</label> '
            '<select id="cw-interval"></select> <span id="cw-note" class="note"></span></div>'
            '<div class="cw-chart" role="img" aria-label="candlestick chart"></div>'
            "<noscript><p>The chart needs JavaScript; the tables hold the numbers.</p></noscript>"
            "<p class=note>Times in UTC. Pale candles are incomplete (partial, or over a gap); "
            "▼ marks an alert on the bar it fired in (orange: warning, red: critical).</p>"
        )
    else:
        parts.append("<p>No bars in this range.</p>")
    parts += _tables(alerts, rows)
    parts.append(
        "</main><footer>Charts by "
        '<a href="https://www.tradingview.com/" target="_blank" rel="noopener">TradingView</a> '
        "Lightweight Charts™ — Copyright (c) 2023 TradingView, Inc., Apache License 2.0 "
        "(inlined below with its license header).</footer>"
        '<script type="application/json" id="cw-data">'
        f"{inline_json(data)}</script>"
        f"<script>{inline_script(code['library'])}</script>"
        f"<script>{inline_script(code['chart'])}</script></body></html>"
    )
    path = out / "report.html"
    path.write_text("".join(parts), encoding="utf-8")
    return path
