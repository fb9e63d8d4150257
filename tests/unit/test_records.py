"""Records: validation reasons, exact decimals, encodings."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from candlewax.errors import ParseError
from candlewax.records import (
    REASONS,
    Alert,
    Bar,
    DeadLetter,
    Heartbeat,
    Trade,
    alert_id,
    decode_message,
    decode_trade,
    divide_rounded,
    format_scaled,
    normalize_symbol,
    to_scaled,
)

GOOD = {
    "v": 1,
    "venue": "binance",
    "symbol": "BTCUSDT",
    "id": "3735683259",
    "price": "61828.00000000",
    "qty": "0.00100000",
    "side": "buy",
    "ts_ms": 1723161253000,
    "recv_ms": 1723161251730,
}


def with_(**changes: object) -> dict[str, object]:
    obj = dict(GOOD)
    for key, value in changes.items():
        if value is ...:
            obj.pop(key)
        else:
            obj[key] = value
    return obj


def test_valid_trade_keeps_exchange_strings() -> None:
    trade = decode_trade(GOOD)
    assert trade == Trade(
        "binance",
        "BTCUSDT",
        "3735683259",
        "61828.00000000",
        "0.00100000",
        "buy",
        1723161253000,
        1723161251730,
    )
    assert orjson.loads(trade.encode()) == GOOD
    assert trade.key == "binance:BTCUSDT"


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        (with_(price="NaN"), "bad_decimal"),
        (with_(price="Infinity"), "bad_decimal"),
        (with_(price=float("nan")), "bad_decimal"),
        (with_(qty="abc"), "bad_decimal"),
        (with_(price="-1.5"), "non_positive"),
        (with_(price="0"), "non_positive"),
        (with_(qty="0.000000000"), "non_positive"),
        (with_(qty=-2), "non_positive"),
        (with_(price="1.000000001"), "precision"),
        (with_(price=...), "missing_field"),
        (with_(venue=""), "missing_field"),
        (with_(id=None), "missing_field"),
        (with_(id=True), "bad_type"),
        (with_(price=True), "bad_type"),
        (with_(venue=5), "bad_type"),
        (with_(side="long"), "bad_side"),
        (with_(ts_ms=1723161253), "bad_timestamp"),  # seconds, not ms
        (with_(ts_ms=1723161253000000000), "bad_timestamp"),  # ns
        (with_(ts_ms="1723161253000"), "bad_timestamp"),
        (with_(ts_ms=1723161253000.5), "bad_timestamp"),
        (with_(v=2), "schema_version"),
        (with_(type="quote"), "unknown_type"),
        ([1, 2], "not_object"),
    ],
)
def test_invalid_trades_have_a_reason(obj: object, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        decode_trade(obj)
    assert info.value.reason == reason
    assert reason in REASONS


def test_numbers_are_accepted_and_made_exact_strings() -> None:
    trade = decode_trade(with_(price=61828.5, qty=1e-05, id=42, ts_ms=1723161253000.0))
    assert (trade.price, trade.qty, trade.id, trade.ts_ms) == (
        "61828.5",
        "0.00001",
        "42",
        1723161253000,
    )


def test_trailing_zeros_beyond_eight_decimals_are_not_precision_loss() -> None:
    assert to_scaled(decode_trade(with_(qty="0.0010000000")).qty) == 100_000


def test_heartbeat() -> None:
    beat = decode_trade({"v": 1, "type": "heartbeat", "venue": "Binance", "ts_ms": 1723161253000})
    assert beat == Heartbeat("binance", 1723161253000)
    assert decode_trade(orjson.loads(beat.encode())) == beat


def test_array_message_keeps_good_neighbours() -> None:
    value = orjson.dumps([GOOD, with_(price="NaN"), with_(id="2")])
    good, bad = decode_message(value)
    assert [t.id for t in good] == ["3735683259", "2"]
    assert [(b.reason, orjson.loads(b.raw)["price"]) for b in bad] == [("bad_decimal", "NaN")]


def test_malformed_json_and_tombstones() -> None:
    assert decode_message(b'{"venue": ')[1][0].reason == "json"
    assert decode_message(None)[1][0].reason == "json"


@given(st.integers(min_value=0, max_value=10**20), st.integers(min_value=0, max_value=10**8 - 1))
def test_scaled_round_trip(whole: int, frac: int) -> None:
    text = f"{whole}.{frac:08d}"
    assert format_scaled(to_scaled(text)) == text
    assert Decimal(format_scaled(to_scaled(text))) == Decimal(text)


@given(st.integers(min_value=-(10**30), max_value=10**30))
def test_format_scaled_16_is_exact(units: int) -> None:
    sign, digits, _ = Decimal(units).as_tuple()
    assert Decimal(format_scaled(units, 16)) == Decimal((sign, digits, -16))  # exact, no context


def test_symbol_normalization() -> None:
    assert {normalize_symbol(s) for s in ("btc-usdt", "BTC/USDT", "btc_usdt", "BTCUSDT")} == {
        "BTCUSDT"
    }


def test_dead_letter_round_trip_binary_and_text() -> None:
    for raw in (b'{"broken', b"\xff\xfe\x00garbage"):
        letter = DeadLetter("json", "detail", raw, {"topic": "trades", "partition": 1, "offset": 7})
        back = DeadLetter.decode(letter.encode())
        assert (back.raw, back.reason, back.source) == (raw, "json", letter.source)


def test_bar_and_alert_round_trip() -> None:
    bar = Bar(
        "binance",
        "BTCUSDT",
        "1m",
        0,
        60_000,
        "1",
        "2",
        "0.5",
        "1.5",
        "3",
        "4.5",
        "1.5",
        3,
        "1",
        "1.5",
        "a",
        "b",
    )
    assert Bar.decode(bar.encode()) == bar
    ident = alert_id("range", "binance", "BTCUSDT", "5m", 1723161300000)
    assert ident == alert_id("range", "binance", "BTCUSDT", "5m", 1723161300000)
    assert ident != alert_id("range", "binance", "BTCUSDT", "5m", 1723161600000)
    alert = Alert(
        ident,
        "range",
        "binance",
        "BTCUSDT",
        "5m",
        1723161300000,
        1723161350000,
        "0.0021",
        "0.002",
        "61700",
        "warning",
        "BTCUSDT 5m range 0.21%",
    )
    assert Alert.decode(alert.encode()) == alert


@given(st.integers(0, 10**40), st.integers(1, 10**30))
def test_divide_rounded_is_exact_half_even(numerator: int, denominator: int) -> None:
    from fractions import Fraction

    exact = Fraction(numerator, denominator)
    assert divide_rounded(numerator, denominator) == round(exact)  # Fraction rounds half-even
    assert divide_rounded(3 * denominator + denominator // 2, denominator) == round(
        Fraction(3 * denominator + denominator // 2, denominator)
    )
