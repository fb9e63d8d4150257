"""The OKX, Coinbase, Bybit and Finnhub frame parsers against real recordings and documented frames.

Expected values come from the recordings themselves, read here with plain ``json``/``gzip``
(never through the code under test), from the fixture manifest, and from the venues' documented
example frames.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candlewax.codec import REASONS, Trade, normalize_symbol
from candlewax.errors import ConfigError, ParseError
from connectors import bybit, coinbase, finnhub, okx
from connectors.venue import Venue

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
CRYPTOFEED = FIXTURES / "cryptofeed"
FINNHUB_JSONL = FIXTURES / "derived" / "finnhub_envelope_from_binance_btcusdt_20240808.jsonl"
SPOT_BTCUSDT_GZ = FIXTURES / "hftbacktest" / "spot_btcusdt_20240808.gz"

VENUE_MODULES = [okx.Okx(), coinbase.Coinbase(), bybit.Bybit(), finnhub.Finnhub()]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@cache
def cryptofeed_messages(name: str) -> tuple[tuple[float, bytes], ...]:
    """``(recv unix ts, raw message)`` of a cryptofeed capture: received lines only."""
    out = []
    with (CRYPTOFEED / name).open("rb") as stream:
        for number, line in enumerate(stream, start=1):
            line = line.rstrip(b"\n")
            if number == 1 or not line:
                continue
            head, _, raw = line.partition(b": ")
            if b" <- " in head:
                continue
            out.append((float(head), raw))
    return tuple(out)


@cache
def cryptofeed_sent(name: str) -> tuple[bytes, ...]:
    """The raw frames the recording client sent (``<url> <- <ts>: <json>`` lines)."""
    out = []
    with (CRYPTOFEED / name).open("rb") as stream:
        for line in stream:
            head, _, raw = line.rstrip(b"\n").partition(b": ")
            if b" <- " in head:
                out.append(raw)
    return tuple(out)


def parse_recording(module: Venue, name: str) -> list[Trade]:
    trades: list[Trade] = []
    for recv_s, raw in cryptofeed_messages(name):
        trades.extend(module.parse_frame(raw, recv_ms=int(recv_s * 1000)))
    return trades


def iso_ms(text: str) -> int:
    """Independent ISO 8601 → epoch ms (floor), with the standard library only."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment - EPOCH) // timedelta(milliseconds=1)


def reason_of(module: Venue, frame: Any) -> str:
    with pytest.raises(ParseError) as caught:
        module.parse_frame(frame)
    assert caught.value.reason in REASONS
    return caught.value.reason


# =========================================================================== shared interface


@pytest.mark.parametrize(
    ("module", "venue", "ws_url", "rest_url", "sequential"),
    [
        (okx.Okx(), "okx", "wss://ws.okx.com:8443/ws/v5/public", "https://www.okx.com", False),
        (
            coinbase.Coinbase(),
            "coinbase",
            "wss://ws-feed.exchange.coinbase.com",
            "https://api.exchange.coinbase.com",
            True,
        ),
        (bybit.Bybit(), "bybit", "wss://stream.bybit.com/v5/public/spot", None, False),
        (finnhub.Finnhub(), "finnhub", "wss://ws.finnhub.io", None, False),
    ],
)
def test_interface_constants(
    module: Venue, venue: str, ws_url: str, rest_url: str | None, sequential: bool
) -> None:
    assert (venue, ws_url, rest_url) == (module.name, module.ws_url, module.rest_url)
    assert "token" not in module.ws_url
    assert module.sequential_ids is sequential
    assert isinstance(module.max_symbols_per_connection, int)
    assert module.max_symbols_per_connection > 0
    ping = module.ping
    assert ping is None or (isinstance(ping[0], float) and isinstance(ping[1], str))
    for name in ("native_symbol", "subscribe_messages", "parse_frame", "control"):
        assert callable(getattr(module, name))


def test_keep_alive_rules() -> None:
    assert okx.Okx.ping == (20.0, "ping")
    assert okx.Okx.ping[0] < 30  # OKX drops a connection silent for 30 s
    assert bybit.Bybit.ping is not None
    assert bybit.Bybit.ping[0] == 20.0
    assert json.loads(bybit.Bybit.ping[1]) == {"op": "ping"}
    assert coinbase.Coinbase.ping is None
    assert finnhub.Finnhub.ping is None


@pytest.mark.parametrize("module", VENUE_MODULES, ids=lambda m: m.name)
def test_no_symbols_no_subscriptions(module: Venue) -> None:
    assert module.subscribe_messages([]) == []


@pytest.mark.parametrize("module", VENUE_MODULES, ids=lambda m: m.name)
@pytest.mark.parametrize("bad", ["", "   "])
def test_empty_symbols_are_configuration_errors(module: Venue, bad: str) -> None:
    with pytest.raises(ConfigError):
        module.native_symbol(bad)


@pytest.mark.parametrize("module", VENUE_MODULES, ids=lambda m: m.name)
@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"not json", "json"),
        (b"", "json"),
        (b"\xff\xfe", "json"),
        (b'{"a":', "json"),
        (b"42", "venue_frame"),
        (b"null", "venue_frame"),
        (b'"trade"', "venue_frame"),
        (b"[]", "venue_frame"),
        (b"[1, 2]", "venue_frame"),
        (b'{"foo": 1}', "venue_frame"),
        (None, "venue_frame"),
        (3.5, "venue_frame"),
    ],
)
def test_garbage_is_a_parse_error_with_a_known_reason(
    module: Venue, frame: Any, reason: str
) -> None:
    assert reason_of(module, frame) == reason


@pytest.mark.parametrize("module", VENUE_MODULES, ids=lambda m: m.name)
@pytest.mark.parametrize("frame", [b"not json", b"", b"[]", b"null", None, 7, b"pong!", b"{"])
def test_control_never_raises_on_garbage(module: Venue, frame: Any) -> None:
    assert module.control(frame) is None


# =========================================================================== OKX

