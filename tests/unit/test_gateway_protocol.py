"""The gateway's WebSocket protocol over real connections (the app on uvicorn on 127.0.0.1,
no Kafka): Binance's methods and error shapes, the limits, the origin check, logins."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from candlewax.settings import Settings
from sinks.gateway.auth import key_hash, sign
from sinks.gateway.protocol import ProtocolError, parse_request
from sinks.gateway.streams import Stream, StreamError, parse_stream
from tests.gateway_client import Reader, running_gateway

INTERVALS = ("1m", "5m", "15m", "30m", "1h", "1d")


@pytest.fixture
def base(tmp_path: Path):
    keys = tmp_path / "keys.toml"
    keys.write_text(f'desk-1 = "{key_hash("s3cret")}"\n')
    settings = Settings(data_dir=tmp_path / "data")
    limits = {"max_streams": 4, "max_connections": 3, "keys_file": keys,
              "allowed_origins": ("https://app.example",)}  # fmt: skip
    with running_gateway(settings, feed=False, **limits) as url:
        yield url.replace("http", "ws")


# --------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("name", "channel", "kind"),
    [
        ("btcusdt@kline_1m", "binance:btcusdt@kline_1m", "kline"),
        ("BTCUSDT@kline_1h", "binance:btcusdt@kline_1h", "kline"),
        ("okx:btcusdt@trade", "okx:btcusdt@trade", "trade"),
        ("finnhub:binance:btcusdt@ticker", "finnhub:binance:btcusdt@ticker", "ticker"),
        ("binance-usdm:ethusdt@alert", "binance-usdm:ethusdt@alert", "alert"),
        ("!ticker@arr", "!ticker@arr", "all_tickers"),
        ("!alert", "!alert", "all_alerts"),
        ("user", "user", "user"),
    ],
)
def test_stream_names_and_their_channels(name: str, channel: str, kind: str) -> None:
    stream = parse_stream(name, "binance", INTERVALS)
    assert (stream.channel, stream.kind) == (channel, kind)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "btcusdt",
        "btcusdt@kline_2m",
        "btcusdt@depth",
        "@trade",
        "btc usdt@trade",
        "a" * 200,
        "btcusdt@trade\n",
        "ünï@trade",
        7,
        None,
        ["btcusdt@trade"],
    ],
)
def test_bad_stream_names_are_refused_with_a_reason(name: object) -> None:
    with pytest.raises(StreamError) as info:
        parse_stream(name, "binance", INTERVALS)
    assert str(info.value) and "\n" not in str(info.value)


def test_without_a_default_venue_the_venue_is_required() -> None:
    with pytest.raises(StreamError, match="no venue"):
        parse_stream("btcusdt@trade", None, INTERVALS)
    assert parse_stream("okx:btcusdt@trade", None, INTERVALS) == Stream("trade", "okx", "BTCUSDT")


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (b"{not json", 3),
        (b"[1, 2]", 2),
        (b'{"id": 1}', 2),
        (b'{"method": "SUBSCRIBER", "id": 1}', 2),
        (b'{"method": "SUBSCRIBE", "params": "btcusdt@trade", "id": 1}', 2),
        (b'{"method": "SUBSCRIBE", "params": [], "id": 1}', 2),
        (b'{"method": "LIST_SUBSCRIPTIONS", "id": 1.5}', 2),
        (b'{"method": "LIST_SUBSCRIPTIONS", "id": "' + b"x" * 37 + b'"}', 2),
        (b'{"method": "LIST_SUBSCRIPTIONS", "id": 1, "extra": 1}', 2),
        (b'{"method": "LIST_SUBSCRIPTIONS", "params": ["x"], "id": 1}', 2),
        (b'{"method": "SET_PROPERTY", "params": ["combined", 1], "id": 1}', 1),
        (b'{"method": "SET_PROPERTY", "params": ["compressed", true], "id": 1}', 0),
        (b'{"method": "LOGIN", "params": [], "id": 1}', 2),
    ],
)
def test_bad_requests_get_binance_error_codes(text: bytes, code: int) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request(text)
    reply = info.value.reply()
    assert reply["error"]["code"] == code and reply["error"]["msg"]
    assert set(reply) == {"error", "id"}


# --------------------------------------------------------------------------- over the socket


def test_subscribe_unsubscribe_and_list_echo_the_id(base: str) -> None:
    with Reader(f"{base}/ws") as c:
        c.send(
            {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m", "okx:ethusdt@trade"], "id": 1}
        )
        assert c.reply(1) == {"result": None, "id": 1}
        c.send({"method": "LIST_SUBSCRIPTIONS", "id": "abc"})
        assert c.reply("abc") == {"result": ["btcusdt@kline_1m", "okx:ethusdt@trade"], "id": "abc"}
        c.send({"method": "UNSUBSCRIBE", "params": ["binance:btcusdt@kline_1m"], "id": 2})
        assert c.reply(2) == {"result": None, "id": 2}
        c.send({"method": "LIST_SUBSCRIPTIONS", "id": 3})
        assert c.reply(3) == {"result": ["okx:ethusdt@trade"], "id": 3}
    with Reader(f"{base}/ws") as c:  # five messages a second at most: a second connection
        c.send({"method": "GET_PROPERTY", "params": ["combined"], "id": 4})
        assert c.reply(4) == {"result": False, "id": 4}
        c.send({"method": "SUBSCRIBE", "params": ["btcusdt@depth"], "id": 5})
        assert c.reply(5)["error"]["code"] == 2


def test_streams_in_the_url_and_the_stream_limit(base: str) -> None:
    with Reader(f"{base}/stream?streams=btcusdt@trade/ethusdt@trade") as c:
        c.send({"method": "LIST_SUBSCRIPTIONS", "id": 1})
        assert c.reply(1)["result"] == ["btcusdt@trade", "ethusdt@trade"]
        c.send({"method": "SUBSCRIBE", "params": ["a@trade", "b@trade", "c@trade"], "id": 2})
        assert "at most 4" in c.reply(2)["error"]["msg"]
        c.send({"method": "SUBSCRIBE", "params": ["a@trade", "b@trade"], "id": 3})
        assert c.reply(3) == {"result": None, "id": 3}
    with Reader(f"{base}/ws/btcusdt@trade/ethusdt@kline_5m") as c:
        c.send({"method": "LIST_SUBSCRIPTIONS", "id": 1})
        assert c.reply(1)["result"] == ["btcusdt@trade", "ethusdt@kline_5m"]
    for url in (f"{base}/ws/btcusdt@nope", f"{base}/stream?streams=a@trade/b@trade/c@trade/d@trade/e@trade"):  # fmt: skip
        with pytest.raises(InvalidStatus) as info:
            Reader(url)
        assert info.value.response.status_code == 400


def test_more_than_five_messages_a_second_closes_the_connection(base: str) -> None:
    with Reader(f"{base}/ws") as c:
        with pytest.raises(ConnectionClosed) as info:  # at a send after the close, or a read
            for i in range(8):
                c.send({"method": "LIST_SUBSCRIPTIONS", "id": i})
            c.wait(lambda _: False, timeout_s=10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008
        assert "too many messages" in info.value.rcvd.reason


def test_connections_beyond_the_maximum_are_refused(base: str) -> None:
    open_ = [Reader(f"{base}/ws") for _ in range(3)]
    try:
        with pytest.raises(InvalidStatus):
            Reader(f"{base}/ws")
    finally:
        for c in open_:
            c.close()
    deadline = time.monotonic() + 10
    while True:  # the slots free up once the server has seen the closes
        try:
            Reader(f"{base}/ws").close()
            break
        except InvalidStatus:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_a_foreign_origin_is_refused_and_a_listed_one_accepted(base: str) -> None:
    with pytest.raises(InvalidStatus):
        Reader(f"{base}/ws", origin="https://evil.example")
    Reader(f"{base}/ws", origin="https://app.example").close()
    host = base.removeprefix("ws://")
    Reader(f"{base}/ws", origin=f"http://{host}").close()  # the gateway's own page


def test_login_and_the_private_stream(base: str) -> None:
    now = int(time.time() * 1000)
    with Reader(f"{base}/ws") as c:
        c.send({"method": "SUBSCRIBE", "params": ["user"], "id": 1})
        assert "LOGIN first" in c.reply(1)["error"]["msg"]
        bad = [
            {"apiKey": "desk-1", "timestamp": now, "signature": sign("desk-1", "wrong", now)},
            {"apiKey": "desk-2", "timestamp": now, "signature": sign("desk-2", "s3cret", now)},
            {
                "apiKey": "desk-1",
                "timestamp": now - 60_000,
                "signature": sign("desk-1", "s3cret", now - 60_000),
            },
            {"apiKey": "desk-1", "timestamp": str(now), "signature": sign("desk-1", "s3cret", now)},
        ]
        replies = []
        for i, params in enumerate(bad, start=10):
            c.send({"method": "LOGIN", "params": params, "id": i})
            replies.append(c.reply(i))
        # every refusal looks the same: nothing tells which part was wrong
        assert {r["error"]["msg"] for r in replies} == {"Invalid request: login refused"}
    with Reader(f"{base}/ws") as c:
        c.send({"method": "SUBSCRIBE", "params": ["user"], "id": 2})
        assert "error" in c.reply(2)
        good = {"apiKey": "desk-1", "timestamp": now, "signature": sign("desk-1", "s3cret", now)}
        c.send({"method": "LOGIN", "params": good, "id": 3})
        assert c.reply(3) == {"result": {"user": "desk-1"}, "id": 3}
        c.send({"method": "SUBSCRIBE", "params": ["user"], "id": 4})
        assert c.reply(4) == {"result": None, "id": 4}


def test_rest_errors_in_binance_shape(base: str) -> None:
    http = base.replace("ws", "http")
    cases = {
        "": -1102,
        "?symbol=BTCUSDT": -1102,
        "?symbol=BTCUSDT&interval=2m": -1120,
        "?symbol=BTC USDT&interval=1m": -1121,
        "?symbol=BTCUSDT&interval=1m&limit=0": -1130,
        "?symbol=BTCUSDT&interval=1m&limit=1001": -1130,
        "?symbol=BTCUSDT&interval=1m&limit=abc": -1100,
        "?symbol=BTCUSDT&interval=1m&symbol=ETHUSDT": -1101,
        "?symbol=BTCUSDT&interval=1m&foo=1": -1104,
    }
    for query, code in cases.items():
        r = httpx.get(f"{http}/api/v3/klines{query}")
        assert r.status_code == 400, query
        assert r.json()["code"] == code, query
    assert httpx.get(f"{http}/api/v3/klines?symbol=BTCUSDT&interval=1m").json() == []
    # an empty range is no error: no window starts in it
    assert (
        httpx.get(f"{http}/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime=5&endTime=4").json()
        == []
    )
    assert httpx.get(f"{http}/healthz").json()["status"] == "ok"
