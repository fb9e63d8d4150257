"""The Binance frame parser against recorded Binance traffic and generated frames.

Expected values come from the recordings themselves, read here with plain ``gzip`` + ``json``
(never through the code under test), and from the fixture manifest.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from candlewax.codec import MAX_NOTIONAL, MAX_TS_MS, MIN_TS_MS, REASONS, Trade, normalize_symbol
from candlewax.errors import ConfigError, ParseError
from connectors.binance import (
    KLINE_TRADE_TYPES,
    VENUES,
    for_venue,
    parse_kline,
    stream_channel,
)


def parse_frame(frame: Any, venue: str = "binance", recv_ms: int | None = None) -> list[Trade]:
    """One frame through a fresh parser of ``venue``."""
    return for_venue(venue).parse_frame(frame, recv_ms=recv_ms)


FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
HFT = FIXTURES / "hftbacktest"
CRYPTOFEED = FIXTURES / "cryptofeed"

SPOT_TRADE = (
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT",'
    b'"t":3735683259,"p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true,"M":true}}'
)
USDM_TRADE = {
    "e": "trade",
    "E": 1723161256322,
    "T": 1723161256322,
    "s": "BTCUSDT",
    "t": 5266583935,
    "p": "61800.30",
    "q": "0.006",
    "X": "MARKET",
    "m": False,
}


@cache
def hft_lines(name: str) -> tuple[tuple[int, bytes], ...]:
    """``(recv_ns, raw frame)`` of every line of an hftbacktest recording."""
    out = []
    with gzip.open(HFT / name, "rb") as stream:
        for line in stream:
            stamp, _, raw = line.rstrip(b"\n").partition(b" ")
            out.append((int(stamp), raw))
    return tuple(out)


@cache
def raw_trade_events(name: str) -> tuple[tuple[int, dict[str, Any]], ...]:
    """The ``trade`` events of a recording, decoded with the standard library."""
    out = []
    for recv_ns, raw in hft_lines(name):
        if b'"e":"trade"' in raw:
            data = json.loads(raw)["data"]
            assert data["e"] == "trade"
            out.append((recv_ns, data))
    return tuple(out)


@cache
def cryptofeed_messages(name: str) -> tuple[tuple[str, bytes], ...]:
    """``(recv ts text, raw message)`` of a cryptofeed capture, client-sent lines excluded."""
    out = []
    with (CRYPTOFEED / name).open("rb") as stream:
        for number, line in enumerate(stream, start=1):
            line = line.rstrip(b"\n")
            if number == 1 or not line or b" <- " in line.split(b": ", 1)[0]:
                continue
            stamp, _, raw = line.partition(b": ")
            out.append((stamp.decode(), raw))
    return tuple(out)


def parse_all(name: str, venue: str) -> list[Trade]:
    trades: list[Trade] = []
    for recv_ns, raw in hft_lines(name):
        trades.extend(parse_frame(raw, venue=venue, recv_ms=recv_ns // 1_000_000))
    return trades


# --------------------------------------------------------------------------- recorded trades


@pytest.mark.parametrize(
    ("name", "venue", "symbol", "count", "first_id", "last_id"),
    [
        ("spot_btcusdt_20240808.gz", "binance", "BTCUSDT", 9757, 3735683259, 3735693015),
        ("spot_ethusdt_20240808.gz", "binance", "ETHUSDT", 6106, 1520538925, 1520545030),
        ("usdm_btcusdt_20240808.gz", "binance-usdm", "BTCUSDT", 21313, None, None),
        ("cm_btcusd_perp_20240808.gz", "binance-coinm", "BTCUSDPERP", 2286, None, None),
    ],
)
def test_recordings_yield_every_trade_once_with_contiguous_ids(
    name: str,
    venue: str,
    symbol: str,
    count: int,
    first_id: int | None,
    last_id: int | None,
) -> None:
    trades = parse_all(name, venue)
    raw = raw_trade_events(name)
    kept = [data for _, data in raw if data.get("X", "MARKET") in KLINE_TRADE_TYPES]
    assert len(trades) == len(kept) == count  # the manifest's count, and the raw file's
    assert {t.symbol for t in trades} == {symbol}
    assert {t.venue for t in trades} == {venue}
    ids = [int(t.id) for t in trades]
    assert ids == list(range(ids[0], ids[0] + count))  # contiguous, in order, no duplicates
    assert ids == [data["t"] for data in kept]
    if first_id is not None:
        assert (ids[0], ids[-1]) == (first_id, last_id)


@pytest.mark.parametrize(
    ("name", "venue"),
    [
        ("spot_btcusdt_20240808.gz", "binance"),
        ("usdm_btcusdt_20240808.gz", "binance-usdm"),
        ("cm_btcusd_perp_20240808.gz", "binance-coinm"),
    ],
)
def test_fields_map_from_raw_frames(name: str, venue: str) -> None:
    trades = parse_all(name, venue)
    raw = raw_trade_events(name)
    assert len(trades) == len(raw)
    event_differs = 0
    for trade, (recv_ns, data) in zip(trades, raw, strict=True):
        assert trade.ts_ms == data["T"]  # trade time, never E, never receive time
        event_differs += data["E"] != data["T"]
        assert trade.recv_ms == recv_ns // 1_000_000
        assert trade.side == ("sell" if data["m"] else "buy")  # m: the buyer was the maker
        assert (trade.price, trade.qty) == (data["p"], data["q"])  # text exactly as sent
        assert trade.id == str(data["t"])
    assert event_differs > 0  # E and T differ often enough that mixing them up would show
    # The recording's receive clock runs ~1.27 s behind the exchange: recv time is no event time.
    assert all(t.recv_ms is not None and t.recv_ms < t.ts_ms for t in trades)


def test_spot_frame_from_docstring() -> None:
    assert parse_frame(SPOT_TRADE, recv_ms=1723161254087) == [
        Trade(
            venue="binance",
            symbol="BTCUSDT",
            id="3735683259",
            price="61837.63000000",
            qty="0.02000000",
            side="sell",
            ts_ms=1723161255342,
            recv_ms=1723161254087,
        )
    ]


def test_text_bytes_and_dict_frames_parse_alike() -> None:
    as_dict = orjson.loads(SPOT_TRADE)
    expected = parse_frame(SPOT_TRADE)
    assert parse_frame(SPOT_TRADE.decode()) == expected
    assert parse_frame(as_dict) == expected
    assert parse_frame(as_dict["data"]) == expected  # a raw stream's bare event
    assert parse_frame(bytearray(SPOT_TRADE)) == expected


# --------------------------------------------------------------------------- futures X types


@pytest.mark.parametrize(
    ("x_type", "price", "qty"),
    [
        ("INSURANCE_FUND", "3.7041208", "3.5"),  # off the tick grid, as reported by users
        ("INSURANCE_FUND", "0", "0"),
        ("ADL", "61800.30", "0.010"),
        ("NA", "0", "0"),  # the zero sentinel seen on USD-M streams
        ("SOMETHING_NEW", "61800.30", "0.010"),
    ],
)
def test_non_market_futures_executions_are_not_trades(x_type: str, price: str, qty: str) -> None:
    event = {**USDM_TRADE, "X": x_type, "p": price, "q": qty}
    assert parse_frame({"stream": "btcusdt@trade", "data": event}, venue="binance-usdm") == []


def test_market_futures_trade_is_kept_and_missing_x_is_a_market_trade() -> None:
    (kept,) = parse_frame(USDM_TRADE, venue="binance-usdm")
    assert (kept.id, kept.side, kept.ts_ms) == ("5266583935", "buy", 1723161256322)
    without_x = {k: v for k, v in USDM_TRADE.items() if k != "X"}
    assert parse_frame(without_x, venue="binance-usdm") == [kept]


def test_usdm_recording_holds_only_market_trades() -> None:
    kinds = {data.get("X") for _, data in raw_trade_events("usdm_btcusdt_20240808.gz")}
    assert kinds == {"MARKET"}


# --------------------------------------------------------------------------- cryptofeed captures


@pytest.mark.parametrize(
    ("name", "venue", "count"),
    [
        ("BINANCE.ws.1.0", "binance", 2),
        ("BINANCE_US.ws.1.0", "binance-us", 11),
        ("BINANCE_FUTURES.ws.1.0", "binance-usdm", 91),
        ("BINANCE_DELIVERY.ws.1.0", "binance-coinm", 51),
    ],
)
def test_aggtrades_of_cryptofeed_captures(name: str, venue: str, count: int) -> None:
    trades: list[Trade] = []
    expected: list[dict[str, Any]] = []
    for _, raw in cryptofeed_messages(name):
        trades.extend(parse_frame(raw, venue=venue))
        data = json.loads(raw)["data"]
        if data.get("e") == "aggTrade":
            expected.append(data)
    assert len(trades) == len(expected) == count
    for trade, data in zip(trades, expected, strict=True):
        assert trade.id == str(data["a"])  # the aggregate id, not a trade id
        assert trade.ts_ms == data["T"]
        assert trade.side == ("sell" if data["m"] else "buy")
        assert (trade.price, trade.qty) == (data["p"], data["q"])
        assert trade.symbol == normalize_symbol(data["s"])
        assert trade.venue == venue


def test_coinm_contract_symbols_lose_their_underscore() -> None:
    symbols = set()
    for _, raw in cryptofeed_messages("BINANCE_DELIVERY.ws.1.0"):
        symbols |= {t.symbol for t in parse_frame(raw, venue="binance-coinm")}
    assert "ETHUSD210924" in symbols and "BCHUSDPERP" in symbols
    assert not any("_" in s for s in symbols)


def test_klines_of_the_futures_capture() -> None:
    klines = []
    for _, raw in cryptofeed_messages("BINANCE_FUTURES.ws.1.0"):
        kline = parse_kline(raw)
        data = json.loads(raw)["data"]
        if data.get("e") != "kline":
            assert kline is None
            continue
        k = data["k"]
        assert kline is not None
        assert kline["symbol"] == k["s"]
        assert (kline["start_ms"], kline["end_ms"]) == (k["t"], k["T"] + 1)
        assert kline["end_ms"] - kline["start_ms"] == 60_000
        assert (kline["open"], kline["high"], kline["low"], kline["close"]) == tuple(
            k[name] for name in "ohlc"
        )
        assert (kline["volume"], kline["quote_volume"]) == (k["v"], k["q"])
        assert (kline["buy_volume"], kline["buy_quote_volume"]) == (k["V"], k["Q"])
        assert (kline["trades"], kline["closed"]) == (k["n"], k["x"])
        assert (kline["first_id"], kline["last_id"]) == (str(k["f"]), str(k["L"]))
        klines.append(kline)
    assert len(klines) == 67
    closed = [k for k in klines if k["closed"]]
    assert len(closed) == 4
    assert {k["start_ms"] for k in closed} == {1626992700000}  # the minute the capture crossed


def test_klines_equal_the_sums_of_the_captured_trades() -> None:
    """Every kline whose trades were all captured equals what our parsed trades add up to."""
    checked = 0
    for name, venue in [
        ("BINANCE.ws.1.0", "binance"),
        ("BINANCE_US.ws.1.0", "binance-us"),
        ("BINANCE_FUTURES.ws.1.0", "binance-usdm"),
        ("BINANCE_DELIVERY.ws.1.0", "binance-coinm"),
    ]:
        # aggTrade id ranges [f, l] come from the raw frames; values from the parser.
        aggs: dict[str, list[tuple[int, int, Trade]]] = defaultdict(list)
        klines = []
        for _, raw in cryptofeed_messages(name):
            data = json.loads(raw)["data"]
            for trade in parse_frame(raw, venue=venue):
                aggs[trade.symbol].append((data["f"], data["l"], trade))
            kline = parse_kline(raw)
            if kline is not None:
                klines.append(kline)
        for kline in klines:
            first, last = int(kline["first_id"]), int(kline["last_id"])
            inside = [
                (lo, hi, t) for lo, hi, t in aggs[kline["symbol"]] if lo >= first and hi <= last
            ]
            covered = {i for lo, hi, _ in inside for i in range(lo, hi + 1)}
            if first < 0 or covered != set(range(first, last + 1)):
                continue  # some of its trades happened before the capture started
            trades = [t for _, _, t in inside]
            assert all(kline["start_ms"] <= t.ts_ms < kline["end_ms"] for t in trades)
            buys = [t for t in trades if t.side == "buy"]
            assert Decimal(kline["volume"]) == sum(Decimal(t.qty) for t in trades)
            assert Decimal(kline["quote_volume"]) == sum(
                Decimal(t.price) * Decimal(t.qty) for t in trades
            )
            assert Decimal(kline["buy_volume"]) == sum(Decimal(t.qty) for t in buys)
            assert Decimal(kline["buy_quote_volume"]) == sum(
                Decimal(t.price) * Decimal(t.qty) for t in buys
            )
            assert kline["trades"] == sum(hi - lo + 1 for lo, hi, _ in inside)
            assert Decimal(kline["open"]) == Decimal(trades[0].price)
            assert Decimal(kline["close"]) == Decimal(trades[-1].price)
            assert Decimal(kline["high"]) == max(Decimal(t.price) for t in trades)
            assert Decimal(kline["low"]) == min(Decimal(t.price) for t in trades)
            checked += 1
    assert checked == 17  # 15 USD-M, 1 spot, 1 Binance.US running klines are fully captured


# --------------------------------------------------------------------------- non-trade frames


def test_every_non_trade_frame_of_the_recordings_yields_nothing() -> None:
    seen = set()
    for recv_ns, raw in hft_lines("spot_btcusdt_20240808.gz"):
        if b"@trade" not in raw[:40]:
            assert parse_frame(raw, recv_ms=recv_ns // 1_000_000) == []
            seen.add(raw[:12])
    assert b'{"lastUpdate' in seen  # the REST depth snapshot is among them


@pytest.mark.parametrize(
    "frame",
    [
        {"result": None, "id": 1},
        {"error": {"code": 2, "msg": "Invalid request"}, "id": 7},
        {"lastUpdateId": 1, "bids": [], "asks": []},
        {"u": 50093239212, "s": "BTCUSDT", "b": "1.0", "B": "1", "a": "2.0", "A": "1"},
        {"stream": "btcusdt@depth@100ms", "data": {"e": "depthUpdate", "E": 1, "s": "BTCUSDT"}},
        {"stream": "btcusdt@bookTicker", "data": {"e": "bookTicker", "u": 1, "s": "BTCUSDT"}},
        {"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": 1, "s": "BTCUSDT", "k": {}}},
        {"stream": "!miniTicker@arr", "data": [{"e": "24hrMiniTicker", "s": "BTCUSDT"}]},
        [{"e": "24hrMiniTicker", "s": "BTCUSDT"}],
        [],
    ],
)
def test_non_trade_messages_yield_nothing(frame: Any) -> None:
    assert parse_frame(frame) == []
    assert parse_frame(orjson.dumps(frame)) == []


def _spot_event(**changes: Any) -> dict[str, Any]:
    event = dict(orjson.loads(SPOT_TRADE)["data"])
    event.update(changes)
    return {k: v for k, v in event.items() if v is not ...}


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"not json", "json"),
        (b'{"stream":"btcusdt@trade","data":{"e":"trade"', "json"),
        (b"\xff\xfe", "json"),
        (b"", "json"),
        (b"42", "venue_frame"),
        (b'"trade"', "venue_frame"),
        (b"null", "venue_frame"),
        (b'{"foo": 1}', "venue_frame"),
        (b'{"stream": "btcusdt@trade"}', "venue_frame"),
        (b'{"stream": 5, "data": {}}', "venue_frame"),
        (b'{"stream": "btcusdt@trade", "data": 5}', "venue_frame"),
        (b'[{"e": "trade"}, 3]', "missing_field"),
        (b"[3]", "venue_frame"),
        ({"e": 5}, "venue_frame"),
        (None, "venue_frame"),
        (_spot_event(p=...), "missing_field"),
        (_spot_event(t=...), "missing_field"),
        (_spot_event(T=...), "missing_field"),
        (_spot_event(m=...), "missing_field"),
        (_spot_event(s=...), "missing_field"),
        (_spot_event(e="aggTrade"), "missing_field"),  # an aggTrade's id is "a"
        (_spot_event(m="true"), "bad_type"),
        (_spot_event(s=7), "bad_type"),
        (_spot_event(t=True), "bad_type"),
        (_spot_event(X=["MARKET"]), "bad_type"),
        (_spot_event(p="abc"), "bad_decimal"),
        (_spot_event(p="-1"), "non_positive"),
        (_spot_event(q="0.00000000"), "non_positive"),
        (_spot_event(p="1.000000001"), "precision"),
        (_spot_event(p="1E+100000"), "bad_decimal"),  # canonical decimals only
        (_spot_event(p="9" * 5000), "bad_decimal"),  # bounded length: no int() of it ever runs
        (_spot_event(p="9" * 20), "out_of_range"),
        (_spot_event(p="+5"), "bad_decimal"),
        (_spot_event(p=" 5 "), "bad_decimal"),
        (_spot_event(p="1_000"), "bad_decimal"),
        (_spot_event(p="\u0665"), "bad_decimal"),  # Arabic-Indic five
        (_spot_event(p="\uff15"), "bad_decimal"),  # full-width five
        (_spot_event(p=".5"), "bad_decimal"),
        (_spot_event(t="abc"), "bad_type"),  # ids of consecutive-id venues are integers
        (_spot_event(t=1.5), "bad_type"),
        (_spot_event(t=-3), "out_of_range"),
        (_spot_event(t=2**63), "out_of_range"),
        (_spot_event(p="99999999", q="200000"), "out_of_range"),  # notional 2e13 >= 1e13
        (_spot_event(T=1723161255), "bad_timestamp"),  # seconds, not milliseconds
        (_spot_event(T=1723161255342000), "bad_timestamp"),  # microseconds
        (_spot_event(T="1723161255342"), "bad_timestamp"),
    ],
)
def test_malformed_frames_raise_parse_error_with_a_known_reason(frame: Any, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_frame(frame)
    assert caught.value.reason == reason
    assert reason in REASONS


def test_bad_receive_time_is_a_bad_timestamp() -> None:
    with pytest.raises(ParseError) as caught:
        parse_frame(SPOT_TRADE, recv_ms=1723161254)  # seconds
    assert caught.value.reason == "bad_timestamp"


def test_unknown_venue_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="okx"):
        parse_frame(SPOT_TRADE, venue="okx")


def test_malformed_kline_raises_and_other_frames_are_not_klines() -> None:
    assert parse_kline(SPOT_TRADE) is None
    assert parse_kline(b"[1, 2]") is None
    with pytest.raises(ParseError) as caught:
        parse_kline({"e": "kline", "s": "BTCUSDT"})
    assert caught.value.reason == "missing_field"
    with pytest.raises(ParseError) as caught:
        parse_kline(b"{")
    assert caught.value.reason == "json"


def test_stream_channel() -> None:
    assert stream_channel("btcusdt@depth@100ms") == "depth"
    assert stream_channel("btcusd_perp@trade") == "trade"
    assert stream_channel("!miniTicker@arr") == "arr"
    assert stream_channel("nostream") == ""


# --------------------------------------------------------------------------- properties

_digits = st.text("0123456789", min_size=0, max_size=8)


@st.composite
def decimal_texts(draw: st.DrawFn) -> str:
    """Positive canonical decimals of at most 8 decimals, trailing zeros included."""
    whole = draw(st.integers(0, 10**9))
    frac = draw(_digits)
    if whole == 0 and not frac.strip("0"):
        frac = frac[:-1] + "1" if frac else ""
        whole = 0 if frac else 1
    return f"{whole}.{frac}" if frac else str(whole)


@st.composite
def trade_events(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    kind = draw(st.sampled_from(["trade", "aggTrade"]))
    symbol = draw(st.from_regex(r"\A[a-zA-Z0-9]{2,10}([_-][A-Z0-9]{1,8})?\Z"))
    event: dict[str, Any] = {
        "e": kind,
        "E": draw(st.integers(MIN_TS_MS, MAX_TS_MS - 1)),
        "s": symbol,
        "t" if kind == "trade" else "a": draw(st.integers(0, 2**63 - 1)),
        "p": draw(decimal_texts()),
        "q": draw(decimal_texts()),
        "T": draw(st.integers(MIN_TS_MS, MAX_TS_MS - 1)),
        "m": draw(st.booleans()),
    }
    if kind == "trade" and draw(st.booleans()):
        event["X"] = "MARKET"
    if draw(st.booleans()):
        event["M"] = True
    assume(Decimal(event["p"]) * Decimal(event["q"]) < MAX_NOTIONAL)
    expected = {
        "symbol": normalize_symbol(symbol),
        "id": str(event["t" if kind == "trade" else "a"]),
        "price": event["p"],
        "qty": event["q"],
        "side": "sell" if event["m"] else "buy",
        "ts_ms": event["T"],
    }
    return event, expected


@settings(max_examples=300, deadline=None)
@given(
    case=trade_events(),
    venue=st.sampled_from(VENUES),
    envelope=st.booleans(),
    encoding=st.sampled_from(["dict", "str", "bytes"]),
    recv_ms=st.none() | st.integers(MIN_TS_MS, MAX_TS_MS - 1),
)
def test_valid_events_round_trip(
    case: tuple[dict[str, Any], dict[str, Any]],
    venue: str,
    envelope: bool,
    encoding: str,
    recv_ms: int | None,
) -> None:
    event, expected = case
    frame: Any = (
        {"stream": f"{event['s'].lower()}@{event['e']}", "data": event} if envelope else event
    )
    if encoding != "dict":
        frame = orjson.dumps(frame)
        if encoding == "str":
            frame = frame.decode()
    assert parse_frame(frame, venue=venue, recv_ms=recv_ms) == [
        Trade(venue=venue, recv_ms=recv_ms, **expected)
    ]


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=6)
    ),
    max_leaves=20,
)


@st.composite
def mutated_events(draw: st.DrawFn) -> Any:
    """Valid trade events with fields removed or replaced by arbitrary JSON values."""
    event, _ = draw(trade_events())
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from([*event.keys(), "X", "stream"]))
        if draw(st.booleans()):
            event.pop(key, None)
        else:
            event[key] = draw(_json_values)
    return {"stream": "x@trade", "data": event} if draw(st.booleans()) else event


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=st.binary(max_size=200) | _json_values | mutated_events())
def test_garbage_never_raises_anything_but_parse_error(frame: Any) -> None:
    for parse in (parse_frame, parse_kline):
        for candidate in (frame, orjson.dumps(frame) if not isinstance(frame, bytes) else frame):
            try:
                result = parse(candidate)
            except ParseError as exc:
                assert exc.reason in REASONS
            else:
                if parse is parse_frame:
                    assert isinstance(result, list)
                    assert all(isinstance(t, Trade) for t in result)
