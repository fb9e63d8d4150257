"""The backtest report's page, without a browser: one file whose embedded JSON and inlined
scripts no text can break out of, exact numbers, the summary first, a clear error without
`make web`. (tests/e2e/test_report_page.py opens the same page in Chromium.)"""

from __future__ import annotations

from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import sinks.report as report
from candlewax.errors import ConfigError
from tests.e2e.charts import report_data

T0 = 1_723_161_600_000  # 2024-08-09T00:00:00Z
HOSTILE = '</script><script>throw new Error("injected")</script><!-- & </SCRIPT >'
DEC = pl.Decimal(38, 8)


def _bars(venue: str, symbol: str, interval: str, starts: list[int], base: str) -> pl.DataFrame:
    rows = []
    price = Decimal(base)
    for i, start in enumerate(starts):
        step = Decimal("0.5") if i % 3 else Decimal("-0.75")
        o, c = price, price + step
        rows.append(
            {
                "venue": venue,
                "symbol": symbol,
                "interval": interval,
                "start_ms": start,
                "open": o,
                "high": max(o, c) + Decimal("0.25"),
                "low": min(o, c) - Decimal("0.125"),
                "close": c,
                "volume": Decimal("1.5") * (i + 1),
                "trades": 10 + i,
                "complete": i != 0,
            }
        )
        price = c
    return pl.DataFrame(
        rows,
        schema={
            "venue": pl.String,
            "symbol": pl.String,
            "interval": pl.String,
            "start_ms": pl.Int64,
            "open": DEC,
            "high": DEC,
            "low": DEC,
            "close": DEC,
            "volume": DEC,
            "trades": pl.Int64,
            "complete": pl.Boolean,
        },
    )


def _alert(venue: str, symbol: str, interval: str, start: int, n: int, text: str) -> dict[str, Any]:
    return {
        "id": f"{symbol}-{interval}-{n}",
        "rule": "range",
        "venue": venue,
        "symbol": symbol,
        "interval": interval,
        "window_start_ms": start,
        "ts_ms": start + 1234,
        "value": "0.00123456",
        "threshold": "0.001",
        "price": "100.5",
        "severity": "critical" if n % 2 else "warning",
        "text": text,
        "v": 1,
    }


