"""bench.peers' bar comparison (the equality rule of ``make bench-peers``) on hand-made bars."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from bench.peers import compare_bars, field_equal


def ref(symbol: str, start_ms: int, trades: int, volume: str = "0.3") -> dict[str, Any]:
    return {
        "venue": "synthetic",
        "symbol": symbol,
        "start_ms": start_ms,
        "open": Decimal("0.1"),
        "high": Decimal("0.2"),
        "low": Decimal("0.1"),
        "close": Decimal("0.2"),
        "volume": Decimal(volume),
        "trades": trades,
    }


def as_floats(bar: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = {k: float(v) if isinstance(v, Decimal) else v for k, v in bar.items()}
    return {**out, **changes}


def test_a_float_equals_only_the_double_nearest_the_decimal() -> None:
    assert field_equal(Decimal("0.3"), 0.3)
    assert not field_equal(Decimal("0.3"), 0.1 + 0.2)  # 0.30000000000000004
    assert field_equal(Decimal("42000.01"), "42000.01")
    assert field_equal(Decimal("1.50"), Decimal("1.5"))
    assert not field_equal(Decimal("1.5"), Decimal("1.50000001"))


def test_exact_rounding_late_and_unclosed_bars_are_told_apart() -> None:
    reference = [ref("BTCUSDT", 0, 3), ref("BTCUSDT", 60_000, 2), ref("ETHUSDT", 0, 4)]
    reference.append(ref("ETHUSDT", 60_000, 5))
    bars = [
        as_floats(reference[0]),  # exact
        as_floats(reference[1], volume=0.1 + 0.2),  # all trades, volume off by float rounding
        as_floats(reference[2], trades=3),  # one trade late
        # ETHUSDT 60_000 never emitted (its window did not close)
    ]
    c = compare_bars(reference, bars)
    assert c["windows"] == 4 and c["bars"] == 3
    assert (c["exact"], c["float_rounding"], c["wrong"], c["missing_windows"]) == (1, 1, 1, 1)
    assert c["unequal_volume"] == 1 and c["unequal_open"] == 0
    assert c["reference_trades"] == 14 and c["counted_trades"] == 8
    assert (c["trades_dropped"], c["late_trades"], c["unclosed_trades"]) == (6, 1, 5)
    assert c["extra_windows"] == c["duplicate_bars"] == 0


def test_decimal_bars_compare_exactly_and_stray_bars_are_counted() -> None:
    reference = [ref("BTCUSDT", 0, 3)]
    exact = {**reference[0], "volume": Decimal("0.30")}
    off = {**reference[0], "start_ms": 0, "high": Decimal("0.20000001")}
    assert compare_bars(reference, [exact])["exact"] == 1
    c = compare_bars(reference, [off, ref("BTCUSDT", 120_000, 1), exact])
    assert (c["exact"], c["wrong"], c["float_rounding"]) == (0, 1, 0)  # the first bar counts
    assert c["extra_windows"] == 1 and c["duplicate_bars"] == 1
    assert c["trades_dropped"] == 3 - 7
