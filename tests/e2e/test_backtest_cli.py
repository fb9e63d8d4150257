"""`candlewax backtest` as a user runs it, and its report as a browser shows it (headless
Chromium, Debian's package: `make test` installs it when missing)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import polars as pl
import pytest
from PIL import Image

from candlewax.broker import EmbeddedBroker
from tests.conftest import BTCUSDT_GZ
from tests.tools import tool

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "candlewax.cli"]


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    binary = tool("chromium", "chromium")
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


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
        result = subprocess.run(
            [
                *CLI,
                "backtest",
                "--from",
                "2024-08-08T23:50:00Z",
                "--to",
                "2024-08-09T00:00:00Z",
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

    # What the browser built from the page: one candle per bar, one marker per alert.
    dom = _chromium("--dump-dom", (out / "report.html").as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert len(re.findall(r'class="candle (?:up|down)(?: incomplete)?"', dom.stdout)) == bars.height
    # Incomplete candles (the flags) are drawn apart: as many as the Parquet bars say.
    incomplete = bars.filter(~pl.col("complete")).height
    assert dom.stdout.count(' incomplete"') == incomplete
    assert dom.stdout.count('class="alert-marker"') == len(alerts)
    assert dom.stdout.count('<tr class="alert-row">') == len(alerts)

    # And what it drew: a real chart, not a blank page.
    shot = tmp_path / "report.png"
    drawn = _chromium(
        "--window-size=1100,1600", f"--screenshot={shot}", (out / "report.html").as_uri()
    )
    assert drawn.returncode == 0 and shot.exists(), drawn.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    colors = image.getcolors(maxcolors=1_000_000) or []
    greens = sum(n for n, (r, g, b) in colors if g > 100 and r < 80 and b < 80)  # up candles
    reds = sum(n for n, (r, g, b) in colors if r > 170 and g < 70 and b < 70)  # down candles
    assert len(colors) > 50 and greens > 200 and reds > 200
