"""The start-up fill's pure parts: window starts, REST rows → trades, and who fills at all
(no network: the REST clients here never send a request)."""

from __future__ import annotations

import httpx
import orjson
import pytest

from candlewax.cli import build_parser
from candlewax.codec import REASONS, ParseError
from connectors.live import LiveConnector, LiveOptions
from connectors.venues import (
    BINANCE,
    BYBIT,
    FINNHUB,
    OKX,
    VENUES,
    BinanceHistory,
    BinanceUsdmHistory,
    CoinbaseHistory,
    History,
    RestRejection,
    fill_starts,
)

NOW = 1723161450000  # 2024-08-08 23:57:30 UTC
DAY = 86_400_000


def test_window_starts_are_longest_first_one_per_distinct_start() -> None:
    assert fill_starts(["1m", "5m", "15m", "30m", "1h"], NOW) == [
        ("1h", 1723158000000), ("30m", 1723159800000), ("15m", 1723160700000),
        ("5m", 1723161300000), ("1m", 1723161420000),
    ]  # fmt: skip
    # At 00:00:30 the 1h, 30m, 15m and 5m windows all start at 00:00: the longest is kept.
    midnight = 1723161600000
    assert fill_starts(["1m", "5m", "1h", "30m", "15m"], midnight + 30_000) == [("1h", midnight)]
    assert fill_starts(["1m"], midnight) == [("1m", midnight)]