def backtest_dir(out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A backtest's output as the flow writes it, small: two venues, three symbols, 1m and 5m
    bars, tick bars starting in the same second, alerts with text meant to break the page."""
    frames = [
        _bars("binance", "BTCUSDT", "1m", [T0 + i * 60_000 for i in range(30)], "61000.5"),
        _bars("binance", "BTCUSDT", "5m", [T0 + i * 300_000 for i in range(6)], "61000.5"),
        # Tick bars: several start in one second.
        _bars("binance", "BTCUSDT", "tick:100", [T0 + i * 250 for i in range(12)], "61000.5"),
        _bars("binance", "ETHUSDT", "1m", [T0 + i * 60_000 for i in range(20)], "2600.25"),
        _bars("synthetic", "SOLUSDT", "1m", [T0 + i * 60_000 for i in range(10)], "140.125"),
    ]
    for i, frame in enumerate(frames):
        interval = frame["interval"][0].replace(":", "_")
        path = out / "bars" / f"interval={interval}" / "date=2024-08-09" / f"part-{i:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(path)
    alerts = [
        _alert("binance", "BTCUSDT", "1m", T0 + 3 * 60_000, 1, HOSTILE),
        _alert("binance", "BTCUSDT", "1m", T0 + 3 * 60_000, 2, "two on one bar"),
        _alert("binance", "BTCUSDT", "1m", T0 + 17 * 60_000, 3, "a later one"),
        _alert("binance", "BTCUSDT", "5m", T0 + 300_000, 4, "5m"),
        _alert("binance", "ETHUSDT", "1m", T0 + 5 * 60_000, 5, "eth"),
    ]
    summary = {
        "from_ms": T0,
        "to_ms": T0 + 1_800_000,
        "input": f"test {HOSTILE}",
        "bars": sum(f.height for f in frames),
        "alerts": len(alerts),
        "deadletters": 0,
        "seconds": 0.5,
    }
    return summary, alerts


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._open: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self._open = dict(attrs)
            self.scripts.append((self._open, ""))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._open = None


def test_one_page_whose_text_cannot_break_out(tmp_path: Path) -> None:
    summary, alerts = backtest_dir(tmp_path)
    page = report.write_report(tmp_path, summary, alerts).read_text()
    parser = _Scripts()
    parser.feed(page)
    # Exactly our three scripts: the data, the library, chart.js; none with a src.
    kinds = [attrs.get("type") for attrs, _ in parser.scripts]
    assert kinds == ["application/json", None, None]
    assert not any("src" in attrs for attrs, _ in parser.scripts)
    assert 'throw new Error("injected")' not in page
    assert HOSTILE not in page  # escaped everywhere: in tables as HTML, in the JSON as \u003c
    data = report_data(page)
    hostile = [a for s in data["series"] for e in s["intervals"] for a in e["alerts"]]
    assert HOSTILE in [a["text"] for a in hostile]  # and read back intact
    assert "TradingView Lightweight Charts" in parser.scripts[1][1]  # its license header kept
    assert 'href="https://www.tradingview.com/"' in page


def test_the_summary_comes_first_and_long_tables_are_collapsed(tmp_path: Path) -> None:
    summary, alerts = backtest_dir(tmp_path)
    page = report.write_report(tmp_path, summary, alerts).read_text()
    order = [
        page.index('class="cards"'),
        page.index("Alerts per rule"),
        page.index('class="cw-chart"'),
        page.index("<details class=by-symbol open>"),  # 2 symbols: open
        page.index("<details class=after>"),  # every alert: collapsed, paged
    ]
    assert order == sorted(order)
    assert page.count('<tr class="alert-row"') == len(alerts)
    assert page.count('class="paged"') == 2


def test_data_is_exact_strings_and_every_series(tmp_path: Path, monkeypatch: Any) -> None:
    summary, alerts = backtest_dir(tmp_path)
    monkeypatch.setattr(report, "MAX_CANDLES", 25)
    data = report_data(report.write_report(tmp_path, summary, alerts).read_text())
    by_key = {s["key"]: s for s in data["series"]}
    assert list(by_key) == ["binance:BTCUSDT", "binance:ETHUSDT", "synthetic:SOLUSDT"]
    btc = {e["interval"]: e for e in by_key["binance:BTCUSDT"]["intervals"]}
    assert list(btc) == ["1m", "5m", "tick:100"]  # time intervals first
    one = btc["1m"]
    assert one["total"] == 30 and len(one["t"]) == 25  # the latest 25, and the page says so
    assert one["t"][0] == T0 + 5 * 60_000
    assert all(isinstance(x, str) for x in one["o"] + one["c"] + one["v"])
    assert one["o"][0] == str(_bars("b", "B", "1m", [T0 + i * 60_000 for i in range(30)], "61000.5")["open"][5])  # fmt: skip
    assert one["x"] == [0] * 25 and btc["5m"]["x"][0] == 1 and btc["5m"]["incomplete"] == 1
    assert [a["id"] for a in one["alerts"]] == ["BTCUSDT-1m-1", "BTCUSDT-1m-2", "BTCUSDT-1m-3"]
    assert {a["t"] for a in one["alerts"]} == {T0 + 3 * 60_000, T0 + 17 * 60_000}
    assert data["default"] == {"key": "binance:BTCUSDT", "interval": "1m"}


def test_returns_after_alerts_are_exact(tmp_path: Path) -> None:
    summary, alerts = backtest_dir(tmp_path)
    bars = report.load_bars(tmp_path / "bars")
    rows = {r["id"]: r for r in report.after_alerts(bars, alerts)}
    closes = bars.filter(pl.col("symbol") == "BTCUSDT", pl.col("interval") == "1m")["close"]
    row = rows["BTCUSDT-1m-3"]
    assert row["close"] == closes[17] and isinstance(row["close"], Decimal)
    assert row["after_1"] == closes[18] / closes[17] - 1
    assert row["after_10"] == closes[27] / closes[17] - 1 == 0
    assert rows["BTCUSDT-5m-4"]["after_5"] is None  # past the last bar
    page = report.write_report(tmp_path, summary, alerts).read_text()
    assert f"<td>{closes[17]:f}</td>" in page
    assert f"<td>{100 * (closes[18] / closes[17] - 1):+.3f}%</td>" in page


def test_without_make_web_a_clear_error(tmp_path: Path, monkeypatch: Any) -> None:
    summary, alerts = backtest_dir(tmp_path)
    monkeypatch.setattr(report, "LIBRARY", tmp_path / "vendor" / "missing.js")
    with pytest.raises(ConfigError, match="make web"):
        report.write_report(tmp_path, summary, alerts)
    assert not (tmp_path / "report.html").exists()


def test_inline_script_and_json_escapes() -> None:
    code = 'var a = "</script>", b = "</SCRIPT >", c = "<!-- x";'
    safe = report.inline_script(code)
    assert "</script" not in safe.lower() and "<!--" not in safe
    assert safe == 'var a = "<\\/script>", b = "<\\/SCRIPT >", c = "<\\!-- x";'
    text = report.inline_json({"t": "</script><b>&"})
    assert "<" not in text and ">" not in text and "&" not in text
