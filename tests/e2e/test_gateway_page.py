"""The live chart page in headless Chromium against the real pipeline: the flow's bars of two
recorded symbols in Parquet, the real gateway on uvicorn, live trades and an alert through the
real broker. The page must draw the history, move its last candle with the live trades, mark the
alert, and switch symbols with its picker."""

from __future__ import annotations

from decimal import Decimal

import pytest
from bytewax.testing import run_main

from candlewax.codec import Alert, Trade, alert_id
from candlewax.kafka import TrackedProducer
from candlewax.settings import Settings
from connectors.producer import TradeProducer
from connectors.replay import iter_file
from flows.bars import build_flow
from tests.conftest import BTCUSDT_GZ, FIXTURES
from tests.e2e.charts import LiveChartCheck
from tests.gateway_client import free_port, running_gateway
from tests.reference import reference_bars

pytestmark = pytest.mark.e2e

#: 2024-08-09 00:00 UTC: the captures' last minute, kept back to arrive live.
LIVE = 1_723_161_600_000


def _trades(path) -> list[Trade]:  # type: ignore[no-untyped-def]
    return [t for item in iter_file(path) for t in item.trades]


@pytest.mark.parametrize("broker", ["tansu"], indirect=True)  # the page, not the broker, is tested
def test_the_live_page_draws_history_live_bars_and_alerts(settings: Settings) -> None:
    btc = _trades(BTCUSDT_GZ)
    eth = _trades(FIXTURES / "hftbacktest" / "spot_ethusdt_20240808.gz")
    with TradeProducer(settings.connection, settings.topic("trades")) as producer:
        for trades in (btc, eth):
            early = [t for t in trades if t.ts_ms < LIVE]
            for i in range(0, len(early), 500):
                producer.send(early[i : i + 500])
    run_main(build_flow(settings))  # every window before LIVE closed: bars on Kafka and Parquet
    history = reference_bars([t for t in btc if t.ts_ms < LIVE], "1m")

    port = free_port()
    with running_gateway(settings, port=port, push_interval_ms=200) as base:
        url = f"{base}/#symbol=binance:BTCUSDT&interval=1m"
        check = LiveChartCheck(url, "--timeout", "90", "--switch-to", "binance:ETHUSDT")
        ready = check.ready()
    # The gateway restarts (a rollout): the page reconnects by itself, and what follows must
    # still reach it.
    with check, running_gateway(settings, port=port, push_interval_ms=200) as base:
        assert ready["event"] == "ready" and ready["ok"], ready
        assert ready["candles"] == len(history)
        assert Decimal(ready["last"]["close"]) == history[-1]["close"]
        assert ready["last"]["time"] == history[-1]["start_ms"]

        # Live: the last minute's trades, and an alert on its bar.
        live = [t for t in btc if t.ts_ms >= LIVE]
        with TradeProducer(settings.connection, settings.topic("trades")) as producer:
            producer.send(live)
        alert = Alert(
                id=alert_id("range", "binance", "BTCUSDT", "1m", LIVE),
                rule="range", venue="binance", symbol="BTCUSDT", interval="1m",
                window_start_ms=LIVE, ts_ms=live[-1].ts_ms, value="0.002", threshold="0.001",
                price=live[-1].price, severity="warning", text="BTCUSDT 1m range 0.2%",
            )  # fmt: skip
        alerts = TrackedProducer(settings.connection)
        alerts.send(settings.topic("alerts"), alert.encode(), b"binance:BTCUSDT")
        alerts.flush()
        done = check.done()

    assert done["ok"], done["problems"]
    assert not done["errors"] and not done["external_requests"]
    assert done["waited"] == {"update": True, "alert": True} and done["last_changed"]
    after = done["after"]
    assert after["candles"] == len(history) + 1 and after["last"]["time"] == LIVE
    (forming,) = reference_bars(live, "1m")
    assert Decimal(after["last"]["close"]) == forming["close"]
    assert alert.id in after["marker_ids"] and LIVE in after["marker_times"]
    switched = done["switched"]
    eth_history = reference_bars([t for t in eth if t.ts_ms < LIVE], "1m")
    assert switched["changed"] and switched["candles"] == len(eth_history)
    assert Decimal(switched["last"]["close"]) == eth_history[-1]["close"]
    assert done["attribution"]["link"] and done["pixels"]["up"] and done["pixels"]["down"]