OKX_FILE = "OKX.ws.1.0"
OKX_PUSH = (
    b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",'
    b'"tradeId":"338476307","px":"30236","sz":"0.0002","side":"buy","ts":"1652459224818"}]}'
)
#: The documented push of the aggregated ``trades`` channel (OKX v5 docs, WS / Trades channel).
OKX_AGGREGATED: dict[str, Any] = {
    "arg": {"channel": "trades", "instId": "BTC-USDT"},
    "data": [
        {
            "instId": "BTC-USDT",
            "tradeId": "130639474",
            "px": "42219.9",
            "sz": "0.12060306",
            "side": "buy",
            "ts": "1630048897897",
            "count": "3",
            "source": "0",
            "seqId": 1234,
        }
    ],
}


@cache
def okx_raw_trades() -> tuple[tuple[float, dict[str, Any]], ...]:
    out: list[tuple[float, dict[str, Any]]] = []
    for recv_s, raw in cryptofeed_messages(OKX_FILE):
        obj = json.loads(raw)
        if obj.get("arg", {}).get("channel") == "trades" and "data" in obj:
            out.extend((recv_s, item) for item in obj["data"])
    return tuple(out)


def test_okx_recording_yields_every_trade_once() -> None:
    trades = parse_recording(okx.Okx(), OKX_FILE)
    raw = okx_raw_trades()
    assert len(trades) == len(raw) == 74  # the manifest's 74 trades pushes, one trade each
    for trade, (recv_s, item) in zip(trades, raw, strict=True):
        assert trade.venue == "okx"
        assert trade.symbol == item["instId"].replace("-", "")
        assert trade.id == item["tradeId"]
        assert (trade.price, trade.qty) == (item["px"], item["sz"])  # text exactly as sent
        assert trade.side == item["side"]  # OKX sends the taker's side
        assert trade.ts_ms == int(item["ts"])
        assert trade.recv_ms == int(recv_s * 1000)
    assert {t.symbol for t in trades} == {"BTCUSD220527", "UNIUSDSWAP", "BTCUSDT"}
    assert {t.side for t in trades} == {"buy", "sell"}


def test_okx_recorded_ids_are_consecutive_per_instrument() -> None:
    """Before OKX aggregated its trades channel, ids stepped by exactly 1 per instrument."""
    ids: dict[str, list[int]] = defaultdict(list)
    for trade in parse_recording(okx.Okx(), OKX_FILE):
        ids[trade.symbol].append(int(trade.id))
    for run in ids.values():
        assert run == list(range(run[0], run[0] + len(run)))
    assert len(ids["BTCUSDT"]) == 69


def test_okx_every_other_recorded_frame_yields_nothing_and_acks_are_labelled() -> None:
    labels: Counter[str | None] = Counter()
    for _, raw in cryptofeed_messages(OKX_FILE):
        obj = json.loads(raw)
        if obj.get("arg", {}).get("channel") != "trades" or "event" in obj:
            assert okx.Okx().parse_frame(raw) == []
        labels[okx.Okx().control(raw)] += 1
    assert labels["subscribed"] == 18  # every {"event":"subscribe",...} ack
    assert labels[None] == len(cryptofeed_messages(OKX_FILE)) - 18


def test_okx_frame_from_docstring_and_every_input_form() -> None:
    expected = [
        Trade(
            venue="okx",
            symbol="BTCUSDT",
            id="338476307",
            price="30236",
            qty="0.0002",
            side="buy",
            ts_ms=1652459224818,
            recv_ms=1652459225507,
        )
    ]
    assert okx.Okx().parse_frame(OKX_PUSH, recv_ms=1652459225507) == expected
    assert okx.Okx().parse_frame(OKX_PUSH.decode(), 1652459225507) == expected
    assert okx.Okx().parse_frame(bytearray(OKX_PUSH), 1652459225507) == expected
    assert okx.Okx().parse_frame(memoryview(OKX_PUSH), 1652459225507) == expected
    assert okx.Okx().parse_frame(orjson.loads(OKX_PUSH), 1652459225507) == expected


def test_okx_aggregated_and_all_trades_channels() -> None:
    (trade,) = okx.Okx().parse_frame(OKX_AGGREGATED)
    assert (trade.id, trade.qty, trade.side, trade.ts_ms) == (
        "130639474",  # the last id of the 3 aggregated fills
        "0.12060306",
        "buy",
        1630048897897,
    )
    all_trades = {**OKX_AGGREGATED, "arg": {"channel": "trades-all", "instId": "BTC-USDT"}}
    assert okx.Okx().parse_frame(all_trades) == [trade]
    several = {**OKX_AGGREGATED, "data": OKX_AGGREGATED["data"] * 3}
    assert len(okx.Okx().parse_frame(several)) == 3


