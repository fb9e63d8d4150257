"""The live Binance connector against a real websocket server and a REST server on 127.0.0.1
replaying recorded frames, publishing into the real broker.

Script (recorded spot BTCUSDT @trade frames, ids relative to the first one):
  session 1: trades 0-199, then the TCP connection drops; 200-299 happen during the outage
  session 2: trades 295-599 (295-299 again: duplicates) minus 400-409 (a gap inside the
             session), two garbage frames, then Binance's serverShutdown event
  session 3: trades 600-699, then the server hangs (no data, no pongs)
  session 4: trades 700-799, then stays healthy
The REST server only knows trades that "happened" and answers its first request with 429.
"""

from __future__ import annotations

import threading
import time
from functools import cache

import orjson
import pytest
from websockets.asyncio.server import ServerConnection

from candlewax.codec import DeadLetter, Gap, Trade, decode_message
from candlewax.settings import Settings
from connectors.live import LiveConnector, LiveOptions
from connectors.producer import TradeProducer
from connectors.venues import BINANCE
from tests.conftest import BTCUSDT_GZ
from tests.kafka_read import read_topic
from tests.servers import RestServer, WsServer, drop, hold, send_all, stall, trade_frames

pytestmark = pytest.mark.integration
N = 800


@cache
def recorded() -> tuple[list[str], list[dict]]:
    """The first N raw @trade frames of the capture, and their data objects."""
    return trade_frames(BTCUSDT_GZ, N)


def rest_rows(data: list[dict]) -> list[dict]:
    """The recorded trades as Binance's REST ``historicalTrades`` rows."""
    return [
        {"id": d["t"], "price": d["p"], "qty": d["q"], "quoteQty": "0", "time": d["T"],
         "isBuyerMaker": d["m"], "isBestMatch": True}
        for d in data
    ]  # fmt: skip


def test_connector_delivers_every_trade_once_in_order_through_failures(settings: Settings) -> None:
    frames, data = recorded()
    base = data[0]["t"]
    rows = rest_rows(data)
    rest = RestServer(rows)
    garbage = [
        '{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT",'
        '"t":1,"p":"NaN","q":"0.1","T":1723161255342,"m":true,"M":true}}',
        "not json",
    ]
    shutdown = orjson.dumps(
        {"stream": "btcusdt@trade", "data": {"e": "serverShutdown", "E": 1}}
    ).decode()

    async def session1(ws: ServerConnection, server: WsServer) -> None:
        rest.available_until = base + 199
        await send_all(ws, frames[0:200])
        rest.available_until = base + 299  # trades that happen while the client is away
        await drop(ws)

    async def session2(ws: ServerConnection, server: WsServer) -> None:
        rest.available_until = base + 599
        await send_all(ws, frames[295:400] + garbage + frames[410:600])
        await ws.send(shutdown)
        await hold(ws)

    async def session3(ws: ServerConnection, server: WsServer) -> None:
        rest.available_until = base + 699
        await send_all(ws, frames[600:700])
        await stall(ws)

    async def session4(ws: ServerConnection, server: WsServer) -> None:
        rest.available_until = base + N - 1
        await send_all(ws, frames[700:N])
        await hold(ws)

    rest.rate_limited = 1
    stop = threading.Event()
    with WsServer([session1, session2, session3, session4]) as ws_server, rest:
        producer = TradeProducer(
            settings.connection, settings.topic("trades"), settings.topic("deadletter")
        )
        options = LiveOptions(
            ws_url=ws_server.url, rest_url=rest.url, ping_interval_s=0.3, stale_after_s=2.0,
            backoff_initial_s=0.1, healthy_after_s=30.0,
        )  # fmt: skip
        connector = LiveConnector(BINANCE, ["BTCUSDT"], producer, options, stop)
        result: list = []
        runner = threading.Thread(target=lambda: result.append(connector.run()))
        runner.start()
        deadline = time.monotonic() + 60
        while connector.stats().trades < N and time.monotonic() < deadline:
            time.sleep(0.05)  # poll the condition; the deadline bounds it
        stop.set()
        runner.join(timeout=30)
    stats = result[0]

    # Kafka holds every trade exactly once, in id order, equal to the recorded frames.
    records = [
        r
        for *_, v in read_topic(settings.bootstrap_servers, settings.topic("trades"))
        for r in decode_message(v)[0]
    ]
    trades = [r for r in records if isinstance(r, Trade)]
    assert [int(t.id) for t in trades] == [d["t"] for d in data]
    assert [(t.price, t.qty, t.ts_ms, t.side) for t in trades] == [
        (d["p"], d["q"], d["T"], "sell" if d["m"] else "buy") for d in data
    ]
    # What happened on the way. How many trades come over REST vs. the new session races (a
    # reconnect backfills "up to now"), but the books balance exactly: everything received live
    # plus everything backfilled, minus what was dropped as a duplicate, is each trade once.
    live = stats.messages - stats.rejected
    assert live <= 200 + 105 + 190 + 100 + 100  # the last session may be overtaken by REST
    assert live + stats.backfilled - stats.duplicates == N
    assert stats.backfilled >= 100 + 10  # the outage and the in-session gap had to come from REST
    assert stats.duplicates >= 5  # 295-299 were sent twice
    assert stats.unrecovered == 0
    assert {"dropped", "server_shutdown", "stale"} <= set(stats.reconnects)
    assert ws_server.paths[0] == "/stream?streams=btcusdt@trade"
    # The 429 was honoured: the retry came at least Retry-After (1 s) later.
    (t429, _, status429), (t_next, _, status_next) = rest.requests[0], rest.requests[1]
    assert (status429, status_next) == (429, 200) and t_next - t429 >= 1.0
    # Garbage went to the dead-letter topic with its reason; the stream went on.
    letters = [
        DeadLetter.decode(v)
        for *_, v in read_topic(settings.bootstrap_servers, settings.topic("deadletter"))
    ]
    assert sorted(d.reason for d in letters) == ["bad_decimal", "json"]
    assert all(d.source["venue"] == "binance" and "token" not in str(d.source) for d in letters)


