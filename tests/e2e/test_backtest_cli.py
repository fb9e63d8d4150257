"""`candlewax backtest` as a user runs it, and its report as a browser shows it: headless
Chromium (Debian's package: `make test` installs it when missing) driven by chart_check.mjs,
the file opened from disk with no server."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import orjson
import polars as pl
import pytest
from PIL import Image

from candlewax.broker import EmbeddedBroker
from tests.conftest import BTCUSDT_GZ
from tests.e2e.charts import chart_check

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "candlewax.cli"]
#: Five minutes of a seeded synthetic market (venue "synthetic": BTCUSDT, ETHUSDT) right after
#: the capture, so the report has several symbols to pick.
SYNTHETIC = ["--symbols", "2", "--rate", "20", "--duration", "300", "--speed", "0"]
SYNTHETIC_START_MS = 1_723_161_630_000  # 2024-08-09T00:00:30Z, after the capture's last trade


def test_backtest_command_writes_a_report_a_browser_draws(tmp_path: Path) -> None:
    out = tmp_path / "bt"
    with EmbeddedBroker("tansu") as broker:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CANDLEWAX_")},
            "CANDLEWAX_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "CANDLEWAX_RETENTION_MS": "-1",
        }
        replay = subprocess.run(
            [*CLI, "replay", str(BTCUSDT_GZ)], capture_output=True, text=True, timeout=120, env=env
        )
        assert replay.returncode == 0, replay.stderr[-2000:]
        synthetic = subprocess.run(
            [*CLI, "synthetic", *SYNTHETIC, "--start-ms", str(SYNTHETIC_START_MS)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert synthetic.returncode == 0, synthetic.stderr[-2000:]
        result = subprocess.run(
            [
                *CLI,
                "backtest",
                "--from",
                "2024-08-08T23:50:00Z",
                "--to",
                "2024-08-09T00:06:00Z",
                "--out",
                str(out),
                "--alerts",
                '{"range": {"1m": 0.001, "5m": 0.002}, "cooldown_ms": 0}',
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    assert f"report: {out / 'report.html'}" in result.stdout
    summary = orjson.loads((out / "summary.json").read_bytes())
    alerts = [orjson.loads(x) for x in (out / "alerts.jsonl").read_bytes().splitlines()]
    bars = pl.read_parquet(out / "bars" / "**" / "*.parquet")
    assert summary["alerts"] == len(alerts) > 0 and summary["bars"] == bars.height > 0

    page = (out / "report.html").read_text()
    # One file: nothing to fetch (scripts and styles inline), the summary before the chart,
    # the chart before the long tables, the tables collapsed.
    assert "<script src" not in page and "<link" not in page
    assert (
        page.index("Alerts per rule")
        < page.index('class="cw-chart"')
        < page.index('<tr class="alert-row"')
    )
    assert page.count('<tr class="alert-row"') == len(alerts)
    assert "<details class=after>" in page

    shot = tmp_path / "report.png"
    seen = chart_check(
        (out / "report.html").as_uri(), "--size", "1200x1000", "--screenshot", str(shot)
    )
    assert seen["ok"], seen["problems"]
    assert seen["mode"] == "report" and not seen["errors"] and not seen["external_requests"]
    # Every symbol and interval of the Parquet bars was picked through the page's pickers and
    # drew exactly its bars: as many candles, as many incomplete ones, the same exact prices.
    keys = sorted({f"{v}:{s}" for v, s in bars.select("venue", "symbol").unique().rows()})
    assert sorted(seen["symbols"]) == keys and len(keys) == 3
    assert all(switch["changed"] for switch in seen["symbol_switches"])
    drawn = {(x["symbol"], x["interval"]): x for x in seen["series"]}
    groups = bars.group_by("venue", "symbol", "interval")
    assert len(drawn) == groups.len().height
    for (venue, symbol, interval), frame in groups:
        got = drawn[(f"{venue}:{symbol}", interval)]
        frame = frame.sort("start_ms")
        assert got["candles"] == frame.height, (venue, symbol, interval)
        assert got["incomplete"] == frame.filter(~pl.col("complete")).height
        for candle, row in (
            (got["first"], frame.row(0, named=True)),
            (got["last"], frame.row(-1, named=True)),
        ):
            assert candle["time"] == row["start_ms"]
            for k in ("open", "high", "low", "close", "volume"):
                assert isinstance(candle[k], str) and Decimal(candle[k]) == row[k], k
        # A marker per alert of this series, on the bar the alert fired in.
        mine = sorted(
            (a["window_start_ms"], a["id"])
            for a in alerts
            if (a["venue"], a["symbol"], a["interval"]) == (venue, symbol, interval)
        )
        assert sorted(zip(got["marker_times"], got["marker_ids"], strict=True)) == mine
    assert sum(x["markers"] for x in seen["series"]) == len(alerts)
    assert seen["attribution"] == {"logo": True, "link": True}  # TradingView's, as its license asks

    # And what it drew: a real chart, not a blank page, candles of both colours.
    assert seen["pixels"]["up"] > 200 and seen["pixels"]["down"] > 200
    image = Image.open(shot).convert("RGB")
    colors = image.getcolors(maxcolors=1_000_000) or []
    greens = sum(n for n, (r, g, b) in colors if g > 100 and r < 80 and b < 80)  # up candles
    reds = sum(n for n, (r, g, b) in colors if r > 170 and g < 70 and b < 70)  # down candles
    assert len(colors) > 50 and greens > 200 and reds > 200