@pytest.mark.parametrize(
    "frame",
    [
        b"pong",
        "pong",
        {"event": "subscribe", "arg": {"channel": "trades", "instId": "BTC-USDT"}},
        {"event": "error", "code": "60012", "msg": "Invalid request", "connId": "a4d3ae55"},
        {"event": "notice", "code": "64008", "msg": "The connection will soon be closed"},
        {"event": "login", "code": "0", "msg": ""},
        {"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "snapshot", "data": []},
        {"arg": {"channel": "tickers", "instId": "BTC-USDT"}, "data": [{"last": "1"}]},
        {"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": []},
    ],
)
def test_okx_non_trade_frames_yield_nothing(frame: Any) -> None:
    assert okx.Okx().parse_frame(frame) == []


def test_okx_control_labels() -> None:
    assert okx.Okx().control(b"pong") == "pong"
    assert okx.Okx().control("pong") == "pong"
    assert okx.Okx().control(memoryview(b"pong")) == "pong"
    ack = b'{"id":"1512","event":"subscribe","arg":{"channel":"trades","instId":"BTC-USDT"}}'
    assert okx.Okx().control(ack) == "subscribed"
    error = '{"event":"error","code":"60012","msg":"Invalid request","connId":"a4d3ae55"}'
    assert okx.Okx().control(error) == "error"
    notice = {
        "event": "notice",
        "code": "64008",
        "msg": "The connection will soon be closed for a service upgrade. Please reconnect.",
        "connId": "a4d3ae55",
    }
    assert okx.Okx().control(notice) == "reconnect"
    assert okx.Okx().control(orjson.dumps(notice)) == "reconnect"
    assert okx.Okx().control(OKX_PUSH) is None
    assert okx.Okx().control(orjson.loads(OKX_PUSH)) is None


def _okx_item(**changes: Any) -> dict[str, Any]:
    item = dict(orjson.loads(OKX_PUSH)["data"][0])
    item.update(changes)
    return {"arg": {"channel": "trades"}, "data": [{k: v for k, v in item.items() if v is not ...}]}


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ({"arg": 5}, "venue_frame"),
        ({"arg": {"channel": 5}}, "venue_frame"),
        ({"arg": {"channel": "trades"}}, "venue_frame"),
        ({"arg": {"channel": "trades"}, "data": {"px": "1"}}, "venue_frame"),
        ({"arg": {"channel": "trades"}, "data": [5]}, "venue_frame"),
        (_okx_item(instId=...), "missing_field"),
        (_okx_item(instId=7), "bad_type"),
        (_okx_item(tradeId=...), "missing_field"),
        (_okx_item(tradeId=[1]), "bad_type"),
        (_okx_item(px=...), "missing_field"),
        (_okx_item(side=...), "missing_field"),
        (_okx_item(side="BUY"), "bad_side"),
        (_okx_item(px="abc"), "bad_decimal"),
        (_okx_item(sz="0"), "non_positive"),
        (_okx_item(px="-1"), "non_positive"),
        (_okx_item(sz="0.000000001"), "precision"),
        (_okx_item(ts=...), "missing_field"),
        (_okx_item(ts="1652459224"), "bad_timestamp"),  # seconds
        (_okx_item(ts="1652459224818000"), "bad_timestamp"),  # microseconds
        (_okx_item(ts="16524592x4818"), "bad_timestamp"),
        (_okx_item(ts=""), "bad_timestamp"),
    ],
)
def test_okx_malformed_frames(frame: Any, reason: str) -> None:
    assert reason_of(okx.Okx(), frame) == reason


def test_okx_instrument_of_the_arg_when_the_item_has_none() -> None:
    frame = orjson.loads(OKX_PUSH)
    del frame["data"][0]["instId"]
    assert okx.Okx().parse_frame(frame)[0].symbol == "BTCUSDT"


def test_okx_subscription_messages() -> None:
    assert okx.Okx().subscribe_messages(["BTCUSDT"]) == [
        '{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]}'
    ]
    messages = okx.Okx().subscribe_messages(["BTCUSDT", "btc-usdt", "ETHBTC", "BTC-USDT-SWAP"])
    assert [json.loads(m) for m in messages] == [
        {
            "op": "subscribe",
            "args": [
                {"channel": "trades", "instId": "BTC-USDT"},
                {"channel": "trades", "instId": "ETH-BTC"},
                {"channel": "trades", "instId": "BTC-USDT-SWAP"},
            ],
        }
    ]
    many = okx.Okx().subscribe_messages([f"C{i}USDT" for i in range(250)])
    assert [len(json.loads(m)["args"]) for m in many] == [100, 100, 50]
    assert all(len(m.encode()) < 64 * 1024 for m in many)  # OKX's request size limit


def test_okx_subscription_matches_the_recorded_client() -> None:
    """The recorded client subscribed with the same argument shape (``channel`` + ``instId``)."""
    recorded = json.loads(cryptofeed_sent(OKX_FILE)[-1])
    wanted = [a for a in recorded["args"] if a["channel"] == "trades"]
    (ours,) = okx.Okx().subscribe_messages([a["instId"] for a in wanted])
    assert json.loads(ours) == {"op": "subscribe", "args": wanted}


@pytest.mark.parametrize(
    ("symbol", "native"),
    [
        ("BTCUSDT", "BTC-USDT"),
        ("btcusdt", "BTC-USDT"),
        ("ETHUSDC", "ETH-USDC"),
        ("BTCUSD", "BTC-USD"),
        ("ETHBTC", "ETH-BTC"),
        ("USDCUSDT", "USDC-USDT"),
        ("WBTCBTC", "WBTC-BTC"),
        ("BTCEUR", "BTC-EUR"),
        ("BTC-USDT", "BTC-USDT"),
        ("btc/usdt", "BTC-USDT"),
        ("BTC_USDT", "BTC-USDT"),
        ("BTC-USDT-SWAP", "BTC-USDT-SWAP"),
        ("BTC-USD-220527", "BTC-USD-220527"),
    ],
)
def test_okx_native_symbol(symbol: str, native: str) -> None:
    assert okx.Okx().native_symbol(symbol) == native
    assert normalize_symbol(okx.Okx().native_symbol(symbol)) == normalize_symbol(symbol)


@pytest.mark.parametrize("instrument", ["BTC-USDT", "ETH-BTC", "USDC-USDT", "SOL-USDC", "OKB-USD"])
def test_okx_native_symbol_round_trips(instrument: str) -> None:
    assert okx.Okx().native_symbol(normalize_symbol(instrument)) == instrument


@pytest.mark.parametrize("symbol", ["FOOBAR", "USDT", "BTC--USDT", "-BTC"])
def test_okx_unknown_quote_is_a_configuration_error(symbol: str) -> None:
    with pytest.raises(ConfigError, match=r"BASE-QUOTE|empty part"):
        okx.Okx().native_symbol(symbol)


# =========================================================================== Coinbase

COINBASE_FILE = "COINBASE.ws.28.0"
COINBASE_MATCH = (
    b'{"type":"match","trade_id":280232,"maker_order_id":"2a0da34e-61f7-4c36-88e5-c9dd15927b16",'
    b'"taker_order_id":"3c82abaa-c01e-4608-be59-6a1e69742891","side":"sell","size":"985",'
    b'"price":"0.00001305","product_id":"SKL-BTC","sequence":177100030,'
    b'"time":"2021-04-17T16:43:37.089723Z"}'
)


@cache
def coinbase_raw() -> tuple[tuple[float, dict[str, Any]], ...]:
    return tuple((recv_s, json.loads(raw)) for recv_s, raw in cryptofeed_messages(COINBASE_FILE))