def test_a_day_interval_reaches_back_to_midnight_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``1d`` interval is handled like any other: the fill takes its window as the UTC day,
    so it reaches back up to a day (and, short of budget, falls back to 1h)."""
    from candlewax.codec import rules

    monkeypatch.setitem(rules.INTERVALS, "1d", DAY)
    assert fill_starts(["1h", "1d"], NOW) == [("1d", NOW - NOW % DAY), ("1h", 1723158000000)]


def _rejections(history: History, rows: list[object]) -> tuple[list[str], list[RestRejection]]:
    trades, rejected = history.trades_of(rows)
    return [t.id for t in trades], rejected


def test_binance_rows_become_the_trades_the_websocket_gives_bad_rows_are_refused() -> None:
    history = BinanceHistory(httpx.Client(), "btcusdt")
    good = {"id": 3735683259, "price": "61837.63000000", "qty": "0.02000000", "quoteQty": "1",
            "time": 1723161255342, "isBuyerMaker": True, "isBestMatch": True}  # fmt: skip
    (trade,), rejected = history.trades_of([good])
    assert not rejected
    assert (trade.venue, trade.symbol, trade.id, trade.price, trade.qty, trade.side, trade.ts_ms) == (
        "binance", "BTCUSDT", "3735683259", "61837.63000000", "0.02000000", "sell", 1723161255342,
    )  # fmt: skip
    bad = [
        {**good, "id": "x"},
        {**good, "price": "NaN"},
        {**good, "time": 1723161255},  # seconds
        {**good, "isBuyerMaker": "yes"},
        {k: v for k, v in good.items() if k != "qty"},
        "a string",
        [1, 2],
    ]
    ids, rejected = _rejections(history, bad)
    assert ids == []
    assert [r.reason for r in rejected] == [
        "bad_type", "bad_decimal", "bad_timestamp", "bad_type", "missing_field", "venue_frame",
        "venue_frame",
    ]  # fmt: skip
    assert all(r.reason in REASONS and r.raw for r in rejected)


def test_a_page_refuses_ids_outside_the_asked_range_drops_repeats_and_sorts() -> None:
    refused: list[RestRejection] = []
    history = BinanceHistory(httpx.Client(), "BTCUSDT", reject=refused.append)
    row = {"price": "1.0", "qty": "1.0", "time": 1723161255342, "isBuyerMaker": False}
    rows = [{**row, "id": i} for i in (12, 10, 11, 11, 9, 13)]
    page = history.page("/api/v3/historicalTrades", rows, 10, 12)
    assert [t.id for t in page.trades] == ["10", "11", "12"] and page.rows == 6
    assert [(r.reason, r.path) for r in refused] == [
        ("out_of_range", "/api/v3/historicalTrades")
    ] * 2


def test_usdm_and_coinbase_rows() -> None:
    usdm = BinanceUsdmHistory(httpx.Client(), "BTCUSDT")
    (trade,), _ = usdm.trades_of([{"a": 26129, "p": "0.01633102", "q": "4.70443515",
                                   "f": 27781, "l": 27781, "T": 1498793709153, "m": False}])  # fmt: skip
    assert (trade.venue, trade.id, trade.side) == ("binance-usdm", "26129", "buy")
    coinbase = CoinbaseHistory(httpx.Client(), "SKL-USD")
    (trade,), _ = coinbase.trades_of([{"time": "2021-04-17T16:43:37.121358Z", "trade_id": 1568268,
                                       "price": "0.791", "size": "450", "side": "sell"}])  # fmt: skip
    # REST's side is the maker's, as on the websocket: the taker bought.
    assert (trade.symbol, trade.id, trade.side, trade.ts_ms) == (
        "SKLUSD",
        "1568268",
        "buy",
        1618677817121,
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"<html>", "json"), (b'{"code":-1121,"msg":"Invalid symbol."}', "venue_frame"),
     (b'[{"id":1,"id":2}]', "duplicate_key"), (b"[NaN]", "json"),
     (b"[" + b"1," * 600_000 + b"1]", "too_large")],
)  # fmt: skip
def test_a_body_that_is_not_a_json_array_is_a_parse_error(body: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        History.read_rows(body)
    assert info.value.reason == reason


class _Frames:
    def frame(self, recv_ns: int, payload: bytes) -> None:
        return None

    def tick(self) -> None:
        return None


def test_only_connect_with_a_producer_and_a_venue_history_fills() -> None:
    fill = LiveOptions(ws_url="ws://127.0.0.1:9", rest_url="http://127.0.0.1:9", fill=True)
    producer = object()
    assert LiveConnector(BINANCE, ["BTCUSDT"], producer, fill).fills  # type: ignore[arg-type]
    # `candlewax record` records raw frames: never a fill, not even asked to.
    recorder = LiveConnector(BINANCE, ["BTCUSDT"], None, fill, recorder=_Frames())
    assert not recorder.fills and recorder.live.is_set() and recorder.rest is None
    for spec in (OKX, BYBIT):  # no REST trade history the connector can use
        assert not LiveConnector(spec, ["BTCUSDT"], producer, fill).fills  # type: ignore[arg-type]
    token = LiveOptions(ws_url="ws://127.0.0.1:9", fill=True, token="t")
    assert not LiveConnector(FINNHUB, ["AAPL"], producer, token).fills  # type: ignore[arg-type]
    off = LiveOptions(ws_url="ws://127.0.0.1:9", rest_url="http://127.0.0.1:9")
    assert not LiveConnector(BINANCE, ["BTCUSDT"], producer, off).fills  # type: ignore[arg-type]
    assert {name for name, spec in VENUES.items() if spec.history} == {
        "binance", "binance-usdm", "coinbase"
    }  # fmt: skip


def test_connect_fills_unless_told_not_to_and_record_has_no_such_flag() -> None:
    parser = build_parser()
    assert not parser.parse_args(["connect", "binance"]).no_fill
    args = parser.parse_args(["connect", "binance", "--no-fill", "--fill-max-requests", "7"])
    assert args.no_fill and args.fill_max_requests == 7
    with pytest.raises(SystemExit):
        parser.parse_args(["record", "binance", "--out", "d", "--no-fill"])


def test_rest_rejections_keep_their_raw_row() -> None:
    history = CoinbaseHistory(httpx.Client(), "BTC-USD")
    _, (rejection,) = history.trades_of([{"trade_id": 1, "price": "1", "size": "1",
                                           "side": "up", "time": "2021-04-17T16:43:37Z"}])  # fmt: skip
    assert rejection.reason == "bad_side" and orjson.loads(rejection.raw)["side"] == "up"
