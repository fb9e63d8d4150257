"""Volatility detectors against independent computations on the real BTCUSDT capture."""

from __future__ import annotations

import math
from decimal import Decimal
from functools import cache

import pytest

from candlewax.codec import Alert, Trade
from candlewax.codec.columns import decode_batch
from candlewax.errors import ConfigError
from candlewax.settings import Settings
from connectors.replay import iter_file
from flows.barmath import BarState
from flows.volatility import AlertRules, VolatilityState
from tests.conftest import BTCUSDT_GZ
from tests.reference import reference_bars, reference_range_alerts


@cache
def btcusdt() -> tuple[Trade, ...]:
    return tuple(t for item in iter_file(BTCUSDT_GZ) for t in item.trades)


def detect(
    rules: AlertRules, batch: int = 1000, trades: tuple[Trade, ...] | None = None
) -> list[Alert]:
    """The bars step + detectors exactly as flows/bars.py drives them."""
    values = [t.encode() for t in (trades or btcusdt())]
    bars, vol, out = BarState(), VolatilityState(rules), []
    for i in range(0, len(values), batch):
        result = bars.step(decode_batch(values[i : i + batch]).rows)
        out += vol.on_trades(result.on_time, bars) + vol.on_closed(result.closed)
        vol.expire(bars.watermark_ms)
    flushed = bars.flush()
    out += vol.on_trades(flushed.on_time, bars) + vol.on_closed(flushed.closed)
    return out


def test_a_partial_first_window_raises_no_range_alert_by_default() -> None:
    """The capture's first minute starts before its first trade: by default its range
    window is skipped (the reference over every trade does fire in it at this threshold)."""
    loose = {"range": {"1m": 0.0001}, "move": {}, "zscore": {}, "cooldown_ms": 0}
    first_minute = btcusdt()[0].ts_ms - btcusdt()[0].ts_ms % 60_000
    want = reference_range_alerts(btcusdt(), "1m", Decimal("0.0001"))
    assert want[0][0] == first_minute
    skipped = [a.window_start_ms for a in detect(AlertRules(**loose))]
    counted = [a.window_start_ms for a in detect(AlertRules(**loose, ignore_incomplete=False))]
    assert counted == [s for s, _, _ in want]
    assert skipped == counted[1:]


def test_range_alerts_fire_at_the_crossing_trade_once_per_window() -> None:
    rules = AlertRules(range={"1m": 0.002, "5m": 0.004}, move={}, zscore={}, cooldown_ms=0)
    alerts = detect(rules)
    for interval, threshold in (("1m", "0.002"), ("5m", "0.004")):
        ours = [(a.window_start_ms, a.ts_ms, a.price) for a in alerts if a.interval == interval]
        want = reference_range_alerts(btcusdt(), interval, Decimal(threshold))
        assert ours == [(s, ts, f"{Decimal(p):.8f}") for s, ts, p in want]
        assert want  # the capture does cross these thresholds (23:57 and 23:58 are busy)


@pytest.mark.parametrize("ignore_incomplete", [True, False])
def test_move_and_zscore_on_closed_bars_match_an_independent_computation(
    ignore_incomplete: bool,
) -> None:
    """By default the first bar, which holds only the trades after the capture's start
    (23:54:13), is ignored as if it did not exist; with ignore_incomplete off it counts."""
    rules = AlertRules(range={}, move={"1m": 0.001}, move_bars=2, zscore={"1m": 1.2},
                       zscore_halflife_bars=3, zscore_warmup_bars=2, cooldown_ms=0,
                       ignore_incomplete=ignore_incomplete)  # fmt: skip
    alerts = detect(rules)
    closes = [(b["start_ms"], float(b["close"])) for b in reference_bars(btcusdt(), "1m")]
    if ignore_incomplete:
        closes = closes[1:]
    want_move = [
        s for i, (s, c) in enumerate(closes) if i >= 2 and abs(c - closes[i - 2][1]) / c >= 0.001
    ]
    want_z, var, decay = [], None, 0.5 ** (1 / 3)
    for i in range(1, len(closes)):
        r = math.log(closes[i][1] / closes[i - 1][1])
        seen = i - 1  # returns folded into the EWMA before this one
        if var and seen >= 2 and abs(r) / math.sqrt(var) >= 1.2:
            want_z.append(closes[i][0])
        var = r * r if var is None else decay * var + (1 - decay) * r * r
    assert [a.window_start_ms for a in alerts if a.rule == "move"] == want_move
    assert [a.window_start_ms for a in alerts if a.rule == "zscore"] == want_z
    assert want_move and (want_z or ignore_incomplete)  # 4 bars are too few for σ here


@pytest.mark.parametrize("batch", [1, 37, 5000])
def test_alerts_do_not_depend_on_batching(batch: int) -> None:
    rules = AlertRules(
        range={"1m": 0.002}, move={"1m": 0.001}, zscore={"1m": 1.2}, zscore_warmup_bars=2
    )
    trades = btcusdt()[:2500] if batch == 1 else btcusdt()

    # Alerts of different rules may interleave differently (they come from different steps);
    # each alert, and so the set in event-time order, is the same.
    def ordered(alerts: list[Alert]) -> list[Alert]:
        return sorted(alerts, key=lambda a: (a.ts_ms, a.rule, a.interval, a.id))

    assert ordered(detect(rules, batch, trades)) == ordered(detect(rules, 10_000, trades))


def test_cooldown_and_per_symbol_overrides() -> None:
    loose = AlertRules(range={"1m": 0.001}, move={}, zscore={}, cooldown_ms=0)
    cooled = AlertRules(range={"1m": 0.001}, move={}, zscore={}, cooldown_ms=10 * 60_000)
    override = AlertRules(range={"1m": 0.5, "BTCUSDT@1m": 0.001}, move={}, zscore={}, cooldown_ms=0)
    many = detect(loose)
    assert len(many) >= 2
    assert detect(cooled) == many[:1]  # everything after the first within 10 minutes is held back
    assert detect(override) == many


def test_alert_ids_are_deterministic_and_severity_scales() -> None:
    rules = AlertRules(range={"1m": 0.001}, move={}, zscore={}, cooldown_ms=0)
    first, again = detect(rules), detect(rules, batch=333)
    assert [a.id for a in first] == [a.id for a in again]
    assert len({a.id for a in first}) == len(first)
    assert {a.severity for a in first} <= {"warning", "critical"}
    assert all((a.severity == "critical") == (float(a.value) >= 0.002) for a in first)


@pytest.mark.parametrize(
    "bad",
    [
        {"range": {"7m": 0.01}},
        {"range": {"1m": -1}},
        {"move_bars": 0},
        {"cooldown_ms": -5},
        {"nope": 1},
    ],
)
def test_bad_rules_are_config_errors(bad: dict) -> None:
    with pytest.raises(ConfigError, match=f"invalid settings: .*alerts.{next(iter(bad))}"):
        Settings.load(env={}, alerts=bad)