def test_coinbase_recording_yields_every_match_and_last_match() -> None:
    trades = parse_recording(coinbase.Coinbase(), COINBASE_FILE)
    kinds = Counter(obj["type"] for _, obj in coinbase_raw())
    assert (kinds["match"], kinds["last_match"]) == (97, 10)  # the manifest's counts
    raw = [(r, o) for r, o in coinbase_raw() if o["type"] in ("match", "last_match")]
    assert len(trades) == len(raw) == 107
    for trade, (recv_s, obj) in zip(trades, raw, strict=True):
        assert trade.venue == "coinbase"
        assert trade.symbol == obj["product_id"].replace("-", "")
        assert trade.id == str(obj["trade_id"])
        assert (trade.price, trade.qty) == (obj["price"], obj["size"])
        assert trade.side == {"buy": "sell", "sell": "buy"}[obj["side"]]  # maker side inverted
        assert trade.ts_ms == iso_ms(obj["time"])
        assert trade.recv_ms == int(recv_s * 1000)


def test_coinbase_match_side_is_the_makers_the_ticker_side_the_takers() -> None:
    """Every recorded match also appears in ``ticker`` (same trade id), whose ``side`` is the
    taker's per Coinbase's docs: the two are opposite every time, and our side is the ticker's."""
    ticker_side = {
        (o["product_id"], o["trade_id"]): o["side"]
        for _, o in coinbase_raw()
        if o["type"] == "ticker"
    }
    compared = 0
    for _, obj in coinbase_raw():
        if obj["type"] in ("match", "last_match"):
            (trade,) = coinbase.Coinbase().parse_frame(obj)
            taker = ticker_side.get((obj["product_id"], obj["trade_id"]))
            if taker is not None:
                assert obj["side"] != taker
                assert trade.side == taker
                compared += 1
    assert compared == 107


def test_coinbase_recorded_ids_are_consecutive_per_product() -> None:
    ids: dict[str, list[int]] = defaultdict(list)
    for trade in parse_recording(coinbase.Coinbase(), COINBASE_FILE):
        ids[trade.symbol].append(int(trade.id))
    assert len(ids) == 10
    for run in ids.values():
        assert run == list(range(run[0], run[0] + len(run)))


def test_coinbase_every_other_recorded_frame_yields_nothing_and_acks_are_labelled() -> None:
    labels: Counter[str | None] = Counter()
    for _, raw in cryptofeed_messages(COINBASE_FILE):
        if json.loads(raw)["type"] not in ("match", "last_match"):
            assert coinbase.Coinbase().parse_frame(raw) == []
        labels[coinbase.Coinbase().control(raw)] += 1
    assert labels == Counter({None: len(cryptofeed_messages(COINBASE_FILE)) - 3, "subscribed": 3})


def test_coinbase_frame_from_docstring() -> None:
    expected = Trade(
        venue="coinbase",
        symbol="SKLBTC",
        id="280232",
        price="0.00001305",
        qty="985",
        side="buy",
        ts_ms=1618677817089,
        recv_ms=1618677817129,
    )
    assert coinbase.Coinbase().parse_frame(COINBASE_MATCH, 1618677817129) == [expected]
    assert coinbase.Coinbase().parse_frame(COINBASE_MATCH.decode(), 1618677817129) == [expected]
    assert coinbase.Coinbase().parse_frame(orjson.loads(COINBASE_MATCH), 1618677817129) == [
        expected
    ]
    last = orjson.loads(COINBASE_MATCH) | {"type": "last_match"}
    assert coinbase.Coinbase().parse_frame(last, 1618677817129) == [expected]


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2021-04-17T16:43:37.089723Z", 1618677817089),
        ("2021-04-17T16:43:37Z", 1618677817000),
        ("2021-04-17T16:43:37.5Z", 1618677817500),
        ("2021-04-17T16:43:37.999999999Z", 1618677817999),  # truncated, never rounded up
        ("2021-04-17T16:59:59.99960Z", 1618678799999),  # stays in its minute
        ("2021-04-17T18:43:37.089723+02:00", 1618677817089),
        ("2021-04-17T11:43:37.089-05:00", 1618677817089),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_coinbase_iso_times_convert_exactly(text: str, ms: int) -> None:
    assert coinbase.iso_to_ms(text) == ms
    if "999999999" not in text:
        assert iso_ms(text) == ms  # the standard library agrees (it reads up to µs)


@pytest.mark.parametrize(
    "text",
    ["2021-04-17 16:43:37", "2021-04-17T16:43:37", "2021-13-17T16:43:37Z", "yesterday", ""],
)
def test_coinbase_bad_iso_times(text: str) -> None:
    frame = orjson.loads(COINBASE_MATCH) | {"time": text}
    assert reason_of(coinbase.Coinbase(), frame) == "bad_timestamp"


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "subscriptions", "channels": [{"name": "matches", "product_ids": ["BTC-USD"]}]},
        {"type": "heartbeat", "sequence": 90, "last_trade_id": 20, "product_id": "BTC-USD"},
        {"type": "error", "message": "Failed to subscribe", "reason": "BTC-XYZ is not a valid"},
        {"type": "ticker", "trade_id": 881613, "price": "14.7775", "side": "buy"},
        {"type": "l2update", "product_id": "SKL-BTC", "changes": []},
        {"type": "something_new"},
    ],
)
def test_coinbase_non_trade_messages_yield_nothing(frame: dict[str, Any]) -> None:
    assert coinbase.Coinbase().parse_frame(frame) == []
    assert coinbase.Coinbase().parse_frame(orjson.dumps(frame)) == []


def test_coinbase_control_labels() -> None:
    assert coinbase.Coinbase().control(b'{"type":"subscriptions","channels":[]}') == "subscribed"
    assert (
        coinbase.Coinbase().control('{"type":"error","message":"Failed to subscribe"}') == "error"
    )
    assert coinbase.Coinbase().control({"type": "heartbeat", "last_trade_id": 20}) == "heartbeat"
    assert coinbase.Coinbase().control(COINBASE_MATCH) is None
    assert coinbase.Coinbase().control(orjson.loads(COINBASE_MATCH)) is None


