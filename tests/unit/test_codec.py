"""The codec: every record's fields, limits, canonical form, encoding and total decoding.

Expected values are written out here or computed independently (``json`` from the standard
library, ``decimal.Decimal``), never by the code under test.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candlewax.codec import (
    MAX_MESSAGE_BYTES,
    RAW_LIMIT,
    REASONS,
    Alert,
    Bar,
    DeadLetter,
    Heartbeat,
    ParseError,
    Trade,
    UserEvent,
    alert_id,
    decode_message,
    decode_record,
    divide_rounded,
    format_ratio,
    format_scaled,
    normalize_symbol,
    rules,
    to_scaled,
)
from candlewax.codec.columns import CANONICAL_RECORD, decode_batch, trade_messages, trade_values
from candlewax.codec.strictjson import loads

T0 = 1723161253000
GOOD = {
    "v": 1,
    "venue": "binance",
    "symbol": "BTCUSDT",
    "id": "3735683259",
    "price": "61828.00000000",
    "qty": "0.00100000",
    "side": "buy",
    "ts_ms": T0,
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


def reason(value: bytes) -> str:
    good, bad = decode_message(value)
    assert not good and len(bad) == 1
    assert bad[0].reason in REASONS
    return bad[0].reason


# --------------------------------------------------------------------------- trades


def test_a_valid_trade_keeps_the_exchange_strings_and_encodes_canonically() -> None:
    trade = decode_record(GOOD)
    assert trade == Trade(
        "binance", "BTCUSDT", "3735683259", "61828.00000000", "0.00100000", "buy", T0, 1723161251730
    )
    assert trade.encode() == json.dumps(GOOD, separators=(",", ":")).encode()
    assert trade.key == "binance:BTCUSDT"


@pytest.mark.parametrize(
    ("obj", "why"),
    [
        # decimals: canonical only
        (with_(price="NaN"), "bad_decimal"),
        (with_(price="Infinity"), "bad_decimal"),
        (with_(qty="abc"), "bad_decimal"),
        (with_(price="+5"), "bad_decimal"),
        (with_(price=" 5 "), "bad_decimal"),
        (with_(price="1_000"), "bad_decimal"),
        (with_(price="\u0665"), "bad_decimal"),  # Arabic-Indic digit five
        (with_(price="\uff15"), "bad_decimal"),  # full-width digit five
        (with_(price="1e5"), "bad_decimal"),
        (with_(price=".5"), "bad_decimal"),
        (with_(price="5."), "bad_decimal"),
        (with_(price="007"), "bad_decimal"),
        (with_(price="5\n"), "bad_decimal"),
        (with_(price="1" * 4301), "bad_decimal"),  # beyond Python's int-from-string limit
        (with_(price="1" * 15), "out_of_range"),
        (with_(price="-1.5"), "non_positive"),
        (with_(price="0"), "non_positive"),
        (with_(qty="0.000000000"), "non_positive"),
        (with_(price="1.000000001"), "precision"),
        (with_(price="99999999", qty="200000"), "out_of_range"),  # notional 2e13
        (with_(price=61828.5), "bad_type"),  # the wire carries strings only
        (with_(price=True), "bad_type"),
        # names and ids: charset and length
        (with_(venue="x/../../../../../ESCAPED"), "bad_name"),
        (with_(venue="x/../venue=binance"), "bad_name"),
        (with_(venue="bin\x00ance"), "bad_name"),
        (with_(venue="b" * 33), "bad_name"),
        (with_(venue="Binance"), "bad_name"),
        (with_(venue="binance\n"), "bad_name"),
        (with_(symbol="BTC/USDT"), "bad_name"),
        (with_(symbol="../../etc"), "bad_name"),
        (with_(symbol="btcusdt"), "bad_name"),
        (with_(symbol="S" * 65), "bad_name"),
        (with_(id="a b"), "bad_name"),
        (with_(id="9" * 65), "bad_name"),
        (with_(id=5), "bad_type"),
        (with_(id=True), "bad_type"),
        (with_(venue=""), "missing_field"),
        (with_(venue=5), "bad_type"),
        (with_(id=None), "missing_field"),
        (with_(price=...), "missing_field"),
        # the rest
        (with_(side="long"), "bad_side"),
        (with_(ts_ms=1723161253), "bad_timestamp"),  # seconds, not ms
        (with_(ts_ms=1723161253000000000), "bad_timestamp"),  # ns
        (with_(ts_ms="1723161253000"), "bad_timestamp"),
        (with_(ts_ms=1723161253000.0), "bad_timestamp"),
        (with_(recv_ms=-1), "bad_timestamp"),
        (with_(v=2), "schema_version"),
        (with_(v=True), "schema_version"),
        (with_(v=...), "missing_field"),
        (with_(type="quote"), "unknown_type"),
        (with_(extra=1), "unknown_field"),
        ([1, 2], "not_object"),
    ],
)
def test_invalid_trades_have_a_reason(obj: object, why: str) -> None:
    with pytest.raises(ParseError) as info:
        decode_record(obj)
    assert info.value.reason == why
    assert why in REASONS


def test_the_json_rules_reject_what_readers_read_differently() -> None:
    good = orjson.dumps(GOOD)
    assert reason(good.replace(b'"id"', b'"id":"1","id"', 1)) == "duplicate_key"
    assert reason(good[:-1] + b',"price":"1"}') == "duplicate_key"
    assert reason(b'{"v":1,"venue":"\\ud800x"}') == "json"  # a lone surrogate
    assert reason(b'{"v":1,"venue":"\xff"}') == "json"  # not UTF-8
    assert reason(good.replace(b'"3735683259"', b"18446744073709551617")) == "bad_type"  # >2**64
    assert reason(b"NaN") == "json"
    assert reason(b" " * (MAX_MESSAGE_BYTES + 1)) == "too_large"
    assert decode_message(None)[1][0].reason == "json"
    assert reason(b'{"venue": ') == "json"
    # Whitespace and another member order are valid JSON: the exact decoder reads them.
    spaced = json.dumps(dict(reversed(list(GOOD.items())))).encode()
    assert decode_message(spaced) == ([decode_record(GOOD)], [])


def test_an_array_keeps_good_neighbours_and_names_the_bad_items() -> None:
    deep: object = {}
    for _ in range(400):
        deep = [deep]
    value = json.dumps([GOOD, with_(price="NaN"), deep, with_(id="2")]).encode()
    good, bad = decode_message(value)
    assert [t.id for t in good] == ["3735683259", "2"]
    assert [(b.reason, b.index) for b in bad] == [("bad_decimal", 1), ("not_object", 2)]


def test_arrays_are_bounded() -> None:
    too_many = orjson.dumps([GOOD] * (rules.MAX_ARRAY_ITEMS + 1))
    assert reason(too_many) == "too_large"
    assert decode_message(b"[]") == ([], [])


def test_deep_nesting_is_rejected_never_raised() -> None:
    assert reason(b"[" * 5000 + b"]" * 5000) == "json"
    assert reason(b'{"a":' * 300 + b"1" + b"}" * 300) == "missing_field"  # no v
    good, bad = decode_message(b"[" * 300 + b"]" * 300)
    assert not good and bad[0].reason == "not_object"


def test_heartbeats() -> None:
    beat = decode_record({"v": 1, "type": "heartbeat", "venue": "binance", "ts_ms": T0})
    assert beat == Heartbeat("binance", T0)
    assert decode_record(orjson.loads(beat.encode())) == beat
    with pytest.raises(ParseError) as info:
        decode_record({"v": 1, "type": "heartbeat", "venue": "binance", "ts_ms": T0, "x": 1})
    assert info.value.reason == "unknown_field"


def test_build_turns_venue_numbers_into_exact_decimals() -> None:
    trade = Trade.build(
        venue="finnhub", symbol="AAPL", id=42, price=61828.5, qty=9e-05, side=None, ts_ms=T0
    )
    assert (trade.price, trade.qty, trade.id) == ("61828.5", "0.00009", "42")
    for bad, why in ((2**64, "out_of_range"), (1.5, "bad_name"), (float("nan"), "bad_name")):
        with pytest.raises(ParseError) as info:
            Trade.build(venue="x", symbol="A", id=bad, price="1", qty="1", side=None, ts_ms=T0)
        assert info.value.reason in (why, "bad_type")


def test_the_file_form_allows_numbers_and_no_version() -> None:
    record = decode_record(with_(v=..., price=61828.5, id=7), from_file=True)
    assert isinstance(record, Trade) and (record.price, record.id) == ("61828.5", "7")


# --------------------------------------------------------------------------- decimals


@given(st.integers(min_value=0, max_value=10**14 - 1), st.integers(0, 10**8 - 1))
def test_scaled_round_trip(whole: int, frac: int) -> None:
    text = f"{whole}.{frac:08d}"
    assert format_scaled(to_scaled(text)) == text
    assert Decimal(format_scaled(to_scaled(text))) == Decimal(text)


@given(st.integers(min_value=-(10**30), max_value=10**30))
def test_format_scaled_16_is_exact(units: int) -> None:
    sign, digits, _ = Decimal(units).as_tuple()
    assert Decimal(format_scaled(units, 16)) == Decimal((sign, digits, -16))  # exact


@given(st.integers(0, 10**40), st.integers(1, 10**30))
def test_divide_rounded_is_exact_half_even(numerator: int, denominator: int) -> None:
    from fractions import Fraction

    assert divide_rounded(numerator, denominator) == round(Fraction(numerator, denominator))


@given(st.text(max_size=80))
def test_the_decimal_rule_is_its_documented_regular_expression(text: str) -> None:
    """rules.decimal accepts a string iff it is ASCII digits with at most one point, no
    leading zero, at most 14 whole digits, significant digits to 1e-8 only, value > 0."""
    import re

    shaped = re.fullmatch(r"(0|[1-9][0-9]{0,13})(\.[0-9]{1,30})?", text) is not None
    valid = shaped and not text.partition(".")[2][8:].strip("0") and Decimal(text) > 0
    try:
        assert rules.decimal(text, "p") == text
        assert valid
    except ParseError as exc:
        assert not valid and exc.reason in REASONS


@pytest.mark.parametrize(
    ("value", "text"), [(0.00123456, "0.00123456"), (1e-7, "0.0000001"), (12.5, "12.5"), (2.0, "2")]
)
def test_ratios_are_canonical_decimals(value: float, text: str) -> None:
    assert format_ratio(value) == text
    assert rules.decimal(format_ratio(value), "value", fraction_digits=30)


def test_symbol_normalization() -> None:
    assert {normalize_symbol(s) for s in ("btc-usdt", "BTC/USDT", "btc_usdt", "BTCUSDT")} == {
        "BTCUSDT"
    }


# --------------------------------------------------------------------------- bars and alerts

BAR = Bar("binance", "BTCUSDT", "1m", 1723161240000, 1723161300000, "61828.00000000",
          "61860.80000000", "61782.25000000", "61782.25000000", "15.07702000",
          "932148.06446410", "61825.74968158", 1255, "6.63029000", "409896.80935010",
          "3735684134", "3735685388")  # fmt: skip


def test_bars_round_trip_and_every_field_is_checked() -> None:
    assert Bar.decode(BAR.encode()) == BAR
    obj = BAR.to_dict()
    for change, why in (
        ({"interval": "2m"}, "bad_type"),
        ({"start_ms": 1723161240001}, "bad_timestamp"),
        ({"end_ms": 1723161300001}, "bad_timestamp"),
        ({"high": "1.00000000"}, "out_of_range"),  # below the open
        ({"buy_volume": "99.00000000"}, "out_of_range"),  # more than the volume
        ({"trades": 0}, "out_of_range"),
        ({"trades": "5"}, "bad_type"),
        ({"symbol": "S" * 1_000_000}, "too_large"),
        ({"symbol": "a/b"}, "bad_name"),
        ({"extra": 1}, "unknown_field"),
    ):
        with pytest.raises(ParseError) as info:
            Bar.decode(orjson.dumps({**obj, **change}))
        assert info.value.reason == why, change


def good_alert(**changes: object) -> dict[str, object]:
    alert = Alert(alert_id("range", "binance", "BTCUSDT", "5m", 1723161300000), "range",
                  "binance", "BTCUSDT", "5m", 1723161300000, 1723161350000, "0.0021", "0.002",
                  "61700", "warning", "BTCUSDT 5m range 0.21%")  # fmt: skip
    return {**json.loads(alert.encode()), **changes}


def test_alerts_round_trip_and_every_field_is_checked() -> None:
    obj = good_alert()
    assert Alert.decode(orjson.dumps(obj)).encode() == orjson.dumps(obj)
    assert alert_id("range", "binance", "BTCUSDT", "5m", 1723161300000) == obj["id"]
    assert alert_id("range", "binance", "BTCUSDT", "5m", 1723161600000) != obj["id"]
    for change, why in (
        ({"ts_ms": "x"}, "bad_timestamp"),  # passed decode once, then killed the workers
        ({"window_start_ms": 1723161300001}, "bad_timestamp"),
        ({"value": "1e-05"}, "bad_decimal"),
        ({"severity": "panic"}, "bad_type"),
        ({"interval": 5}, "bad_type"),
        ({"id": "x" * 24}, "bad_name"),
        ({"text": "t" * 1001}, "too_large"),
        ({"rule": "Range!"}, "bad_name"),
        ({"price": None}, "missing_field"),
        ({"extra": 1}, "unknown_field"),
    ):
        with pytest.raises(ParseError) as info:
            Alert.decode(orjson.dumps(good_alert(**change)))
        assert info.value.reason == why, change


# --------------------------------------------------------------------------- user events

USER_ALERT = {"v": 1, "type": "alert", "user": "desk-1", "ts_ms": 1723161351000}
USER_DELIVERY = {"v": 1, "type": "delivery", "user": "desk-1", "ts_ms": 1723161351000,
                 "alert_id": "5fddbb49fd7eb91198225183", "channel": "tg:-1001234567890",
                 "outcome": "dead_lettered", "reason": "http_403"}  # fmt: skip


def test_user_events_round_trip_and_every_field_is_checked() -> None:
    alert = Alert.decode(orjson.dumps(good_alert()))
    event = UserEvent.of_alert("desk-1", alert, 1723161351000)
    obj = {**USER_ALERT, "alert": good_alert()}
    assert event.encode() == orjson.dumps(obj)  # the wire form, member for member
    assert UserEvent.decode(event.encode()) == event
    assert (event.key, event.alert_id, event.alert) == ("desk-1", alert.id, alert)
    delivery = UserEvent.decode(orjson.dumps(USER_DELIVERY))
    assert delivery == UserEvent.of_delivery(
        "desk-1", "5fddbb49fd7eb91198225183", "tg:-1001234567890", "dead_lettered", "http_403",
        1723161351000,
    )  # fmt: skip
    assert delivery.encode() == orjson.dumps(USER_DELIVERY)
    assert UserEvent.decode(orjson.dumps({**USER_DELIVERY, "reason": ""})).reason == ""
    for base, change, why in (
        (obj, {"v": 2}, "schema_version"),
        (obj, {"type": "login"}, "unknown_type"),
        (obj, {"type": 1}, "unknown_type"),
        (obj, {"user": "desk 1"}, "bad_name"),
        (obj, {"user": "d" * 65}, "bad_name"),
        (obj, {"user": ""}, "missing_field"),
        (obj, {"user": 7}, "bad_type"),
        (obj, {"ts_ms": 1723161351}, "bad_timestamp"),
        (obj, {"alert": good_alert(ts_ms="x")}, "bad_timestamp"),  # the alert is checked too
        (obj, {"alert": good_alert(extra=1)}, "unknown_field"),
        (obj, {"alert": [1]}, "not_object"),
        (obj, {"alert_id": "5fddbb49fd7eb91198225183"}, "unknown_field"),  # not of an alert
        (USER_DELIVERY, {"alert": good_alert()}, "unknown_field"),
        (USER_DELIVERY, {"alert_id": "5FDDBB49FD7EB91198225183"}, "bad_name"),
        (USER_DELIVERY, {"outcome": "lost"}, "bad_type"),
        (USER_DELIVERY, {"reason": "http 403"}, "bad_name"),
        (USER_DELIVERY, {"reason": "r" * 65}, "bad_name"),
        (USER_DELIVERY, {"reason": None}, "bad_type"),
        (USER_DELIVERY, {"channel": ""}, "missing_field"),
        (USER_DELIVERY, {"channel": "c" * 201}, "too_large"),
    ):
        with pytest.raises(ParseError) as info:
            UserEvent.decode(orjson.dumps({**base, **change}))
        assert info.value.reason == why, change
    for name in USER_DELIVERY:
        with pytest.raises(ParseError) as info:
            UserEvent.decode(orjson.dumps({k: v for k, v in USER_DELIVERY.items() if k != name}))
        assert info.value.reason == "missing_field", name
    with pytest.raises(ParseError) as info:
        UserEvent.decode(orjson.dumps({**obj, "padding": "x" * 40_000}))
    assert info.value.reason == "too_large"


def _mutants(obj: object) -> st.SearchStrategy[object]:
    """``obj`` with one member (possibly nested) replaced, removed or added."""
    values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80) | \
        st.lists(st.integers(), max_size=3) | st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)  # fmt: skip

    def change(draw_key: tuple[str, str | None, object, bool]) -> object:
        key, inner, value, remove = draw_key
        out = json.loads(json.dumps(obj))
        target = out["alert"] if inner and isinstance(out.get("alert"), dict) else out
        name = inner or key
        if remove:
            target.pop(name, None)
        else:
            target[name] = value
        return out

    outer = sorted({*USER_DELIVERY, *USER_ALERT, "alert", "x"})
    return st.tuples(
        st.sampled_from(outer), st.none() | st.sampled_from([*good_alert(), "y"]), values,
        st.booleans(),
    ).map(change)  # fmt: skip


user_event_inputs = (
    st.one_of(
        _mutants({**USER_ALERT, "alert": good_alert()}),
        _mutants(USER_DELIVERY),
    ).map(lambda obj: json.dumps(obj).encode())
    | st.binary(max_size=300)
    | st.text(max_size=300).map(str.encode)
)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user_event_inputs)
def test_user_event_decode_is_total_and_what_it_accepts_round_trips(raw: bytes) -> None:
    try:
        event = UserEvent.decode(raw)
    except ParseError as exc:
        assert exc.reason in REASONS
        return
    assert isinstance(event, UserEvent)
    assert UserEvent.decode(event.encode()) == event


# --------------------------------------------------------------------------- dead letters


@pytest.mark.parametrize(
    "raw",
    [b'{"broken', b"\xff\xfe\x00garbage", "€".encode() * 3000, b'"' * 600_000, b"\x01" * 10_000],
)
def test_dead_letters_are_bounded_and_keep_length_and_hash(raw: bytes) -> None:
    letter = DeadLetter("json", "detail", raw, {"topic": "trades", "partition": 1, "offset": 7})
    encoded = letter.encode()
    assert len(encoded) < 64_000
    back = DeadLetter.decode(encoded)
    assert (back.reason, back.source) == ("json", letter.source)
    assert back.raw_bytes == len(raw)
    assert back.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert raw.startswith(back.raw) and len(back.raw) <= RAW_LIMIT
    assert back.truncated == (len(raw) > RAW_LIMIT)
    assert DeadLetter.decode(back.encode()) == back  # a dead letter of a dead letter is stable


def test_the_largest_records_fit_the_broker_limit_by_construction() -> None:
    """Every field at its limit, and the worst characters for JSON escaping."""
    worst = "\x01" * 10_000
    letter = DeadLetter("venue_frame", worst, worst.encode() * 200,
                        {f"k{i}": worst for i in range(20)}, ts_ms=T0)  # fmt: skip
    sizes = {"dead letter": len(letter.encode())}
    name = "9" * 64
    sizes["trade"] = len(Trade("b" * 32, "S" * 64, name, "1" * 14 + "." + "0" * 30, "1",
                               "sell", T0, T0).encode())  # fmt: skip
    sizes["bar"] = len(Bar("b" * 32, "S" * 64, "1h", 1723161600000, 1723165200000,
                           *["9" * 26 + ".12345678"] * 6, "9" * 40 + "." + "1" * 16, "9" * 14,
                           10**12, "9" * 26, "9" * 40, name, name).encode())  # fmt: skip
    worst_alert = Alert("a" * 24, "r" * 32, "b" * 32, "S" * 64, "1h", 1723161600000, T0,
                        "9" * 60, "9" * 60, "9" * 60, "critical", "\x01" * 1000)  # fmt: skip
    sizes["alert"] = len(worst_alert.encode())
    decimal = "9" * 14 + "." + "9" * 30  # the widest value and threshold an alert may carry
    valid = Alert("a" * 24, "r" * 32, "b" * 32, "S" * 64, "1h", 1723161600000, T0, decimal,
                  decimal, "9" * 14 + "." + "9" * 8 + "0" * 22, "critical", "\x01" * 1000)  # fmt: skip
    user_event = UserEvent.of_alert("u" * 64, valid, T0).encode()
    sizes["user event"] = len(user_event)
    assert UserEvent.decode(user_event).alert == valid  # within its own read limit
    assert max(sizes.values()) < 100_000 < MAX_MESSAGE_BYTES, sizes


def test_dead_letter_decode_is_strict() -> None:
    good = json.loads(DeadLetter("json", "d", b"x", {"offset": 1}).encode())
    for change, why in (
        ({"reason": "nope"}, "bad_name"),
        ({"raw_b64": "AA=="}, "missing_field"),  # raw and raw_b64 both
        ({"source": {"a": [1]}}, "bad_type"),
        ({"raw": "x" * (RAW_LIMIT + 1)}, "too_large"),
        ({"v": 9}, "schema_version"),
    ):
        with pytest.raises(ParseError) as info:
            DeadLetter.decode(orjson.dumps({**good, **change}))
        assert info.value.reason == why, change


# --------------------------------------------------------------------------- totality


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_every_decoder_returns_a_record_or_a_parse_error_for_any_bytes(raw: bytes) -> None:
    good, bad = decode_message(raw)
    assert all(r.reason in REASONS for r in bad)
    assert all(isinstance(r, Trade | Heartbeat) for r in good)
    for decode in (Bar.decode, Alert.decode, UserEvent.decode, DeadLetter.decode, loads):
        try:
            decode(raw)
        except ParseError as exc:
            assert exc.reason in REASONS


# --------------------------------------------------------------------------- columns


names = st.from_regex(rules.VENUE_PATTERN, fullmatch=True)
symbols = st.from_regex(rules.SYMBOL_PATTERN, fullmatch=True)
ids = st.from_regex(rules.ID_PATTERN, fullmatch=True)
amounts = st.from_regex(r"(0|[1-9][0-9]{0,5})\.[0-9]{1,8}", fullmatch=True).filter(
    lambda d: Decimal(d) > 0
)
valid_trades = st.builds(
    Trade,
    venue=names,
    symbol=symbols,
    id=ids,
    price=amounts,
    qty=amounts,
    side=st.sampled_from(["buy", "sell", None]),
    ts_ms=st.integers(rules.MIN_TS_MS, rules.MAX_TS_MS - 1),
    recv_ms=st.none() | st.integers(rules.MIN_TS_MS, rules.MAX_TS_MS - 1),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(valid_trades, min_size=1, max_size=20))
def test_canonical_encodings_are_recognized_and_decoded_identically(trades: list[Trade]) -> None:
    """What encode() writes is exactly what the fast path accepts, and both paths read it as
    the same record."""
    import re

    values = [t.encode() for t in trades]
    assert all(re.fullmatch(CANONICAL_RECORD[1:-1], v.decode()) for v in values)
    frame = pl.DataFrame([t.to_dict() for t in trades]).with_columns(
        pl.col("side").cast(pl.String), pl.col("recv_ms").cast(pl.Int64)
    )
    c = pl.col
    columns = frame.select(
        trade_values(
            c("venue"),
            c("symbol"),
            c("id"),
            c("price"),
            c("qty"),
            c("side"),
            c("ts_ms"),
            c("recv_ms"),
        )
    ).to_series()
    assert [c.encode() for c in columns] == values
    assert trade_messages(frame) == values
    decoded = decode_batch(values)
    assert decoded.exact == 0 and not decoded.rejected
    assert [decode_message(v)[0][0] for v in values] == trades
    rows = decoded.rows
    assert rows["p"].to_list() == [to_scaled(t.price) for t in trades]
    assert rows["id"].to_list() == [t.id for t in trades]


def test_frame_encoding_never_injects_members() -> None:
    """Values from a file that leave their charset are written escaped: the decoder sees them
    as they are and rejects them, instead of reading injected members."""
    frame = pl.DataFrame(
        {"venue": ['binance","symbol":"ETHUSDT'], "symbol": ["BTCUSDT"], "id": ["1"],
         "price": ["1"], "qty": ["1"], "side": [None], "ts_ms": [T0], "recv_ms": [None]},
        schema_overrides={"side": pl.String, "recv_ms": pl.Int64},
    )  # fmt: skip
    (value,) = trade_messages(frame)
    assert json.loads(value)["venue"] == 'binance","symbol":"ETHUSDT'
    assert reason(value) == "bad_name"


def test_an_empty_message_is_rejected_whatever_else_is_in_its_batch() -> None:
    """Found by the fuzz campaign: next to an array message, an empty message was dropped
    without a dead letter (the empty item of "[]" is no trade; an empty message is no JSON)."""
    good = orjson.dumps(GOOD)
    for batch in ([b""], [b"[]", b""], [b"[" + good + b"]", b"", b"[]"]):
        decoded = decode_batch(batch)  # type: ignore[arg-type]
        assert [(i, r.reason) for i, r in decoded.rejected] == [(batch.index(b""), "json")]
