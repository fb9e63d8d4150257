"""Coinbase, Finnhub and OKX through the live connection loop, against real local servers that
replay recorded frames and speak each venue's keep-alive and backfill semantics."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection

from candlewax.codec import DeadLetter, Gap, Trade, decode_message
from candlewax.errors import ConfigError
from candlewax.settings import Settings
from connectors.live import LiveConnector, LiveOptions
from connectors.producer import TradeProducer
from connectors.venues import BYBIT, COINBASE, FINNHUB, OKX
from tests.conftest import FIXTURES
from tests.kafka_read import read_topic
from tests.servers import CoinbaseRest, WsServer, drop, hold, send_all

pytestmark = pytest.mark.integration


def cryptofeed_frames(name: str, wanted: str) -> list[str]:
    """Recorded frames (server → client) of a cryptofeed capture that contain ``wanted``."""
    out = []
    for line in (FIXTURES / "cryptofeed" / name).read_text().splitlines()[1:]:
        head, sep, text = line.partition(": ")
        if not sep or " <- " in head:
            continue
        if wanted in text:
            out.append(text)
    return out


def run_until(connector: LiveConnector, done: Any, timeout_s: float = 40) -> None:
    runner = threading.Thread(target=connector.run)
    runner.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not done() and time.monotonic() < deadline:
            time.sleep(0.05)  # poll the condition; the deadline bounds it
    finally:
        connector.stop.set()
        runner.join(timeout=30)


def kafka_trades(settings: Settings) -> list[Trade]:
    values = [v for *_, v in read_topic(settings.bootstrap_servers, settings.topic("trades"))]
    return [r for v in values for r in decode_message(v)[0] if isinstance(r, Trade)]


def test_coinbase_gaps_are_backfilled_with_the_after_cursor(settings: Settings) -> None:
    frames = [
        f
        for f in cryptofeed_frames("COINBASE.ws.28.0", '"product_id":"SKL-USD"')
        if '"type":"match"' in f
    ]
    matches = [orjson.loads(f) for f in frames]
    ids = [m["trade_id"] for m in matches]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # the recording is gap-free
    rest = CoinbaseRest(
        [{k: m[k] for k in ("trade_id", "price", "size", "side", "time")} for m in matches]
    )

    async def first(ws: ServerConnection, server: WsServer) -> None:
        rest.available_until = ids[19]
        await send_all(ws, frames[:20])
        rest.available_until = ids[29]
        await drop(ws)

    async def second(ws: ServerConnection, server: WsServer) -> None:
        rest.available_until = ids[-1]
        await send_all(ws, frames[30:40] + frames[45:])  # 40-44 lost inside the session
        await hold(ws)

    stop = threading.Event()
    with WsServer([first, second], expect_subscribe=True) as ws_server, rest:
        producer = TradeProducer(settings.connection, settings.topic("trades"))
        options = LiveOptions(ws_url=ws_server.url, rest_url=rest.url, backoff_initial_s=0.1)
        connector = LiveConnector(COINBASE, ["SKL-USD"], producer, options, stop)
        run_until(connector, lambda: connector.stats().trades >= len(ids))
    trades = kafka_trades(settings)
    assert [int(t.id) for t in trades] == ids
    # Coinbase's `side` is the maker's: the aggressor is the other side.
    assert [t.side for t in trades] == ["buy" if m["side"] == "sell" else "sell" for m in matches]
    assert connector.stats().unrecovered == 0
    assert b'"subscribe"' in b"".join(ws_server.received[0]) and b"SKL-USD" in b"".join(
        ws_server.received[0]
    )


def test_finnhub_token_stays_out_of_logs_and_reconnects_leave_gap_records(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    lines = (
        (FIXTURES / "derived" / "finnhub_envelope_from_binance_btcusdt_20240808.jsonl")
        .read_text()
        .splitlines()
    )
    caplog.set_level(logging.DEBUG)

    async def first(ws: ServerConnection, server: WsServer) -> None:
        await send_all(ws, lines[:10])
        await drop(ws)

    async def second(ws: ServerConnection, server: WsServer) -> None:
        await send_all(ws, lines[10:20])
        await hold(ws)

    expected = sum(len([d for d in orjson.loads(x)["data"] if d["v"]]) for x in lines[:20])
    stop = threading.Event()
    with WsServer([first, second]) as ws_server:
        producer = TradeProducer(
            settings.connection, settings.topic("trades"), settings.topic("deadletter")
        )
        # `candlewax connect` reads FINNHUB_TOKEN(_FILE) at its entry point and hands it down.
        options = LiveOptions(
            ws_url=ws_server.url, backoff_initial_s=0.1, token="s3cr3t-token-value"
        )
        connector = LiveConnector(FINNHUB, ["BINANCE:BTCUSDT"], producer, options, stop)
        run_until(connector, lambda: connector.stats().trades >= expected)
    assert ws_server.paths[0] == "/?token=s3cr3t-token-value"  # the venue gets it ...
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("websockets")]
    assert ours and not any(
        "s3cr3t" in m for m in ours
    )  # ... nobody else does (the server's own logs aside)
    trades = kafka_trades(settings)
    assert len(trades) == expected and {t.symbol for t in trades} == {"BINANCE:BTCUSDT"}
    (gap,) = [
        DeadLetter.decode(v)
        for *_, v in read_topic(settings.bootstrap_servers, settings.topic("deadletter"))
    ]
    assert gap.reason == "gap" and "s3cr3t" not in gap.encode().decode()
    window = orjson.loads(gap.raw)
    assert window["from_ts_ms"] == max(
        t.ts_ms for t in trades[: sum(1 for t in trades if t.ts_ms <= window["from_ts_ms"])]
    )
    assert connector.stats().unrecovered == 1
    # The flow hears of it too: a Gap marker in `trades`, keyed like the symbol's trades.
    markers = [
        (k, r)
        for _, _, k, v in read_topic(settings.bootstrap_servers, settings.topic("trades"))
        for r in decode_message(v)[0]
        if isinstance(r, Gap)
    ]
    assert markers == [
        (
            b"finnhub:BINANCE:BTCUSDT",
            Gap("finnhub", "BINANCE:BTCUSDT", window["from_ts_ms"], window["to_ts_ms"]),
        )
    ]


def test_finnhub_without_token_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="FINNHUB_TOKEN is not set"):
        LiveConnector(
            FINNHUB, ["AAPL"], producer=None, options=LiveOptions(ws_url="ws://127.0.0.1:9")
        )  # type: ignore[arg-type]


@pytest.mark.parametrize("answers_pings", [True, False])
def test_okx_text_pings_keep_a_quiet_connection_alive(
    settings: Settings, answers_pings: bool
) -> None:
    """OKX wants the text "ping" and answers "pong": a silent but answering server is healthy;
    one that stops answering is stale and gets a new connection."""

    async def quiet(ws: ServerConnection, server: WsServer) -> None:
        async for message in ws:
            server.received[-1].append(message.encode() if isinstance(message, str) else message)
            if message == "ping" and answers_pings:
                await ws.send("pong")

    stop = threading.Event()
    with WsServer([quiet]) as ws_server:
        producer = TradeProducer(settings.connection, settings.topic("trades"))
        options = LiveOptions(ws_url=ws_server.url, ping_interval_s=0.2, stale_after_s=1.0)
        connector = LiveConnector(OKX, ["BTCUSDT"], producer, options, stop)
        deadline = time.monotonic() + 3.0
        run_until(connector, lambda: time.monotonic() > deadline, timeout_s=10)
    received = b"".join(ws_server.received[0])
    assert b'"instId":"BTC-USDT"' in received and b"ping" in received
    stale = connector.stats().reconnects.get("stale", 0)
    assert (stale == 0) if answers_pings else (stale >= 1)


def test_unknown_symbol_spelling_fails_before_connecting() -> None:
    with pytest.raises(ConfigError):
        LiveConnector(COINBASE, ["NOTAPAIR"], producer=None, options=LiveOptions())  # type: ignore[arg-type]


def test_server_pings_are_answered_and_rotation_reconnects_without_loss(settings: Settings) -> None:
    """The server pings every 0.2 s and drops clients that do not pong within 1 s: the connector
    must stay connected. With a 1.5 s lifetime it rotates proactively; trades sent around the
    rotations are backfilled, so Kafka gets every id exactly once, in order."""
    frames = [
        f
        for f in cryptofeed_frames("COINBASE.ws.28.0", '"product_id":"SKL-USD"')
        if '"type":"match"' in f
    ]
    matches = [orjson.loads(f) for f in frames]
    ids = [m["trade_id"] for m in matches]
    rest = CoinbaseRest(
        [{k: m[k] for k in ("trade_id", "price", "size", "side", "time")} for m in matches]
    )
    served = {"next": 0}

    async def trickle(ws: ServerConnection, server: WsServer) -> None:
        while served["next"] < len(frames):  # 2 frames per 0.1 s, continuing across sessions
            chunk = frames[served["next"] : served["next"] + 2]
            served["next"] += len(chunk)
            rest.available_until = ids[served["next"] - 1]
            await send_all(ws, chunk)
            await asyncio.sleep(0.1)
        await hold(ws)

    stop = threading.Event()
    with WsServer([trickle], ping_interval=0.2) as ws_server, rest:
        producer = TradeProducer(settings.connection, settings.topic("trades"))
        options = LiveOptions(
            ws_url=ws_server.url, rest_url=rest.url, max_lifetime_s=1.0, ping_interval_s=5.0,
            stale_after_s=10.0, backoff_initial_s=0.1,
        )  # fmt: skip
        connector = LiveConnector(COINBASE, ["SKL-USD"], producer, options, stop)
        run_until(connector, lambda: connector.stats().trades >= len(ids))
    stats = connector.stats()
    assert stats.reconnects.get("rotation", 0) >= 1
    assert set(stats.reconnects) == {"rotation"}  # pings answered: never dropped for silence
    assert [int(t.id) for t in kafka_trades(settings)] == ids


def test_bybit_v5_subscribe_ack_trades_and_json_pings(settings: Settings) -> None:
    """A Bybit v5 spot session: the subscribe request is acknowledged, real BTCUSDT trades are
    pushed in v5 form, and the client's {"op":"ping"} keep-alives are answered — so a tight
    stale watchdog never fires."""
    from tests.integration.test_live_binance import recorded

    _, data = recorded()
    pushes = [
        orjson.dumps(
            {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": d["E"], "data": [
                {"T": d["T"], "s": "BTCUSDT", "S": "Sell" if d["m"] else "Buy", "v": d["q"],
                 "p": d["p"], "L": "ZeroPlusTick", "i": f"bybit-{d['t']}", "BT": False}]}
        ).decode()
        for d in data[:120]
    ]  # fmt: skip

    async def session(ws: ServerConnection, server: WsServer) -> None:
        async for message in ws:
            server.received[-1].append(message.encode() if isinstance(message, str) else message)
            request = orjson.loads(message)
            if request.get("op") == "subscribe":
                await ws.send(
                    orjson.dumps(
                        {"success": True, "ret_msg": "", "conn_id": "c1", "op": "subscribe"}
                    ).decode()
                )
                await send_all(ws, pushes)
            elif request.get("op") == "ping":
                await ws.send(
                    orjson.dumps(
                        {"success": True, "ret_msg": "pong", "conn_id": "c1", "op": "ping"}
                    ).decode()
                )

    stop = threading.Event()
    with WsServer([session]) as ws_server:
        producer = TradeProducer(settings.connection, settings.topic("trades"))
        options = LiveOptions(ws_url=ws_server.url, ping_interval_s=0.2, stale_after_s=1.0)
        connector = LiveConnector(BYBIT, ["BTCUSDT"], producer, options, stop)
        deadline = time.monotonic() + 2.5  # long enough for several pings past stale_after_s
        run_until(
            connector, lambda: time.monotonic() > deadline and connector.stats().trades >= 120
        )
    trades = kafka_trades(settings)
    assert [(t.id, t.price, t.qty, t.ts_ms) for t in trades] == [
        (f"bybit-{d['t']}", d["p"], d["q"], d["T"]) for d in data[:120]
    ]
    assert [t.side for t in trades] == ["sell" if d["m"] else "buy" for d in data[:120]]
    received = [orjson.loads(m) for m in ws_server.received[0]]
    assert received[0] == {"op": "subscribe", "args": ["publicTrade.BTCUSDT"]}
    assert sum(1 for m in received if m.get("op") == "ping") >= 5
    assert connector.stats().reconnects == {}