def _cb_match(**changes: Any) -> dict[str, Any]:
    obj = dict(orjson.loads(COINBASE_MATCH))
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not ...}


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ({"type": 5}, "venue_frame"),
        (_cb_match(product_id=...), "missing_field"),
        (_cb_match(product_id=["SKL-BTC"]), "bad_type"),
        (_cb_match(side=...), "missing_field"),
        (_cb_match(side="taker"), "bad_side"),
        (_cb_match(side=["sell"]), "bad_side"),
        (_cb_match(trade_id=...), "missing_field"),
        (_cb_match(trade_id={"id": 1}), "bad_type"),
        (_cb_match(price=...), "missing_field"),
        (_cb_match(size="-985"), "non_positive"),
        (_cb_match(price="1e"), "bad_decimal"),
        (_cb_match(time=...), "missing_field"),
        (_cb_match(time=1618677817089), "bad_timestamp"),
    ],
)
def test_coinbase_malformed_frames(frame: Any, reason: str) -> None:
    assert reason_of(coinbase.Coinbase(), frame) == reason


def test_coinbase_subscription_messages() -> None:
    assert coinbase.Coinbase().subscribe_messages(["BTCUSD"]) == [
        '{"type":"subscribe","product_ids":["BTC-USD"],"channels":["matches"]}'
    ]
    (message,) = coinbase.Coinbase().subscribe_messages(["BTCUSD", "btc-usd", "ETHBTC", "SKL-GBP"])
    assert json.loads(message)["product_ids"] == ["BTC-USD", "ETH-BTC", "SKL-GBP"]


def test_coinbase_subscription_equals_the_recorded_client_byte_for_byte() -> None:
    recorded = [s for s in cryptofeed_sent(COINBASE_FILE) if b'"matches"' in s]
    (frame,) = recorded
    products = json.loads(frame)["product_ids"]
    assert coinbase.Coinbase().subscribe_messages(products) == [frame.decode()]
    normalized = [normalize_symbol(p) for p in products]
    assert coinbase.Coinbase().subscribe_messages(normalized) == [
        frame.decode()
    ]  # via the quote split


@pytest.mark.parametrize(
    ("symbol", "native"),
    [
        ("BTCUSD", "BTC-USD"),
        ("ethusd", "ETH-USD"),
        ("BTCUSDC", "BTC-USDC"),
        ("USDTUSD", "USDT-USD"),
        ("ETHBTC", "ETH-BTC"),
        ("SKLGBP", "SKL-GBP"),
        ("NMREUR", "NMR-EUR"),
        ("BTC-USD", "BTC-USD"),
        ("btc/usd", "BTC-USD"),
    ],
)
def test_coinbase_native_symbol(symbol: str, native: str) -> None:
    assert coinbase.Coinbase().native_symbol(symbol) == native
    assert coinbase.Coinbase().native_symbol(normalize_symbol(native)) == native  # round trip


def test_coinbase_unknown_quote_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="BASE-QUOTE"):
        coinbase.Coinbase().native_symbol("FOOBAR")


# =========================================================================== Bybit

#: Bybit v5 docs, WebSocket Stream / Public / Trade: the documented spot push.
BYBIT_V5: dict[str, Any] = {
    "topic": "publicTrade.BTCUSDT",
    "type": "snapshot",
    "ts": 1672304486868,
    "data": [
        {
            "T": 1672304486865,
            "s": "BTCUSDT",
            "S": "Buy",
            "v": "0.001",
            "p": "16578.50",
            "L": "PlusTick",
            "i": "20f43950-d8dd-5b31-9112-a178eb6023af",
            "BT": False,
        }
    ],
}
BYBIT_LEGACY_FILES = ("BYBIT.ws.25.0", "BYBIT.ws.26.0")


def test_bybit_v5_documented_frame() -> None:
    expected = Trade(
        venue="bybit",
        symbol="BTCUSDT",
        id="20f43950-d8dd-5b31-9112-a178eb6023af",
        price="16578.50",
        qty="0.001",
        side="buy",
        ts_ms=1672304486865,  # T, the fill time — not the message time ts
        recv_ms=1672304486900,
    )
    assert bybit.Bybit().parse_frame(BYBIT_V5, recv_ms=1672304486900) == [expected]
    assert bybit.Bybit().parse_frame(orjson.dumps(BYBIT_V5), 1672304486900) == [expected]
    assert bybit.Bybit().parse_frame(orjson.dumps(BYBIT_V5).decode(), 1672304486900) == [expected]


def test_bybit_v5_several_trades_in_order_with_both_sides() -> None:
    base = BYBIT_V5["data"][0]
    data = [
        base,
        base | {"T": 1672304486866, "S": "Sell", "i": "2290000000036455162", "p": "16578.00"},
        base | {"T": "1672304486867", "BT": True, "i": "2290000000036455163", "seq": 1783284617},
    ]
    trades = bybit.Bybit().parse_frame(BYBIT_V5 | {"data": data})
    assert [t.side for t in trades] == ["buy", "sell", "buy"]
    assert [t.ts_ms for t in trades] == [1672304486865, 1672304486866, 1672304486867]
    assert [t.id for t in trades][1:] == ["2290000000036455162", "2290000000036455163"]
    assert trades[1].price == "16578.00"  # block trades (BT) are kept


@cache
def bybit_legacy_raw(name: str) -> tuple[tuple[float, dict[str, Any]], ...]:
    out: list[tuple[float, dict[str, Any]]] = []
    for recv_s, raw in cryptofeed_messages(name):
        obj = json.loads(raw)
        if str(obj.get("topic", "")).startswith("trade."):
            out.extend((recv_s, item) for item in obj["data"])
    return tuple(out)