def test_banned_rest_is_counted_as_unrecovered_and_live_data_keeps_flowing(
    settings: Settings,
) -> None:
    frames, data = recorded()
    rest = RestServer([])
    rest.banned = True

    async def with_gap(ws: ServerConnection, server: WsServer) -> None:
        await send_all(ws, frames[0:50] + frames[60:100])
        await hold(ws)

    stop = threading.Event()
    with WsServer([with_gap]) as ws_server, rest:
        producer = TradeProducer(settings.connection, settings.topic("trades"))
        connector = LiveConnector(
            BINANCE,
            ["BTCUSDT"],
            producer,
            LiveOptions(ws_url=ws_server.url, rest_url=rest.url),
            stop,
        )
        runner = threading.Thread(target=connector.run)
        runner.start()
        deadline = time.monotonic() + 30
        while connector.stats().trades < 90 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        runner.join(timeout=30)
    stats = connector.stats()
    assert (stats.trades, stats.unrecovered, stats.backfilled) == (90, 1, 0)
    assert connector.rest is None  # 418: no more backfill requests from this process
    assert len(rest.requests) == 1
    # Trades 50..59 are lost: a Gap marker from the trade before them to the one after.
    markers = [
        r
        for *_, v in read_topic(settings.bootstrap_servers, settings.topic("trades"))
        for r in decode_message(v)[0]
        if isinstance(r, Gap)
    ]
    assert markers == [Gap("binance", "BTCUSDT", data[49]["T"], data[60]["T"] + 1)]


def _frame_with(frame: str, **changes: object) -> str:
    obj = orjson.loads(frame)
    obj["data"].update(changes)
    return orjson.dumps(obj).decode()


def _run(connector: LiveConnector, stop: threading.Event, until: object, timeout: float = 60):
    """Run the connector in a thread until ``until()`` holds (bounded by ``timeout``)."""
    result: list = []
    errors: list[BaseException] = []

    def main() -> None:
        try:
            result.append(connector.run())
        except BaseException as exc:
            errors.append(exc)

    runner = threading.Thread(target=main)
    runner.start()
    deadline = time.monotonic() + timeout
    while not until() and runner.is_alive() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)
    stop.set()
    runner.join(timeout=30)
    return result, errors


def _kafka_ids(settings: Settings) -> list[int]:
    return [
        int(r.id)
        for *_, v in read_topic(settings.bootstrap_servers, settings.topic("trades"))
        for r in decode_message(v)[0]
        if isinstance(r, Trade)
    ]


def test_bad_frames_between_good_ones_are_dead_lettered_and_the_connection_goes_on(
    settings: Settings,
) -> None:
    """Frames that used to kill the connection thread (an id "abc", a 5,000-digit price) and
    one that used to poison the id sequence (an id of 10**18) sit between good frames: the
    good trades reach Kafka exactly once, in order, over the one connection."""
    frames, data = recorded()
    bad = [
        _frame_with(frames[0], t="abc"),
        _frame_with(frames[0], t=data[99]["t"] + 1, p="9" * 5000),
        _frame_with(frames[0], t=10**18),
        "\x00not json at all",
    ]

    async def session(ws: ServerConnection, server: WsServer) -> None:
        await send_all(ws, frames[:100] + bad[:2] + frames[100:200] + bad[2:] + frames[200:300])
        await hold(ws)

    stop = threading.Event()
    with WsServer([session]) as ws_server:
        producer = TradeProducer(
            settings.connection, settings.topic("trades"), settings.topic("deadletter")
        )
        connector = LiveConnector(
            BINANCE, ["BTCUSDT"], producer, LiveOptions(ws_url=ws_server.url), stop
        )
        (stats,), errors = _run(connector, stop, lambda: connector.stats().trades >= 300)
    assert not errors
    assert _kafka_ids(settings) == [d["t"] for d in data[:300]]
    assert (stats.connects, stats.reconnects, stats.crashes) == (1, {}, 0)
    assert (stats.rejected, stats.implausible, stats.duplicates) == (3, 1, 0)
    letters = sorted(
        (d.reason, d.source["venue"])
        for *_, v in read_topic(settings.bootstrap_servers, settings.topic("deadletter"))
        for d in [DeadLetter.decode(v)]
    )
    assert letters == sorted(
        [(r, "binance") for r in ("bad_type", "bad_decimal", "implausible_id", "json")]
    )


