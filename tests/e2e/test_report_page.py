"""The backtest report's page in headless Chromium, from disk with no server, on a small output
with text meant to break it (tests/unit/test_report.py builds it): no script of ours broken, no
injected one run, every series drawn, the alerts marked, the URL's choice kept."""

from __future__ import annotations

from pathlib import Path

import pytest

import sinks.report as report
from tests.e2e.charts import chart_check
from tests.unit.test_report import T0, backtest_dir

pytestmark = pytest.mark.e2e


def test_the_page_draws_every_series_and_nothing_breaks_it(tmp_path: Path) -> None:
    summary, alerts = backtest_dir(tmp_path)
    page = report.write_report(tmp_path, summary, alerts)
    url = page.as_uri() + "#symbol=binance:ETHUSDT&interval=1m"
    seen = chart_check(url, "--screenshot", str(tmp_path / "shot.png"))
    assert seen["ok"], seen["problems"]
    assert not seen["errors"] and not seen["console"] and not seen["external_requests"]
    series = {(x["symbol"], x["interval"]): x for x in seen["series"]}
    assert {k: v["candles"] for k, v in series.items()} == {
        ("binance:BTCUSDT", "1m"): 30,
        ("binance:BTCUSDT", "5m"): 6,
        ("binance:BTCUSDT", "tick:100"): 12,  # four start in each second: all drawn
        ("binance:ETHUSDT", "1m"): 20,
        ("synthetic:SOLUSDT", "1m"): 10,
    }
    assert all(v["incomplete"] == 1 for v in series.values())  # the first of each
    btc = series[("binance:BTCUSDT", "1m")]
    assert sorted(btc["marker_ids"]) == ["BTCUSDT-1m-1", "BTCUSDT-1m-2", "BTCUSDT-1m-3"]
    assert sorted(btc["marker_times"]) == [T0 + 180_000, T0 + 180_000, T0 + 17 * 60_000]
    assert series[("binance:BTCUSDT", "tick:100")]["markers"] == 0
    assert series[("synthetic:SOLUSDT", "1m")]["markers"] == 0
    assert btc["last"]["time"] == T0 + 29 * 60_000 and btc["first"]["complete"] is False
    # The URL's choice is what the page opens on.
    assert (seen["shown"]["symbol"], seen["shown"]["interval"]) == ("binance:ETHUSDT", "1m")
    assert seen["pixels"]["up"] > 100 and seen["pixels"]["down"] > 100