@pytest.mark.parametrize(("name", "count"), [("BYBIT.ws.25.0", 101), ("BYBIT.ws.26.0", 150)])
def test_bybit_legacy_recordings_yield_every_trade(name: str, count: int) -> None:
    trades = parse_recording(bybit.Bybit(), name)
    raw = bybit_legacy_raw(name)
    assert len(trades) == len(raw) == count
    for trade, (recv_s, item) in zip(trades, raw, strict=True):
        assert trade.venue == "bybit"
        assert trade.symbol == item["symbol"]
        assert trade.id == item["trade_id"]
        assert trade.side == item["side"].lower()
        assert trade.ts_ms == int(item["trade_time_ms"])  # never the 1 s-resolution timestamp
        assert trade.recv_ms == int(recv_s * 1000)
        for ours, theirs in ((trade.price, item["price"]), (trade.qty, item["size"])):
            if isinstance(theirs, str):
                assert ours == theirs  # text exactly as sent
            else:
                assert Decimal(ours) == Decimal(repr(theirs))  # JSON numbers, exactly
    assert {t.side for t in trades} == {"buy", "sell"}


def test_bybit_legacy_side_is_the_takers() -> None:
    """An aggressive buy lifts the ask (an up-tick), an aggressive sell hits the bid: the legacy
    ``side`` agrees with the tick direction far more often than chance, so it is the taker's."""
    agree = total = 0
    for name in BYBIT_LEGACY_FILES:
        for trade, (_, item) in zip(
            parse_recording(bybit.Bybit(), name), bybit_legacy_raw(name), strict=True
        ):
            up = item["tick_direction"] in ("PlusTick", "ZeroPlusTick")
            agree += (trade.side == "buy") == up
            total += 1
    assert (agree, total) == (219, 251)


def test_bybit_legacy_acks_are_labelled_and_other_frames_yield_nothing() -> None:
    for name, acks in (("BYBIT.ws.25.0", 16), ("BYBIT.ws.26.0", 4)):
        labels: Counter[str | None] = Counter()
        for _, raw in cryptofeed_messages(name):
            if not str(json.loads(raw).get("topic", "")).startswith("trade."):
                assert bybit.Bybit().parse_frame(raw) == []
            labels[bybit.Bybit().control(raw)] += 1
        assert labels == Counter({None: len(cryptofeed_messages(name)) - acks, "subscribed": acks})


@pytest.mark.parametrize(
    ("frame", "label"),
    [
        # Bybit v5 docs, WebSocket Connect: pongs of spot, linear/inverse, option.
        (
            {
                "success": True,
                "ret_msg": "pong",
                "conn_id": "0970e817-426e-429a-a679-ff7f55e0b16a",
                "op": "ping",
            },
            "pong",
        ),
        (
            {
                "success": True,
                "ret_msg": "pong",
                "conn_id": "465772b1-7630-4fdc-a492-e003e6f0f260",
                "req_id": "",
                "op": "ping",
            },
            "pong",
        ),
        ({"args": ["1672916271846"], "op": "pong"}, "pong"),
        (
            {
                "success": True,
                "ret_msg": "",
                "conn_id": "cejreassvfrsfvb9v1a0-2m",
                "op": "subscribe",
            },
            "subscribed",
        ),
        (
            {"success": False, "ret_msg": "error:handler not found", "op": "subscribe"},
            "error",
        ),
        (
            {"success": True, "ret_msg": "pong", "request": {"op": "ping", "args": None}},
            "pong",
        ),
        (BYBIT_V5, None),
        ({"topic": "orderbook.50.BTCUSDT", "type": "delta", "data": {}}, None),
    ],
)
def test_bybit_control_labels(frame: dict[str, Any], label: str | None) -> None:
    assert bybit.Bybit().control(frame) == label
    assert bybit.Bybit().control(orjson.dumps(frame)) == label
    if label is not None:
        assert bybit.Bybit().parse_frame(frame) == []


def _bybit_item(**changes: Any) -> dict[str, Any]:
    item = dict(BYBIT_V5["data"][0])
    item.update(changes)
    return BYBIT_V5 | {"data": [{k: v for k, v in item.items() if v is not ...}]}


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ({"topic": 5}, "venue_frame"),
        ({"topic": "publicTrade.BTCUSDT"}, "venue_frame"),
        ({"topic": "publicTrade.BTCUSDT", "data": {"T": 1}}, "venue_frame"),
        ({"topic": "trade.BTCUSD", "data": [7]}, "venue_frame"),
        (_bybit_item(S=...), "missing_field"),
        (_bybit_item(S="buy"), "bad_side"),
        (_bybit_item(S=1), "bad_side"),
        (_bybit_item(s=5), "bad_type"),
        (_bybit_item(i=...), "missing_field"),
        (_bybit_item(p=...), "missing_field"),
        (_bybit_item(v="0"), "non_positive"),
        (_bybit_item(p="16578.500000001"), "precision"),
        (_bybit_item(T=...), "missing_field"),
        (_bybit_item(T=1672304486), "bad_timestamp"),
        (_bybit_item(T="soon"), "bad_timestamp"),
    ],
)
def test_bybit_malformed_frames(frame: Any, reason: str) -> None:
    assert reason_of(bybit.Bybit(), frame) == reason


def test_bybit_symbol_of_the_topic_when_the_item_has_none() -> None:
    assert bybit.Bybit().parse_frame(_bybit_item(s=...))[0].symbol == "BTCUSDT"


def test_bybit_subscription_messages() -> None:
    assert bybit.Bybit().subscribe_messages(["BTCUSDT"]) == [
        '{"op":"subscribe","args":["publicTrade.BTCUSDT"]}'
    ]
    many = bybit.Bybit().subscribe_messages([f"C{i}USDT" for i in range(23)] + ["c0usdt"])
    assert [len(json.loads(m)["args"]) for m in many] == [10, 10, 3]  # ≤ 10 args on spot
    args = [a for m in many for a in json.loads(m)["args"]]
    assert len(set(args)) == len(args) == 23  # "c0usdt" is C0USDT again
    widest = [f"{'X' * 12}{i:04d}USDT" for i in range(bybit.Bybit.max_symbols_per_connection)]
    topics = [a for m in bybit.Bybit().subscribe_messages(widest) for a in json.loads(m)["args"]]
    assert len(json.dumps(topics)) < 21_000  # Bybit's args budget per public connection