def test_a_crashing_connection_thread_is_restarted_and_backfills_what_it_missed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (simulated: the parser raises a RuntimeError on one frame) ends the session, not
    the connector: the crash is counted, the connection comes back with backoff, and the trade
    of that frame arrives over REST. Every trade once."""
    from connectors.binance import Binance

    frames, data = recorded()
    rows = rest_rows(data)
    rest = RestServer(rows)
    rest.available_until = data[199]["t"]
    poisoned = frames[50]
    real_parse = Binance.parse_frame

    def buggy(self: Binance, frame: object, recv_ms: int | None = None) -> list[Trade]:
        text = frame.decode() if isinstance(frame, bytes) else frame
        if text == poisoned:
            raise RuntimeError("a bug in a parser")
        return real_parse(self, frame, recv_ms)  # type: ignore[arg-type]

    monkeypatch.setattr(Binance, "parse_frame", buggy)

    async def first(ws: ServerConnection, server: WsServer) -> None:
        await send_all(ws, frames[:100])
        await hold(ws)

    async def second(ws: ServerConnection, server: WsServer) -> None:
        await send_all(ws, frames[100:200])
        await hold(ws)

    stop = threading.Event()
    with WsServer([first, second]) as ws_server, rest:
        producer = TradeProducer(
            settings.connection, settings.topic("trades"), settings.topic("deadletter")
        )
        options = LiveOptions(ws_url=ws_server.url, rest_url=rest.url, backoff_initial_s=0.1)
        connector = LiveConnector(BINANCE, ["BTCUSDT"], producer, options, stop)
        (stats,), errors = _run(connector, stop, lambda: connector.stats().trades >= 200)
    assert not errors
    assert _kafka_ids(settings) == [d["t"] for d in data[:200]]
    assert stats.crashes == 1 and stats.reconnects.get("crash", 0) == 0
    assert stats.backfilled >= 50  # frames 50..99 of the crashed session came over REST


def test_a_connector_that_cannot_recover_stops_with_an_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connectors.binance import Binance

    def broken(self: Binance, frame: object, recv_ms: int | None = None) -> list[Trade]:
        raise RuntimeError("a bug in every frame")

    monkeypatch.setattr(Binance, "parse_frame", broken)
    frames, _ = recorded()

    async def session(ws: ServerConnection, server: WsServer) -> None:
        await send_all(ws, frames[:5])
        await hold(ws)

    stop = threading.Event()
    with WsServer([session]) as ws_server:
        producer = TradeProducer(settings.connection, settings.topic("trades"))
        options = LiveOptions(ws_url=ws_server.url, backoff_initial_s=0.05, max_crashes=2)
        connector = LiveConnector(BINANCE, ["BTCUSDT"], producer, options, stop)
        result, errors = _run(connector, stop, lambda: False, timeout=30)
    assert not result
    (error,) = errors
    assert "crashed 3 times" in str(error)


def test_the_api_key_goes_in_the_backfill_header_and_nowhere_else(settings: Settings) -> None:
    """BINANCE_API_KEY (read by `candlewax connect`, handed down) is sent as X-MBX-APIKEY on
    REST backfill requests — never in a URL."""
    frames, data = recorded()
    rest = RestServer(rest_rows(data))
    rest.available_until = data[99]["t"]
    key = "k" * 64

    async def with_gap(ws: ServerConnection, server: WsServer) -> None:
        await send_all(ws, frames[0:50] + frames[60:100])
        await hold(ws)

    stop = threading.Event()
    with WsServer([with_gap]) as ws_server, rest:
        producer = TradeProducer(settings.connection, settings.topic("trades"))
        options = LiveOptions(ws_url=ws_server.url, rest_url=rest.url, api_key=key)
        connector = LiveConnector(BINANCE, ["BTCUSDT"], producer, options, stop)
        (stats,), errors = _run(connector, stop, lambda: connector.stats().trades >= 100)
    assert not errors and stats.backfilled == 10
    assert rest.headers and all(h.get("x-mbx-apikey") == key for h in rest.headers)
    assert all(key not in str(query) for _, query, _ in rest.requests)
    assert key not in ws_server.paths[0]