def test_bybit_subscription_has_the_recorded_client_shape() -> None:
    recorded = json.loads(cryptofeed_sent("BYBIT.ws.25.0")[0])
    assert recorded == {"op": "subscribe", "args": ["trade.BCHUSDT"]}
    (ours,) = bybit.Bybit().subscribe_messages(["BCHUSDT"])
    assert json.loads(ours) == recorded | {"args": ["publicTrade.BCHUSDT"]}  # v5 topic name


@pytest.mark.parametrize(
    ("symbol", "native"),
    [
        ("BTCUSDT", "BTCUSDT"),
        ("btcusdt", "BTCUSDT"),
        ("BTC-USDT", "BTCUSDT"),
        ("eth/btc", "ETHBTC"),
    ],
)
def test_bybit_native_symbol(symbol: str, native: str) -> None:
    assert bybit.Bybit().native_symbol(symbol) == native
    assert bybit.Bybit().native_symbol(native) == native


# =========================================================================== Finnhub


@cache
def finnhub_lines() -> tuple[bytes, ...]:
    return tuple(line for line in FINNHUB_JSONL.read_bytes().split(b"\n") if line.strip())


@cache
def binance_spot_trades() -> tuple[tuple[Decimal, Decimal, int], ...]:
    """(price, qty, trade time) of every ``@trade`` event of the hftbacktest spot recording."""
    out = []
    with gzip.open(SPOT_BTCUSDT_GZ, "rb") as stream:
        for line in stream:
            _, _, raw = line.rstrip(b"\n").partition(b" ")
            if b"@trade" not in raw[:40]:
                continue
            data = json.loads(raw)["data"]
            out.append((Decimal(data["p"]), Decimal(data["q"]), data["T"]))
    return tuple(out)


def test_finnhub_derived_recording_equals_the_binance_trades() -> None:
    lines = finnhub_lines()
    assert len(lines) == 932
    parser = finnhub.Finnhub()
    trades = [t for line in lines for t in parser.parse_frame(line, recv_ms=1723161256000)]
    assert len(trades) == sum(len(json.loads(line)["data"]) for line in lines) == 9757
    ours = Counter((Decimal(t.price), Decimal(t.qty), t.ts_ms) for t in trades)
    assert ours == Counter(binance_spot_trades())
    assert {(t.venue, t.symbol, t.side, t.recv_ms) for t in trades} == {
        ("finnhub", "BINANCE:BTCUSDT", None, 1723161256000)
    }


def test_finnhub_fields_map_from_raw_messages() -> None:
    parser = finnhub.Finnhub()
    seen: Counter[tuple[str, int]] = Counter()
    for line in finnhub_lines()[:200]:
        items = json.loads(line)["data"]
        trades = parser.parse_frame(line)
        assert len(trades) == len(items)
        for trade, item in zip(trades, items, strict=True):
            assert trade.ts_ms == item["t"]
            assert Decimal(trade.price) == Decimal(repr(item["p"]))
            assert Decimal(trade.qty) == Decimal(repr(item["v"]))
            assert "e" not in trade.qty.lower()  # a plain decimal string, never 9e-05
            # The n-th trade of this symbol and millisecond on the connection, from 0.
            assert trade.id == f"{item['t']}-{seen[(item['s'], item['t'])]}"
            seen[(item["s"], item["t"])] += 1


def test_finnhub_first_message_from_docstring() -> None:
    (trade,) = finnhub.Finnhub().parse_frame(finnhub_lines()[0])
    assert trade == Trade(
        venue="finnhub",
        symbol="BINANCE:BTCUSDT",
        id="1723161255342-0",
        price="61837.63",
        qty="0.02",
        side=None,
        ts_ms=1723161255342,
    )


def test_finnhub_ids_are_unique_in_the_stream_and_the_same_when_it_is_read_again() -> None:
    lines = finnhub_lines()
    parser, again = finnhub.Finnhub(), finnhub.Finnhub()
    first = [t.id for line in lines for t in parser.parse_frame(line)]
    second = [t.id for line in lines for t in again.parse_frame(orjson.loads(line))]
    assert first == second
    # Identical trades in the same millisecond are real (4 pairs in this recording): each gets
    # its own id, so deduplicating by id never drops one.
    contents = Counter(
        (item["t"], item["p"], item["v"]) for line in lines for item in json.loads(line)["data"]
    )
    assert sum(n - 1 for n in contents.values() if n > 1) >= 4
    assert len(set(first)) == len(first) == 9757


def test_finnhub_a_rejected_message_does_not_shift_later_ids() -> None:
    good = {"type": "trade", "data": [{"p": 1.5, "s": "AAPL", "t": 1723161255342, "v": 3}]}
    bad = {"type": "trade", "data": [good["data"][0], {"p": "x", "s": "AAPL", "t": 1, "v": 1}]}
    parser = finnhub.Finnhub()
    with pytest.raises(ParseError):
        parser.parse_frame(bad)
    assert [t.id for t in parser.parse_frame(good)] == ["1723161255342-0"]


def test_finnhub_symbols_keep_their_exchange_prefix() -> None:
    frame = {
        "type": "trade",
        "data": [
            {"c": None, "p": 61837.63, "s": "BINANCE:BTCUSDT", "t": 1723161255342, "v": 0.02},
            {"c": None, "p": 1.1, "s": "OANDA:EUR_USD", "t": 1723161255342, "v": 1000},
            {"c": ["1", "12"], "p": 129.58, "s": "AAPL", "t": 1672348887666, "v": 1},
        ],
    }
    assert [t.symbol for t in finnhub.Finnhub().parse_frame(frame)] == [
        "BINANCE:BTCUSDT",
        "OANDA:EURUSD",
        "AAPL",
    ]


def test_finnhub_price_updates_without_volume_are_not_trades() -> None:
    frame = {
        "type": "trade",
        "data": [
            {"c": None, "p": 1.1, "s": "OANDA:EUR_USD", "t": 1723161255342, "v": 0},
            {"c": None, "p": 1.1, "s": "OANDA:EUR_USD", "t": 1723161255343, "v": 0.0},
            {"c": None, "p": 1.2, "s": "OANDA:EUR_USD", "t": 1723161255344, "v": 5},
        ],
    }
    (trade,) = finnhub.Finnhub().parse_frame(frame)
    assert (trade.price, trade.qty, trade.id) == ("1.2", "5", "1723161255344-0")


@pytest.mark.parametrize(
    ("frame", "label"),
    [
        ({"type": "ping"}, "heartbeat"),
        ({"type": "error", "msg": "Invalid symbol XYZ"}, "error"),
        ({"type": "error", "msg": "Subscribing to too many symbols"}, "error"),
        ({"type": "news", "data": []}, None),
    ],
)
def test_finnhub_non_trade_messages(frame: dict[str, Any], label: str | None) -> None:
    assert finnhub.Finnhub().parse_frame(frame) == []
    assert finnhub.Finnhub().parse_frame(orjson.dumps(frame)) == []
    assert finnhub.Finnhub().control(frame) == label
    assert finnhub.Finnhub().control(orjson.dumps(frame)) == label
    assert finnhub.Finnhub().control(orjson.dumps(frame).decode()) == label


def test_finnhub_trade_messages_are_not_control() -> None:
    assert finnhub.Finnhub().control(finnhub_lines()[0]) is None
    assert finnhub.Finnhub().control(json.loads(finnhub_lines()[0])) is None


def _fh(**changes: Any) -> dict[str, Any]:
    item = {"c": None, "p": 61837.63, "s": "BINANCE:BTCUSDT", "t": 1723161255342, "v": 0.02}
    item.update(changes)
    return {"type": "trade", "data": [{k: v for k, v in item.items() if v is not ...}]}


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ({"type": 1}, "venue_frame"),
        ({"type": "trade"}, "venue_frame"),
        ({"type": "trade", "data": {"p": 1}}, "venue_frame"),
        ({"type": "trade", "data": ["x"]}, "venue_frame"),
        (_fh(s=...), "missing_field"),
        (_fh(s=["BINANCE:BTCUSDT"]), "bad_type"),
        (_fh(p=...), "missing_field"),
        (_fh(v=...), "missing_field"),
        (_fh(v=-1), "non_positive"),
        (_fh(p=True), "bad_type"),
        (_fh(p=1e-9), "precision"),
        (_fh(t=1723161255), "bad_timestamp"),  # seconds
        (_fh(t=1723161255342.5), "bad_timestamp"),
        (_fh(t=...), "missing_field"),
    ],
)
def test_finnhub_malformed_messages(frame: Any, reason: str) -> None:
    assert reason_of(finnhub.Finnhub(), frame) == reason


def test_finnhub_subscriptions_and_symbols_pass_through() -> None:
    assert finnhub.Finnhub().subscribe_messages(["BINANCE:BTCUSDT", "AAPL", " AAPL "]) == [
        '{"type":"subscribe","symbol":"BINANCE:BTCUSDT"}',
        '{"type":"subscribe","symbol":"AAPL"}',
    ]
    for symbol in ("BINANCE:BTCUSDT", "AAPL", "OANDA:EUR_USD", "BRK.B"):
        assert finnhub.Finnhub().native_symbol(symbol) == symbol
        assert finnhub.Finnhub().native_symbol(f"  {symbol} ") == symbol


# =========================================================================== properties

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

#: A valid trade frame of each venue, with the path of the dict holding its trade fields.
VALID_FRAMES: dict[str, tuple[dict[str, Any], tuple[Any, ...]]] = {
    "okx": (orjson.loads(OKX_PUSH), ("data", 0)),
    "coinbase": (orjson.loads(COINBASE_MATCH), ()),
    "bybit": (BYBIT_V5, ("data", 0)),
    "bybit-legacy": (
        {
            "topic": "trade.ETHUSDT",
            "data": [
                {
                    "symbol": "ETHUSDT",
                    "price": "2365.00",
                    "size": 0.23,
                    "trade_time_ms": "1618677784506",
                    "side": "Sell",
                    "trade_id": "b862869b-24da-5eef-b6fa-bfbe32cbfc69",
                }
            ],
        },
        ("data", 0),
    ),
    "finnhub": (_fh(), ("data", 0)),
}
MODULE_OF = {
    "okx": okx.Okx(),
    "coinbase": coinbase.Coinbase(),
    "bybit": bybit.Bybit(),
    "bybit-legacy": bybit.Bybit(),
    "finnhub": finnhub.Finnhub(),
}


def _only_parse_errors(module: Venue, frame: Any) -> None:
    try:
        trades = module.parse_frame(frame)
    except ParseError as exc:
        assert exc.reason in REASONS
    else:
        assert isinstance(trades, list)
        assert all(isinstance(t, Trade) and t.venue == module.name for t in trades)
    label = module.control(frame)
    assert label is None or isinstance(label, str)


@pytest.mark.parametrize("module", VENUE_MODULES, ids=lambda m: m.name)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_arbitrary_json_raises_nothing_but_parse_errors(module: Venue, value: Any) -> None:
    _only_parse_errors(module, value)
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return
    _only_parse_errors(module, text)
    _only_parse_errors(module, text.encode())


@pytest.mark.parametrize("module", VENUE_MODULES, ids=lambda m: m.name)
@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=64) | st.text(max_size=64))
def test_arbitrary_bytes_raise_nothing_but_parse_errors(module: Venue, raw: Any) -> None:
    _only_parse_errors(module, raw)


@pytest.mark.parametrize("name", sorted(VALID_FRAMES))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_field_replaced_by_any_json_raises_nothing_but_parse_errors(
    name: str, data: st.DataObject
) -> None:
    """The strongest fuzz: a real trade frame with one field (of the trade or the envelope)
    replaced by arbitrary JSON, or removed."""
    frame, path = VALID_FRAMES[name]
    frame = orjson.loads(orjson.dumps(frame))  # a private deep copy
    target = frame
    for step in path:
        target = target[step]
    holder = data.draw(st.sampled_from([target, frame]))
    key = data.draw(st.sampled_from(sorted(holder)))
    if data.draw(st.booleans()):
        holder[key] = data.draw(json_values)
    else:
        del holder[key]
    _only_parse_errors(MODULE_OF[name], frame)
    _only_parse_errors(MODULE_OF[name], json.dumps(frame).encode())
